"""After a chunk's job: re-read the chunk's keys and resync what changed since it was read.

Why this keeps the CRM equal to the table (docs/backfill.md has the long form): a Bulk Write
job writes each row as it was when its chunk was read. A change committed after that read may
have reached the CRM through the sink *before* the job wrote the row, and the job then put the
older version back. So once the job has finished, every key of the chunk whose row now hashes
differently from what the job wrote (or no longer exists) is published again on the ordered
change topic as op ``r`` (or ``d``), ``source = "resync"``, at a position ``L`` such that:

- every transaction whose commit record lies below ``L`` is visible to the re-read
  (``stable_lsn``: take the WAL insert position, then a snapshot, then wait until every
  transaction in progress in that snapshot has ended; the re-read starts after that), so the
  resync never carries data older than a change positioned below it;
- any change committed later has a position above ``L`` and wins over the resync in the
  sink's per-key order.

Events carry ``pos = (L - 1, i)``: no commit record can start at ``L - 1`` (a WAL record is
longer than one byte), so no stream event ties with a resync event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from streamsync.backfill.chunks import ChunkDigest, ResyncAction, resync_actions
from streamsync.backfill.read import TableReader
from streamsync.errors import CaptureError, PublishError
from streamsync.events import ChangeEvent, Position, encode_change, parse_lsn

__all__ = ["ChangePublisher", "resync_chunk", "resync_events", "stable_lsn"]


class _Producer(Protocol):
    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Any: ...


class ChangePublisher:
    """Publishes change events to one table's topic and waits for every ack."""

    def __init__(self, producer: _Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, events: Sequence[ChangeEvent]) -> None:
        try:
            futures = [
                await self.producer.send(self.topic, value=encode_change(e), key=e.key_bytes)
                for e in events
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(
                f"resync publish to {self.topic} failed: {type(exc).__name__}"
            ) from exc


def _xip(snapshot: str) -> list[str]:
    """'10:20:12,15' → ['12', '15'] (the transactions in progress)."""
    parts = snapshot.split(":")
    return [x for x in parts[2].split(",") if x] if len(parts) == 3 else []


async def stable_lsn(conn: Any, *, timeout_s: float = 300.0, poll_s: float = 0.02) -> int:
    """A WAL position below which every commit is visible to a snapshot taken afterwards.

    Runs outside any transaction. Waits for the transactions that were in progress just after
    the position was taken (they may have written a commit record below it without being
    visible yet); raises CaptureError (retryable) if one of them lasts beyond ``timeout_s``.
    """
    lsn = parse_lsn(await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
    xip = _xip(await conn.fetchval("SELECT pg_current_snapshot()::text"))
    deadline = time.monotonic() + timeout_s
    while xip:
        rows = await conn.fetch(
            "SELECT x::text AS x FROM unnest($1::text[]) AS x "
            "WHERE pg_xact_status(x::xid8) = 'in progress'",
            xip,
        )
        xip = [r["x"] for r in rows]
        if not xip:
            break
        if time.monotonic() >= deadline:
            raise CaptureError(
                f"transactions {xip[:5]} stayed open for {timeout_s:.0f}s; resync postponed",
                code="RESYNC_BLOCKED",
            )
        await asyncio.sleep(poll_s)
    return lsn


def resync_events(
    source: str, actions: Sequence[ResyncAction], lsn: int, ts_ms: int
) -> list[ChangeEvent]:
    """Resync actions → change events at ``(lsn - 1, i)``. Pure."""
    return [
        ChangeEvent(
            op=a.op,
            table=source,
            key=[a.key],
            after=a.after,
            pos=Position(lsn - 1, i),
            ts_ms=ts_ms,
            source="resync",
        )
        for i, a in enumerate(actions)
    ]


async def resync_chunk(
    conn: Any,
    reader: TableReader,
    digest: ChunkDigest,
    publisher: ChangePublisher,
    *,
    clock: Any = time.time,
) -> int:
    """Re-read ``digest``'s keys and publish the resync events; returns how many."""
    if not len(digest):
        return 0
    lsn = await stable_lsn(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        current = await reader.fetch_keys(conn, digest.keys)
    actions = resync_actions(digest, current)
    events = resync_events(reader.table.source, actions, lsn, int(clock() * 1000))
    if events:
        await publisher.publish(events)
    return len(events)
