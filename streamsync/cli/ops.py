"""`streamsync run`, `streamsync status` and `streamsync reconcile`.

``run`` hosts capture, sink and backfill-worker in one process (one outer TaskGroup through
``ops.lifecycle.run_roles``: SIGTERM drains all three within one deadline; the ops server on
``ops.port`` serves /healthz, /readyz and /metrics). It runs ``setup`` first (idempotent;
``--no-setup`` skips it where the service account may not create slots or topics).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated, Any

import orjson
import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit
from streamsync.errors import CaptureError, StreamsyncError


@app.command()
def run(
    config: ConfigOption = None,
    setup: Annotated[
        bool, typer.Option("--setup/--no-setup", help="Run `setup` first (idempotent).")
    ] = True,
) -> None:
    """Run capture, sink and backfill-worker together in one process."""
    from streamsync.ops.lifecycle import Role, run_cli, run_roles
    from streamsync.ops.logging import configure_logging

    settings = settings_or_exit(config)
    configure_logging(settings)

    async def main() -> None:
        from streamsync.backfill.role import BackfillWorker
        from streamsync.capture.provision import setup as provision
        from streamsync.capture.role import Capture
        from streamsync.sink.role import Sink

        if setup:
            import asyncpg

            try:
                await provision(settings)
            except (OSError, asyncpg.PostgresError) as exc:
                raise CaptureError(f"setup failed: {exc}", code="SETUP_FAILED") from exc
        roles: list[Role] = [Capture(settings), Sink(settings), BackfillWorker(settings)]
        await run_roles(roles, settings)

    run_cli(main)


@app.command()
def status(
    config: ConfigOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Slot lag, consumer lag, DLQ size, backfills, record map and credits.

    Exits 1 when a section could not be read (its error is shown in place of its table).
    """
    from rich.console import Console

    from streamsync.status import gather, render

    settings = settings_or_exit(config)
    # the section says what failed; aiokafka's own connection errors would only repeat it
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    report = asyncio.run(gather(settings))
    if json_out:
        typer.echo(orjson.dumps(report.to_json()).decode())
    else:
        render(report, Console(file=sys.stdout))
    if not report.ok:
        raise typer.Exit(1)


def _print_run(run: Any) -> None:
    data = run.to_json()
    state = "in sync" if data["in_sync"] else "DIFFERENT"
    typer.echo(
        f"{data['table']}: {state}: table rows {data['table_rows']}, CRM records "
        f"{data['crm_records']}; missing {data['missing']}, extra {data['extra']}, "
        f"different {data['different']}, duplicates {data['duplicates']}"
        + (f", unmappable rows {data['unmappable']}" if data["unmappable"] else "")
        + (
            f", CRM records without external id {data['crm_without_external_id']}"
            if data["crm_without_external_id"]
            else ""
        )
    )
    examples = data["examples"]
    for kind in ("missing", "extra", "duplicates"):
        if examples[kind]:
            typer.echo(f"  {kind}: {', '.join(examples[kind])}")
    for diff in examples["different"]:
        fields = "; ".join(
            f"{name}: table {v['expected']!r} vs CRM {v['actual']!r}"
            for name, v in diff["fields"].items()
        )
        typer.echo(f"  different {diff['key']}: {fields}")
    if "published" in data:
        p = data["published"]
        typer.echo(f"  repair: published {p['r']} resync rows and {p['d']} deletes")


@app.command()
def reconcile(
    config: ConfigOption = None,
    table: Annotated[
        str | None, typer.Option("--table", help="schema.table (default: every mapped table).")
    ] = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Publish resync events for every difference.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per table.")] = False,
) -> None:
    """Compare the table with the CRM module; exit 0 when in sync, 1 when different."""
    import asyncpg

    from streamsync.reconcile_run import reconcile as run_reconcile

    settings = settings_or_exit(config)
    sources = [table] if table else [t.source for t in settings.tables]
    try:
        for source in sources:
            settings.table(source)
        runs = asyncio.run(run_reconcile(settings, sources, repair=repair))
    except StreamsyncError as exc:
        typer.echo(f"streamsync reconcile: {exc}", err=True)
        raise typer.Exit(2 if exc.code in ("UNKNOWN_TABLE", "UNSUPPORTED_KEY") else 3) from None
    except (OSError, asyncpg.PostgresError) as exc:
        typer.echo(f"streamsync reconcile: cannot read the table: {exc}", err=True)
        raise typer.Exit(3) from None
    for run in runs:
        if json_out:
            typer.echo(orjson.dumps(run.to_json()).decode())
        else:
            _print_run(run)
    raise typer.Exit(0 if all(r.in_sync for r in runs) else 1)
