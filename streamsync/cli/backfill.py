"""`streamsync backfill-worker` and `streamsync backfill start|status|cancel`."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit
from streamsync.errors import StreamsyncError
from streamsync.events import BackfillCancel, BackfillStart, ControlEvent, encode_control
from streamsync.settings import Settings

backfill_app = typer.Typer(help="Start, watch and cancel backfills (table → Bulk Write jobs).")
app.add_typer(backfill_app, name="backfill")


@app.command("backfill-worker")
def backfill_worker(config: ConfigOption = None) -> None:
    """Consume backfill control events and load tables into Zoho with Bulk Write jobs."""
    from streamsync.backfill.role import BackfillWorker
    from streamsync.ops.lifecycle import run_cli, run_roles
    from streamsync.ops.logging import configure_logging

    settings = settings_or_exit(config)
    configure_logging(settings)
    worker = BackfillWorker(settings)
    run_cli(lambda: run_roles([worker], settings))


async def _publish(settings: Settings, event: ControlEvent) -> None:
    from streamsync.kafka.admin import ensure_topics
    from streamsync.kafka.producer import create_producer
    from streamsync.kafka.topics import control_topic

    topic = control_topic(settings.kafka.topic_prefix)
    await ensure_topics(settings.kafka, [topic], partitions=1)
    producer = create_producer(settings.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, encode_control(event), key=b"backfill")
    finally:
        await producer.stop()


@backfill_app.command("start")
def start(
    table: str = typer.Option(..., "--table", help="schema.table, as mapped in [[tables]]"),
    chunk_rows: int | None = typer.Option(
        None, "--chunk-rows", min=1, max=25_000, help="rows per Bulk Write job (≤ 25,000)"
    ),
    backfill_id: str | None = typer.Option(None, "--id", help="reuse an id (idempotent)"),
    config: ConfigOption = None,
) -> None:
    """Publish a backfill.start event on <prefix>.control; prints the backfill id."""
    settings = settings_or_exit(config)
    try:
        settings.table(table)
    except StreamsyncError as exc:
        typer.echo(f"streamsync backfill start: {exc.message}", err=True)
        raise typer.Exit(2) from None
    bid = backfill_id or str(uuid.uuid4())
    event = BackfillStart(bid, table, chunk_rows or settings.backfill.chunk_rows)
    try:
        asyncio.run(_publish(settings, event))
    except StreamsyncError as exc:
        typer.echo(f"streamsync backfill start: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(bid)


@backfill_app.command("cancel")
def cancel(backfill_id: str = typer.Argument(...), config: ConfigOption = None) -> None:
    """Publish a backfill.cancel event: the worker stops reading, drains its jobs, stops."""
    settings = settings_or_exit(config)
    try:
        uuid.UUID(backfill_id)
    except ValueError:
        typer.echo("streamsync backfill cancel: the id must be a UUID", err=True)
        raise typer.Exit(2) from None
    try:
        asyncio.run(_publish(settings, BackfillCancel(backfill_id)))
    except StreamsyncError as exc:
        typer.echo(f"streamsync backfill cancel: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cancel requested for {backfill_id}")


@backfill_app.command("status")
def status(
    backfill_id: str | None = typer.Argument(None),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per backfill"),
    config: ConfigOption = None,
) -> None:
    """Per backfill: chunks done of total, rows, skipped, credits, rate, ETA."""
    import asyncpg

    from streamsync.backfill import status as st

    settings = settings_or_exit(config)

    async def main() -> list[st.BackfillView]:
        conn = await asyncpg.connect(settings.postgres.dsn)
        try:
            return await st.collect(conn, settings.postgres.state_schema, backfill_id)
        finally:
            await conn.close()

    try:
        views = asyncio.run(main())
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"streamsync backfill status: cannot read the state: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_out:
        for v in views:
            typer.echo(orjson.dumps(v.as_json()).decode())
        return
    st.render(views)
