"""The keyset SELECT (never OFFSET) and the chunk file: rows → CSV inside a zip, bounded memory.

One chunk = ``WHERE pk > $lo AND pk <= $end ORDER BY pk LIMIT $n``, read through a server-side
cursor in batches inside one REPEATABLE READ, read-only transaction, converted to canonical
rows (:mod:`.rows`), mapped to CSV cells (``zoho.records.csv_row``) and deflated straight into
the zip; memory holds one batch. Keys travel as text (``$1::text::<type>``) so any orderable
primary-key type works. Only single-column primary keys are supported.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamsync.backfill.chunks import ChunkDigest
from streamsync.backfill.rows import Column, RowConverter
from streamsync.errors import ConfigError, MappingError
from streamsync.settings import TableSettings
from streamsync.zoho.records import csv_columns, csv_row

__all__ = ["ChunkFile", "TableReader", "describe_table", "session_settings"]

BATCH_ROWS = 2_000

# Session settings for every backfill connection: the text forms capture relies on.
SESSION_SETTINGS = {
    "DateStyle": "ISO, MDY",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "application_name": "streamsync-backfill",
}


def session_settings() -> dict[str, str]:
    return dict(SESSION_SETTINGS)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class TableShape:
    columns: list[Column]
    pk: Column


async def describe_table(conn: Any, source: str) -> TableShape:
    """Columns (in attnum order) and the primary-key column of ``schema.table``."""
    schema, table = source.split(".")
    rows = await conn.fetch(
        """SELECT a.attname, t.typname, a.atttypid::int AS oid,
                  COALESCE(a.attnum = ANY(i.indkey), false) AS is_pk
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
           WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        schema,
        table,
    )
    if not rows:
        raise ConfigError(f"table {source!r} does not exist", code="UNKNOWN_TABLE")
    columns = [Column(r["attname"], r["typname"], r["oid"]) for r in rows]
    pks = [c for c, r in zip(columns, rows, strict=True) if r["is_pk"]]
    if len(pks) != 1:
        raise ConfigError(
            f"table {source!r} needs a single-column primary key for a backfill (found {len(pks)})",
            code="UNSUPPORTED_KEY",
        )
    return TableShape(columns, pks[0])


def key_text(key: Any) -> str:
    """A canonical key value as the text Postgres parses back (``$1::text::<type>``)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class TableReader:
    """SQL for one table's keyset walk; the connection is passed to each call."""

    def __init__(self, table: TableSettings, shape: TableShape) -> None:
        self.table = table
        self.shape = shape
        self.convert = RowConverter(shape.columns)
        rel = f"{_ident(table.schema_name)}.{_ident(table.table_name)}"
        pk = _ident(shape.pk.name)
        typ = shape.pk.type_name
        cols = self.convert.select_list()
        self._pk_index = [c.name for c in shape.columns].index(shape.pk.name)
        self.sql_first = (
            f"SELECT {cols} FROM {rel} WHERE {pk} <= $1::text::{typ} ORDER BY {pk} LIMIT $2"
        )
        self.sql_next = (
            f"SELECT {cols} FROM {rel} WHERE {pk} > $1::text::{typ} AND {pk} <= $2::text::{typ} "
            f"ORDER BY {pk} LIMIT $3"
        )
        self.sql_keys = (
            f"SELECT {cols} FROM {rel} WHERE {pk} = ANY($1::text[]::{typ}[]) ORDER BY {pk}"
        )
        self.sql_count = f"SELECT count(*) FROM {rel}"
        self.sql_max = f"SELECT max({pk})::text FROM {rel}"
        self._pk_conv = self.convert._convs[self._pk_index]

    def key_of(self, record: Sequence[Any]) -> Any:
        return self._pk_conv(record[self._pk_index])

    async def extent(self, conn: Any) -> tuple[int, Any]:
        """(row count, maximum key) at the start of a backfill."""
        count = await conn.fetchval(self.sql_count)
        top = await conn.fetchval(self.sql_max)
        if top is None:
            return int(count), None
        return int(count), self._parse_key_text(top)

    def _parse_key_text(self, text: str) -> Any:
        from streamsync.values import converter

        if self.shape.pk.native and self.shape.pk.type_name in ("int2", "int4", "int8"):
            return int(text)
        return converter(self.shape.pk.type_oid)(text)

    def cursor_args(self, lo: Any, end: Any, limit: int) -> tuple[str, list[Any]]:
        if lo is None:
            return self.sql_first, [key_text(end), limit]
        return self.sql_next, [key_text(lo), key_text(end), limit]

    async def fetch_keys(self, conn: Any, keys: Sequence[Any]) -> list[tuple[Any, dict[str, Any]]]:
        """Current rows for ``keys`` (missing keys are absent), in key order."""
        out: list[tuple[Any, dict[str, Any]]] = []
        for start in range(0, len(keys), 10_000):
            part = [key_text(k) for k in keys[start : start + 10_000]]
            for record in await conn.fetch(self.sql_keys, part):
                out.append((self.key_of(record), self.convert(record)))
        return out


@dataclass(slots=True)
class ChunkFile:
    """What reading one chunk produced."""

    path: Path
    digest: ChunkDigest
    first_key: Any
    last_key: Any
    rows_read: int
    unmappable: list[tuple[Any, dict[str, Any], MappingError]]


class _ZipCsv:
    """CSV rows deflated straight into a one-file zip (no temporary CSV)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        self._raw = self._zip.open(path.stem + ".csv", "w", force_zip64=True)
        self._text = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(list(columns))

    def write(self, rows: list[list[str]]) -> None:
        self._csv.writerows(rows)

    def close(self) -> None:
        self._text.close()
        self._zip.close()

    def abort(self) -> None:
        try:
            self.close()
        finally:
            self.path.unlink(missing_ok=True)


async def read_chunk(
    conn: Any,
    reader: TableReader,
    *,
    path: Path,
    lo: Any,
    end: Any,
    limit: int,
    keys: Sequence[Any] | None = None,
    batch_rows: int = BATCH_ROWS,
    on_batch: Callable[[int], None] | None = None,
) -> ChunkFile:
    """Read one chunk (a keyset range, or an explicit key list) into a zip at ``path``.

    Rows whose values cannot be mapped to Zoho are left out of the file and returned in
    ``unmappable`` (the caller dead-letters them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    table = reader.table
    digest = ChunkDigest()
    unmappable: list[tuple[Any, dict[str, Any], MappingError]] = []
    first_key: Any = None
    last_key: Any = None
    read = 0
    out = _ZipCsv(path, csv_columns(table))
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if keys is not None:
                sql = reader.sql_keys
                args: list[Any] = [[key_text(k) for k in keys]]
            else:
                sql, args = reader.cursor_args(lo, end, limit)
            cursor = await conn.cursor(sql, *args)
            while True:
                batch = await cursor.fetch(batch_rows)
                if not batch:
                    break
                cells: list[list[str]] = []
                for record in batch:
                    key = reader.key_of(record)
                    after = reader.convert(record)
                    if first_key is None:
                        first_key = key
                    last_key = key
                    read += 1
                    try:
                        cells.append(csv_row(table, after))
                    except MappingError as exc:
                        unmappable.append((key, after, exc))
                        continue
                    digest.add(key, after)
                out.write(cells)
                if on_batch is not None:
                    on_batch(len(batch))
                if len(batch) < batch_rows:
                    break
        out.close()
    except BaseException:
        out.abort()
        raise
    return ChunkFile(path, digest, first_key, last_key, read, unmappable)
