"""The pure core of a backfill: keyset cursor, chunk records, row digests, resync plan, progress.

A backfill walks the table in primary-key order. Each chunk is the key range ``(lo, hi]`` that
one keyset query (``WHERE key > lo ORDER BY key LIMIT n``) returned; its boundaries are stored
once read, so a resumed backfill never re-plans what it has already planned. For every row a
chunk loads, the digest keeps ``(key, 8-byte hash of the canonical row)``: after the chunk's job
has finished, the rows whose current hash differs (or that no longer exist) are the ones the job
may have overwritten with an older version, and are resynced through the change topic.

Pure: no I/O, no asyncio; clocks are passed in.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

from streamsync.errors import InvariantError, is_retryable_crm_code

__all__ = [
    "BULK_JOB_CREDITS",
    "MAX_CHUNK_ROWS",
    "BackfillStatus",
    "ChunkDigest",
    "ChunkStatus",
    "KeysetCursor",
    "Progress",
    "ResyncAction",
    "RowOutcome",
    "Tally",
    "chunk_batches",
    "is_retryable_skip",
    "progress",
    "resync_actions",
    "row_hash",
    "row_hash_values",
    "tally_results",
]

MAX_CHUNK_ROWS = 25_000
BULK_JOB_CREDITS = 500  # what one Bulk Write job costs (zoho-crm-v8.md §4f)
_HASH_BYTES = 8
_blake2b = hashlib.blake2b


class BackfillStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ChunkStatus(StrEnum):
    """A chunk's life: planned → prepared → submitted → loaded → done (or failed)."""

    PLANNED = "planned"  # key range or key list known, rows not read (a retry round, a split)
    PREPARED = "prepared"  # rows read, zip on disk, digest stored
    SUBMITTED = "submitted"  # Bulk Write job created; job id recorded before waiting
    LOADED = "loaded"  # job finished, results counted, skipped rows recorded
    DONE = "done"  # resync of the chunk published
    FAILED = "failed"  # gave up (job failed too often); its rows are dead-lettered


UNFINISHED = (ChunkStatus.PLANNED, ChunkStatus.PREPARED, ChunkStatus.SUBMITTED, ChunkStatus.LOADED)


@dataclass(slots=True)
class KeysetCursor:
    """Where the keyset walk of one table stands.

    ``last`` is the last key already planned (exclusive lower bound of the next chunk), ``end``
    the table's maximum key when the backfill started (rows above it were inserted later and
    reach the CRM through the stream).
    """

    last: Any | None
    end: Any | None

    @property
    def exhausted(self) -> bool:
        """Nothing left: the table was empty at the start, or the walk reached ``end``.

        Only equality is used: the database orders keys (collations), not Python.
        """
        return self.end is None or self.last == self.end

    def advance(self, last_key: Any) -> None:
        """Move past a chunk whose last key is ``last_key`` (never the same key twice)."""
        if self.last is not None and last_key == self.last:
            raise InvariantError(
                f"keyset cursor did not move (still at {last_key!r})", code="CURSOR_STUCK"
            )
        self.last = last_key

    def finish(self) -> None:
        """The last keyset query came back short: nothing left up to ``end``."""
        self.last = self.end


def row_hash(after: dict[str, Any]) -> bytes:
    """8-byte digest of a canonical row (its values, in column order as read)."""
    return row_hash_values(list(after.values()))


def row_hash_values(values: Sequence[Any]) -> bytes:
    """``row_hash`` of a row given as its canonical values in column order."""
    return _blake2b(orjson.dumps(values), digest_size=_HASH_BYTES).digest()


@dataclass(slots=True)
class ChunkDigest:
    """The keys a chunk's job wrote and the hash of each row as written, in file order.

    ``keys[i]`` is the key of data row ``i`` of the CSV (the row index Zoho's result file uses).
    """

    keys: list[Any] = field(default_factory=list)
    hashes: bytearray = field(default_factory=bytearray)

    def add(self, key: Any, after: dict[str, Any]) -> None:
        self.keys.append(key)
        self.hashes += row_hash(after)

    def add_values(self, key: Any, values: Sequence[Any]) -> None:
        """``add`` for a row given as its canonical values in column order (the hot path)."""
        self.keys.append(key)
        self.hashes += _blake2b(orjson.dumps(values), digest_size=_HASH_BYTES).digest()

    def __len__(self) -> int:
        return len(self.keys)

    def hash_of(self, index: int) -> bytes:
        return bytes(self.hashes[index * _HASH_BYTES : (index + 1) * _HASH_BYTES])

    def as_map(self) -> dict[Any, bytes]:
        return {self.keys[i]: self.hash_of(i) for i in range(len(self.keys))}

    def encode(self) -> tuple[bytes, bytes]:
        """(compressed key list, hashes) for the checkpoint row."""
        return zlib.compress(orjson.dumps(self.keys), 1), bytes(self.hashes)

    @classmethod
    def decode(cls, keys: bytes | None, hashes: bytes | None) -> ChunkDigest:
        if not keys:
            return cls()
        key_list = orjson.loads(zlib.decompress(keys))
        raw = bytearray(hashes or b"")
        if len(raw) != _HASH_BYTES * len(key_list):
            raise InvariantError("chunk digest: key and hash counts differ", code="BAD_DIGEST")
        return cls(key_list, raw)

    @staticmethod
    def encode_keys(keys: Sequence[Any]) -> bytes:
        return zlib.compress(orjson.dumps(list(keys)), 1)

    @staticmethod
    def decode_keys(blob: bytes | None) -> list[Any]:
        return list(orjson.loads(zlib.decompress(blob))) if blob else []


@dataclass(frozen=True, slots=True)
class ResyncAction:
    op: Literal["r", "d"]
    key: Any
    after: dict[str, Any] | None


def resync_actions(
    digest: ChunkDigest, current: Iterable[tuple[Any, dict[str, Any]]]
) -> list[ResyncAction]:
    """What to resync after a chunk's job: rows that changed since they were read, or vanished.

    ``current``: ``(key, canonical row)`` for the rows now in the table among (or around) the
    chunk's keys. Keys the chunk did not write are ignored (the stream carries them). A key
    whose row now hashes the same as written needs nothing: the job wrote its latest version.
    """
    written = digest.as_map()
    out: list[ResyncAction] = []
    seen: set[Any] = set()
    for key, after in current:
        old = written.get(key)
        if old is None:
            continue
        seen.add(key)
        if row_hash(after) != old:
            out.append(ResyncAction("r", key, after))
    for key in digest.keys:
        if key not in seen:
            out.append(ResyncAction("d", key, None))
    return out


@dataclass(frozen=True, slots=True)
class RowOutcome:
    """A row Zoho skipped (or did not report): what to do with it."""

    index: int
    key: Any
    code: str
    message: str
    retryable: bool


@dataclass(slots=True)
class Tally:
    added: int = 0
    updated: int = 0
    skipped: list[RowOutcome] = field(default_factory=list)


def is_retryable_skip(errors: dict[str, str]) -> bool:
    """A skipped row is worth another round when every error code on it is retryable."""
    return bool(errors) and all(is_retryable_crm_code(code) for code in errors.values())


def _error_text(errors: dict[str, str]) -> tuple[str, str]:
    if not errors:
        return "SKIPPED", "skipped without an error code"
    codes = sorted(set(errors.values()))
    message = "; ".join(f"{code} on {col}" for col, code in sorted(errors.items()))
    return codes[0], message


def tally_results(digest: ChunkDigest, results: Iterable[Any]) -> Tally:
    """Count a job's result rows against the chunk's rows.

    ``results``: objects with ``row`` (0-based data row), ``status`` (ADDED / UPDATED /
    SKIPPED, any case) and ``errors`` ({column: code}). A row the result file does not mention
    counts as skipped with the retryable code ``NOT_PROCESSED``.
    """
    tally = Tally()
    reported: set[int] = set()
    n = len(digest)
    for res in results:
        row = int(res.row)
        if not 0 <= row < n or row in reported:
            continue
        reported.add(row)
        status = str(res.status).upper()
        if status == "ADDED":
            tally.added += 1
        elif status == "UPDATED":
            tally.updated += 1
        else:
            errors = dict(getattr(res, "errors", None) or {})
            code, message = _error_text(errors)
            retryable = is_retryable_skip(errors) if errors else True
            tally.skipped.append(RowOutcome(row, digest.keys[row], code, message, retryable))
    for row in range(n):
        if row not in reported:
            tally.skipped.append(
                RowOutcome(row, digest.keys[row], "NOT_PROCESSED", "not in the result file", True)
            )
    tally.skipped.sort(key=lambda o: o.index)
    return tally


def chunk_batches(keys: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Split a retry round's keys into job-sized lists, in key order."""
    if size < 1:
        raise ValueError("size must be positive")
    ordered = sorted(keys)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


@dataclass(frozen=True, slots=True)
class Progress:
    chunks_done: int
    chunks_total: int
    rows: int
    rate: float  # rows per second since the start
    eta_s: float | None  # None when unknown (nothing done yet, or finished)
    fraction: float


def progress(
    *,
    chunks_done: int,
    chunks_planned: int,
    rows_done: int,
    rows_estimate: int,
    chunk_rows: int,
    started_at: float,
    now: float,
    finished: bool,
) -> Progress:
    """Chunks done of total, rate and ETA for ``backfill status``.

    The total is the larger of the chunks planned so far and the estimate from the row count
    taken at the start (the table may grow or shrink meanwhile).
    """
    estimate = math.ceil(rows_estimate / chunk_rows) if chunk_rows > 0 else 0
    total = chunks_done if finished else max(chunks_planned, estimate, chunks_done)
    elapsed = max(now - started_at, 1e-9)
    rate = rows_done / elapsed if rows_done else 0.0
    fraction = 1.0 if finished or total == 0 else min(1.0, chunks_done / total)
    eta: float | None = None
    if not finished and rate > 0:
        left = max(rows_estimate - rows_done, 0)
        eta = left / rate
    return Progress(chunks_done, total, rows_done, rate, eta, fraction)
