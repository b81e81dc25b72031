"""End to end: Postgres changes -> capture -> Kafka -> sink -> CRM simulator (all real but Zoho).

Each test ends when the CRM equals the table (deadline-based wait), then checks the call log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streamsync.capture import Capture
from streamsync.dlq import list_dead_letters
from streamsync.sink import Sink
from tests.helpers import wait_for
from tests.integration.test_sink_helpers import (
    E2EEnv,
    crm_view,
    differences,
    e2e_env,
    failed_keys,
    make_table_changes,
)
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture

NO_BULK = {"bulk_threshold": 10_000_000}


@contextlib.asynccontextmanager
async def running(*roles: Capture | Sink) -> AsyncIterator[None]:
    """Run roles as tasks; stop them (and surface their errors) on exit."""
    tasks = [asyncio.create_task(r.run(), name=type(r).__name__) for r in roles]
    try:
        yield
        for t in tasks:
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        for r in roles:
            r.stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]


async def crm_equals_table(env: E2EEnv, limit_s: float) -> None:
    async def equal() -> bool:
        return differences(await env.expected(), crm_view(env.sim)) == []

    async def why() -> str:
        return "; ".join(differences(await env.expected(), crm_view(env.sim))[:5])

    try:
        await wait_for(equal, timeout=limit_s, interval=0.5, message="CRM differs from the table")
    except AssertionError:
        raise AssertionError(await why()) from None


@pytest.mark.slow
async def test_50k_changes_over_5k_keys_sync_exactly_and_cheaply(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink=NO_BULK) as env:
        sink = Sink(env.settings)
        async with running(Capture(env.settings), sink):
            changes = await make_table_changes(pg_dsn, env.table, 50_000, 5_000)
            await crm_equals_table(env, limit_s=150)

        stats = crm_sim.state.stats()
        assert stats["max_records_per_call"] <= 100
        upserted = sum(crm_sim.state.records_per_call("upsert"))
        deleted = sum(crm_sim.state.records_per_call("delete"))
        sent = upserted + deleted
        assert sent <= changes  # coalescing
        assert deleted > 0
        assert stats["credits_used"] <= 1.05 * sent / 10, (stats["credits_used"], sent)


async def test_one_percent_invalid_records_are_exactly_the_dead_letters(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink=NO_BULK) as env:
        sink = Sink(env.settings)
        async with running(Capture(env.settings), sink):
            await make_table_changes(pg_dsn, env.table, 6_000, 2_000, delete_rate=0)
            conn = await asyncpg.connect(pg_dsn)
            try:
                ids = [r["id"] for r in await conn.fetch(f"SELECT id FROM {env.table} ORDER BY id")]
                planted = set(ids[::100])  # 1 %
                await conn.execute(
                    f"UPDATE {env.table} SET order_number = 'POISON' WHERE id = ANY($1::bigint[])",
                    list(planted),
                )
            finally:
                await conn.close()

            async def letters() -> list[object]:
                found = await list_dead_letters(env.settings.kafka.client_options(), env.name)
                return found if len(found) >= len(planted) else []

            await wait_for(letters, timeout=60, interval=0.5, message="dead letters missing")
            # everything else synced: the CRM equals the table except the planted rows
            expected = {
                pid: rec for pid, rec in (await env.expected()).items() if int(pid) not in planted
            }
            await wait_for(
                lambda: (
                    differences(
                        expected,
                        {p: r for p, r in crm_view(crm_sim).items() if int(p) not in planted},
                    )
                    == []
                ),
                timeout=60,
                message="CRM differs",
            )

        found = await list_dead_letters(env.settings.kafka.client_options(), env.name)
        assert {letter.key[0] for letter in found if letter.key} == planted
        assert len(found) == len(planted)
        assert {letter.reason_code for letter in found} == {"INVALID_DATA"}
        assert all(letter.details.get("api_name") == "Name" for letter in found)
        failed = await failed_keys(pg_dsn, env.settings, env.table)
        assert set(failed) == planted


async def test_429_500_and_latency_still_converge(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    crm_sim.configure(rate_429=0.05, rate_500=0.02, latency_ms=20, latency_jitter_ms=20)
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink=NO_BULK) as env:
        async with running(Capture(env.settings), Sink(env.settings)):
            await make_table_changes(pg_dsn, env.table, 8_000, 1_500, seed=21)
            await crm_equals_table(env, limit_s=120)
        stats = crm_sim.state.stats()
        assert stats["faults"], "the simulator injected no fault"
        assert stats["max_records_per_call"] <= 100


async def test_changes_made_while_the_sink_is_stopped_go_through_bulk_write(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        changes = await make_table_changes(
            pg_dsn, env.table, 20_000, 16_000, delete_rate=0, txn_size=1000
        )
        # capture publishes everything while no sink runs
        await asyncio.wait_for(Capture(env.settings, until_idle=True).run(), timeout=120)
        async with running(Capture(env.settings), Sink(env.settings)):
            await crm_equals_table(env, limit_s=120)
        stats = crm_sim.state.stats()
        calls = stats["calls"]
        assert sum(crm_sim.state.records_per_call("upsert")) == 0
        jobs = len(stats["bulk_jobs"])
        assert jobs == calls["bulk.create"] == 1, stats["bulk_jobs"]
        upsert_cost = changes / 10  # one record per change through Upsert Records
        assert 500 * jobs <= upsert_cost / 4
        # Every other credit is one of Zoho's 1-credit calls around the job: the org id for
        # the upload header (once per process), the upload, the status polls. The result
        # download is not metered. Nothing else was spent.
        around = calls.get("org", 0) + calls["bulk.upload"] + calls["bulk.status"]
        assert calls.get("org", 0) <= 1 and calls["bulk.upload"] == jobs
        assert calls["bulk.status"] <= 3 * jobs, calls
        assert stats["credits_used"] == 500 * jobs + around, (stats["credits_used"], calls)


async def test_sync_flag_is_written_back_without_a_capture_loop(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(
        unique_name,
        pg_dsn,
        kafka_bootstrap,
        crm_sim,
        sink=NO_BULK,
        table_extra={"sync_flag_column": "synced"},
    ) as env:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f"ALTER TABLE {env.table} ADD COLUMN synced boolean")
        finally:
            await conn.close()
        async with running(Capture(env.settings), Sink(env.settings)):
            await make_table_changes(pg_dsn, env.table, 2_000, 500, delete_rate=0, seed=4)
            conn = await asyncpg.connect(pg_dsn)
            try:
                await conn.execute(
                    f"UPDATE {env.table} SET order_number = 'POISON' WHERE id = ANY($1::bigint[])",
                    [1, 2, 3],
                )

                async def flags_final() -> bool:
                    rows = await conn.fetch(f"SELECT id, synced FROM {env.table}")
                    return all(r["synced"] is (r["id"] > 3) for r in rows)

                await wait_for(flags_final, timeout=60, message="sync flags not written back")
            finally:
                await conn.close()
        rows = await env.table_rows()
        upserted = sum(crm_sim.state.records_per_call("upsert"))
        # at most one extra (coalesced) round per flag flip, never an endless loop
        assert upserted <= 2 * len(rows) + 2_000, upserted
