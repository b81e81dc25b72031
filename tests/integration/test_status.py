"""`streamsync status --json` against the real stack: slot lag, consumer lag, DLQ, record map.

A unique table, slot, publication, state schema and topic prefix; nothing consumes the slot,
so rows inserted after setup show as slot lag; N events produced to the change topic and not
committed by the sink group show as consumer lag (minus what the test commits on purpose).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamsync.capture.provision import setup
from streamsync.events import ChangeEvent, Position, encode_change
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic, dlq_topic
from streamsync.settings import Settings, load_settings
from streamsync.store import record_map
from streamsync.teardown import teardown
from tests.helpers import cli_env, streamsync_cli

EVENTS = 30


def make_settings(name: str, dsn: str, bootstrap: str) -> Settings:
    return load_settings(
        postgres={"dsn": dsn, "slot": name, "publication": name, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name, "partitions": 3},
        sink={"group_id": f"{name}-sink"},
        tables=[
            {
                "source": f"public.{name}",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
            }
        ],
    )


async def status_json(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    code, out, err = await streamsync_cli(env, "status", "--json", timeout=90)
    assert out.strip(), err
    return code, orjson.loads(out), err


@contextlib.asynccontextmanager
async def status_env(name: str, dsn: str, bootstrap: str) -> AsyncIterator[Settings]:
    settings = make_settings(name, dsn, bootstrap)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, v text)")
    finally:
        await conn.close()
    try:
        await setup(settings)
        yield settings
    finally:
        await teardown(settings, force=True, drop_tables=True)


async def commit_partition(settings: Settings, topic: str, partition: int, offset: int) -> None:
    """Commit ``offset`` for the sink group on one partition (as a sink would have)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.sink.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_status_json_reports_slot_and_consumer_lag(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    async with status_env(unique_name, pg_dsn, kafka_bootstrap) as settings:
        source = settings.tables[0].source
        topic = change_topic(settings.kafka.topic_prefix, source)
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"INSERT INTO {source} SELECT g, repeat('x', 200) FROM generate_series(1, 500) g"
            )
            await record_map.record_outcomes(
                conn,
                settings.postgres.state_schema,
                [
                    record_map.Outcome(source, "[1]", "z1", 10, 0, "ok"),
                    record_map.Outcome(source, "[2]", "z2", 11, 0, "ok"),
                    record_map.Outcome(source, "[3]", None, 12, 0, "failed", "INVALID_DATA"),
                ],
            )
            await conn.execute(  # two processes' credits in the shared journal
                f'INSERT INTO "{settings.postgres.state_schema}".credit_log VALUES '
                "(now(), 'sink@a', 12), (now(), 'backfill-worker@b', 500),"
                " (now() - interval '25 hours', 'sink@a', 999)"
            )
            pg_lag = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                " FROM pg_replication_slots WHERE slot_name = $1",
                unique_name,
            )
        finally:
            await conn.close()

        producer = create_producer(settings.kafka)
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(
                    topic,
                    encode_change(ChangeEvent("c", source, [i], {"id": i}, Position(100 + i, 0))),
                    key=orjson.dumps([i]),
                )
                for i in range(EVENTS)
            ]
            for _ in range(2):
                await producer.send_and_wait(dlq_topic(settings.kafka.topic_prefix), b"{}")
        finally:
            await producer.stop()
        on_p0 = sum(1 for meta in sent if meta.partition == 0)
        assert 0 < on_p0 < EVENTS  # keys spread over the partitions (fixed keys: deterministic)
        await commit_partition(settings, topic, 0, on_p0)

        code, data, err = await status_json(cli_env(settings))
        assert code == 0, (data, err)
        assert data["ok"] is True

        slot = data["slot"]
        assert slot["state"] == "ok" and slot["slot"] == unique_name
        assert slot["active"] is False
        assert slot["lag_bytes"] >= pg_lag > 0  # 500 rows of 200 bytes since setup
        assert slot["confirmed_flush_lsn"]

        lag = data["consumer_lag"]
        assert lag["state"] == "ok" and lag["group"] == f"{unique_name}-sink"
        assert lag["total"] == EVENTS - on_p0
        parts = {p["partition"]: p for p in lag["partitions"] if p["topic"] == topic}
        assert set(parts) == {0, 1, 2}
        assert parts[0] == {
            "topic": topic,
            "partition": 0,
            "end": on_p0,
            "committed": on_p0,
            "lag": 0,
        }
        assert sum(p["lag"] for p in parts.values()) == EVENTS - on_p0
        assert all(parts[p]["committed"] is None for p in (1, 2))

        assert data["dlq"] == {
            "state": "ok",
            "topic": dlq_topic(unique_name),
            "messages": 2,
            "partitions": 3,
        }
        assert data["record_map"]["counts"] == {"ok": 2, "failed": 1, "deleted": 0}
        assert data["backfills"] == {"state": "ok", "backfills": []}
        assert data["credits"]["daily_used"] == 512  # the 25-hour-old entry has aged out
        assert data["credits"]["budget"] == settings.zoho.daily_credit_budget

        # Kafka unreachable: its sections are errors, the rest still reported, exit 1
        down = cli_env(settings, STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")
        code, data, err = await status_json(down)
        assert code == 1
        assert "Traceback" not in err
        assert data["ok"] is False
        assert data["consumer_lag"]["state"] == "error"
        assert "kafka" in data["consumer_lag"]["error"]
        assert data["dlq"]["state"] == "error"
        assert data["slot"]["state"] == "ok"
        assert data["record_map"]["state"] == "ok"


async def test_status_says_absent_for_a_missing_slot_and_topics(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    settings = make_settings(unique_name, pg_dsn, kafka_bootstrap)
    code, data, err = await status_json(cli_env(settings))
    assert code == 0, (data, err)
    assert data["slot"] == {"state": "absent", "slot": unique_name}
    assert data["consumer_lag"]["state"] == "absent"
    assert data["consumer_lag"]["topics_absent"] == [f"{unique_name}.public.{unique_name}"]
    assert data["dlq"]["state"] == "absent"
    assert data["record_map"]["state"] == "absent"
