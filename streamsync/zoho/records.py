"""Postgres canonical values → Zoho JSON fields and Bulk Write CSV cells (pure).

Input is the canonical representation of docs/CONTRACTS.md; the mapping comes from
``TableSettings.fields`` (column → FieldMapping(field, type, format)). When ``type`` is not
given it is inferred from the value: bool, int (≤ 9 digits → integer, else bigint), float,
list (multi-select), dict (json); among strings, ``-?digits.digits`` is numeric and an ISO
timestamp with an offset is timestamptz; any other string is text (set ``type`` to be explicit).
The external id column always maps to ``external_id.field`` as a string. A value that cannot be mapped raises ``MappingError`` with
the column, field and type in ``details``: one record fails, never the batch.

| type (Postgres or Zoho name)            | JSON                         | CSV cell              |
|-----------------------------------------|------------------------------|-----------------------|
| text, varchar, uuid, email, picklist... | string                       | string                |
| integer, int2/int4, smallint            | number (≤ 9 digits)          | digits                |
| bigint, int8, long                      | string                       | digits                |
| numeric, decimal, currency, double      | exact number (Decimal)       | exact digits          |
| boolean, bool                           | true / false                 | true / false          |
| date                                    | "yyyy-MM-dd"                 | per ``format`` (default MM/dd/yyyy) |
| timestamptz, datetime                   | "yyyy-MM-ddTHH:mm:ss+00:00"  | same ISO-8601         |
| timestamp (no zone; taken as UTC)       | "yyyy-MM-ddTHH:mm:ss+00:00"  | same ISO-8601         |
| json, jsonb                             | string (compact JSON)        | same                  |
| arrays, multiselect                     | array of strings             | values joined by ";"  |
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from streamsync.errors import MappingError

if TYPE_CHECKING:  # settings pulls in pydantic-settings (and asyncio): keep this module pure
    from streamsync.settings import FieldMapping, TableSettings

__all__ = [
    "bulk_formats",
    "csv_cell",
    "csv_columns",
    "csv_row",
    "csv_row_encoder",
    "csv_values_encoder",
    "map_record",
    "record_mapper",
    "to_zoho",
]

_TEXT = {
    "text",
    "varchar",
    "character varying",
    "bpchar",
    "char",
    "string",
    "uuid",
    "citext",
    "email",
    "phone",
    "picklist",
    "textarea",
    "website",
    "enum",
    "inet",
    "time",
    "interval",
}
_INT = {"integer", "int", "int2", "int4", "smallint"}
_BIGINT = {"bigint", "int8", "long", "biginteger"}
_DECIMAL = {
    "numeric",
    "decimal",
    "currency",
    "double",
    "float",
    "float4",
    "float8",
    "real",
    "double precision",
    "percent",
    "number",
}
_BOOL = {"boolean", "bool", "checkbox"}
_DATE = {"date"}
_TSTZ = {"timestamptz", "datetime", "timestamp with time zone"}
_TS = {"timestamp", "timestamp without time zone"}
_JSON = {"json", "jsonb"}
_ARRAY = {"array", "multiselect", "multiselectpicklist", "text[]", "varchar[]", "integer[]"}

_MAX_INT_DIGITS = 9
_MAX_BIGINT_DIGITS = 18
_MAX_DECIMAL_SCALE = 9
_MAX_DECIMAL_INT_DIGITS = 16
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DECIMAL_RE = re.compile(r"^-?\d+\.\d+$")
_TSTZ_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}:\d{2}$")


class _Unmappable(ValueError):
    pass


def _infer(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if abs(value) < 10**_MAX_INT_DIGITS else "bigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "json"
    if isinstance(value, str):
        # Canonical numeric and timestamptz values are strings: recognise their exact shapes.
        # Digit-only strings stay text (codes, zip codes); set ``type`` to be explicit.
        if _DECIMAL_RE.match(value):
            return "decimal"
        if _TSTZ_RE.match(value):
            return "timestamptz"
    return "text"


def _norm_type(type_name: str | None, value: Any) -> str:
    if not type_name:
        return _infer(value)
    t = type_name.strip().lower()
    if t.endswith("[]"):
        return "array"
    for group, canon in (
        (_TEXT, "text"),
        (_INT, "integer"),
        (_BIGINT, "bigint"),
        (_DECIMAL, "decimal"),
        (_BOOL, "boolean"),
        (_DATE, "date"),
        (_TSTZ, "timestamptz"),
        (_TS, "timestamp"),
        (_JSON, "json"),
        (_ARRAY, "array"),
    ):
        if t in group:
            return canon
    raise _Unmappable(f"unknown type {type_name!r}")


def _to_int(value: Any, max_digits: int) -> int:
    if isinstance(value, bool):
        raise _Unmappable("boolean is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise _Unmappable("not an integer")
    if len(str(abs(number))) > max_digits:
        raise _Unmappable(f"more than {max_digits} digits")
    return number


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Unmappable("boolean is not a number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Unmappable("not a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise _Unmappable("not a number") from None
    else:
        raise _Unmappable("not a number")
    if not number.is_finite():
        raise _Unmappable("not a finite number")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    if scale > _MAX_DECIMAL_SCALE:
        raise _Unmappable(f"more than {_MAX_DECIMAL_SCALE} digits after the point")
    if len(digits) + exponent > _MAX_DECIMAL_INT_DIGITS and number != 0:
        raise _Unmappable(f"more than {_MAX_DECIMAL_INT_DIGITS} digits before the point")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("t", "true", "1", "yes", "y", "on"):
            return True
        if text in ("f", "false", "0", "no", "n", "off"):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _Unmappable("not a boolean")


def _to_date(value: Any) -> dt.date:
    if isinstance(value, str) and _DATE_RE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Unmappable("not a date (YYYY-MM-DD)")


def _to_datetime(value: Any, assume_utc: bool) -> dt.datetime:
    if not isinstance(value, str):
        raise _Unmappable("not a timestamp")
    text = value.strip().replace(" ", "T", 1)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _Unmappable("not an ISO-8601 timestamp") from None
    if stamp.tzinfo is None:
        if not assume_utc:
            raise _Unmappable("timestamptz without an offset")
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.replace(microsecond=0)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    raise _Unmappable("not text")


def _to_array(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _Unmappable("not an array")
    out: list[str] = []
    for item in value:
        if item is None:
            continue
        if isinstance(item, (list, dict)):
            raise _Unmappable("nested arrays cannot become a multi-select")
        out.append(_to_text(item))
    return out


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "text":
        return _to_text(value)
    if kind == "integer":
        return _to_int(value, _MAX_INT_DIGITS)
    if kind == "bigint":
        return str(_to_int(value, _MAX_BIGINT_DIGITS))
    if kind == "decimal":
        return _to_decimal(value)
    if kind == "boolean":
        return _to_bool(value)
    if kind == "date":
        return _to_date(value)
    if kind == "timestamptz":
        return _to_datetime(value, assume_utc=False)
    if kind == "timestamp":
        return _to_datetime(value, assume_utc=True)
    if kind == "json":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == "array":
        return _to_array(value)
    raise _Unmappable(f"unknown type {kind!r}")


def to_zoho(value: Any, type_name: str | None = None) -> Any:
    """One canonical value → its Zoho JSON value (``Decimal`` for exact numbers).

    Raises ValueError when the value cannot be mapped (map_record turns it into MappingError).
    """
    return _kind_to_zoho(value, _norm_type(type_name, value))


def _kind_to_zoho(value: Any, kind: str) -> Any:
    converted = _convert(value, kind)
    if isinstance(converted, dt.datetime):
        return converted.isoformat()
    if isinstance(converted, dt.date):
        return converted.isoformat()
    return converted


def _mapping_error(
    table: TableSettings, column: str, field: str, type_name: str | None, reason: str
) -> MappingError:
    return MappingError(
        f"column {column!r} → {table.module}.{field}: {reason}",
        details={"column": column, "field": field, "type": type_name, "reason": reason},
    )


def _external_id(table: TableSettings, after: Mapping[str, Any]) -> str:
    column = table.external_id.column
    value = after.get(column)
    if value is None or isinstance(value, (list, dict)):
        raise _mapping_error(
            table,
            column,
            table.external_id.field,
            None,
            "the external id is missing or not a scalar",
        )
    return _to_text(value)


def map_record(
    table: TableSettings, after: Mapping[str, Any], unchanged: Collection[str] = ()
) -> dict[str, Any]:
    """A row (canonical values) → a Zoho record: mapped fields plus the external id.

    Unchanged TOAST columns (and columns absent from ``after``) are left out; NULL becomes null.
    Raises MappingError for the first value that cannot be mapped.
    """
    record: dict[str, Any] = {table.external_id.field: _external_id(table, after)}
    for column, mapping in table.fields.items():
        if column in unchanged or column not in after or column == table.external_id.column:
            continue
        try:
            record[mapping.field] = to_zoho(after[column], mapping.type)
        except _Unmappable as exc:
            raise _mapping_error(table, column, mapping.field, mapping.type, str(exc)) from None
    return record


# ---- compiled per-table JSON mapper (the sink's hot path) -----------------------------------
#
# ``map_record`` re-derives every value's type (``_norm_type``: regexes over strings) and walks
# the settings on every record. ``record_mapper`` makes the per-column choice once per table:
# a declared ``type`` is normalised once; an undeclared one gets a converter with fast paths
# for the shapes canonical JSON actually carries (text that cannot be re-typed, small ints,
# booleans, in-range decimals). Anything else goes through ``to_zoho``, so the output and the
# ``MappingError`` are exactly ``map_record``'s (tests/unit/zoho/test_records_mapper.py).

ZohoFn = Callable[[Any], Any]
RecordMapper = Callable[[Mapping[str, Any], Collection[str]], dict[str, Any]]
_DEC_PARTS_RE = re.compile(r"-?(\d+)\.(\d+)")
_INT_SMALL = 10**_MAX_INT_DIGITS


def _inferred_fn() -> ZohoFn:
    """``to_zoho(value)`` (no declared type), fast for the common canonical shapes."""

    def infer(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            # only strings starting with a digit (\d: any Unicode decimal) or '-' can be
            # decimals or timestamps
            first = value[:1]
            if (first < "0" and first != "-") or "9" < first < "\x80":
                return value
            parts = _DEC_PARTS_RE.fullmatch(value)
            if (
                parts is not None
                and len(parts.group(2)) <= _MAX_DECIMAL_SCALE
                and len(parts.group(1).lstrip("0")) <= _MAX_DECIMAL_INT_DIGITS
            ):
                return Decimal(value)
        elif kind is int:
            if -_INT_SMALL < value < _INT_SMALL:
                return value
        elif kind is bool or value is None:
            return value
        return to_zoho(value)

    return infer


def _declared_fn(type_name: str) -> ZohoFn:
    """``to_zoho(value, type_name)`` with the type normalised once."""
    try:
        kind = _norm_type(type_name, None)
    except _Unmappable:
        return lambda value: to_zoho(value, type_name)  # raises: unknown type
    if kind == "text":
        return lambda value: value if type(value) is str else _kind_to_zoho(value, kind)
    return lambda value: _kind_to_zoho(value, kind)


def record_mapper(table: TableSettings) -> RecordMapper:
    """``map_record(table, ·, ·)`` compiled once for ``table``: same records, same errors."""
    ext_column = table.external_id.column
    ext_field = table.external_id.field
    plan: list[tuple[str, str, ZohoFn, FieldMapping]] = [
        (column, m.field, _declared_fn(m.type) if m.type else _inferred_fn(), m)
        for column, m in table.fields.items()
        if column != ext_column
    ]

    def mapper(after: Mapping[str, Any], unchanged: Collection[str] = ()) -> dict[str, Any]:
        ext = after.get(ext_column)
        kind = type(ext)
        if kind is str:
            record: dict[str, Any] = {ext_field: ext}
        elif kind is int:
            record = {ext_field: str(ext)}
        else:
            record = {ext_field: _external_id(table, after)}
        for column, field, fn, mapping in plan:
            if column in after and column not in unchanged:
                try:
                    record[field] = fn(after[column])
                except _Unmappable as exc:
                    raise _mapping_error(table, column, field, mapping.type, str(exc)) from None
        return record

    return mapper


def csv_columns(table: TableSettings) -> list[str]:
    """Field API names of the Bulk Write CSV header: the external id first, then the fields."""
    columns = [table.external_id.field]
    for column, mapping in table.fields.items():
        if column != table.external_id.column and mapping.field not in columns:
            columns.append(mapping.field)
    return columns


def bulk_formats(table: TableSettings) -> dict[str, str]:
    """``field_mappings[].format`` per field API name (only fields that declare one)."""
    return {m.field: m.format for m in table.fields.values() if m.format}


_JAVA_TOKENS = [
    ("yyyy", "%Y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
]


def java_to_strftime(fmt: str) -> str:
    out = fmt
    for java, py in _JAVA_TOKENS:
        out = out.replace(java, py)
    return out.replace("'", "")


def csv_cell(value: Any, type_name: str | None = None, fmt: str | None = None) -> str:
    """One canonical value → a Bulk Write CSV cell ("" for NULL: ignored with ignore_empty)."""
    converted = _convert(value, _norm_type(type_name, value))
    if converted is None:
        return ""
    if isinstance(converted, dt.datetime):
        return converted.strftime(java_to_strftime(fmt)) if fmt else converted.isoformat()
    if isinstance(converted, dt.date):
        return converted.strftime(java_to_strftime(fmt or "MM/dd/yyyy"))
    if isinstance(converted, bool):
        return "true" if converted else "false"
    if isinstance(converted, Decimal):
        return format(converted, "f")
    if isinstance(converted, list):
        return ";".join(converted)
    return str(converted)


def csv_row(table: TableSettings, after: Mapping[str, Any]) -> list[str]:
    """A row → CSV cells in ``csv_columns(table)`` order. Raises MappingError."""
    by_field = {m.field: (c, m) for c, m in table.fields.items()}
    cells = [_external_id(table, after)]
    for field in csv_columns(table)[1:]:
        column, mapping = by_field[field]
        try:
            cells.append(csv_cell(after.get(column), mapping.type, mapping.format))
        except _Unmappable as exc:
            raise _mapping_error(table, column, field, mapping.type, str(exc)) from None
    return cells


# ---- compiled per-table row encoder (the backfill's hot path) ----------------------------
#
# ``csv_row`` re-derives each cell's type from its value and rebuilds the column map on every
# row. ``csv_row_encoder`` does that work once per table: each column gets a cell function
# chosen from its declared ``type`` or, when none is declared, from its Postgres type. The
# output is exactly ``csv_row``'s (tests/unit/backfill/test_encode.py checks it value by
# value): a fast path handles the shapes the Postgres type guarantees in canonical form, and
# anything else (or a declared type) goes through ``csv_cell``.

_DIGIT_START = frozenset("-0123456789")
_INT_LIMIT = 10**_MAX_BIGINT_DIGITS
_TEXT_PG = frozenset({"text", "varchar", "bpchar", "name", "citext", "uuid"})
_PASS_PG = frozenset({"date", "timestamp"})  # canonical form is never re-typed by csv_cell
_INT_PG = frozenset({"int2", "int4", "int8", "oid"})

CellFn = Callable[[Any], str]


def _generic(type_name: str | None, fmt: str | None) -> CellFn:
    def cell(value: Any) -> str:
        return "" if value is None else csv_cell(value, type_name, fmt)

    return cell


def _cell_fn(pg_type: str | None, type_name: str | None, fmt: str | None) -> CellFn:
    generic = _generic(type_name, fmt)
    if type_name or pg_type is None:
        return generic
    if pg_type in _TEXT_PG:
        # csv_cell re-types strings shaped like decimals or ISO timestamps: only those can
        # start with a digit or '-', so every other string is its own cell.
        def text(value: Any) -> str:
            if value is None:
                return ""
            if value[:1] in _DIGIT_START:
                return generic(value)
            return str(value)

        return text
    if pg_type == "numeric":

        def numeric(value: Any) -> str:
            if value is None:
                return ""
            whole, dot, frac = value.partition(".")
            if not dot:
                return str(value)  # integral, NaN, Infinity: text
            if len(frac) <= _MAX_DECIMAL_SCALE and (
                len(whole.lstrip("-").lstrip("0")) <= _MAX_DECIMAL_INT_DIGITS
            ):
                return str(value)  # Decimal(value) prints back the same digits
            return generic(value)  # raises with the reason

        return numeric
    if pg_type in _INT_PG:

        def integer(value: Any) -> str:
            if value is None:
                return ""
            if -_INT_LIMIT < value < _INT_LIMIT:
                return str(value)
            return generic(value)

        return integer
    if pg_type == "bool":
        return lambda value: "" if value is None else ("true" if value else "false")
    if pg_type in _PASS_PG:
        return lambda value: "" if value is None else str(value)
    if pg_type == "timestamptz" and not fmt:

        def timestamptz(value: Any) -> str:
            if value is None:
                return ""
            if len(value) in (25, 32) and value[10] == "T" and value.endswith("+00:00"):
                return str(value[:19]) + "+00:00"  # seconds precision, as csv_cell prints it
            return generic(value)

        return timestamptz
    return generic


_FAST_EXPR = {
    # kind → expression over ``e`` (the non-NULL value), ``f`` (the generic cell function)
    "text": "e if e[:1] not in D else f(e)",
    "int": "str(e) if -L < e < L else f(e)",
    "bool": '"true" if e else "false"',
    "pass": "e",
    # numeric: canonical digits print back unchanged unless out of Zoho's range (then f
    # raises); "-?digits" without a point, NaN and Infinity are text in csv_cell too.
    "numeric": "e if (p := e.find('.')) < 0 or (len(e) - p <= 10 and p <= 16) else f(e)",
    "tstz": 'e[:19] + "+00:00" if len(e) in (25, 32) and e[10] == "T" and e.endswith("+00:00")'
    " else f(e)",
}


def _fast_kind(pg_type: str | None, type_name: str | None, fmt: str | None) -> str | None:
    if type_name or pg_type is None:
        return None
    if pg_type in _TEXT_PG:
        return "text"
    if pg_type in _INT_PG:
        return "int"
    if pg_type == "bool":
        return "bool"
    if pg_type in _PASS_PG:
        return "pass"
    if pg_type == "numeric":
        return "numeric"
    if pg_type == "timestamptz" and not fmt:
        return "tstz"
    return None


def _ext_cell(table: TableSettings) -> CellFn:
    column = table.external_id.column

    def cell(value: Any) -> str:
        if type(value) is str:
            return value
        if type(value) is int:
            return str(value)
        return _external_id(table, {column: value})

    return cell


def csv_values_encoder(
    table: TableSettings, columns: Sequence[tuple[str, str]]
) -> Callable[[Sequence[Any]], list[str]]:
    """``csv_row`` compiled once for rows given as value sequences in ``columns`` order
    (``(name, pg_type.typname)`` pairs, e.g. ``[("id", "int8"), ("amount", "numeric")]``).

    Same cells and the same ``MappingError`` as ``csv_row(table, dict(zip(names, values)))``,
    several times faster: the per-column choice is made here, once, and the row function is
    one generated list expression.
    """
    index = {name: i for i, (name, _t) in enumerate(columns)}
    types = dict(columns)
    by_field = {m.field: (c, m) for c, m in table.fields.items()}
    plan: list[tuple[str, str, FieldMapping, CellFn, int | None]] = []
    for field in csv_columns(table)[1:]:
        column, mapping = by_field[field]
        fn = _cell_fn(types.get(column), mapping.type, mapping.format)
        plan.append((column, field, mapping, fn, index.get(column)))
    ext = _ext_cell(table)
    ext_at = index.get(table.external_id.column)
    namespace: dict[str, Any] = {"D": _DIGIT_START, "L": _INT_LIMIT, "ext": ext}
    parts = ["ext(None)" if ext_at is None else f"ext(v[{ext_at}])"]
    for n, (column, _field, mapping, fn, at) in enumerate(plan):
        namespace[f"f{n}"] = fn
        if at is None:
            parts.append('""')  # not selected: csv_row sees None
            continue
        kind = _fast_kind(types.get(column), mapping.type, mapping.format)
        if kind is None:
            parts.append(f"f{n}(v[{at}])")
        else:
            fast = _FAST_EXPR[kind].replace("f(e)", f"f{n}(e)")
            parts.append(f'("" if (e := v[{at}]) is None else {fast})')
    source = "def encode(v):\n    return [" + ", ".join(parts) + "]\n"
    exec(compile(source, f"<csv encoder {table.source}>", "exec"), namespace)
    compiled: Callable[[Sequence[Any]], list[str]] = namespace["encode"]

    def encode(values: Sequence[Any]) -> list[str]:
        try:
            return compiled(values)
        except _Unmappable:
            pass
        # Find the column again, cell by cell, for the error's details.
        for column, field, mapping, fn, at in plan:
            try:
                fn(None if at is None else values[at])
            except _Unmappable as exc:
                raise _mapping_error(table, column, field, mapping.type, str(exc)) from None
        raise AssertionError("unreachable: the compiled encoder and the cells disagree")

    return encode


def csv_row_encoder(
    table: TableSettings, pg_types: Mapping[str, str] | None = None
) -> Callable[[Mapping[str, Any]], list[str]]:
    """``csv_row(table, ·)`` compiled once for a table whose columns have ``pg_types``
    (column → pg_type.typname); see :func:`csv_values_encoder`."""
    columns = list((pg_types or {}).items())
    names = [c for c, _t in columns]
    for column in [table.external_id.column, *table.fields]:
        if column not in names:
            names.append(column)
            columns.append((column, ""))
    encode = csv_values_encoder(table, [(c, t) if t else (c, "?") for c, t in columns])

    def from_mapping(after: Mapping[str, Any]) -> list[str]:
        return encode([after.get(c) for c in names])

    return from_mapping
