"""Shared helpers for the capture integration tests (real Postgres and Kafka)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamsync.capture import setup
from streamsync.events import ChangeEvent, decode_change
from streamsync.kafka.topics import change_topic
from streamsync.settings import Settings, load_settings, settings_env
from tests.helpers import wait_for


@dataclass
class CaptureEnv:
    name: str
    table: str  # schema.table
    settings: Settings
    dsn: str
    bootstrap: str

    @property
    def topic(self) -> str:
        return change_topic(self.settings.kafka.topic_prefix, self.table)

    def env(self) -> dict[str, str]:
        """STREAMSYNC_* variables for a `python -m streamsync capture` subprocess."""
        return {**settings_env(self.settings), "STREAMSYNC_OPS__PORT": "0"}


def make_settings(name: str, dsn: str, bootstrap: str, table: str, **capture: Any) -> Settings:
    return load_settings(
        postgres={"dsn": dsn, "slot": name, "publication": name, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name, "partitions": 3},
        capture={"heartbeat_interval_s": 0.5, "status_interval_s": 0.2, **capture},
        tables=[
            {
                "source": table,
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
            }
        ],
    )


@contextlib.asynccontextmanager
async def capture_env(
    name: str, dsn: str, bootstrap: str, ddl: str, **capture: Any
) -> AsyncIterator[CaptureEnv]:
    """A fresh table (``ddl`` with ``{table}``), slot, publication and topics; all dropped after."""
    table = f"public.{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ddl.format(table=table))
    finally:
        await conn.close()
    settings = make_settings(name, dsn, bootstrap, table, **capture)
    env = CaptureEnv(name, table, settings, dsn, bootstrap)
    try:
        await setup(settings)
        yield env
    finally:
        await drop_env(env)


async def drop_env(env: CaptureEnv) -> None:
    conn = await asyncpg.connect(env.dsn)
    try:

        async def slot_inactive() -> bool:
            active = await conn.fetchval(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1", env.name
            )
            return not active

        with contextlib.suppress(AssertionError):
            await wait_for(slot_inactive, timeout=15, message="slot still active")
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = $1",
            env.name,
        )
        await conn.execute(f'DROP PUBLICATION IF EXISTS "{env.name}"')
        await conn.execute(f"DROP TABLE IF EXISTS {env.table}")
        await conn.execute(f'DROP SCHEMA IF EXISTS "{env.name}_state" CASCADE')
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(env.name + ".")]
        if topics:
            with contextlib.suppress(Exception):
                await admin.delete_topics(topics)
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, ChangeEvent]]:
    """Every (key, event) on ``topic`` now, across partitions, each partition in order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes, ChangeEvent]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=10_000)
            for tp, records in batch.items():
                for rec in records:
                    out.append((rec.key, decode_change(rec.value)))
                    if rec.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
