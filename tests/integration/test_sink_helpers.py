"""Shared helpers of the sink, drain and e2e integration tests (no tests here).

``SinkEnv``: a unique topic prefix, state schema and consumer group on the real stack, with the
simulator behind the Zoho settings; ``expected_crm`` folds a change stream into the records the
CRM must hold; ``crm_view`` reads the simulator's Orders by external id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from streamsync.events import ChangeEvent, encode_change
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic
from streamsync.settings import Settings, load_settings
from streamsync.zoho import map_record
from tests.plugins.crm_sim import CrmSim

FIELDS = {
    "order_number": "Name",
    "customer_email": "Customer_Email",
    "amount": "Amount",
    "currency": "Currency",
    "status": "Status",
    "notes": "Notes",
}


def sink_settings(
    name: str,
    dsn: str,
    bootstrap: str,
    sim: CrmSim,
    *,
    table: str | None = None,
    partitions: int = 3,
    sink: dict[str, Any] | None = None,
    zoho: dict[str, Any] | None = None,
    table_extra: dict[str, Any] | None = None,
    postgres: dict[str, Any] | None = None,
) -> Settings:
    return load_settings(
        postgres={
            "dsn": dsn,
            "slot": name,
            "publication": name,
            "state_schema": f"{name}_state",
            **(postgres or {}),
        },
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name, "partitions": partitions},
        zoho=sim.zoho_settings(**(zoho or {})).model_dump(),
        sink={
            "group_id": f"{name}-sink",
            "max_wait_s": 0.3,
            "shutdown_timeout_s": 10,
            **(sink or {}),
        },
        backfill={"work_dir": f".local/test/{name}"},
        capture={"heartbeat_interval_s": 0.5, "status_interval_s": 0.2},
        tables=[
            {
                "source": table or f"public.{name}",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
                "fields": FIELDS,
                **(table_extra or {}),
            }
        ],
    )


@dataclass
class SinkEnv:
    name: str
    settings: Settings
    dsn: str
    bootstrap: str
    sim: CrmSim

    @property
    def table(self) -> str:
        return self.settings.tables[0].source

    @property
    def topic(self) -> str:
        return change_topic(self.settings.kafka.topic_prefix, self.table)

    async def produce(self, events: Iterable[ChangeEvent | tuple[bytes, bytes]]) -> int:
        producer = create_producer(self.settings.kafka, linger_ms=20)
        await producer.start()
        n = 0
        try:
            futures = []
            for item in events:
                if isinstance(item, ChangeEvent):
                    key, value = item.key_bytes, encode_change(item)
                else:
                    key, value = item
                futures.append(await producer.send(self.topic, value=value, key=key))
                n += 1
                if len(futures) >= 5000:
                    for f in futures:
                        await f
                    futures = []
            for f in futures:
                await f
        finally:
            await producer.stop()
        return n


@contextlib.asynccontextmanager
async def sink_env(
    name: str, dsn: str, bootstrap: str, sim: CrmSim, **kwargs: Any
) -> AsyncIterator[SinkEnv]:
    settings = sink_settings(name, dsn, bootstrap, sim, **kwargs)
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    env = SinkEnv(name, settings, dsn, bootstrap, sim)
    try:
        yield env
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}_state" CASCADE')
        finally:
            await conn.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(name + ".")]
            if topics:
                with contextlib.suppress(Exception):
                    await admin.delete_topics(topics)
        finally:
            await admin.close()


def expected_crm(
    settings: Settings, rows: dict[str, dict[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """Final table rows (key text -> row or None when deleted) -> Zoho records by parent_id."""
    table = settings.tables[0]
    out: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        if row is None:
            continue
        record = map_record(table, row)
        out[record["parent_id"]] = record
    return out


def crm_view(sim: CrmSim) -> dict[str, dict[str, Any]]:
    """The simulator's Orders by parent_id; fails on two records with one parent_id."""
    out: dict[str, dict[str, Any]] = {}
    for rec in sim.state.records.get("Orders", {}).values():
        pid = str(rec.get("parent_id"))
        assert pid not in out, f"two CRM records for parent_id {pid}"
        out[pid] = rec
    return out


def differences(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]
) -> list[str]:
    from streamsync.reconcile import normalise

    problems: list[str] = []
    for pid in sorted(set(expected) | set(actual)):
        exp, act = expected.get(pid), actual.get(pid)
        if exp is None:
            problems.append(f"{pid}: extra in CRM")
        elif act is None:
            problems.append(f"{pid}: missing in CRM")
        else:
            for f, v in exp.items():
                if normalise(v) != normalise(act.get(f)):
                    problems.append(f"{pid}.{f}: expected {v!r}, CRM has {act.get(f)!r}")
    return problems
