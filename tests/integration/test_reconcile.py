"""`streamsync reconcile` against real Postgres and Kafka and the CRM simulator.

A 500-row table is synced into the simulator through the ZohoClient; then one record is deleted
in the CRM (missing), one is created there only (extra) and one is changed (different).
Reconcile must report exactly those; `--repair` (the CLI, as a subprocess) publishes three
resync events with the right ops; the Sink applies them and reconcile reports in sync.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamsync.events import ChangeEvent, decode_change
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.kafka.topics import change_topic
from streamsync.reconcile_run import reconcile
from streamsync.settings import Settings, load_settings
from streamsync.sink import Sink
from streamsync.store.schema import ensure_schema
from streamsync.zoho.client import ZohoClient
from streamsync.zoho.records import map_record
from tests.helpers import cli_env, streamsync_cli
from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

ROWS = 500
FIELDS = {
    "order_number": "Name",
    "amount": "Amount",
    "status": "Status",
    "order_date": {"field": "Order_Date", "format": "yyyy-MM-dd"},
}


def table_mapping(source: str) -> dict[str, Any]:
    return {
        "source": source,
        "module": "Orders",
        "external_id": {"column": "id", "field": "parent_id"},
        "on_delete": "delete",
        "fields": FIELDS,
    }


def make_settings(name: str, dsn: str, bootstrap: str, sim: CrmSim) -> Settings:
    return load_settings(
        postgres={"dsn": dsn, "slot": name, "publication": name, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name, "partitions": 3},
        zoho=sim.zoho_settings().model_dump(),
        sink={"group_id": f"{name}-sink", "max_wait_s": 0.2, "shutdown_timeout_s": 10},
        tables=[table_mapping(f"public.{name}")],
    )


def env_of(settings: Settings) -> dict[str, str]:
    """The CLI child's environment: ``settings``, with short Zoho backoffs."""
    return cli_env(
        settings, STREAMSYNC_ZOHO__BACKOFF_BASE_S="0.01", STREAMSYNC_ZOHO__BACKOFF_CAP_S="0.2"
    )


def row(i: int) -> dict[str, Any]:
    """A canonical row (as capture and the backfill produce it)."""
    return {
        "id": i,
        "order_number": f"ORD-{i:06d}",
        "amount": f"{i * 3 % 1000}.{i % 100:02d}",
        "status": ("new", "paid", "shipped")[i % 3],
        "order_date": f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
    }


@contextlib.asynccontextmanager
async def table_env(name: str, dsn: str, settings: Settings) -> AsyncIterator[str]:
    source = f"public.{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {source} (id int PRIMARY KEY, order_number text, "
            "amount numeric(12,2), status text, order_date date)"
        )
        await conn.executemany(
            f"INSERT INTO {source} VALUES ($1, $2, $3::text::numeric, $4, $5::text::date)",
            [tuple(row(i).values()) for i in range(1, ROWS + 1)],
        )
        await ensure_schema(conn, settings.postgres.state_schema)
    finally:
        await conn.close()
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    try:
        yield source
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {source}")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.postgres.state_schema}" CASCADE')
        finally:
            await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(name + ".")]
            if topics:
                with contextlib.suppress(Exception):
                    await admin.delete_topics(topics)
        finally:
            await admin.close()


async def read_all(bootstrap: str, topic: str) -> list[ChangeEvent]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ChangeEvent] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        async with asyncio.timeout(30):
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for rec in records:
                        out.append(decode_change(rec.value))
                        if rec.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def test_reconcile_reports_plants_and_repair_restores_sync(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    settings = make_settings(unique_name, pg_dsn, kafka_bootstrap, crm_sim)
    table = settings.tables[0]
    async with table_env(unique_name, pg_dsn, settings) as source:
        async with ZohoClient(settings.zoho) as client:
            records = [map_record(table, row(i)) for i in range(1, ROWS + 1)]
            for start in range(0, ROWS, 100):
                results = await client.upsert("Orders", records[start : start + 100])
                assert all(r.__class__.__name__ == "RecordSuccess" for r in results)

            # in sync to begin with (also proves canonical values map the same on both sides)
            (run,) = await reconcile(settings, [source])
            assert run.in_sync, run.to_json()
            assert run.report.table_rows == ROWS and run.report.crm_records == ROWS

            # plant: 17 missing, 9999 extra, 42 different (Amount)
            (hit,) = await client.search_exact("Orders", "parent_id", "17")
            assert (await client.delete("Orders", [str(hit["id"])]))[0].__class__.__name__ == (
                "RecordSuccess"
            )
            await client.upsert("Orders", [map_record(table, row(9999))])
            await client.upsert("Orders", [{**map_record(table, row(42)), "Amount": 1.5}])

        (run,) = await reconcile(settings, [source])
        report = run.report
        assert report.missing == ["17"]
        assert report.extra == ["9999"]
        assert report.duplicates == []
        assert [d.key for d in report.different] == ["42"]
        assert set(report.different[0].fields) == {"Amount"}
        assert report.table_rows == ROWS and report.crm_records == ROWS

        # the CLI: --json reports the same, exit 1; --repair publishes 3 events
        env = env_of(settings)
        code, out, err = await streamsync_cli(env, "reconcile", "--table", source, "--json")
        assert code == 1, err
        assert out, err
        data = orjson.loads(out)
        assert (data["missing"], data["extra"], data["different"], data["duplicates"]) == (
            1,
            1,
            1,
            0,
        )
        assert data["examples"]["different"][0]["key"] == "42"
        code, out, err = await streamsync_cli(
            env, "reconcile", "--table", source, "--json", "--repair"
        )
        assert code == 1, err
        assert orjson.loads(out)["published"] == {"r": 2, "d": 1}

        events = await read_all(kafka_bootstrap, change_topic(settings.kafka.topic_prefix, source))
        by_key = {e.key[0]: e for e in events}
        assert len(events) == 3 and set(by_key) == {17, 42, 9999}
        assert all(e.source == "resync" and e.table == source for e in events)
        assert by_key[17].op == "r" and by_key[17].after == row(17)
        assert by_key[42].op == "r" and by_key[42].after == row(42)
        assert by_key[9999].op == "d" and by_key[9999].after is None

        # apply them with the sink, then the table and the CRM agree again
        async with asyncio.timeout(120):
            await Sink(settings, until_idle=True).run()
        (run,) = await reconcile(settings, [source])
        assert run.in_sync, run.to_json()
        code, out, err = await streamsync_cli(env, "reconcile", "--table", source)
        assert code == 0, out + err
        assert "in sync" in out
