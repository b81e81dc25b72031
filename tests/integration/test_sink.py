"""Sink against real Kafka and Postgres (state schema) and the CRM simulator.

Change events are produced straight to the change topic (capture is covered by test_e2e*).
"""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

from streamsync.dlq import list_dead_letters
from streamsync.events import ChangeEvent, Position
from streamsync.sink import Sink
from streamsync.store import record_map
from streamsync.store.credits import credits_24h
from tests.integration.test_sink_helpers import (
    crm_view,
    differences,
    expected_crm,
    failed_keys,
    poison_last_versions,
    sink_env,
)
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture


def _row(key: int, version: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": key,
        "order_number": f"ORD-{key:08d}-{version}",
        "customer_email": f"c{key}@example.com",
        "amount": f"{rng.randrange(100, 100000) / 100:.2f}",
        "currency": rng.choice(["EUR", "USD"]),
        "status": rng.choice(["new", "paid", "shipped"]),
        "notes": None if rng.random() < 0.5 else f"note {version}",
    }


def make_changes(
    n: int, keys: int, *, deletes: float = 0.05, toast: float = 0.1, seed: int = 1, lsn0: int = 1000
) -> tuple[list[ChangeEvent], dict[str, dict[str, Any] | None]]:
    """A change stream over ``keys`` keys and the final table it leads to."""
    rng = random.Random(seed)
    table: dict[int, dict[str, Any] | None] = {}
    events: list[ChangeEvent] = []
    for i in range(n):
        key = rng.randrange(keys)
        pos = Position(lsn0 + i, 0)
        current = table.get(key)
        if current is not None and rng.random() < deletes:
            table[key] = None
            events.append(ChangeEvent("d", "public.x", [key], None, pos, ts_ms=0))
            continue
        row = _row(key, i, rng)
        unchanged: list[str] = []
        if current is not None and rng.random() < toast:
            unchanged = ["notes"]
            row.pop("notes")
            row = {**row, "notes": current.get("notes")}
            after = {k: v for k, v in row.items() if k != "notes"}
        else:
            after = dict(row)
        table[key] = row
        op = "u" if current is not None else "c"
        events.append(ChangeEvent(op, "public.x", [key], after, pos, unchanged=unchanged))
    final = {f"[{k}]": v for k, v in table.items()}
    return events, final


def _retable(events: list[ChangeEvent], table: str) -> list[ChangeEvent]:
    return [
        ChangeEvent(e.op, table, e.key, e.after, e.pos, ts_ms=e.ts_ms, unchanged=e.unchanged)
        for e in events
    ]


async def test_sink_coalesces_and_syncs_exactly(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        events, final = make_changes(3000, 400)
        await env.produce(_retable(events, env.table))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        assert differences(expected_crm(env.settings, final), crm_view(crm_sim)) == []
        stats = crm_sim.state.stats()
        assert stats["max_records_per_call"] <= 100
        sent = sum(crm_sim.state.records_per_call("upsert"))
        assert 0 < sent < len(events)  # coalescing
        assert sink.stats.dead_letters == 0
        conn = await asyncpg.connect(pg_dsn)
        try:
            counts = await record_map.counts(conn, env.settings.postgres.state_schema)
            journaled = await credits_24h(conn, env.settings.postgres.state_schema)
        finally:
            await conn.close()
        live = sum(1 for v in final.values() if v is not None)
        assert counts.get("ok", 0) == live
        # every credit the sink spent is in the shared journal (the simulator agrees)
        assert journaled == stats["credits_used"] > 0

        # a second run over the same (committed) topic makes no call
        calls = dict(crm_sim.state.calls_per_api)
        await Sink(env.settings, until_idle=True).run()
        assert dict(crm_sim.state.calls_per_api) == calls


async def test_rejected_and_undecodable_records_go_to_the_dlq(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        events, final = make_changes(600, 200, deletes=0, toast=0, seed=3)
        events = _retable(events, env.table)
        # plant invalid records: the last version of every 20th key is poisoned
        poisoned = poison_last_versions(events, final, lambda ks: [k for k in ks if k % 20 == 0])
        await env.produce(events)
        await env.produce([(b"[999999]", b"not json at all")])
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        assert sink.stats.dead_letters == len(poisoned) + 1, sink.stats
        letters = await list_dead_letters(env.settings.kafka.client_options(), env.name)
        assert len(letters) == len(poisoned) + 1
        by_code: dict[str, set[Any]] = {}
        for letter in letters:
            by_code.setdefault(letter.reason_code, set()).add(
                letter.key[0] if letter.key else letter.raw
            )
        assert by_code.get("INVALID_DATA") == poisoned
        assert by_code.get("UNDECODABLE") == {b"not json at all"}
        invalid = [x for x in letters if x.reason_code == "INVALID_DATA"]
        assert all(x.details.get("api_name") == "Name" for x in invalid)
        assert all(x.event is not None and x.attempts >= 1 for x in invalid)

        crm = crm_view(crm_sim)
        exp = expected_crm(env.settings, final)
        # poisoned keys may hold an older (valid) version; every other key is exact
        assert differences(exp, {p: r for p, r in crm.items() if int(p) not in poisoned}) == []
        failed = await failed_keys(pg_dsn, env.settings, env.table)
        assert set(failed) == poisoned
        assert set(failed.values()) == {"INVALID_DATA"}


@pytest.mark.crm_sim(bulk_job_seconds=0.05)
async def test_a_large_backlog_goes_through_bulk_write(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        events, final = make_changes(8000, 40000, deletes=0, toast=0, seed=5)
        await env.produce(_retable(events, env.table))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()
        assert differences(expected_crm(env.settings, final), crm_view(crm_sim)) == []
        stats = crm_sim.state.stats()
        assert len(stats["bulk_jobs"]) == 1
        assert stats["credits_used"] <= 600  # one job (500) + a few calls, not ~730 upsert credits


@pytest.mark.crm_sim(bulk_job_seconds=0.05)
async def test_a_backlog_of_several_jobs_is_cut_into_jobs_of_at_most_max_bulk_records(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    """A full bulk window plus what the same poll added after it must not become one file
    (Zoho refuses more than 25,000 rows; here the cap is 1,000 so the test stays small)."""
    async with sink_env(
        unique_name,
        pg_dsn,
        kafka_bootstrap,
        crm_sim,
        sink={"bulk_threshold": 500, "max_bulk_records": 1000},
    ) as env:
        events, final = make_changes(6000, 4000, deletes=0, toast=0, seed=9)
        await env.produce(_retable(events, env.table))
        sink = Sink(env.settings, until_idle=True)
        await sink.run()
        assert differences(expected_crm(env.settings, final), crm_view(crm_sim)) == []
        jobs = crm_sim.state.stats()["bulk_jobs"]
        assert len(jobs) >= 2
        assert max(job["rows"] for job in jobs.values()) <= 1000, jobs


async def test_a_second_sink_joining_triggers_a_revoke_flush_without_loss_or_duplicates(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    import asyncio

    from tests.helpers import wait_for

    crm_sim.configure(latency_ms=20)  # calls are in flight when the rebalance comes
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim, partitions=4) as env:
        events, final = make_changes(6000, 800, seed=9)
        events = _retable(events, env.table)
        first, second = Sink(env.settings), Sink(env.settings)
        t1 = asyncio.create_task(first.run())
        try:
            await env.produce(events[:3000])
            await wait_for(lambda: first.stats.records_sent > 0, timeout=30)
            t2 = asyncio.create_task(second.run())
            try:
                # the first sink flushed and committed on revoke; both now own partitions
                await wait_for(lambda: first.stats.revokes >= 1, timeout=60)
                await wait_for(lambda: second._assigned and first._assigned, timeout=60)
                await env.produce(events[3000:])
                expected = expected_crm(env.settings, final)
                await wait_for(
                    lambda: differences(expected, crm_view(crm_sim)) == [],
                    timeout=60,
                    message=lambda: "; ".join(differences(expected, crm_view(crm_sim))[:5]),
                )
                await wait_for(lambda: second.stats.records_sent > 0, timeout=30)
            finally:
                second.stop()
                await t2
        finally:
            first.stop()
            await t1
        assert first.stats.commits > 0 and second.stats.commits > 0
        crm_view(crm_sim)  # one record per parent_id


async def test_dlq_replay_resends_the_dead_letters_once(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    from streamsync.dlq import replay_dead_letters

    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        events, _ = make_changes(50, 10**9, deletes=0, toast=0, seed=8)  # distinct keys
        events = _retable(events, env.table)
        bad = [
            ChangeEvent(e.op, e.table, e.key, {**(e.after or {}), "order_number": "POISON"}, e.pos)
            for e in events[:5]
        ]
        await env.produce(bad + events[5:])
        await Sink(env.settings, until_idle=True).run()
        assert len(crm_view(crm_sim)) == len({e.key[0] for e in events[5:]})

        crm_sim.configure(poison_values=())  # "the CRM was fixed": the same records now pass
        options = env.settings.kafka.client_options()
        assert await replay_dead_letters(options, env.name) == (5, 0)
        assert await replay_dead_letters(options, env.name) == (0, 0)  # each letter once
        await Sink(env.settings, until_idle=True).run()
        crm = crm_view(crm_sim)
        assert {str(e.key[0]) for e in bad} <= set(crm)
        assert all(crm[str(e.key[0])]["Name"] == "POISON" for e in bad)
        failed = await failed_keys(pg_dsn, env.settings, env.table)
        assert failed == {}


async def test_stop_flushes_the_window_and_commits_before_returning(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    """What SIGTERM does (ops/lifecycle calls ``stop()``): the pending window is sent, its
    outcomes are committed (aiokafka's own stop() commits nothing), and the next owner of the
    group starts past them without a single CRM call."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streamsync.kafka.admin import end_offsets
    from tests.helpers import wait_for

    # a window that would wait a minute: only the shutdown can flush it in time
    async with sink_env(
        unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink={"max_wait_s": 60}
    ) as env:
        events, final = make_changes(80, 80, deletes=0, seed=11)
        sink = Sink(env.settings)
        task = asyncio.create_task(sink.run())
        try:
            await env.produce(_retable(events, env.table))
            await wait_for(lambda: sink.stats.events == len(events), timeout=30)
            assert crm_sim.state.calls_per_api.get("upsert", 0) == 0  # still pending
        finally:
            sink.stop()
            await asyncio.wait_for(task, timeout=30)

        assert sink.stats.flush_reasons.get("shutdown", 0) >= 1
        assert differences(expected_crm(env.settings, final), crm_view(crm_sim)) == []
        ends = await end_offsets(env.settings.kafka, [env.topic])
        probe = AIOKafkaConsumer(
            group_id=env.settings.sink.group_id,
            enable_auto_commit=False,
            **env.settings.kafka.client_options(),
        )
        await probe.start()
        try:
            for tp, end in ends.items():
                committed = await probe.committed(TopicPartition(tp.topic, tp.partition))
                assert (committed or 0) == end, (tp, committed, end)
        finally:
            await probe.stop()
        calls = dict(crm_sim.state.calls_per_api)
        await Sink(env.settings, until_idle=True).run()
        assert dict(crm_sim.state.calls_per_api) == calls


@pytest.mark.crm_sim(bulk_job_seconds=0.05)
async def test_rows_a_bulk_job_skips_are_dead_letters_and_the_rest_is_synced(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with sink_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        events, final = make_changes(8000, 40000, deletes=0, toast=0, seed=15)
        events = _retable(events, env.table)
        poisoned = poison_last_versions(events, final, lambda ks: ks[::100])
        await env.produce(events)
        sink = Sink(env.settings, until_idle=True)
        await sink.run()

        jobs = crm_sim.state.stats()["bulk_jobs"]
        assert len(jobs) == 1 and sum(j["skipped"] for j in jobs.values()) == len(poisoned)
        assert differences(expected_crm(env.settings, final), crm_view(crm_sim)) == []
        letters = await list_dead_letters(env.settings.kafka.client_options(), env.name)
        assert {x.key[0] for x in letters if x.key} == poisoned and len(letters) == len(poisoned)
        assert {x.reason_code for x in letters} == {"INVALID_DATA"}
        assert all(x.event is not None for x in letters)  # the original event, for a replay
        failed = await failed_keys(pg_dsn, env.settings, env.table)
        assert set(failed) == poisoned
