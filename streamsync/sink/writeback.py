"""The optional sync flag (``tables.sync_flag_column``): the outcome written back to the
legacy row, without the write causing a capture loop.

The writing transaction starts with a transactional logical message (prefix
``events.WRITEBACK_MESSAGE_PREFIX``); capture drops every change of a transaction that carries
it. ``IS DISTINCT FROM`` skips rows whose flag already holds the value, so even a capture that
ignores the marker causes at most one extra round per flip. A failed write-back is logged and
never blocks a partition: the flag is a side effect, the record map is the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streamsync.errors import ConfigError
from streamsync.events import WRITEBACK_MESSAGE_PREFIX
from streamsync.settings import TableSettings
from streamsync.store import record_map

__all__ = ["SyncFlagWriter"]

log = logging.getLogger("streamsync.sink")


class SyncFlagWriter:
    """Writes ``true`` for ok and ``false`` for failed outcomes into each table's flag column."""

    def __init__(self, pool: Any, tables: Mapping[str, TableSettings]) -> None:
        self._pool = pool
        self._tables = tables
        self._pk_types: dict[str, str] = {}

    def wanted(self, table: str) -> bool:
        found = self._tables.get(table)
        return found is not None and bool(found.sync_flag_column)

    async def write(self, outcomes: Sequence[record_map.Outcome]) -> None:
        by_table: dict[str, dict[bool, list[Any]]] = {}
        for o in outcomes:
            if o.status == "deleted" or not self.wanted(o.table):
                continue
            by_table.setdefault(o.table, {}).setdefault(o.status == "ok", []).append(
                _key_value(o.key)
            )
        for name, groups in by_table.items():
            try:
                await self._write_table(self._tables[name], groups)
            except Exception as exc:  # a side effect: never blocks the partition
                if not _is_pg_error(exc):
                    raise
                log.warning("sink: sync flag write-back skipped (%s)", type(exc).__name__)

    async def _write_table(self, table: TableSettings, groups: dict[bool, list[Any]]) -> None:
        flag = table.sync_flag_column
        pk = table.external_id.column
        rel_q = f'"{table.schema_name}"."{table.table_name}"'
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            await conn.execute(
                "SELECT pg_logical_emit_message(true, $1, $2)",
                WRITEBACK_MESSAGE_PREFIX,
                table.source,
            )
            typ = await self._pk_type(conn, rel_q, pk)
            for value, keys in groups.items():
                # SKIP LOCKED: a row a user transaction holds is being changed right now; its
                # new version is synced (and flagged) after it. No deadlocks. The keys are
                # cast to the key's own type so the primary key index finds them
                # (``pk::text = ANY(...)`` reads the whole table).
                await conn.execute(
                    f'UPDATE {rel_q} SET "{flag}" = $1 WHERE "{pk}" IN ('
                    f'SELECT "{pk}" FROM {rel_q} WHERE "{pk}" = ANY($2::text[]::{typ}[]) '
                    f'AND "{flag}" IS DISTINCT FROM $1 ORDER BY "{pk}" '
                    "FOR UPDATE SKIP LOCKED)",
                    value,
                    [str(k) for k in keys],
                )

    async def _pk_type(self, conn: Any, rel_q: str, column: str) -> str:
        """The SQL type of a legacy table's key column (looked up once per table)."""
        typ = self._pk_types.get(rel_q)
        if typ is None:
            typ = await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname = $2",
                rel_q,
                column,
            )
            if typ is None:
                raise ConfigError(f"{rel_q} has no column {column!r}")
            self._pk_types[rel_q] = typ
        return typ


def _key_value(key_text: str) -> Any:
    key = orjson.loads(key_text)
    return key[0] if isinstance(key, list) and len(key) == 1 else key_text


def _is_pg_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError)
