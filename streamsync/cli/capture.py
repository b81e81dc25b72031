"""`streamsync capture` and `streamsync setup`."""

from __future__ import annotations

import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit


@app.command()
def setup(config: ConfigOption = None) -> None:
    """Create the slot, publication, state schema and topics (idempotent)."""
    from streamsync.capture.provision import setup as run_setup
    from streamsync.ops.lifecycle import run_cli

    settings = settings_or_exit(config)
    report = run_cli(lambda: run_setup(settings))
    typer.echo(f"slot {settings.postgres.slot}: {'created' if report.slot_created else 'exists'}")
    typer.echo(f"publication {settings.postgres.publication}: ok")
    typer.echo(f"state schema {settings.postgres.state_schema}: ok")
    for topic in report.topics:
        state = "created" if topic in report.topics_created else "exists"
        typer.echo(f"topic {topic}: {state}")


@app.command()
def capture(
    config: ConfigOption = None,
    until_idle: bool = typer.Option(False, help="Return once caught up (tests, tools)."),
) -> None:
    """Stream changes from the replication slot to Kafka (one capture per slot).

    SIGTERM/SIGINT: stop reading, wait for Kafka acks, flush the slot, exit 0.
    A second capture on the same slot exits at once with the slot-in-use code.
    """
    from streamsync.capture.role import Capture
    from streamsync.ops.lifecycle import run_cli, run_roles
    from streamsync.ops.logging import configure_logging

    settings = settings_or_exit(config)
    configure_logging(settings)
    role = Capture(settings, until_idle=until_idle)
    run_cli(lambda: run_roles([role], settings))
