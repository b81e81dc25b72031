"""`streamsync sink [--drain]` and `streamsync dlq list|replay`."""

from __future__ import annotations

import typer

from streamsync.cli import app
from streamsync.cli.common import ConfigOption, settings_or_exit

dlq_app = typer.Typer(
    help="Dead letters on <prefix>.dlq: list them, replay them.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")


@app.command()
def sink(
    config: ConfigOption = None,
    drain: bool = typer.Option(
        False,
        "--drain",
        help="Interval mode: sync the backlog up to the end offsets seen at start, commit, exit 0 "
        "(non-zero when anything is left undone, so a scheduler retries).",
    ),
) -> None:
    """Consume the change topics and keep Zoho CRM in step (near real time)."""
    from streamsync.ops.lifecycle import run_cli, run_roles
    from streamsync.ops.logging import configure_logging
    from streamsync.ops.runtime import tune_gc
    from streamsync.sink import Sink

    settings = settings_or_exit(config)
    configure_logging(settings)
    role = Sink(settings)
    if not drain:
        run_cli(lambda: run_roles([role], settings))
        return
    tune_gc()  # a drain is a long-running sink too (run_roles does this for the others)
    report = run_cli(role.drain)
    typer.echo(
        f"drain done: {report.events} events, {report.records} records, "
        f"{report.bulk_jobs} bulk jobs, {report.upsert_calls} upsert calls, "
        f"{report.dead_letters} dead letters"
    )


@dlq_app.command("list")
def dlq_list(
    config: ConfigOption = None,
    limit: int = typer.Option(50, help="Show at most this many (oldest first)."),
    summary: bool = typer.Option(False, help="Only the counts per reason code."),
) -> None:
    """List dead letters: offset, origin, reason code, table and key, attempts, message."""
    import asyncio

    from streamsync.dlq import dead_letter_summary, list_dead_letters

    settings = settings_or_exit(config)
    letters = asyncio.run(
        list_dead_letters(settings.kafka.client_options(), settings.kafka.topic_prefix)
    )
    if summary:
        for code, n in sorted(dead_letter_summary(letters).items()):
            typer.echo(f"{code}\t{n}")
        return
    for letter in letters[:limit]:
        key = letter.key if letter.key is not None else "(undecodable)"
        typer.echo(
            f"{letter.offset}\t{letter.origin}\t{letter.reason_code}\t{letter.table}\t{key}\t"
            f"attempts={letter.attempts}\t{letter.message}"
        )
    typer.echo(f"{len(letters)} dead letters", err=True)


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOption = None,
    reason: str | None = typer.Option(None, help="Only this reason code."),
    origin: str | None = typer.Option(None, help="Only this origin (sink, backfill)."),
) -> None:
    """Re-publish dead-lettered events to their change topic (each dead letter once)."""
    import asyncio

    from streamsync.dlq import replay_dead_letters

    settings = settings_or_exit(config)
    replayed, passed = asyncio.run(
        replay_dead_letters(
            settings.kafka.client_options(),
            settings.kafka.topic_prefix,
            reason_code=reason,
            origin=origin,
        )
    )
    typer.echo(f"replayed {replayed} dead letters ({passed} passed over)")
