"""Postgres text values (as pgoutput sends them) → the canonical JSON values of docs/CONTRACTS.md.

``canonical(type_oid, text)`` is the one entry point; ``None`` means SQL NULL. Unknown type
OIDs (enums, domains, citext, ...) keep their Postgres text form. Pure: no I/O.

The replication connection runs with ``DateStyle=ISO`` and ``TimeZone=UTC``, but the parsers
do not rely on it for timestamptz: any offset Postgres prints is converted to UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["ARRAY_ELEMENT", "canonical", "converter", "identity", "parse_array"]

# Scalar type OIDs (pg_type.h).
BOOL, BYTEA, INT8, INT2, INT4, TEXT, OID = 16, 17, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, NUMERIC, JSONB = 114, 700, 701, 1700, 3802
DATE, TIMESTAMP, TIMESTAMPTZ = 1082, 1114, 1184

# Array type OID → element type OID.
ARRAY_ELEMENT: dict[int, int] = {
    1000: BOOL,
    1001: BYTEA,
    1005: INT2,
    1007: INT4,
    1016: INT8,
    1028: OID,
    1009: TEXT,
    1014: 1042,  # bpchar
    1015: 1043,  # varchar
    1021: FLOAT4,
    1022: FLOAT8,
    1231: NUMERIC,
    199: JSON,
    3807: JSONB,
    2951: 2950,  # uuid
    1182: DATE,
    1115: TIMESTAMP,
    1185: TIMESTAMPTZ,
    1183: 1083,  # time
    1187: 1186,  # interval
    1041: 869,  # inet
}

_SPECIAL_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})


def _bool(text: str) -> bool:
    return text == "t"


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float | str:
    if text in _SPECIAL_FLOATS:
        return text
    return float(text)


def _json(text: str) -> Any:
    return orjson.loads(text)


def _date(text: str) -> str:
    # ISO style prints YYYY-MM-DD; 'infinity' and BC dates stay as Postgres prints them.
    return text


def _six_digits(clock: str) -> str:
    """'07:08:09.5' → '07:08:09.500000' (Python's isoformat, which backfill produces)."""
    if len(clock) == 8 or len(clock) == 15:
        return clock
    return clock + "0" * (15 - len(clock))


def _timestamp(text: str) -> str:
    if len(text) < 19 or text[4] != "-" or text.endswith(" BC"):
        return text  # infinity, -infinity, BC
    return text[:10] + "T" + _six_digits(text[11:])


def _timestamptz(text: str) -> str:
    if len(text) == 29 and text[26:] == "+00" and text[4] == "-" and text[10] == " ":
        # Fastest path, a UTC session with microseconds: '2024-01-02 03:04:05.123456+00'.
        return text[:10] + "T" + text[11:26] + "+00:00"
    if len(text) < 19 or text[4] != "-" or text.endswith(" BC"):
        return text
    if text.endswith("+00") and len(text) <= 29:
        # Fast path for the UTC session: '2024-01-02 03:04:05.123456+00'.
        return text[:10] + "T" + _six_digits(text[11:-3]) + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    moment = moment.astimezone(UTC)
    return moment.isoformat()


_SCALAR: dict[int, Callable[[str], Any]] = {
    BOOL: _bool,
    INT2: _int,
    INT4: _int,
    INT8: _int,
    OID: _int,
    FLOAT4: _float,
    FLOAT8: _float,
    JSON: _json,
    JSONB: _json,
    DATE: _date,
    TIMESTAMP: _timestamp,
    TIMESTAMPTZ: _timestamptz,
}


def canonical(type_oid: int, text: str | None) -> Any:
    """The canonical JSON value of one column, given its type OID and Postgres text form."""
    if text is None:
        return None
    conv = _SCALAR.get(type_oid)
    if conv is not None:
        return conv(text)
    element = ARRAY_ELEMENT.get(type_oid)
    if element is not None:
        return _map_items(element, parse_array(text))
    return text  # numeric, text, varchar, uuid, bytea ('\x…'), time, interval, enums, ...


def identity(text: str) -> str:
    return text


def converter(type_oid: int) -> Callable[[str], Any]:
    """The text → canonical function for one type (NULLs are handled by the caller).

    Types whose canonical form is their text get ``identity`` (callers may skip the call).
    """
    conv = _SCALAR.get(type_oid)
    if conv is not None:
        return conv
    element = ARRAY_ELEMENT.get(type_oid)
    if element is not None:
        return lambda text: _map_items(element, parse_array(text))
    return identity


def _map_items(element: int, items: list[Any]) -> list[Any]:
    return [
        _map_items(element, item) if isinstance(item, list) else canonical(element, item)
        for item in items
    ]


def parse_array(text: str) -> list[Any]:
    """Parse a 1-D Postgres array literal into its element texts (None for NULL).

    ``{1,2,NULL}`` → ['1', '2', None]; ``{"a b","x\\"y"}`` → ['a b', 'x"y'].
    Multi-dimensional arrays come back as nested lists of texts.
    A leading dimension decoration (``[0:1]={...}``) is skipped.
    """
    if text.startswith("["):
        text = text[text.index("=") + 1 :]
    items, _ = _parse_array_at(text, 0)
    return items


def _parse_array_at(text: str, pos: int) -> tuple[list[Any], int]:
    if text[pos] != "{":
        raise ValueError(f"not an array literal at {pos}: {text[:40]!r}")
    pos += 1
    out: list[Any] = []
    n = len(text)
    if pos < n and text[pos] == "}":
        return out, pos + 1
    while pos < n:
        ch = text[pos]
        if ch == "{":
            sub, pos = _parse_array_at(text, pos)
            out.append(sub)
        elif ch == '"':
            pos += 1
            buf: list[str] = []
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                buf.append(text[pos])
                pos += 1
            pos += 1
            out.append("".join(buf))
        else:
            start = pos
            while text[pos] not in ",}":
                pos += 1
            raw = text[start:pos].strip()
            out.append(None if raw == "NULL" else raw)
        if text[pos] == ",":
            pos += 1
            continue
        if text[pos] == "}":
            return out, pos + 1
    raise ValueError(f"unterminated array literal: {text[:40]!r}")
