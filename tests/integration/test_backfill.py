"""Backfill end to end: real Postgres and Kafka, the CRM simulator, the BackfillWorker.

- control events over Kafka (a malformed one is dead-lettered; the worker keeps running);
- a job that FAILS is resubmitted; planted bad rows are dead-lettered, all others loaded;
  credits = 500 × jobs; a repeated start event does not redo a finished backfill;
- resync: rows changed or deleted after their chunk was read come back as op r / d events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from streamsync.backfill.role import BackfillWorker
from streamsync.dlq import list_dead_letters
from streamsync.events import BackfillStart, decode_change, encode_control
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic, control_topic
from streamsync.settings import Settings, default_tables
from streamsync.store import checkpoints as cp
from tests.helpers import wait_for

pytest_plugins = ["tests.plugins.crm_sim"]

ORDERS_DDL = """
CREATE TABLE {rel} (
    id bigint PRIMARY KEY,
    order_number text NOT NULL,
    customer_email text,
    amount numeric(12, 2),
    currency text,
    status text,
    order_date date,
    updated_at timestamptz NOT NULL DEFAULT now(),
    notes text
)"""

FILL = """
INSERT INTO {rel} (id, order_number, customer_email, amount, currency, status, order_date, notes)
SELECT g, 'SO-' || g, 'c' || g || '@example.com', (g % 1000) + 0.25, 'EUR', 'new',
       date '2024-01-01' + (g % 300), 'n' || g
FROM generate_series(1, $1) AS g"""


def make_settings(pg_dsn: str, kafka: str, name: str, sim: Any, work: Path, **bf: Any) -> Settings:
    table = default_tables()[0].model_copy(update={"source": f"{name}.orders"})
    return Settings(
        postgres={
            "dsn": pg_dsn,
            "state_schema": f"{name}_state",
            "slot": name,
            "publication": name,
        },
        kafka={"bootstrap_servers": kafka, "topic_prefix": name, "partitions": 3},
        zoho=sim.zoho_settings(),
        backfill={"work_dir": str(work), "poll_interval_s": 0.05, **bf},
        tables=[table],
    )


@pytest.fixture
async def orders(pg_dsn: str, unique_name: str) -> AsyncIterator[str]:
    conn = await asyncpg.connect(pg_dsn)
    rel = f'"{unique_name}".orders'
    await conn.execute(f'CREATE SCHEMA "{unique_name}"')
    await conn.execute(ORDERS_DDL.format(rel=rel))
    try:
        yield rel
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}" CASCADE')
        await conn.execute(f'DROP SCHEMA IF EXISTS "{unique_name}_state" CASCADE')
        await conn.close()


async def backfill_record(settings: Settings, backfill_id: str) -> cp.BackfillRecord | None:
    conn = await asyncpg.connect(settings.postgres.dsn)
    try:
        return await cp.get_backfill(conn, settings.postgres.state_schema, backfill_id)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def publish_control(settings: Settings, *values: bytes) -> None:
    producer = create_producer(settings.kafka)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(control_topic(settings.kafka.topic_prefix), value)
    finally:
        await producer.stop()


async def read_changes(settings: Settings, source: str) -> list[Any]:
    consumer = AIOKafkaConsumer(
        change_topic(settings.kafka.topic_prefix, source),
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out = []
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return out
            for msgs in batch.values():
                out.extend(decode_change(m.value) for m in msgs)
    finally:
        await consumer.stop()


def crm_by_parent(sim: Any) -> dict[str, dict[str, Any]]:
    return {r["parent_id"]: r for r in sim.state.records.get("Orders", {}).values()}


async def test_backfill_failed_job_bad_rows_credits_and_repeat(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    settings = make_settings(pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path)
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(FILL.format(rel=orders), 12_000)
    poison = [17, 5_001, 11_999]
    await conn.execute(
        f"UPDATE {orders} SET customer_email = 'poison@invalid.example' WHERE id = ANY($1)",
        poison,
    )
    await conn.close()
    crm_sim.configure(fail_next_bulk_jobs=1)

    worker = BackfillWorker(settings)
    task = asyncio.create_task(worker.run())
    bid = str(uuid.uuid4())
    start = encode_control(BackfillStart(bid, f"{unique_name}.orders", 4_000))
    await publish_control(settings, b"{not json", b'{"type": "backfill.pause", "backfill_id": "x"}')
    await publish_control(settings, start)
    try:
        done = await wait_for(
            lambda: _status_is(settings, bid, "done"), timeout=90, message="backfill not done"
        )
        crm = crm_by_parent(crm_sim)
        assert len(crm) == 12_000 - len(poison)
        assert not {str(k) for k in poison} & set(crm)
        assert crm["1"]["Amount"] in (1.25, "1.25")
        # 3 chunks + 1 resubmission of the failed job; 500 credits each.
        assert done.jobs == 4
        assert done.credits == 500 * done.jobs
        assert (done.added, done.skipped, done.dead_lettered) == (12_000 - 3, 3, 3)
        assert done.chunks_done == 3
        # Nothing changed during the jobs: the re-read hashes every row as the read did.
        assert done.resynced == 0
        letters = await list_dead_letters(settings.kafka.client_options(), unique_name)
        backfill_keys = sorted(d.key[0] for d in letters if d.origin == "backfill" and d.key)
        assert backfill_keys == poison
        assert all(d.reason_code for d in letters)
        undecodable = [d for d in letters if d.key is None]
        assert len(undecodable) == 2  # the malformed and the unknown control event
        # A repeated start event does not redo a finished backfill.
        jobs_before = len(crm_sim.state.jobs)
        await publish_control(settings, start)
        await publish_control(settings, b"[]")  # a marker processed after the repeat
        await wait_for(
            lambda: _dlq_count(settings, unique_name, 3), timeout=30, message="marker not seen"
        )
        assert len(crm_sim.state.jobs) == jobs_before
        again = await backfill_record(settings, bid)
        assert again is not None and again.jobs == 4 and again.status == "done"
        assert not task.done()
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def _status_is(settings: Settings, bid: str, status: str) -> cp.BackfillRecord | None:
    rec = await backfill_record(settings, bid)
    return rec if rec is not None and rec.status == status else None


async def _dlq_count(settings: Settings, prefix: str, n: int) -> bool:
    letters = await list_dead_letters(settings.kafka.client_options(), prefix)
    return len([d for d in letters if d.key is None]) >= n


async def test_rows_changed_during_a_job_are_resynced(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    """A change after the chunk's read (the job then writes the older row) and a delete are
    resynced through the change topic; the CRM equals the table once they are applied."""
    settings = make_settings(pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path)
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(FILL.format(rel=orders), 3_000)
    crm_sim.configure(bulk_job_seconds=1.5)
    worker = BackfillWorker(settings)
    task = asyncio.create_task(worker.run())
    bid = str(uuid.uuid4())
    try:
        await publish_control(
            settings, encode_control(BackfillStart(bid, f"{unique_name}.orders", 1_000))
        )
        # Wait until the first chunk's job is submitted, then change rows it holds.
        await wait_for(lambda: len(crm_sim.state.jobs) >= 1, timeout=30)
        await conn.execute(f"UPDATE {orders} SET notes = 'changed' WHERE id IN (5, 6)")
        await conn.execute(f"DELETE FROM {orders} WHERE id = 7")
        await conn.execute(f"UPDATE {orders} SET notes = 'late' WHERE id = 2900")
        await wait_for(lambda: _status_is(settings, bid, "done"), timeout=60)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
    events = [e for e in await read_changes(settings, f"{unique_name}.orders")]
    resync = {(e.op, e.key[0]) for e in events if e.source == "resync"}
    assert {("r", 5), ("r", 6), ("d", 7)} <= resync
    assert all(e.pos.lsn > 0 for e in events)
    # The job wrote the older rows; applying the resync events repairs the CRM.
    crm = crm_by_parent(crm_sim)
    assert crm["5"]["Notes"] == "n5" and "7" in crm
    for e in events:
        if e.op == "d":
            crm.pop(str(e.key[0]), None)
        else:
            crm[str(e.key[0])]["Notes"] = e.after["notes"]
    rows = {str(r["id"]): r["notes"] for r in await conn.fetch(f"SELECT id, notes FROM {orders}")}
    await conn.close()
    assert {k: v["Notes"] for k, v in crm.items()} == rows


def _write_config(settings: Settings, path: Path) -> Path:
    import json

    data = settings.model_dump(mode="json")
    zoho = {k: v for k, v in data["zoho"].items() if v is not None and not k.endswith("_file")}
    lines = []
    for section in ("postgres", "kafka", "backfill"):
        lines.append(f"[{section}]")
        for key, value in data[section].items():
            if value is not None and not key.endswith("_file"):
                lines.append(f"{key} = {json.dumps(value)}")
    lines.append("[zoho]")
    for key in zoho:
        value = getattr(settings.zoho, key)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, str | int | float | bool):
            lines.append(f"{key} = {json.dumps(value)}")
    lines += ["[ops]", "port = 0", 'log_level = "WARNING"']
    table = settings.tables[0]
    lines += [
        "[[tables]]",
        f'source = "{table.source}"',
        f'module = "{table.module}"',
        'external_id = { column = "id", field = "parent_id" }',
        "[tables.fields]",
    ]
    for column, mapping in table.fields.items():
        fmt = f', format = "{mapping.format}"' if mapping.format else ""
        lines.append(f'{column} = {{ field = "{mapping.field}"{fmt} }}')
    path.write_text("\n".join(lines) + "\n")
    return path


async def _spawn_worker(config: Path) -> asyncio.subprocess.Process:
    import sys

    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamsync", "backfill-worker", "--config", str(config)
    )


async def test_kill_9_resumes_without_uploading_a_finished_chunk_again(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    settings = make_settings(
        pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path / "work", max_parallel_jobs=2
    )
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(FILL.format(rel=orders), 20_000)
    await conn.close()
    crm_sim.configure(bulk_job_seconds=0.4)
    config = _write_config(settings, tmp_path / "streamsync.toml")
    bid = str(uuid.uuid4())
    proc = await _spawn_worker(config)
    try:
        await publish_control(
            settings, encode_control(BackfillStart(bid, f"{unique_name}.orders", 2_000))
        )

        async def chunks_done(n: int) -> bool:
            rec = await backfill_record(settings, bid)
            return rec is not None and rec.chunks_done >= n

        await wait_for(lambda: chunks_done(3), timeout=60, message="3 chunks not done")
        proc.kill()  # SIGKILL: no cleanup at all
        await proc.wait()
        # chunks whose job id the checkpoint holds: never uploaded or submitted again
        conn = await asyncpg.connect(pg_dsn)
        try:
            recorded = await conn.fetch(
                f'SELECT job_id FROM "{settings.postgres.state_schema}".backfill_chunks '
                "WHERE backfill_id = $1 AND job_id IS NOT NULL",
                bid,
            )
        finally:
            await conn.close()
        submitted_before = {crm_sim.state.jobs[r["job_id"]].rows[0][0] for r in recorded}
        before = await backfill_record(settings, bid)
        assert before is not None and before.status == "running" and before.chunks_done < 10
        proc = await _spawn_worker(config)
        done = await wait_for(lambda: _status_is(settings, bid, "done"), timeout=90)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
    assert len(crm_by_parent(crm_sim)) == 20_000
    uploads = Counter(rows[0][0] for _, rows in crm_sim.state.uploads.values() if rows)
    assert len(submitted_before) >= 3
    assert all(uploads[key] == 1 for key in submitted_before), "a submitted chunk was re-uploaded"
    # A chunk killed after Zoho created its job but before the worker recorded the id may get a
    # second job (Zoho has no idempotency key; both are upserts by parent_id and the resync
    # after the second job repairs any overlap). At most one such chunk per job slot.
    job_keys = Counter(job.rows[0][0] for job in crm_sim.state.jobs.values() if job.rows)
    assert len(job_keys) == 10
    assert all(job_keys[key] == 1 for key in submitted_before), "a recorded job was resubmitted"
    assert sum(job_keys.values()) - 10 <= settings.backfill.max_parallel_jobs
    assert done.chunks_done == 10
