"""End to end: a 200,000-row backfill while a writer keeps updating, deleting and inserting.

Capture, Sink and BackfillWorker run in this process (as ``streamsync demo`` does) against the
real Postgres and Kafka and the CRM simulator, whose Bulk Write jobs are slowed down so that
they overlap the writer's changes (the case the resync after each job exists for). Once the
writer has stopped and the system is quiet, every row of the table must equal its CRM record
in every mapped column, and the CRM must hold no record for a deleted row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from streamsync.backfill.role import BackfillWorker
from streamsync.capture.provision import setup
from streamsync.capture.role import Capture
from streamsync.demo.orders import LiveWriter, create_orders_table
from streamsync.events import BackfillStart, encode_control
from streamsync.settings import Settings, default_tables
from streamsync.sink.role import Sink
from tests.helpers import wait_for
from tests.integration.test_backfill import backfill_record, publish_control

pytest_plugins = ["tests.plugins.crm_sim"]

ROWS = 200_000

pytestmark = pytest.mark.timeout(300)


def _utc_seconds(value: Any) -> str | None:
    if value is None:
        return None
    stamp = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return stamp.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _table_view(rows: list[Any]) -> dict[str, tuple[Any, ...]]:
    return {
        str(r["id"]): (
            r["order_number"],
            r["customer_email"],
            f"{Decimal(r['amount']):.2f}",
            r["currency"],
            r["status"],
            r["order_date"].isoformat(),
            _utc_seconds(r["updated_at"]),
            r["notes"] or None,
        )
        for r in rows
    }


def _crm_view(records: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    out = {}
    for rec in records.values():
        amount = rec.get("Amount")
        out[str(rec.get("parent_id"))] = (
            rec.get("Name"),
            rec.get("Customer_Email"),
            None if amount is None else f"{Decimal(str(amount)):.2f}",
            rec.get("Currency"),
            rec.get("Status"),
            rec.get("Order_Date"),
            _utc_seconds(rec.get("Legacy_Updated_At")),
            rec.get("Notes") or None,
        )
    return out


def _difference(table: dict[str, Any], crm: dict[str, Any]) -> str:
    missing = [k for k in table if k not in crm]
    extra = [k for k in crm if k not in table]
    diff = [k for k in table if k in crm and table[k] != crm[k]]
    return (
        f"{len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}, "
        f"{len(diff)} different {[(k, table[k], crm[k]) for k in diff[:2]]}"
    )


async def test_backfill_under_live_writes_converges_to_the_table(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, tmp_path: Path
) -> None:
    name = unique_name
    source = f"{name}.orders"
    table = default_tables()[0].model_copy(update={"source": source})
    settings = Settings(
        postgres={"dsn": pg_dsn, "slot": name, "publication": name, "state_schema": f"{name}_st"},
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": name, "partitions": 3},
        zoho=crm_sim.zoho_settings(concurrency=10),
        sink={"group_id": f"{name}-sink", "max_wait_s": 0.5},
        backfill={
            "group_id": f"{name}-backfill",
            "work_dir": str(tmp_path),
            "poll_interval_s": 0.2,
            "max_parallel_jobs": 2,
        },
        capture={"heartbeat_interval_s": 5.0},
        tables=[table],
    )
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f'CREATE SCHEMA "{name}"')
    roles: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []
    writer: LiveWriter | None = None
    try:
        await create_orders_table(conn, source, rows=ROWS)
        await setup(settings)
        # Each job takes ~2 x 1.5 s plus its processing: the writer's changes land while
        # chunks are read and while their jobs run.
        crm_sim.configure(bulk_job_seconds=1.5)
        capture, sink, worker = Capture(settings), Sink(settings), BackfillWorker(settings)
        roles = [capture, sink, worker]
        tasks = [asyncio.create_task(r.run()) for r in roles]
        writer = LiveWriter(
            pg_dsn, table=source, rate_per_s=150, first_new_id=ROWS + 1, max_id=ROWS
        )
        writer_task = asyncio.create_task(writer.run())
        bid = str(uuid.uuid4())
        await publish_control(settings, encode_control(BackfillStart(bid, source, 25_000)))

        async def backfill_done() -> Any:
            for task in tasks:
                if task.done():
                    task.result()  # a role that died fails the test now, with its error
            rec = await backfill_record(settings, bid)
            return rec if rec is not None and rec.status == "done" else None

        done = await wait_for(backfill_done, timeout=110, interval=0.5, message="backfill")
        writer.stop()
        stats = await asyncio.wait_for(writer_task, 30)
        assert stats.updates > 1000 and stats.deletes > 50 and stats.inserts > 200
        # Rows deleted before their chunk was read are not loaded; records the sink created
        # first are counted as updated by the job.
        assert done.added + done.updated > ROWS * 0.98
        assert (done.skipped, done.dead_lettered) == (0, 0)
        assert done.resynced > 0, "no change overlapped a job: the test proves nothing"

        async def in_sync() -> bool:
            for task in tasks:
                if task.done():
                    task.result()
            rows = await conn.fetch(f"SELECT * FROM {source}")
            return _table_view(rows) == _crm_view(crm_sim.state.records.get("Orders", {}))

        async def explain() -> str:
            rows = await conn.fetch(f"SELECT * FROM {source}")
            return _difference(
                _table_view(rows), _crm_view(crm_sim.state.records.get("Orders", {}))
            )

        last: list[str] = []

        async def in_sync_or_note() -> bool:
            ok = await in_sync()
            if not ok:
                last[:] = [await explain()]
            return ok

        await wait_for(
            in_sync_or_note,
            timeout=60,
            interval=1.0,
            message=lambda: "CRM != table: " + (last[0] if last else "?"),
        )
        assert len(crm_sim.state.records["Orders"]) == await conn.fetchval(
            f"SELECT count(*) FROM {source}"
        )
    finally:
        if writer is not None:
            writer.stop()
        for role in roles:
            role.stop()
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = $1",
            name,
        )
        await conn.execute(f'DROP PUBLICATION IF EXISTS "{name}"')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}_st" CASCADE')
        await conn.close()
