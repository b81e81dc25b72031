"""`streamsync capture` and `streamsync setup`."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit
from streamsync.errors import SlotInUseError, StreamsyncError


@app.command()
def setup(config: ConfigOption = None) -> None:
    """Create the slot, publication, state schema and topics (idempotent)."""
    from streamsync.capture.provision import setup as run_setup

    settings = settings_or_exit(config)
    try:
        report = asyncio.run(run_setup(settings))
    except StreamsyncError as exc:
        typer.echo(f"streamsync setup: {exc}", err=True)
        raise typer.Exit(1) from None
    slot = settings.postgres.slot
    typer.echo(f"slot {slot}: {'created' if report.slot_created else 'exists'}")
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
    """Stream changes from the replication slot to Kafka (one capture per slot)."""
    from streamsync.capture.role import Capture

    settings = settings_or_exit(config)
    logging.basicConfig(
        level=settings.ops.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    role = Capture(settings, until_idle=until_idle)

    async def main() -> None:
        # TODO: switch to streamsync.ops.lifecycle.run_roles once it exists (ops port, health).
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, role.stop)
        await role.run()

    try:
        asyncio.run(main())
    except SlotInUseError as exc:
        typer.echo(f"streamsync capture: {exc.message}", err=True)
        raise typer.Exit(3) from None
    except StreamsyncError as exc:
        typer.echo(f"streamsync capture: {exc}", err=True)
        raise typer.Exit(1) from None
