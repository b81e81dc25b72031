"""The dev stack really provides what the project relies on: logical decoding in Postgres,
topics and consumer groups in Kafka."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

from tests.helpers import wait_for


async def test_postgres_logical_replication_slot(pg_conn: Any, unique_name: str) -> None:
    conn = pg_conn
    assert await conn.fetchval("SHOW wal_level") == "logical"
    assert int(await conn.fetchval("SHOW max_replication_slots")) >= 10

    schema, slot, pub = unique_name, f"{unique_name}_slot", f"{unique_name}_pub"
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        await conn.execute(f"CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name text)")
        await conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {schema}.items")
        lsn = await conn.fetchrow(
            "SELECT slot_name, lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot
        )
        try:
            assert lsn["slot_name"] == slot
            row = await conn.fetchrow(
                "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = $1", slot
            )
            assert row is not None
            assert (row["plugin"], row["slot_type"]) == ("pgoutput", "logical")

            await conn.execute(f"INSERT INTO {schema}.items VALUES (1, 'one'), (2, 'two')")
            kinds: list[bytes] = []

            async def decoded_commit() -> bool:
                # SQL decoding only sees flushed WAL: poll until the commit shows up
                changes = await conn.fetch(
                    "SELECT lsn, data FROM pg_logical_slot_get_binary_changes("
                    "$1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)",
                    slot,
                    pub,
                )
                kinds.extend(bytes(c["data"][:1]) for c in changes)
                return b"C" in kinds

            await wait_for(decoded_commit, timeout=30, message="insert not decoded from the slot")
            # pgoutput messages: B(egin), R(elation), I(nsert) x2, C(ommit)
            assert kinds.count(b"I") == 2, kinds
            assert kinds[0] == b"B" and kinds[-1] == b"C", kinds
        finally:
            await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot
        )
        assert left == 0
    finally:
        await conn.execute(f"DROP PUBLICATION IF EXISTS {pub}")
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_kafka_round_trip(kafka_admin: Any, kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"{unique_name}.roundtrip"
    await kafka_admin.create_topics([NewTopic(name=topic, num_partitions=2, replication_factor=1)])
    try:
        await wait_for(
            lambda: _has_topic(kafka_admin, topic), timeout=30, message=f"topic {topic} not visible"
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(10)}
            for key, value in sent.items():
                await producer.send_and_wait(topic, value=value, key=key)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{unique_name}.group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        received: dict[bytes, bytes] = {}
        try:

            async def collect() -> bool:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        received[record.key] = record.value
                return len(received) >= len(sent)

            await wait_for(collect, timeout=30, message="messages not consumed back")
            await consumer.commit()
        finally:
            await consumer.stop()
        assert received == sent
    finally:
        await kafka_admin.delete_topics([topic])


async def _has_topic(admin: Any, topic: str) -> bool:
    return topic in await admin.list_topics()
