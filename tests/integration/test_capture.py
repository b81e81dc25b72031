"""Capture against the real stack: slot → pgoutput → Kafka, with every event checked."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from streamsync.capture import Capture, setup
from streamsync.capture.replication import slot_lag_bytes
from streamsync.errors import SlotInUseError
from streamsync.events import encode_key
from streamsync.kafka.admin import end_offsets
from tests.helpers import wait_for
from tests.integration.capture_support import CaptureEnv, capture_env, read_topic

ORDERS = """
CREATE TABLE {table} (
    id bigint PRIMARY KEY,
    amount numeric(12, 2),
    paid boolean,
    created timestamptz,
    day date,
    doc jsonb,
    tags text[],
    blob bytea,
    uid uuid,
    note text
)
"""


async def run_until_idle(env: CaptureEnv) -> Capture:
    cap = Capture(env.settings, until_idle=True)
    await asyncio.wait_for(cap.run(), timeout=60)
    return cap


async def test_insert_update_delete_types_and_rollback(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ORDERS) as env:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"INSERT INTO {env.table} VALUES (1, 1234.50, true,"
                " '2024-05-06 07:08:09.123456+02', '2024-05-06', '{{\"a\": [1, 2.5]}}',"
                " ARRAY['x', 'y z', NULL], '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
                " NULL)".replace("{{", "{").replace("}}", "}")
            )
            async with conn.transaction():  # multi-row transaction
                await conn.execute(f"INSERT INTO {env.table} (id, note) VALUES (2, 'two')")
                await conn.execute(f"INSERT INTO {env.table} (id, note) VALUES (3, 'three')")
                await conn.execute(f"UPDATE {env.table} SET note = 'dos' WHERE id = 2")
            tx = conn.transaction()
            await tx.start()
            await conn.execute(f"INSERT INTO {env.table} (id, note) VALUES (99, 'rolled back')")
            await tx.rollback()
            await conn.execute(f"DELETE FROM {env.table} WHERE id = 3")
        finally:
            await conn.close()

        cap = await run_until_idle(env)
        records = await read_topic(kafka_bootstrap, env.topic)

    events = sorted((e for _, e in records), key=lambda e: e.pos)
    assert [(e.op, e.key) for e in events] == [
        ("c", [1]),
        ("c", [2]),
        ("c", [3]),
        ("u", [2]),
        ("d", [3]),
    ]
    first = events[0]
    assert first.after == {
        "id": 1,
        "amount": "1234.50",
        "paid": True,
        "created": "2024-05-06T05:08:09.123456+00:00",
        "day": "2024-05-06",
        "doc": {"a": [1, 2.5]},
        "tags": ["x", "y z", None],
        "blob": "\\xdeadbeef",
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "note": None,
    }
    assert first.unchanged == []
    # one transaction: one commit LSN, consecutive seq
    tx_events = events[1:4]
    assert len({e.pos.lsn for e in tx_events}) == 1
    assert [e.pos.seq for e in tx_events] == [0, 1, 2]
    assert len({e.xid for e in tx_events}) == 1
    assert events[4].after is None
    assert all(e.ts_ms > 0 and e.source == "stream" for e in events)
    # Kafka key = canonical primary key
    assert all(key == encode_key(e.key) for key, e in records)
    assert cap.stats.events == 5
    assert cap.stats.flushed_lsn >= events[-1].pos.lsn


async def test_unchanged_toast_is_listed_not_nulled(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY, big text, small text)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        try:
            # random-ish text that does not compress below the TOAST threshold (> 8 KB)
            big = await conn.fetchval(
                "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i"
            )
            assert len(big) > 8192
            await conn.execute(f"INSERT INTO {env.table} VALUES (1, $1, 'a')", big)
            await conn.execute(f"UPDATE {env.table} SET small = 'b' WHERE id = 1")
        finally:
            await conn.close()
        await run_until_idle(env)
        events = sorted(
            (e for _, e in await read_topic(kafka_bootstrap, env.topic)), key=lambda e: e.pos
        )
    assert [e.op for e in events] == ["c", "u"]
    assert events[0].after is not None and events[0].after["big"] == big
    update = events[1]
    assert update.unchanged == ["big"]
    assert update.after == {"id": 1, "small": "b"}  # absent, never null


async def test_added_and_dropped_column_without_restart(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY, a text, b text)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        cap = Capture(env.settings)
        task = asyncio.create_task(cap.run())
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f"INSERT INTO {env.table} VALUES (1, 'a1', 'b1')")
            await wait_for(lambda: cap.stats.events >= 1, timeout=30)
            await conn.execute(f"ALTER TABLE {env.table} ADD COLUMN c int")
            await conn.execute(f"INSERT INTO {env.table} VALUES (2, 'a2', 'b2', 7)")
            await conn.execute(f"ALTER TABLE {env.table} DROP COLUMN b")
            await conn.execute(f"UPDATE {env.table} SET a = 'a1x' WHERE id = 1")
            await wait_for(lambda: cap.stats.events >= 3, timeout=30)
        finally:
            await conn.close()
            cap.stop()
            await asyncio.wait_for(task, timeout=30)
        events = sorted(
            (e for _, e in await read_topic(kafka_bootstrap, env.topic)), key=lambda e: e.pos
        )
    assert [e.after for e in events] == [
        {"id": 1, "a": "a1", "b": "b1"},
        {"id": 2, "a": "a2", "b": "b2", "c": 7},
        {"id": 1, "a": "a1x", "c": None},
    ]


async def test_second_capture_on_same_slot_fails_fast(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        first = Capture(env.settings)
        task = asyncio.create_task(first.run())
        try:
            await wait_for(lambda: first.stats.heartbeats >= 1, timeout=30)
            second = Capture(env.settings)
            with pytest.raises(SlotInUseError, match="already in use"):
                await asyncio.wait_for(second.run(), timeout=20)
        finally:
            first.stop()
            await asyncio.wait_for(task, timeout=30)


async def test_idle_slot_advances_with_heartbeats(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        other = f"{unique_name}_other"
        await conn.execute(f"CREATE TABLE {other} (id serial PRIMARY KEY, v text)")
        cap = Capture(env.settings)
        task = asyncio.create_task(cap.run())
        try:
            start = await conn.fetchval(
                "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = $1",
                env.name,
            )
            # other tables get writes, the captured one stays idle
            await conn.execute(f"INSERT INTO {other} (v) SELECT 'x' FROM generate_series(1, 5000)")
            written = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")

            async def advanced() -> bool:
                flushed = await conn.fetchval(
                    "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
                    " WHERE slot_name = $1",
                    env.name,
                )
                return bool(flushed >= written)

            await wait_for(advanced, timeout=30, message="slot did not advance while idle")
            assert cap.stats.events == 0
            assert written > start
            lag = await slot_lag_bytes(pg_dsn, env.name)
            assert lag is not None and lag >= 0  # other sessions may write meanwhile
            assert await slot_lag_bytes(pg_dsn, f"{env.name}_missing") is None
            assert cap.stats.slot_lag_bytes is not None
        finally:
            cap.stop()
            await asyncio.wait_for(task, timeout=30)
            await conn.execute(f"DROP TABLE IF EXISTS {other}")
            await conn.close()


async def test_setup_is_idempotent(pg_dsn: str, kafka_bootstrap: str, unique_name: str) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        again = await setup(env.settings)
        assert again.slot_created is False
        assert again.topics_created == []
        prefix = env.settings.kafka.topic_prefix
        assert again.topics == [env.topic, f"{prefix}.control", f"{prefix}.dlq"]
        offsets = await end_offsets(env.settings.kafka, again.topics)
        per_topic = Counter(tp.topic for tp in offsets)
        assert per_topic == {t: env.settings.kafka.partitions for t in again.topics}
        assert all(v == 0 for v in offsets.values())


async def test_truncate_is_counted_never_a_mass_delete(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f"INSERT INTO {env.table} SELECT generate_series(1, 10)")
            await conn.execute(f"TRUNCATE {env.table}")
            await conn.execute(f"INSERT INTO {env.table} VALUES (11)")
        finally:
            await conn.close()
        cap = await run_until_idle(env)
        events = [e for _, e in await read_topic(kafka_bootstrap, env.topic)]
    assert cap.stats.truncates == 1
    assert sorted(e.key[0] for e in events) == list(range(1, 12))
    assert {e.op for e in events} == {"c"}


async def test_stop_waits_for_acks_and_flushes_the_slot(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY)"
    # periodic status updates and heartbeats far away: only stop() can flush the slot
    async with capture_env(
        unique_name, pg_dsn, kafka_bootstrap, ddl, status_interval_s=60, heartbeat_interval_s=3600
    ) as env:
        cap = Capture(env.settings)
        task = asyncio.create_task(cap.run())
        conn = await asyncpg.connect(pg_dsn)
        try:
            await wait_for(lambda: cap.stats.heartbeats >= 1, timeout=30)
            await conn.execute(f"INSERT INTO {env.table} SELECT generate_series(1, 500)")
            await wait_for(lambda: cap.stats.events >= 500, timeout=30)
            cap.stop()
            cap.stop()  # idempotent
            await asyncio.wait_for(task, timeout=30)
            flushed = await conn.fetchval(
                "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
                " WHERE slot_name = $1",
                env.name,
            )
        finally:
            await conn.close()
        events = await read_topic(kafka_bootstrap, env.topic)
    assert len(events) == 500
    assert cap.acks.inflight == 0
    commit_lsn = max(e.pos.lsn for _, e in events)
    assert flushed > commit_lsn  # the commit's end: past every event of the transaction


async def test_sync_flag_writeback_is_not_captured(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    """The sink's write-back transaction (marked by a transactional logical message) is not
    published, so writing the sync flag never feeds back into the sink."""
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY, note text, synced boolean)"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(f"INSERT INTO {env.table} VALUES (1, 'a', NULL), (2, 'b', NULL)")
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_logical_emit_message(true, 'streamsync.writeback', $1)", env.table
                )
                await conn.execute(f"UPDATE {env.table} SET synced = true WHERE id IN (1, 2)")
            await conn.execute(f"UPDATE {env.table} SET note = 'c' WHERE id = 2")
        finally:
            await conn.close()
        await run_until_idle(env)
        events = sorted(
            (e for _, e in await read_topic(kafka_bootstrap, env.topic)), key=lambda e: e.pos
        )
    assert [(e.op, e.key) for e in events] == [("c", [1]), ("c", [2]), ("u", [2])]
    assert events[-1].after == {"id": 2, "note": "c", "synced": True}


async def test_protocol_version_2_is_used_and_gives_the_same_events(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ORDERS, proto_version=2) as env:
        conn = await asyncpg.connect(pg_dsn)
        cap = Capture(env.settings)
        task = asyncio.create_task(cap.run())
        try:
            await conn.execute(f"INSERT INTO {env.table} (id, note) VALUES (1, 'one'), (2, 'two')")
            await conn.execute(f"DELETE FROM {env.table} WHERE id = 1")

            async def started_with_v2() -> bool:
                query = await conn.fetchval(
                    "SELECT a.query FROM pg_stat_activity a JOIN pg_replication_slots s"
                    " ON s.active_pid = a.pid WHERE s.slot_name = $1",
                    env.name,
                )
                return query is not None and "proto_version" in query and "'2'" in query

            await wait_for(started_with_v2, timeout=30, message="no walsender with protocol 2")

            async def three_events() -> list[tuple[str, int]] | None:
                events = [e for _k, e in await read_topic(kafka_bootstrap, env.topic)]
                return sorted((e.op, e.key[0]) for e in events) if len(events) >= 3 else None

            events = await wait_for(three_events, timeout=30, message="events missing")
            assert events == [("c", 1), ("c", 2), ("d", 1)]
        finally:
            cap.stop()
            await asyncio.wait_for(task, timeout=30)
            await conn.close()
