"""Remove a pipeline: replication slot, publication, state schema, topics and consumer groups.

An abandoned replication slot pins WAL forever, so taking streamsync out of a database must
drop its slot. ``teardown`` is what `streamsync teardown` runs; the demo and the integration
tests use it to start from nothing. It refuses to drop a slot a capture is streaming from
unless ``force`` is set (then the capture's backend is terminated first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import asyncpg

from streamsync.errors import CaptureError
from streamsync.settings import Settings

__all__ = ["TeardownReport", "teardown"]


@dataclass(slots=True)
class TeardownReport:
    slot_dropped: bool = False
    publication_dropped: bool = False
    schema_dropped: bool = False
    tables_dropped: list[str] = field(default_factory=list)
    topics_deleted: list[str] = field(default_factory=list)
    groups_deleted: list[str] = field(default_factory=list)


async def teardown(
    settings: Settings,
    *,
    drop_tables: bool = False,
    force: bool = False,
    kafka: bool = True,
    timeout_s: float = 30.0,
) -> TeardownReport:
    """Drop what ``streamsync setup`` created (and, with ``drop_tables``, the source tables).

    Raises:
        CaptureError: the slot is in use and ``force`` is not set.
    """
    report = TeardownReport()
    pg = settings.postgres
    conn = await asyncpg.connect(pg.dsn)
    try:
        active = await conn.fetchval(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", pg.slot
        )
        if active is not None:
            if not force:
                raise CaptureError(
                    f"slot {pg.slot!r} is in use by backend {active}: stop the capture first",
                    code="SLOT_IN_USE",
                )
            await conn.execute("SELECT pg_terminate_backend($1)", active)
            await _wait_slot_inactive(conn, pg.slot, timeout_s)
        report.slot_dropped = bool(
            await conn.fetchval(
                "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots "
                "WHERE slot_name = $1",
                pg.slot,
            )
        )
        report.publication_dropped = bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1", pg.publication
            )
        )
        await conn.execute(f'DROP PUBLICATION IF EXISTS "{pg.publication}"')
        report.schema_dropped = bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_namespace WHERE nspname = $1", pg.state_schema
            )
        )
        await conn.execute(f'DROP SCHEMA IF EXISTS "{pg.state_schema}" CASCADE')
        if drop_tables:
            for table in settings.tables:
                schema, name = table.schema_name, table.table_name
                await conn.execute(f'DROP TABLE IF EXISTS "{schema}"."{name}"')
                report.tables_dropped.append(table.source)
    finally:
        await conn.close()
    if kafka:
        await _delete_kafka(settings, report, timeout_s)
    return report


async def _wait_slot_inactive(conn: asyncpg.Connection, slot: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = await conn.fetchval(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", slot
        )
        if pid is None:
            return
        await asyncio.sleep(0.1)
    raise CaptureError(f"slot {slot!r} still in use after {timeout_s:.0f}s", code="SLOT_IN_USE")


async def _delete_kafka(settings: Settings, report: TeardownReport, timeout_s: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    prefix = settings.kafka.topic_prefix + "."
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if topics:
            await admin.delete_topics(topics)
            deadline = time.monotonic() + timeout_s
            while set(topics) & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics not deleted within {timeout_s:.0f}s")
                await asyncio.sleep(0.2)
            report.topics_deleted = topics
        groups = [
            settings.sink.group_id,
            settings.backfill.group_id,
            f"{settings.kafka.topic_prefix}.dlq-replay",
        ]
        existing = set()
        with contextlib.suppress(Exception):
            existing = {g[0] for g in await admin.list_consumer_groups()}
        wanted = [g for g in groups if g in existing]
        if wanted:
            with contextlib.suppress(Exception):  # a group with live members cannot be deleted
                await admin.delete_consumer_groups(wanted)
                report.groups_deleted = wanted
    finally:
        await admin.close()
