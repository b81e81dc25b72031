"""Backfill checkpoints in the state schema: backfills, their chunks (with job ids), skipped rows.

Tables (``DDL`` has ``{schema}`` in place of the schema name; ``store.schema`` runs it):

- ``backfills``: one row per backfill id: table, chunk size, status, the keyset cursor
  (``cursor_last`` / ``cursor_end``), the retry round and the counters ``status`` shows.
- ``backfill_chunks``: one row per chunk (or retry job): its key range or key list, status,
  digest of the rows written (keys + hashes, for the resync), zip path, Zoho job id, counts.
  A chunk row is written when its rows are read (status ``prepared``), together with the
  cursor move, in one transaction; the job id is written as soon as Zoho returns it, before
  waiting, so a restarted worker waits for that job instead of submitting the file again.
- ``backfill_skipped``: rows Zoho skipped: code, message, retryable, state (retry |
  resubmitted | failed).

Every function takes an asyncpg connection (or pool) and the schema name. Keys are stored as
JSON (the canonical key value).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streamsync.backfill.chunks import BULK_JOB_CREDITS, ChunkStatus, RowOutcome

__all__ = [
    "DDL",
    "BackfillRecord",
    "ChunkRecord",
    "create_backfill",
    "get_backfill",
    "insert_planned_chunk",
    "list_backfills",
    "mark_chunk_done",
    "mark_chunk_failed",
    "mark_chunk_loaded",
    "mark_chunk_prepared",
    "mark_chunk_submitted",
    "plan_retry_round",
    "record_prepared_chunk",
    "request_cancel",
    "set_backfill_status",
    "skipped_rows",
    "unfinished_chunks",
]

DDL = [
    """CREATE TABLE IF NOT EXISTS "{schema}".backfills (
        backfill_id text PRIMARY KEY,
        table_name text NOT NULL,
        chunk_rows integer NOT NULL,
        status text NOT NULL DEFAULT 'running',
        cancel_requested boolean NOT NULL DEFAULT false,
        rows_estimate bigint NOT NULL DEFAULT 0,
        cursor_last jsonb,
        cursor_end jsonb,
        round integer NOT NULL DEFAULT 1,
        chunks_planned integer NOT NULL DEFAULT 0,
        chunks_done integer NOT NULL DEFAULT 0,
        rows_read bigint NOT NULL DEFAULT 0,
        rows_done bigint NOT NULL DEFAULT 0,
        added bigint NOT NULL DEFAULT 0,
        updated bigint NOT NULL DEFAULT 0,
        skipped bigint NOT NULL DEFAULT 0,
        dead_lettered bigint NOT NULL DEFAULT 0,
        resynced bigint NOT NULL DEFAULT 0,
        jobs integer NOT NULL DEFAULT 0,
        credits bigint NOT NULL DEFAULT 0,
        waiting_for text,
        error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS "{schema}".backfill_chunks (
        backfill_id text NOT NULL REFERENCES "{schema}".backfills ON DELETE CASCADE,
        seq integer NOT NULL,
        round integer NOT NULL DEFAULT 1,
        lo jsonb,
        hi jsonb,
        key_list bytea,
        status text NOT NULL,
        rows integer NOT NULL DEFAULT 0,
        digest_keys bytea,
        digest_hashes bytea,
        zip_path text,
        job_id text,
        attempts integer NOT NULL DEFAULT 0,
        added integer NOT NULL DEFAULT 0,
        updated integer NOT NULL DEFAULT 0,
        skipped integer NOT NULL DEFAULT 0,
        resynced integer NOT NULL DEFAULT 0,
        error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        submitted_at timestamptz,
        finished_at timestamptz,
        PRIMARY KEY (backfill_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS "{schema}".backfill_skipped (
        backfill_id text NOT NULL REFERENCES "{schema}".backfills ON DELETE CASCADE,
        key jsonb NOT NULL,
        round integer NOT NULL,
        code text NOT NULL,
        message text NOT NULL,
        retryable boolean NOT NULL,
        state text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (backfill_id, key)
    )""",
]


def _q(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _load(value: Any) -> Any:
    return None if value is None else json.loads(value)


@dataclass(frozen=True, slots=True)
class BackfillRecord:
    backfill_id: str
    table_name: str
    chunk_rows: int
    status: str
    cancel_requested: bool
    rows_estimate: int
    cursor_last: Any
    cursor_end: Any
    round: int
    chunks_planned: int
    chunks_done: int
    rows_read: int
    rows_done: int
    added: int
    updated: int
    skipped: int
    dead_lettered: int
    resynced: int
    jobs: int
    credits: int
    waiting_for: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> BackfillRecord:
        data = dict(row)
        data["cursor_last"] = _load(data["cursor_last"])
        data["cursor_end"] = _load(data["cursor_end"])
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    backfill_id: str
    seq: int
    round: int
    lo: Any
    hi: Any
    key_list: bytes | None
    status: ChunkStatus
    rows: int
    digest_keys: bytes | None
    digest_hashes: bytes | None
    zip_path: str | None
    job_id: str | None
    attempts: int

    @classmethod
    def from_row(cls, row: Any) -> ChunkRecord:
        return cls(
            backfill_id=row["backfill_id"],
            seq=row["seq"],
            round=row["round"],
            lo=_load(row["lo"]),
            hi=_load(row["hi"]),
            key_list=row["key_list"],
            status=ChunkStatus(row["status"]),
            rows=row["rows"],
            digest_keys=row["digest_keys"],
            digest_hashes=row["digest_hashes"],
            zip_path=row["zip_path"],
            job_id=row["job_id"],
            attempts=row["attempts"],
        )


_BACKFILL_COLUMNS = ", ".join(BackfillRecord.__slots__)
_CHUNK_COLUMNS = (
    "backfill_id, seq, round, lo, hi, key_list, status, rows, digest_keys, digest_hashes, "
    "zip_path, job_id, attempts"
)


async def create_backfill(
    conn: Any,
    schema: str,
    *,
    backfill_id: str,
    table_name: str,
    chunk_rows: int,
    rows_estimate: int,
    cursor_end: Any,
) -> bool:
    """Record a new backfill; False when the id exists already (a repeated start event)."""
    status = "running" if cursor_end is not None else "done"
    result = await conn.execute(
        f"""INSERT INTO {_q(schema)}.backfills
              (backfill_id, table_name, chunk_rows, rows_estimate, cursor_end, status,
               finished_at)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6,
                    CASE WHEN $6 = 'done' THEN now() END)
            ON CONFLICT (backfill_id) DO NOTHING""",
        backfill_id,
        table_name,
        chunk_rows,
        rows_estimate,
        _dump(cursor_end),
        status,
    )
    return bool(result.endswith(" 1"))


async def get_backfill(conn: Any, schema: str, backfill_id: str) -> BackfillRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_BACKFILL_COLUMNS} FROM {_q(schema)}.backfills WHERE backfill_id = $1",
        backfill_id,
    )
    return None if row is None else BackfillRecord.from_row(row)


async def list_backfills(
    conn: Any, schema: str, statuses: Sequence[str] | None = None
) -> list[BackfillRecord]:
    """Backfills, newest first (only ``statuses`` when given); [] when the schema is missing."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{_q(schema)}.backfills")
    if exists is None:
        return []
    if statuses:
        rows = await conn.fetch(
            f"SELECT {_BACKFILL_COLUMNS} FROM {_q(schema)}.backfills "
            "WHERE status = ANY($1::text[]) ORDER BY created_at DESC",
            list(statuses),
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_BACKFILL_COLUMNS} FROM {_q(schema)}.backfills ORDER BY created_at DESC"
        )
    return [BackfillRecord.from_row(r) for r in rows]


async def set_backfill_status(
    conn: Any, schema: str, backfill_id: str, status: str, *, error: str | None = None
) -> None:
    await conn.execute(
        f"""UPDATE {_q(schema)}.backfills
            SET status = $2, error = COALESCE($3, error), updated_at = now(),
                waiting_for = NULL,
                finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END
            WHERE backfill_id = $1""",
        backfill_id,
        status,
        error,
    )


async def set_waiting(conn: Any, schema: str, backfill_id: str, reason: str | None) -> None:
    """What the backfill waits for (e.g. the credit budget), shown by ``status``."""
    await conn.execute(
        f"UPDATE {_q(schema)}.backfills SET waiting_for = $2, updated_at = now() "
        "WHERE backfill_id = $1",
        backfill_id,
        reason,
    )


async def request_cancel(conn: Any, schema: str, backfill_id: str) -> bool:
    """Flag a running backfill for cancellation; False if unknown or already finished."""
    result = await conn.execute(
        f"""UPDATE {_q(schema)}.backfills SET cancel_requested = true, updated_at = now()
            WHERE backfill_id = $1 AND status = 'running'""",
        backfill_id,
    )
    return bool(result.endswith(" 1"))


async def record_prepared_chunk(
    conn: Any,
    schema: str,
    *,
    backfill_id: str,
    seq: int,
    lo: Any,
    hi: Any,
    rows: int,
    digest: tuple[bytes, bytes],
    zip_path: str,
    cursor_last: Any,
) -> None:
    """A first-round chunk was read and zipped: store it and move the cursor, atomically."""
    async with conn.transaction():
        await conn.execute(
            f"""INSERT INTO {_q(schema)}.backfill_chunks
                  (backfill_id, seq, round, lo, hi, status, rows, digest_keys, digest_hashes,
                   zip_path)
                VALUES ($1, $2, 1, $3::jsonb, $4::jsonb, 'prepared', $5, $6, $7, $8)""",
            backfill_id,
            seq,
            _dump(lo),
            _dump(hi),
            rows,
            digest[0],
            digest[1],
            zip_path,
        )
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfills
                SET cursor_last = $2::jsonb, chunks_planned = chunks_planned + 1,
                    rows_read = rows_read + $3, updated_at = now()
                WHERE backfill_id = $1""",
            backfill_id,
            _dump(cursor_last),
            rows,
        )


async def finish_cursor(conn: Any, schema: str, backfill_id: str, cursor_last: Any) -> None:
    """The keyset walk reached the end (the last chunk came back short)."""
    await conn.execute(
        f"UPDATE {_q(schema)}.backfills SET cursor_last = $2::jsonb, updated_at = now() "
        "WHERE backfill_id = $1",
        backfill_id,
        _dump(cursor_last),
    )


async def insert_planned_chunk(
    conn: Any,
    schema: str,
    *,
    backfill_id: str,
    seq: int,
    round_: int,
    lo: Any = None,
    hi: Any = None,
    key_list: bytes | None = None,
) -> None:
    await conn.execute(
        f"""INSERT INTO {_q(schema)}.backfill_chunks
              (backfill_id, seq, round, lo, hi, key_list, status)
            VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, 'planned')""",
        backfill_id,
        seq,
        round_,
        _dump(lo),
        _dump(hi),
        key_list,
    )
    await conn.execute(
        f"UPDATE {_q(schema)}.backfills SET chunks_planned = chunks_planned + 1 "
        "WHERE backfill_id = $1",
        backfill_id,
    )


async def mark_chunk_prepared(
    conn: Any,
    schema: str,
    backfill_id: str,
    seq: int,
    *,
    rows: int,
    digest: tuple[bytes, bytes],
    zip_path: str,
    hi: Any = None,
) -> None:
    """A planned chunk (retry round, split, or a re-read after a lost zip) was read again."""
    await conn.execute(
        f"""UPDATE {_q(schema)}.backfill_chunks
            SET status = 'prepared', rows = $3, digest_keys = $4, digest_hashes = $5,
                zip_path = $6, hi = COALESCE($7::jsonb, hi), job_id = NULL
            WHERE backfill_id = $1 AND seq = $2""",
        backfill_id,
        seq,
        rows,
        digest[0],
        digest[1],
        zip_path,
        _dump(hi),
    )


async def mark_chunk_submitted(
    conn: Any, schema: str, backfill_id: str, seq: int, job_id: str
) -> None:
    """Record the job id before waiting for it (500 credits counted)."""
    async with conn.transaction():
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfill_chunks
                SET status = 'submitted', job_id = $3, attempts = attempts + 1,
                    submitted_at = now()
                WHERE backfill_id = $1 AND seq = $2""",
            backfill_id,
            seq,
            job_id,
        )
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfills
                SET jobs = jobs + 1, credits = credits + $2, waiting_for = NULL,
                    updated_at = now()
                WHERE backfill_id = $1""",
            backfill_id,
            BULK_JOB_CREDITS,
        )


async def mark_chunk_empty(conn: Any, schema: str, backfill_id: str, seq: int) -> None:
    """A chunk with nothing to load (all its rows dead-lettered): straight to loaded."""
    await conn.execute(
        f"""UPDATE {_q(schema)}.backfill_chunks SET status = 'loaded', finished_at = now()
            WHERE backfill_id = $1 AND seq = $2""",
        backfill_id,
        seq,
    )


async def mark_chunk_loaded(
    conn: Any,
    schema: str,
    backfill_id: str,
    seq: int,
    *,
    round_: int,
    added: int,
    updated: int,
    skipped: Sequence[RowOutcome],
    skipped_delta: int,
    dead_lettered: int,
) -> None:
    """The job finished: counts, and skipped rows (retryable ones wait for the next round)."""
    async with conn.transaction():
        done = await conn.execute(
            f"""UPDATE {_q(schema)}.backfill_chunks
                SET status = 'loaded', added = $3, updated = $4, skipped = $5,
                    finished_at = now()
                WHERE backfill_id = $1 AND seq = $2 AND status = 'submitted'""",
            backfill_id,
            seq,
            added,
            updated,
            len(skipped),
        )
        if not done.endswith(" 1"):
            return
        if skipped:
            await conn.executemany(
                f"""INSERT INTO {_q(schema)}.backfill_skipped
                      (backfill_id, key, round, code, message, retryable, state)
                    VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7)
                    ON CONFLICT (backfill_id, key) DO UPDATE
                    SET round = EXCLUDED.round, code = EXCLUDED.code,
                        message = EXCLUDED.message, retryable = EXCLUDED.retryable,
                        state = EXCLUDED.state, updated_at = now()""",
                [
                    (
                        backfill_id,
                        json.dumps(o.key),
                        round_,
                        o.code,
                        o.message[:2000],
                        o.retryable,
                        "retry" if o.retryable else "failed",
                    )
                    for o in skipped
                ],
            )
        ok = added + updated
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfills
                SET added = added + $2, updated = updated + $3, skipped = skipped + $4,
                    dead_lettered = dead_lettered + $5, rows_done = rows_done + $6,
                    updated_at = now()
                WHERE backfill_id = $1""",
            backfill_id,
            added,
            updated,
            skipped_delta,
            dead_lettered,
            ok,
        )


async def mark_chunk_done(
    conn: Any, schema: str, backfill_id: str, seq: int, *, resynced: int, round_: int
) -> None:
    async with conn.transaction():
        done = await conn.execute(
            f"""UPDATE {_q(schema)}.backfill_chunks
                SET status = 'done', resynced = $3, zip_path = NULL
                WHERE backfill_id = $1 AND seq = $2 AND status = 'loaded'""",
            backfill_id,
            seq,
            resynced,
        )
        if not done.endswith(" 1"):
            return
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfills
                SET chunks_done = chunks_done + $2, resynced = resynced + $3,
                    updated_at = now()
                WHERE backfill_id = $1""",
            backfill_id,
            1 if round_ == 1 else 0,
            resynced,
        )


async def mark_chunk_failed(
    conn: Any, schema: str, backfill_id: str, seq: int, *, error: str, dead_lettered: int
) -> None:
    async with conn.transaction():
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfill_chunks
                SET status = 'failed', error = $3, finished_at = now()
                WHERE backfill_id = $1 AND seq = $2""",
            backfill_id,
            seq,
            error[:2000],
        )
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfills
                SET dead_lettered = dead_lettered + $2, updated_at = now()
                WHERE backfill_id = $1""",
            backfill_id,
            dead_lettered,
        )


async def unfinished_chunks(conn: Any, schema: str, backfill_id: str) -> list[ChunkRecord]:
    rows = await conn.fetch(
        f"""SELECT {_CHUNK_COLUMNS} FROM {_q(schema)}.backfill_chunks
            WHERE backfill_id = $1 AND status = ANY($2::text[]) ORDER BY seq""",
        backfill_id,
        [s.value for s in ChunkStatus if s not in (ChunkStatus.DONE, ChunkStatus.FAILED)],
    )
    return [ChunkRecord.from_row(r) for r in rows]


async def next_seq(conn: Any, schema: str, backfill_id: str) -> int:
    value = await conn.fetchval(
        f"SELECT COALESCE(max(seq), -1) + 1 FROM {_q(schema)}.backfill_chunks "
        "WHERE backfill_id = $1",
        backfill_id,
    )
    return int(value)


async def skipped_rows(
    conn: Any, schema: str, backfill_id: str, state: str | None = None
) -> list[tuple[Any, str, str, bool, str]]:
    """(key, code, message, retryable, state) of the rows Zoho skipped."""
    rows = await conn.fetch(
        f"""SELECT key, code, message, retryable, state FROM {_q(schema)}.backfill_skipped
            WHERE backfill_id = $1 AND ($2::text IS NULL OR state = $2)""",
        backfill_id,
        state,
    )
    return [(_load(r["key"]), r["code"], r["message"], r["retryable"], r["state"]) for r in rows]


async def plan_retry_round(
    conn: Any,
    schema: str,
    backfill_id: str,
    *,
    round_: int,
    batches: Iterable[bytes],
) -> int:
    """Create the planned chunks of retry round ``round_`` (one compressed key list each) and
    mark the waiting skipped rows resubmitted, atomically. Returns the number of chunks."""
    count = 0
    async with conn.transaction():
        seq = await next_seq(conn, schema, backfill_id)
        for blob in batches:
            await insert_planned_chunk(
                conn, schema, backfill_id=backfill_id, seq=seq, round_=round_, key_list=blob
            )
            seq += 1
            count += 1
        await conn.execute(
            f"""UPDATE {_q(schema)}.backfill_skipped SET state = 'resubmitted', updated_at = now()
                WHERE backfill_id = $1 AND state = 'retry'""",
            backfill_id,
        )
        await conn.execute(
            f"UPDATE {_q(schema)}.backfills SET round = $2, updated_at = now() "
            "WHERE backfill_id = $1",
            backfill_id,
            round_,
        )
    return count


async def resolve_skipped(conn: Any, schema: str, backfill_id: str, keys: Sequence[Any]) -> None:
    """Rows a later round loaded: no longer skipped."""
    if keys:
        await conn.execute(
            f"""DELETE FROM {_q(schema)}.backfill_skipped
                WHERE backfill_id = $1 AND key = ANY($2::jsonb[])""",
            backfill_id,
            [json.dumps(k) for k in keys],
        )


async def fail_retry_skips(conn: Any, schema: str, backfill_id: str) -> list[Any]:
    """Out of rounds: the rows still waiting become failed; returns their keys."""
    rows = await conn.fetch(
        f"""UPDATE {_q(schema)}.backfill_skipped SET state = 'failed', updated_at = now()
            WHERE backfill_id = $1 AND state IN ('retry', 'resubmitted') RETURNING key""",
        backfill_id,
    )
    return [_load(r["key"]) for r in rows]
