"""The sink's window: pending changes coalesced per key, cut into batches of distinct keys.

One window spans every partition the sink owns. In: decoded change events with their Kafka
coordinates and the current (monotonic) time. Out: ``Batch`` objects of at most ``max_keys``
distinct keys, each key once, ready for the CRM.

Coalescing per key (``merge``): the latest version wins (by ``Position``; an older version that
arrives later never overwrites a newer one), a delete supersedes earlier changes, and TOAST
columns Postgres did not send stay absent (they are never written) unless an earlier version in
the same window carried their value.

A key never has two calls in flight: keys of a batch stay *in flight* until ``release(batch)``;
changes of an in-flight key wait in the window and are not counted as ready until then.

Ready: when ``max_keys`` flushable keys of one kind (upserts, or deletes) are pending (``add``
returns that batch: full calls cost the fewest credits, and a mixed batch would become two
part-filled calls), or when the oldest flushable change is ``max_wait_s`` old (``due``). ``flush`` returns everything flushable
(revoke, shutdown, drain). ``next_deadline`` tells the shell how long it may wait.

Pure: no I/O, no asyncio, no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamsync.events import ChangeEvent, Position

__all__ = ["Batch", "Entry", "FlushReason", "Window", "chunks", "merge"]

FlushReason = Literal["size", "age", "revoke", "shutdown", "drain", "bulk"]
EntryOp = Literal["upsert", "delete"]


@dataclass(slots=True)
class Entry:
    """One key's coalesced pending change.

    ``offsets`` lists every (partition, offset) this entry stands for: all of them become final
    together with the entry's outcome.
    """

    table: str
    key: list[Any]
    key_text: str
    op: EntryOp
    after: dict[str, Any] | None
    unchanged: frozenset[str]
    pos: Position
    event: ChangeEvent  # the latest event (for the DLQ)
    first_seen: float
    ts_ms: int
    offsets: list[tuple[Hashable, int]] = field(default_factory=list)
    events: int = 1

    @property
    def ident(self) -> tuple[str, str]:
        return (self.table, self.key_text)


def entry_for(
    event: ChangeEvent, tp: Hashable, offset: int, now: float, key_text: str | None = None
) -> Entry:
    """A fresh entry for one event (key text = the canonical key JSON, if not given).

    The entry shares the event's ``key`` and ``after``: neither is ever changed in place
    (``merge`` builds a new ``after``), and this runs once per Kafka record.
    """
    delete = event.op == "d"
    return Entry(
        event.table,
        event.key,
        event.key_bytes.decode() if key_text is None else key_text,
        "delete" if delete else "upsert",
        None if delete else (event.after if event.after is not None else {}),
        _NOTHING if delete or not event.unchanged else frozenset(event.unchanged),
        event.pos,
        event,
        now,
        event.ts_ms,
        [(tp, offset)],
    )


_NOTHING: frozenset[str] = frozenset()


def merge(entry: Entry, event: ChangeEvent, tp: Hashable, offset: int) -> None:
    """Fold ``event`` into ``entry`` (same table and key) in place."""
    entry.offsets.append((tp, offset))
    entry.events += 1
    if event.pos < entry.pos:
        return  # a stale version (e.g. a replayed dead letter) never overwrites a newer one
    entry.pos = event.pos
    entry.event = event
    entry.ts_ms = event.ts_ms
    if event.op == "d":
        entry.op = "delete"
        entry.after = None
        entry.unchanged = frozenset()
        return
    after = dict(event.after or {})
    if entry.op == "delete" or entry.after is None:
        entry.op = "upsert"
        entry.after = after
        entry.unchanged = frozenset(event.unchanged)
        return
    previous = entry.after
    # Columns this event did not send keep the value an earlier version carried, if any.
    entry.unchanged = frozenset(c for c in event.unchanged if c not in previous)
    entry.after = {**previous, **after}


@dataclass(slots=True)
class Batch:
    """Entries of distinct keys, at most the window's ``max_keys``, flushed for ``reason``."""

    entries: list[Entry]
    reason: FlushReason

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def offsets(self) -> Iterator[tuple[Hashable, int]]:
        for entry in self.entries:
            yield from entry.offsets


def chunks(entries: Sequence[Entry], size: int) -> Iterator[list[Entry]]:
    """Cut ``entries`` into lists of at most ``size`` (Zoho's 100-record limit)."""
    if size < 1:
        raise ValueError("chunk size must be positive")
    for start in range(0, len(entries), size):
        yield list(entries[start : start + size])


class Window:
    """Pending entries per key, across partitions. See the module docstring."""

    def __init__(self, max_keys: int = 100, max_wait_s: float = 5.0) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        if max_wait_s <= 0:
            raise ValueError("max_wait_s must be positive")
        self.max_keys = max_keys
        self.max_wait_s = max_wait_s
        self._pending: dict[tuple[str, str], Entry] = {}  # insertion order = first_seen order
        self._inflight: set[tuple[str, str]] = set()

    # -- state ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Keys waiting (flushable or held behind an in-flight call)."""
        return len(self._pending)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def flushable(self, op: EntryOp | None = None) -> int:
        """Pending keys not held behind an in-flight call (of ``op`` only, if given)."""
        return sum(
            1
            for ident, entry in self._pending.items()
            if ident not in self._inflight and (op is None or entry.op == op)
        )

    def pending_events(self) -> int:
        return sum(len(e.offsets) for e in self._pending.values())

    # -- the four calls ------------------------------------------------------------------
    def add(self, event: ChangeEvent, tp: Hashable, offset: int, now: float) -> list[Batch]:
        """Add one event; return the full batches that are now ready (reason ``size``)."""
        key_text = event.key_bytes.decode()
        ident = (event.table, key_text)
        entry = self._pending.get(ident)
        if entry is None:
            entry = self._pending[ident] = entry_for(event, tp, offset, now, key_text)
        else:
            merge(entry, event, tp, offset)
        if ident in self._inflight or len(self._pending) < self.max_keys:
            return []
        if self.flushable(entry.op) >= self.max_keys:
            return self._take(self.max_keys, "size", op=entry.op)
        return []

    def due(self, now: float) -> list[Batch]:
        """Everything flushable when the oldest flushable entry is ``max_wait_s`` old."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return []
        return self._take(None, "age")

    def flush(self, reason: FlushReason = "shutdown") -> list[Batch]:
        """Everything flushable now (keys in flight stay pending)."""
        return self._take(None, reason)

    def next_deadline(self) -> float | None:
        """When the oldest flushable entry becomes due, or None when nothing is flushable."""
        for ident, entry in self._pending.items():
            if ident not in self._inflight:
                return entry.first_seen + self.max_wait_s
        return None

    def release(self, batch: Batch) -> None:
        """The batch's outcomes are final: its keys may be sent again."""
        for entry in batch.entries:
            self._inflight.discard(entry.ident)

    def drop_partitions(self, tps: set[Hashable]) -> int:
        """Forget pending entries whose offsets lie on ``tps`` (lost partitions). Returns count.

        An entry spans one key, hence one partition; in-flight keys are not touched.
        """
        gone = [
            ident
            for ident, entry in self._pending.items()
            if ident not in self._inflight and any(tp in tps for tp, _ in entry.offsets)
        ]
        for ident in gone:
            del self._pending[ident]
        return len(gone)

    # -- internals -----------------------------------------------------------------------
    def _take(
        self, limit: int | None, reason: FlushReason, op: EntryOp | None = None
    ) -> list[Batch]:
        taken: list[Entry] = []
        for ident, entry in self._pending.items():
            if ident in self._inflight or (op is not None and entry.op != op):
                continue
            taken.append(entry)
            if limit is not None and len(taken) >= limit:
                break
        for entry in taken:
            del self._pending[entry.ident]
            self._inflight.add(entry.ident)
        return [Batch(part, reason) for part in chunks(taken, self.max_keys)]
