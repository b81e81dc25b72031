"""The credit planner: what each pending key costs and which path it takes.

Zoho's prices (design.md §1): an upsert call takes <= 100 records at 1 credit per 10 records;
a Bulk Write job takes <= 25,000 records for 500 credits. Break-even: 5,000 records.

- ``plan_batch`` splits one window batch by what must happen to each key, using the record map
  (``Known``: Zoho id, last synced position, status): upsert, delete by Zoho id, delete after an
  exact search (id unknown), mark a field (``on_delete`` = field name; by Zoho id, or after an
  exact search when the id is unknown: a key Zoho never held has nothing to mark), or nothing (``skipped``:
  stale versions at or below the recorded position, ``on_delete = "ignore"``). Skipping stale
  events before spending credits makes replays free (the idempotency ledger, style item 17).
  A delete whose key has no record-map row is searched for even when its window began with
  the insert: a sink killed after its Zoho call but before its record-map write leaves exactly
  that state (found by the kill -9 test).
- ``choose_path`` / ``drain_chunks`` decide upserts vs Bulk Write from the backlog size.
- ``upsert_credits`` / ``bulk_credits`` are the price list, for metrics and the budget check.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from streamsync.events import Position
from streamsync.sink.window import Entry

__all__ = [
    "BULK_JOB_CREDITS",
    "BatchPlan",
    "Known",
    "Path",
    "bulk_credits",
    "choose_path",
    "drain_chunks",
    "is_stale",
    "plan_batch",
    "upsert_credits",
]

BULK_JOB_CREDITS = 500
RECORDS_PER_CREDIT = 10
MAX_UPSERT_RECORDS = 100
MAX_BULK_RECORDS = 25_000

Path = Literal["upsert", "bulk"]
Status = Literal["ok", "failed", "deleted"]


@dataclass(slots=True)  # one per looked-up key: not frozen (hot path)
class Known:
    """What the record map knows about one key."""

    zoho_id: str | None
    pos: Position | None
    status: Status
    attempts: int = 0


@dataclass(slots=True)
class BatchPlan:
    upserts: list[Entry] = field(default_factory=list)
    deletes: list[tuple[Entry, str]] = field(default_factory=list)  # (entry, Zoho id)
    searches: list[Entry] = field(default_factory=list)  # delete, Zoho id unknown
    marks: list[tuple[Entry, str]] = field(default_factory=list)  # delete -> set the field
    # delete -> set the field, Zoho id unknown: search first (a record never synced is absent)
    mark_searches: list[Entry] = field(default_factory=list)
    # (entry, why): "stale", "ignored"
    skipped: list[tuple[Entry, str]] = field(default_factory=list)

    @property
    def calls_needed(self) -> bool:
        return bool(
            self.upserts or self.deletes or self.searches or self.marks or self.mark_searches
        )


def is_stale(entry: Entry, known: Known | None) -> bool:
    """True when the record map already holds this version or a newer one.

    Equal positions count as stale unless that version failed (a ``dlq replay`` re-sends it).
    """
    if known is None or known.pos is None:
        return False
    if entry.pos < known.pos:
        return True
    return entry.pos == known.pos and known.status != "failed"


def plan_batch(entries: Iterable[Entry], known: Mapping[str, Known], on_delete: str) -> BatchPlan:
    """Split ``entries`` (one table) by path; ``known`` is keyed by the key text."""
    plan = BatchPlan()
    for entry in entries:
        state = known.get(entry.key_text)
        if is_stale(entry, state):
            plan.skipped.append((entry, "stale"))
        elif entry.op == "upsert":
            plan.upserts.append(entry)
        elif on_delete == "ignore":
            plan.skipped.append((entry, "ignored"))
        elif on_delete == "delete":
            if entry.event.source == "resync":
                # A resync delete follows a Bulk Write job that may have re-created the record
                # under a new id after the sink deleted it: look it up by the external id.
                plan.searches.append(entry)
            elif state is not None and state.zoho_id:
                plan.deletes.append((entry, state.zoho_id))
            elif state is not None and state.status == "deleted":
                plan.skipped.append((entry, "stale"))  # already gone from Zoho
            else:
                plan.searches.append(entry)
        elif state is not None and state.status == "deleted":
            plan.skipped.append((entry, "stale"))  # already marked
        elif state is not None and state.zoho_id:
            plan.marks.append((entry, state.zoho_id))
        else:
            # Upserting the mark for a key Zoho may not hold would create a record with only
            # the external id and the mark (Zoho refuses it: a mandatory field is missing).
            plan.mark_searches.append(entry)
    return plan


def upsert_credits(records: int, per_call: int = MAX_UPSERT_RECORDS) -> int:
    """Credits for ``records`` sent in full calls of ``per_call`` (1 per 10 records, rounded up)."""
    if records <= 0:
        return 0
    full, rest = divmod(records, per_call)
    return full * -(-per_call // RECORDS_PER_CREDIT) + -(-rest // RECORDS_PER_CREDIT)


def bulk_credits(records: int, per_job: int = MAX_BULK_RECORDS) -> int:
    """Credits for ``records`` sent as Bulk Write jobs of at most ``per_job``."""
    if records <= 0:
        return 0
    return BULK_JOB_CREDITS * -(-records // per_job)


def choose_path(backlog: int, threshold: int) -> Path:
    """Bulk Write when the backlog exceeds ``threshold`` (default: the 5,000 break-even)."""
    return "bulk" if backlog > threshold else "upsert"


def drain_chunks(
    records: int, threshold: int, max_bulk: int = MAX_BULK_RECORDS
) -> list[tuple[Path, int]]:
    """How a drain of ``records`` coalesced records is sent: jobs of <= ``max_bulk`` while the
    rest exceeds ``threshold``, then upserts for a remainder at or below it."""
    out: list[tuple[Path, int]] = []
    left = records
    while left > threshold:
        size = min(left, max_bulk)
        out.append(("bulk", size))
        left -= size
    if left > 0:
        out.append(("upsert", left))
    return out


def cheapest_credits(distinct_records: int, threshold: int) -> int:
    """The minimum credits for syncing ``distinct_records`` (used by the credits benchmark)."""
    return sum(
        bulk_credits(n) if path == "bulk" else upsert_credits(n)
        for path, n in drain_chunks(distinct_records, threshold)
    )


def split_even(items: Sequence[Entry], size: int) -> list[list[Entry]]:
    """Cut into ceil(len/size) parts of near-equal size (fewer part-filled calls)."""
    if not items:
        return []
    parts = -(-len(items) // size)
    base, extra = divmod(len(items), parts)
    out: list[list[Entry]] = []
    start = 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out
