"""The `streamsync` command line: parse, load Settings, call one role or admin function.

Each role registers its commands from its own module (cli/<role>.py) so that the roles can
grow independently; this module only assembles them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="streamsync",
    help="Keep Zoho CRM in step with PostgreSQL through logical replication and Kafka.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Keep Zoho CRM in step with PostgreSQL through logical replication and Kafka."""


# Modules that register commands on `app` when imported (each owns its commands).
_COMMAND_MODULES = (
    "streamsync.cli.common",
    "streamsync.cli.capture",
    "streamsync.cli.sink",
    "streamsync.cli.backfill",
    "streamsync.cli.crm",
    "streamsync.cli.ops",
    "streamsync.cli.demo",
    "streamsync.cli.admin",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main() -> None:
    _register()
    app()
