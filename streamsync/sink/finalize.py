"""Steps 2-4 of a batch: dead letters acked, record map (and sync flag) written, offsets done.

A batch's offsets become committable only after every earlier step succeeded, so an event is
committed only past a final Zoho outcome (design.md §4.1): a failing step raises and leaves
its offsets unfinished, and the role restarts from the last commit (replays are skipped by the
record map).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from typing import Any

from streamsync.dlq import publish_dead_letter
from streamsync.ops import metrics
from streamsync.sink.offsets import Offsets
from streamsync.sink.outcomes import Dead, Judged
from streamsync.sink.stats import SinkStats
from streamsync.sink.writeback import SyncFlagWriter
from streamsync.store import record_map

__all__ = ["Finalizer"]

_NOT_WRITTEN = frozenset({"stale", "ignored"})  # Done actions that change nothing
_GONE = frozenset({"delete", "mark"})  # Done actions after which the row is gone from the table


class Finalizer:
    """Makes the CRM outcomes of a batch durable, then marks its offsets done."""

    def __init__(
        self,
        *,
        producer: Any,
        pool: Any,
        state_schema: str,
        topic_prefix: str,
        offsets: Offsets,
        stats: SinkStats,
        writeback: SyncFlagWriter,
    ) -> None:
        self._producer = producer
        self._pool = pool
        self._schema = state_schema
        self._prefix = topic_prefix
        self._offsets = offsets
        self._stats = stats
        self._writeback = writeback

    async def finalize(self, judged: Judged) -> None:
        # 2. dead letters, acked by Kafka before anything depends on them
        if judged.dead:
            await asyncio.gather(*(self.dead_letter(d) for d in judged.dead))
        # 3. the record map (and the sync flag)
        outcomes = self._outcomes(judged)
        if outcomes:
            await record_map.record_outcomes(self._pool, self._schema, outcomes)
            await self._writeback.write(outcomes)
        ops: dict[str, int] = {}
        for d in judged.done:
            if d.action not in _NOT_WRITTEN:
                ops[d.action] = ops.get(d.action, 0) + 1
        for op, n in ops.items():
            metrics.records_synced(op, n)
        # 4. offsets
        for d in judged.done:
            self._offsets.done_all(d.entry.offsets)
        for dead in judged.dead:
            self._offsets.done_all(dead.entry.offsets)

    def _outcomes(self, judged: Judged) -> list[record_map.Outcome]:
        outcomes: list[record_map.Outcome] = []
        now_ms = time.time() * 1000
        for d in judged.done:
            if d.action in _NOT_WRITTEN:
                continue
            e = d.entry
            status = "deleted" if d.action in _GONE else "ok"
            outcomes.append(
                record_map.Outcome(e.table, e.key_text, d.zoho_id, e.pos.lsn, e.pos.seq, status)
            )
            if e.ts_ms:
                latency_ms = max(0.0, now_ms - e.ts_ms)
                metrics.SINK_COMMIT_TO_CRM.observe(latency_ms / 1000)
                self._stats.latency(latency_ms)
        for dead in judged.dead:
            e = dead.entry
            outcomes.append(
                record_map.Outcome(
                    e.table,
                    e.key_text,
                    None,
                    e.pos.lsn,
                    e.pos.seq,
                    "failed",
                    dead.code,
                    dead.attempts,
                )
            )
        return outcomes

    async def dead_letter(self, dead: Dead) -> None:
        """A record Zoho (or the mapping) rejected: the original event with the reason."""
        tp, offset = dead.entry.offsets[-1]
        await publish_dead_letter(
            self._producer,
            self._prefix,
            event_or_raw=dead.entry.event,
            reason_code=dead.code,
            message=dead.message,
            details=dead.details,
            attempts=dead.attempts,
            origin="sink",
            source={
                "topic": getattr(tp, "topic", None),
                "partition": getattr(tp, "partition", None),
                "offset": offset,
            },
        )
        metrics.dead_lettered(dead.code)
        self._stats.dead_letters += 1

    async def dead_letter_raw(self, tp: Hashable, msg: Any, code: str, message: str) -> None:
        """An event that never reached the window (undecodable, unmapped table, truncate)."""
        await publish_dead_letter(
            self._producer,
            self._prefix,
            event_or_raw=msg.value if msg.value is not None else b"",
            reason_code=code,
            message=message,
            details={},
            attempts=1,
            origin="sink",
            source={
                "topic": getattr(tp, "topic", None),
                "partition": getattr(tp, "partition", None),
                "offset": msg.offset,
                "key": msg.key,
            },
        )
        metrics.dead_lettered(code)
        self._stats.dead_letters += 1
        self._offsets.done(tp, msg.offset)
