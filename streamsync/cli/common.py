"""Shared CLI plumbing: the --config option and turning ConfigError into a clean exit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from streamsync.errors import ConfigError
from streamsync.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (or $STREAMSYNC_CONFIG).", show_default=False
    ),
]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """Load settings; on a bad config print the reasons and exit 2."""
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"streamsync: {exc.message}", err=True)
        raise typer.Exit(2) from None


from streamsync.cli import app  # noqa: E402


@app.command()
def version() -> None:
    """Print the streamsync version."""
    from streamsync import __version__

    typer.echo(__version__)
