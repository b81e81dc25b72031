"""`streamsync setup`: slot, publication, state schema and topics, all idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from streamsync.capture.replication import ensure_publication, ensure_slot
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.settings import Settings
from streamsync.store.schema import ensure_schema

__all__ = ["SetupReport", "setup"]


@dataclass(slots=True)
class SetupReport:
    slot_created: bool = False
    topics_created: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)


async def setup(settings: Settings, *, topics: bool = True, schema: bool = True) -> SetupReport:
    """Create whatever is missing: publication (set to the configured tables), slot, state
    schema, and topics (one change topic per table, control, dlq). Safe to run repeatedly.

    The publication is created before the slot so that the slot's start point already sees it.
    """
    report = SetupReport()
    pg = settings.postgres
    conn = await asyncpg.connect(pg.dsn, timeout=10)
    try:
        await ensure_publication(conn, pg.publication, [t.source for t in settings.tables])
        report.slot_created = await ensure_slot(conn, pg.slot)
        if schema:
            await ensure_schema(conn, pg.state_schema)
    finally:
        await conn.close()
    if topics:
        report.topics = project_topics(settings.kafka, settings.tables)
        report.topics_created = await ensure_topics(settings.kafka, report.topics)
    return report
