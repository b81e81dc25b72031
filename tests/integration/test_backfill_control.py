"""Backfill control against real Postgres, Kafka and the simulator:

- the daily credit budget pauses the backfill (status "waiting for credit budget") and it
  goes on from where it stopped when credits return (a controllable ledger clock);
- ``streamsync backfill cancel`` (the CLI, in a subprocess) stops a running backfill cleanly:
  the submitted job finishes and is resynced, no further chunk is submitted, status cancelled.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from streamsync.backfill.role import BackfillWorker
from streamsync.events import BackfillStart, encode_control
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.zoho.client import ZohoClient
from tests.helpers import wait_for
from tests.integration import test_backfill as base
from tests.integration.test_backfill import (
    FILL,
    _status_is,
    _write_config,
    backfill_record,
    crm_by_parent,
    make_settings,
    publish_control,
)

pytest_plugins = ["tests.plugins.crm_sim"]

orders = base.orders  # the fixture: a fresh orders table in the test's own schema


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _first_keys(sim: Any) -> list[Any]:
    return [rows[0][0] for _, rows in sim.state.uploads.values() if rows]


async def test_credit_budget_pauses_and_resumes_without_starting_over(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    settings = make_settings(
        pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path, max_parallel_jobs=2
    )
    settings = settings.model_copy(
        update={"zoho": crm_sim.zoho_settings(daily_credit_budget=1_300)}
    )
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(FILL.format(rel=orders), 6_000)
    await conn.close()
    clock = Clock()
    client = ZohoClient(settings.zoho, clock=clock)
    await client.start()
    worker = BackfillWorker(settings, crm=client)
    task = asyncio.create_task(worker.run())
    bid = str(uuid.uuid4())
    try:
        await publish_control(
            settings, encode_control(BackfillStart(bid, f"{unique_name}.orders", 2_000))
        )

        async def waiting() -> Any:
            rec = await backfill_record(settings, bid)
            ok = rec is not None and rec.waiting_for == "credit budget" and rec.chunks_done == 2
            return rec if ok else None

        paused = await wait_for(waiting, timeout=60, message="never paused for the budget")
        assert paused.status == "running" and paused.jobs == 2
        assert len(crm_sim.state.jobs) == 2  # two jobs fit in 1,300 credits, the third waits
        assert client.credits.would_exceed(501)
        assert len(crm_by_parent(crm_sim)) == 4_000
        # A day later the credits spent have aged out of the 24-hour window.
        clock.now += 24 * 3600 + 60
        done = await wait_for(lambda: _status_is(settings, bid, "done"), timeout=60)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
    assert done.waiting_for is None
    assert (done.jobs, done.chunks_done, done.added) == (3, 3, 6_000)
    assert len(crm_by_parent(crm_sim)) == 6_000
    keys = _first_keys(crm_sim)
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 3, "a chunk was uploaded again"


async def test_cli_cancel_stops_a_running_backfill_cleanly(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    settings = make_settings(
        pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path / "work", max_parallel_jobs=1
    )
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(FILL.format(rel=orders), 20_000)
    await conn.close()
    crm_sim.configure(bulk_job_seconds=1.0)  # each job runs ≥ 2 s: the cancel lands mid-job
    config = _write_config(settings, tmp_path / "streamsync.toml")
    worker = BackfillWorker(settings)
    task = asyncio.create_task(worker.run())
    bid = str(uuid.uuid4())
    try:
        await publish_control(
            settings, encode_control(BackfillStart(bid, f"{unique_name}.orders", 2_000))
        )
        await wait_for(lambda: len(crm_sim.state.jobs) >= 1, timeout=30, message="no job")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamsync",
            "backfill",
            "cancel",
            bid,
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and bid in out.decode()
        rec = await wait_for(lambda: _status_is(settings, bid, "cancelled"), timeout=60)
        assert not task.done(), "the worker must keep running after a cancel"
        # The job in flight finished, was counted and resynced; nothing after it was submitted.
        assert rec.cancel_requested and rec.finished_at is not None
        assert 1 <= rec.jobs == len(crm_sim.state.jobs) < 10
        assert rec.chunks_done == rec.jobs
        assert rec.added == len(crm_by_parent(crm_sim)) == 2_000 * rec.jobs
        assert all(j.status == "COMPLETED" for j in crm_sim.state.jobs.values())
        # A repeated start of the cancelled backfill does not resume it.
        jobs = len(crm_sim.state.jobs)
        await worker.start_backfill(BackfillStart(bid, f"{unique_name}.orders", 2_000))
        again = await backfill_record(settings, bid)
        assert again is not None and again.status == "cancelled"
        assert len(crm_sim.state.jobs) == jobs
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def test_zoho_callback_finishes_the_job_without_waiting_for_the_poll(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: Any, orders: str, tmp_path: Path
) -> None:
    """poll_interval_s = 60: the job (≈ 0.6 s) completes within seconds only if the
    simulator's POST to the ops server's callback route wakes the worker up."""
    from streamsync.ops.server import BULK_CALLBACK_PATH, OpsServer
    from streamsync.settings import OpsSettings

    async with OpsServer(OpsSettings(host="127.0.0.1", port=0)) as ops:
        url = f"http://127.0.0.1:{ops.port}{BULK_CALLBACK_PATH}"
        settings = make_settings(
            pg_dsn, kafka_bootstrap, unique_name, crm_sim, tmp_path, callback_url=url
        )
        settings = settings.model_copy(
            update={"backfill": settings.backfill.model_copy(update={"poll_interval_s": 60.0})}
        )
        await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute(FILL.format(rel=orders), 1_500)
        await conn.close()
        crm_sim.configure(bulk_job_seconds=0.3)
        worker = BackfillWorker(settings)
        task = asyncio.create_task(worker.run())
        bid = str(uuid.uuid4())
        try:
            await publish_control(
                settings, encode_control(BackfillStart(bid, f"{unique_name}.orders", 1_500))
            )
            await wait_for(lambda: len(crm_sim.state.jobs) == 1, timeout=30, message="no job")
            started = time.monotonic()
            done = await wait_for(lambda: _status_is(settings, bid, "done"), timeout=15)
            assert time.monotonic() - started < 15 < settings.backfill.poll_interval_s
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
    [job] = crm_sim.state.jobs.values()
    assert job.callback_url == url and job.callback_status == 200
    assert (done.jobs, done.added) == (1, 1_500)
