"""asyncpg Python values → the canonical JSON values of docs/CONTRACTS.md. Pure.

The backfill's reader no longer uses :class:`RowConverter`: ``read.TextRowConverter`` selects
every column but ints and bools as text and converts it with :mod:`streamsync.values` (much
cheaper than building datetime and Decimal objects). This module stays for callers holding
natively decoded values, and its :func:`Column` describes a table's columns.

The backfill reads natively only the types whose Python form maps back to Postgres's text form
without loss (ints, bool, float8, numeric, text, uuid, date, timestamps, json, bytea and 1-D
arrays of those); every other column is selected as ``col::text`` and goes through
:func:`streamsync.values.converter`, the converter capture uses, so both sides agree byte for
byte. ``float4`` is read as text too: its Python float prints more digits than Postgres does.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from streamsync.values import converter

__all__ = ["NATIVE_TYPES", "Column", "RowConverter", "canonical_value"]

# Type names (pg_type.typname) read natively by asyncpg; arrays are "_" + element name.
NATIVE_TYPES = frozenset(
    {
        "bool",
        "int2",
        "int4",
        "int8",
        "oid",
        "float8",
        "numeric",
        "text",
        "varchar",
        "bpchar",
        "name",
        "uuid",
        "date",
        "timestamp",
        "timestamptz",
        "json",
        "jsonb",
        "bytea",
    }
)


def _fraction(micro: int) -> str:
    # CONTRACTS.md: [.ffffff], six digits when there is a fraction (as capture prints it).
    return "" if micro == 0 else f".{micro:06d}"


def _timestamp(value: dt.datetime) -> str:
    if value == dt.datetime.max:
        return "infinity"
    if value == dt.datetime.min:
        return "-infinity"
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}{_fraction(value.microsecond)}"
    )


def _timestamptz(value: dt.datetime) -> str:
    if value.tzinfo is None:
        return _timestamp(value)
    if value.replace(tzinfo=None) in (dt.datetime.max, dt.datetime.min):
        return "infinity" if value.year == dt.MAXYEAR else "-infinity"
    utc = value.astimezone(dt.UTC)
    return _timestamp(utc.replace(tzinfo=None)) + "+00:00"


def _date(value: dt.date) -> str:
    if value == dt.date.max:
        return "infinity"
    if value == dt.date.min:
        return "-infinity"
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def _float(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _numeric(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return format(value, "f")


def canonical_value(value: Any) -> Any:
    """One natively decoded asyncpg value → its canonical JSON value (by Python type)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        return _numeric(value)
    if isinstance(value, dt.datetime):
        return _timestamptz(value) if value.tzinfo is not None else _timestamp(value)
    if isinstance(value, dt.date):
        return _date(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return [canonical_value(v) for v in value]
    return str(value)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_name: str  # pg_type.typname ("int8", "_text", "order_status", ...)
    type_oid: int

    @property
    def native(self) -> bool:
        if self.type_name in NATIVE_TYPES:
            return True
        base = self.type_name[1:] if self.type_name.startswith("_") else None
        return base is not None and base in NATIVE_TYPES and base not in ("json", "jsonb")

    def select_expr(self) -> str:
        """The SELECT list entry for this column."""
        quoted = '"' + self.name.replace('"', '""') + '"'
        return quoted if self.native else f"{quoted}::text"


def _for(column: Column) -> Callable[[Any], Any]:
    if not column.native:
        text_conv = converter(column.type_oid)
        return lambda v: None if v is None else text_conv(v)
    name = column.type_name
    if name in ("json", "jsonb"):
        return lambda v: None if v is None else _json(v)
    if name in ("int2", "int4", "int8", "oid", "text", "varchar", "bpchar", "name", "bool"):
        return _identity
    return canonical_value


def _identity(value: Any) -> Any:
    return value


class RowConverter:
    """Turns asyncpg records (selected with ``select_list()``) into canonical row dicts."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self._names = [c.name for c in self.columns]
        self._convs = [_for(c) for c in self.columns]

    def select_list(self) -> str:
        return ", ".join(c.select_expr() for c in self.columns)

    def __call__(self, record: Sequence[Any]) -> dict[str, Any]:
        return {
            name: conv(value)
            for name, conv, value in zip(self._names, self._convs, record, strict=True)
        }
