"""`streamsync demo`: the embedded default, end to end, in one process.

It starts the bundled CRM simulator on loopback, (re)creates `public.orders` with generated
orders, provisions slot, publication, state schema and topics, then runs capture, sink and
backfill worker together while a writer keeps changing orders. It publishes the backfill start
event, shows live progress, waits until the CRM equals the table, and ends with a reconcile
through the API and a report of records, jobs, calls, credits and latency.

The demo owns its own names (slot, publication, state schema, topic prefix, consumer groups
all ``*demo*``) and resets them at start, so it can be run again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamsync.demo.orders import LiveWriter, create_orders_table
from streamsync.events import BackfillStart, encode_control
from streamsync.kafka.topics import control_topic
from streamsync.settings import Settings, load_settings
from streamsync.zoho.simulator import SIM_STATE, SimConfig, SimState, serve

__all__ = ["DemoOptions", "DemoReport", "run_demo"]

DEMO_NAME = "streamsync_demo"
DEMO_PREFIX = "streamsync-demo"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    rows: int = 100_000
    writer_rate: float = 200.0  # changes per second
    writer_seconds: float = 40.0
    chunk_rows: int = 25_000
    bulk_job_seconds: float = 3.0  # simulated Bulk Write job duration: overlaps the writer
    sim_latency_ms: float = 20.0
    timeout_s: float = 270.0


@dataclass(slots=True)
class DemoReport:
    table_rows: int = 0
    crm_records: int = 0
    in_sync: bool = False
    reconcile: dict[str, int] = field(default_factory=dict)
    changes_written: int = 0
    changes_total: int = 0
    bulk_jobs: int = 0
    upsert_calls: int = 0
    delete_calls: int = 0
    max_records_per_call: int = 0
    records_upserted: int = 0
    credits_used: int = 0
    credits_one_call_per_change: int = 0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    dlq: int = 0
    seconds: float = 0.0


def demo_settings(base: Settings | None = None, *, sim_url: str) -> Settings:
    """The demo's settings: the local stack from the environment, demo-owned names."""
    base = base or load_settings()
    return load_settings(
        postgres={
            "dsn": base.postgres.dsn,
            "slot": DEMO_NAME,
            "publication": DEMO_NAME,
            "state_schema": DEMO_NAME,
        },
        kafka={"bootstrap_servers": base.kafka.bootstrap_servers, "topic_prefix": DEMO_PREFIX},
        zoho={
            "accounts_url": sim_url,
            "api_domain": sim_url,
            "upload_url": sim_url,
            "concurrency": 10,
            "backoff_base_s": 0.05,
            "backoff_cap_s": 1.0,
        },
        sink={"group_id": f"{DEMO_PREFIX}-sink", "max_wait_s": 1.0},
        backfill={
            "group_id": f"{DEMO_PREFIX}-backfill",
            "poll_interval_s": 0.5,
            "work_dir": ".local/demo",
        },
        ops={"port": 0, "log_level": "WARNING"},
        capture={"heartbeat_interval_s": 5.0},
    )


async def _start_simulator(options: DemoOptions) -> tuple[web.AppRunner, str, SimState]:
    config = SimConfig(
        port=0,
        bulk_job_seconds=options.bulk_job_seconds,
        latency_ms=options.sim_latency_ms,
        latency_jitter_ms=options.sim_latency_ms / 2,
        seed=1,
    )
    runner, url = await serve(config)
    return runner, url, runner.app[SIM_STATE]


async def _reset(settings: Settings) -> None:
    """Drop what an earlier demo left: slot, publication, state schema, topics, groups."""
    from streamsync.teardown import teardown

    await teardown(settings, force=True)


async def _publish_start(settings: Settings, table: str, chunk_rows: int) -> str:
    from streamsync.kafka.producer import create_producer

    backfill_id = str(uuid.uuid4())
    producer = create_producer(settings.kafka)
    await producer.start()
    try:
        event = BackfillStart(backfill_id=backfill_id, table=table, chunk_rows=chunk_rows)
        await producer.send_and_wait(
            control_topic(settings.kafka.topic_prefix), encode_control(event), key=b"backfill"
        )
    finally:
        await producer.stop()
    return backfill_id


async def _table_snapshot(conn: asyncpg.Connection, table: str) -> dict[str, tuple[Any, ...]]:
    rows = await conn.fetch(f"SELECT id, status, amount FROM {table}")
    return {str(r["id"]): (r["status"], str(r["amount"])) for r in rows}


def _crm_snapshot(state: SimState, module: str) -> tuple[dict[str, tuple[Any, ...]], int]:
    records = state.records.get(module, {})
    out: dict[str, tuple[Any, ...]] = {}
    for rec in records.values():
        amount = rec.get("Amount")
        out[str(rec.get("parent_id"))] = (
            rec.get("Status"),
            f"{float(amount):.2f}" if amount is not None else None,
        )
    return out, len(records)


def _describe_difference(table: dict[str, tuple[Any, ...]], crm: dict[str, tuple[Any, ...]]) -> str:
    missing = [k for k in table if k not in crm]
    extra = [k for k in crm if k not in table]
    different = [k for k in table if k in crm and table[k] != crm[k]]
    examples = [(k, table[k], crm[k]) for k in different[:3]]
    return (
        f"{len(missing)} missing (e.g. {missing[:5]}), {len(extra)} extra (e.g. {extra[:5]}), "
        f"{len(different)} different (e.g. {examples})"
    )


async def _backfill_line(conn: asyncpg.Connection, schema: str) -> str:
    from streamsync.backfill.status import collect

    views = await collect(conn, schema)
    if not views:
        return "waiting for the start event"
    r, p = views[-1].record, views[-1].progress
    return (
        f"{r.status}: chunks {p.chunks_done}/{p.chunks_total}, rows {r.rows_done:,}, "
        f"resynced {r.resynced}, jobs {r.jobs}"
    )


def _percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of the sink's measured commit-to-CRM latencies."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class _Progress:
    """Live progress: a rich table in a terminal, a plain line every few seconds otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tty = console.is_terminal
        self._last_plain = 0.0

    def table(self, view: dict[str, Any]) -> Table:
        table = Table(title="streamsync demo", show_header=True, header_style="bold")
        table.add_column("stage")
        table.add_column("progress", justify="right")
        for name, value in view.items():
            table.add_row(name, str(value))
        return table

    def plain(self, view: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last_plain >= 5.0:
            self._last_plain = now
            self.console.print(" | ".join(f"{k}: {v}" for k, v in view.items()))


async def run_demo(
    options: DemoOptions | None = None, console: Console | None = None
) -> DemoReport:
    """Run the whole demo; returns the final report (also printed)."""
    from streamsync.backfill.role import BackfillWorker
    from streamsync.capture.provision import setup
    from streamsync.capture.role import Capture
    from streamsync.ops.runtime import tune_gc
    from streamsync.reconcile_run import reconcile_table
    from streamsync.sink.role import Sink

    options = options or DemoOptions()
    console = console or Console()
    tune_gc()  # the roles run here as in their own processes (see ops/runtime.py)
    started = time.monotonic()
    report = DemoReport()
    runner, sim_url, sim = await _start_simulator(options)
    try:
        settings = demo_settings(sim_url=sim_url)
        table = settings.tables[0]
        console.print(f"[bold]streamsync demo[/]: CRM simulator at {sim_url}")
        await _reset(settings)
        conn = await asyncpg.connect(settings.postgres.dsn)
        try:
            t0 = time.monotonic()
            await create_orders_table(conn, table.source, rows=options.rows, replace=True)
            console.print(f"generated {options.rows:,} orders in {time.monotonic() - t0:.1f}s")
            await setup(settings)
            console.print("slot, publication, state schema and topics ready")

            capture = Capture(settings)
            sink = Sink(settings)
            worker = BackfillWorker(settings)
            writer = LiveWriter(
                settings.postgres.dsn,
                table=table.source,
                rate_per_s=options.writer_rate,
                first_new_id=options.rows + 1,
                max_id=options.rows,
            )
            progress = _Progress(console)
            deadline = started + options.timeout_s
            synced = asyncio.Event()

            async def watch(live: Live | None) -> None:
                writer_done = False
                while True:
                    crm, count = _crm_snapshot(sim, table.module)
                    stats = sim.stats()
                    backfill = await _backfill_line(conn, settings.postgres.state_schema)
                    view = {
                        "elapsed": f"{time.monotonic() - started:.0f}s",
                        "backfill (Bulk Write)": backfill,
                        "orders written by the writer": writer.stats.changes,
                        "changes captured": capture.stats.events,
                        "bulk jobs": len(stats["bulk_jobs"]),
                        "CRM records": f"{count:,}",
                        "upsert calls": stats["calls"].get("upsert", 0),
                        "credits used": stats["credits_used"],
                        "sink records sent": sink.stats.records_sent,
                    }
                    if live is not None:
                        live.update(progress.table(view))
                    else:
                        progress.plain(view)
                    writer_done = writer_done or writer_task.done()
                    if writer_done and count >= options.rows * 0.9:
                        snapshot = await _table_snapshot(conn, table.source)
                        if snapshot == crm:
                            synced.set()
                            return
                    if time.monotonic() > deadline:
                        snapshot = await _table_snapshot(conn, table.source)
                        raise TimeoutError(
                            f"the CRM did not equal the table within {options.timeout_s:.0f}s: "
                            + _describe_difference(snapshot, crm)
                        )
                    await asyncio.sleep(1.0)

            async with asyncio.TaskGroup() as tg:
                roles = [
                    tg.create_task(capture.run(), name="capture"),
                    tg.create_task(sink.run(), name="sink"),
                    tg.create_task(worker.run(), name="backfill-worker"),
                ]
                await _publish_start(settings, table.source, options.chunk_rows)
                console.print("backfill start event published; writer running")
                writer_task = tg.create_task(writer.run(options.writer_seconds), name="writer")
                live_cm: Any = (
                    Live(console=console, refresh_per_second=2)
                    if progress.tty
                    else contextlib.nullcontext()
                )
                with live_cm as live:
                    await watch(live)
                for role in (capture, sink, worker):
                    role.stop()
                await asyncio.gather(*roles)
            report.changes_written = writer.stats.changes
        finally:
            await conn.close()

        console.print("CRM equals the table; reconciling through the Zoho API...")
        rec = await reconcile_table(settings, table)
        stats = sim.stats()
        _, count = _crm_snapshot(sim, table.module)
        report.table_rows = rec.table_rows
        report.crm_records = count
        report.in_sync = rec.in_sync
        report.reconcile = rec.summary()
        report.changes_total = options.rows + report.changes_written
        report.bulk_jobs = len(stats["bulk_jobs"])
        report.upsert_calls = stats["calls"].get("upsert", 0)
        report.delete_calls = stats["calls"].get("delete", 0)
        report.max_records_per_call = max(
            (n for api in ("upsert", "delete") for n in sim.records_per_call(api)), default=0
        )
        report.records_upserted = stats["records"].get("upsert", 0)
        report.credits_used = stats["credits_used"]
        report.credits_one_call_per_change = report.changes_total
        p50 = _percentile(sink.stats.latencies_ms, 0.5)
        p99 = _percentile(sink.stats.latencies_ms, 0.99)
        report.latency_p50_ms = None if p50 is None else round(p50, 1)
        report.latency_p99_ms = None if p99 is None else round(p99, 1)
        report.dlq = sink.stats.dead_letters
        report.seconds = round(time.monotonic() - started, 1)
        _print_report(console, report)
        return report
    finally:
        await runner.cleanup()


def _print_report(console: Console, r: DemoReport) -> None:
    table = Table(title="streamsync demo: final report", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    saving = (
        f"{r.credits_one_call_per_change / r.credits_used:,.0f}x fewer" if r.credits_used else "n/a"
    )
    rows = [
        ("rows in the table / records in the CRM", f"{r.table_rows:,} / {r.crm_records:,}"),
        ("reconcile", "in sync" if r.in_sync else f"DIFFERENCES {r.reconcile}"),
        ("changes (initial rows + live writer)", f"{r.changes_total:,}"),
        ("Bulk Write jobs", r.bulk_jobs),
        (
            "Upsert Records calls (max records per call)",
            f"{r.upsert_calls} ({r.max_records_per_call})",
        ),
        ("Delete calls", r.delete_calls),
        ("credits used", f"{r.credits_used:,}"),
        ("credits at one call per change", f"{r.credits_one_call_per_change:,} ({saving})"),
        ("commit-to-CRM latency p50 / p99", f"{r.latency_p50_ms} ms / {r.latency_p99_ms} ms"),
        ("dead letters", r.dlq),
        ("wall time", f"{r.seconds:.0f}s"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def main(options: DemoOptions | None = None) -> int:
    report = asyncio.run(run_demo(options))
    return 0 if report.in_sync else 1


if __name__ == "__main__":
    sys.exit(main())
