"""`streamsync dlq list|replay` through the CLI against the real Kafka broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from streamsync.dlq import publish_dead_letter
from streamsync.events import ChangeEvent, Position, decode_change
from streamsync.kafka.admin import ensure_topics
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic, dlq_topic
from streamsync.settings import load_settings
from tests.helpers import wait_for


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamsync", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _read_all(bootstrap: str, topic: str, expect: int) -> list[ChangeEvent]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[ChangeEvent] = []
    try:

        async def got_all() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(decode_change(m.value) for m in msgs)
            return len(out) >= expect

        await wait_for(got_all, timeout=30, message=f"{expect} events on {topic}")
    finally:
        await consumer.stop()
    return out


async def test_dlq_list_and_replay_cli(pg_dsn: str, kafka_bootstrap: str, unique_name: str) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": unique_name, "partitions": 1}
    )
    changes = change_topic(unique_name, "public.orders")
    await ensure_topics(settings.kafka, [changes, dlq_topic(unique_name)])
    rejected = ChangeEvent(
        op="u",
        table="public.orders",
        key=[7],
        after={"id": 7, "order_number": "POISON"},
        pos=Position(100, 0),
    )
    producer = create_producer(settings.kafka)
    await producer.start()
    try:
        await publish_dead_letter(
            producer,
            unique_name,
            event_or_raw=rejected,
            reason_code="INVALID_DATA",
            message="invalid data in Name",
            details={"api_name": "Name"},
            attempts=1,
        )
        await publish_dead_letter(
            producer,
            unique_name,
            event_or_raw=b"{not json",
            reason_code="UNDECODABLE",
            message="not JSON",
        )
    finally:
        await producer.stop()

    env = {
        "STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMSYNC_KAFKA__TOPIC_PREFIX": unique_name,
    }
    listed = await asyncio.to_thread(_cli, ["dlq", "list"], env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "INVALID_DATA" in lines[0] and "public.orders" in lines[0] and "[7]" in lines[0]
    assert "UNDECODABLE" in lines[1]
    assert "2 dead letters" in listed.stderr

    summary = await asyncio.to_thread(_cli, ["dlq", "list", "--summary"], env)
    assert summary.stdout.split() == ["INVALID_DATA", "1", "UNDECODABLE", "1"]

    replay = await asyncio.to_thread(_cli, ["dlq", "replay"], env)
    assert replay.returncode == 0, replay.stderr
    assert "replayed 1 dead letters (1 passed over)" in replay.stdout
    (event,) = await _read_all(kafka_bootstrap, changes, 1)
    assert (event.op, event.key, event.after) == ("u", [7], rejected.after)

    again = await asyncio.to_thread(_cli, ["dlq", "replay"], env)
    assert "replayed 0 dead letters (0 passed over)" in again.stdout


async def test_filtered_replay_leaves_the_other_letters_for_a_later_replay(
    kafka_bootstrap: str, unique_name: str
) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": unique_name, "partitions": 1}
    )
    changes = change_topic(unique_name, "public.orders")
    await ensure_topics(settings.kafka, [changes, dlq_topic(unique_name)])
    producer = create_producer(settings.kafka)
    await producer.start()
    try:
        for key, code in ((1, "INVALID_DATA"), (2, "DUPLICATE_DATA"), (3, "INVALID_DATA")):
            await publish_dead_letter(
                producer,
                unique_name,
                event_or_raw=ChangeEvent(
                    op="u",
                    table="public.orders",
                    key=[key],
                    after={"id": key, "order_number": f"ORD-{key}"},
                    pos=Position(100 + key, 0),
                ),
                reason_code=code,
                message="rejected",
            )
    finally:
        await producer.stop()
    env = {
        "STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMSYNC_KAFKA__TOPIC_PREFIX": unique_name,
    }

    first = await asyncio.to_thread(_cli, ["dlq", "replay", "--reason", "INVALID_DATA"], env)
    assert first.returncode == 0, first.stderr
    assert "replayed 2 dead letters (1 passed over)" in first.stdout
    # the DUPLICATE_DATA letter was not committed past: a later replay still gets it (and
    # the INVALID_DATA letter after it once more, which is harmless)
    second = await asyncio.to_thread(_cli, ["dlq", "replay"], env)
    assert "replayed 2 dead letters (0 passed over)" in second.stdout
    events = await _read_all(kafka_bootstrap, changes, 4)
    assert [e.key for e in events] == [[1], [3], [2], [3]]
    third = await asyncio.to_thread(_cli, ["dlq", "replay"], env)
    assert "replayed 0 dead letters (0 passed over)" in third.stdout
