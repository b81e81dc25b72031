"""The record map: legacy key -> Zoho id, last synced position, status (owned by the sink).

One row per (table, key text); ``key`` is the canonical key JSON (``events.encode_key``).
``status``: ``ok`` (the CRM holds version ``(lsn, seq)``), ``failed`` (Zoho rejected that
version: it is in the DLQ; the seed's "sync flag = false"), ``deleted`` (removed from the CRM).
Writes never move a key's position backwards (the ON CONFLICT guard), so a late outcome of an
older version cannot overwrite a newer one.

Functions take an asyncpg connection or pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["DDL", "Outcome", "counts", "failed_keys", "fetch", "fetch_sql", "record_outcomes"]

DDL = [
    """CREATE TABLE IF NOT EXISTS "{schema}".record_map (
        "table"     text        NOT NULL,
        key         text        NOT NULL,
        zoho_id     text,
        lsn         bigint      NOT NULL DEFAULT 0,
        seq         integer     NOT NULL DEFAULT 0,
        status      text        NOT NULL CHECK (status IN ('ok', 'failed', 'deleted')),
        error_code  text,
        attempts    integer     NOT NULL DEFAULT 0,
        synced_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY ("table", key)
    )""",
    """CREATE INDEX IF NOT EXISTS record_map_not_ok
        ON "{schema}".record_map ("table", status) WHERE status <> 'ok'""",
]


@dataclass(slots=True)  # one per synced record: not frozen (hot path)
class Outcome:
    """A final outcome to record for one key."""

    table: str
    key: str
    zoho_id: str | None
    lsn: int
    seq: int
    status: str  # ok | failed | deleted
    error_code: str | None = None
    attempts: int = 1


@dataclass(slots=True)
class Row:
    zoho_id: str | None
    lsn: int
    seq: int
    status: str
    attempts: int


def _q(schema: str) -> str:
    return f'"{schema}".record_map'


def fetch_sql(schema: str) -> str:
    """The lookup ``fetch`` runs: ``$1`` the table, ``$2`` the keys as a JSON array of strings.

    One primary-key probe per key (``LATERAL ... LIMIT 1`` cannot be flattened into a join).
    ``key = ANY($2)`` or a plain join let the planner, misled by the statistics of a table
    filled since its last ANALYZE, read every row of the table for each batch. Keys go in and
    rows come out as one JSON value each: the sink runs this for every batch, and a JSON text
    costs the client a third of the CPU of a text array in and a hundred records out.
    """
    return (
        "SELECT json_agg(json_build_array(m.key, m.zoho_id, m.lsn, m.seq, m.status, m.attempts)) "
        "FROM json_array_elements_text($2::json) AS u(key) CROSS JOIN LATERAL ("
        f"SELECT key, zoho_id, lsn, seq, status, attempts FROM {_q(schema)} "
        'WHERE "table" = $1 AND key = u.key LIMIT 1) AS m'
    )


async def fetch(conn: Any, schema: str, table: str, keys: Sequence[str]) -> dict[str, Row]:
    """The record-map rows of ``keys`` (missing keys are absent)."""
    if not keys:
        return {}
    found = await conn.fetchval(fetch_sql(schema), table, orjson.dumps(list(keys)).decode())
    if found is None:
        return {}
    return {r[0]: Row(r[1], r[2], r[3], r[4], r[5]) for r in orjson.loads(found)}


async def record_outcomes(conn: Any, schema: str, outcomes: Sequence[Outcome]) -> None:
    """Upsert final outcomes; a row only moves forward in (lsn, seq).

    A failure keeps the known Zoho id; a delete clears it; attempts accumulate on failures.
    One statement per call, the rows sent as one JSON array (``json_to_recordset``): the
    record map is written for every batch, so its cost per row matters. Outcomes of one key
    are folded to the newest first (one statement may not update a row twice).
    """
    if not outcomes:
        return
    newest: dict[tuple[str, str], Outcome] = {}
    for o in outcomes:
        seen = newest.get((o.table, o.key))
        if seen is None or (seen.lsn, seen.seq) <= (o.lsn, o.seq):
            newest[(o.table, o.key)] = o
    rows = [
        (
            o.table,
            o.key,
            o.zoho_id,
            o.lsn,
            o.seq,
            o.status,
            o.error_code,
            o.attempts if o.status == "failed" else 0,
        )
        for o in newest.values()
    ]
    await conn.execute(
        f"""INSERT INTO {_q(schema)} AS m
               ("table", key, zoho_id, lsn, seq, status, error_code, attempts, synced_at)
            SELECT u->>0, u->>1, u->>2, (u->>3)::bigint, (u->>4)::int,
                   u->>5, u->>6, (u->>7)::int, now()
            FROM json_array_elements($1::json) AS u
            ON CONFLICT ("table", key) DO UPDATE SET
               zoho_id = CASE WHEN EXCLUDED.status = 'deleted' THEN NULL
                              ELSE COALESCE(EXCLUDED.zoho_id, m.zoho_id) END,
               lsn = EXCLUDED.lsn, seq = EXCLUDED.seq, status = EXCLUDED.status,
               error_code = EXCLUDED.error_code,
               attempts = CASE WHEN EXCLUDED.status = 'failed'
                               THEN m.attempts + EXCLUDED.attempts ELSE 0 END,
               synced_at = now()
            WHERE (m.lsn, m.seq) <= (EXCLUDED.lsn, EXCLUDED.seq)""",
        orjson.dumps(rows).decode(),
    )


async def counts(conn: Any, schema: str) -> dict[str, int]:
    """Rows per status (for ``status`` and tests)."""
    rows = await conn.fetch(f"SELECT status, count(*) AS n FROM {_q(schema)} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def failed_keys(
    conn: Any, schema: str, table: str, limit: int = 1000
) -> list[tuple[str, str]]:
    """(key, error_code) of failed keys of ``table``."""
    rows = await conn.fetch(
        f"SELECT key, error_code FROM {_q(schema)} "
        f"WHERE \"table\" = $1 AND status = 'failed' ORDER BY key LIMIT $2",
        table,
        limit,
    )
    return [(r["key"], r["error_code"] or "") for r in rows]
