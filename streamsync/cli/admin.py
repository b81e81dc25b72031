"""`streamsync teardown`: remove a pipeline so its slot stops pinning WAL."""

from __future__ import annotations

from typing import Annotated

import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit


@app.command()
def teardown(
    config: ConfigOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do it (without --yes only say what).")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Terminate a capture still streaming from the slot.")
    ] = False,
    keep_topics: Annotated[bool, typer.Option(help="Leave the Kafka topics in place.")] = False,
) -> None:
    """Drop the replication slot, publication, state schema, topics and consumer groups."""
    from streamsync.ops.lifecycle import run_cli
    from streamsync.teardown import teardown as run_teardown

    settings = settings_or_exit(config)
    pg, prefix = settings.postgres, settings.kafka.topic_prefix
    plan = f"slot {pg.slot!r}, publication {pg.publication!r}, schema {pg.state_schema!r}" + (
        "" if keep_topics else f", topics {prefix}.* and the consumer groups"
    )
    if not yes:
        typer.echo(f"would drop {plan}; run again with --yes")
        raise typer.Exit(1)
    report = run_cli(lambda: run_teardown(settings, force=force, kafka=not keep_topics))
    typer.echo(
        f"slot dropped: {report.slot_dropped}, publication dropped: {report.publication_dropped}, "
        f"schema dropped: {report.schema_dropped}, topics deleted: {len(report.topics_deleted)}"
    )
