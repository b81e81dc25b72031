"""record_mapper (the sink's compiled per-table mapper) == map_record, value by value.

Every declared type (Postgres and Zoho names, an unknown one) and no type at all, against
valid values, edge values and unmappable ones: the records must be equal (including the
Decimal exponent, so the JSON on the wire is the same) and the MappingError the same
(message, code and details).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from streamsync.errors import MappingError
from streamsync.settings import TableSettings, default_tables
from streamsync.zoho.records import (
    _ARRAY,
    _BIGINT,
    _BOOL,
    _DATE,
    _DECIMAL,
    _INT,
    _JSON,
    _TEXT,
    _TS,
    _TSTZ,
    map_record,
    record_mapper,
)
from streamsync.zoho.transport import dumps

TYPES: list[str | None] = [
    None,
    *sorted(_TEXT | _INT | _BIGINT | _DECIMAL | _BOOL | _DATE | _TSTZ | _TS | _JSON | _ARRAY),
    "INTEGER",  # declared names are case-insensitive
    " numeric ",
    "int4[]",
    "no-such-type",
]

VALUES: list[Any] = [
    None,
    "",
    "hello",
    " padded ",
    "paid",
    "ORD-17",
    "-",
    "-x",
    "00123",
    "42",
    "-42",
    "+42",
    " 42 ",
    "1234.50",
    "-1234.50",
    "0.00",
    "-0.0",
    "007.50",
    "1.5\n",
    "1.1234567890",  # scale 10
    "1.123456789",  # scale 9
    "12345678901234567.5",  # 17 integer digits
    "1234567890123456.5",  # 16
    "00000000000000000001.5",  # leading zeros do not count
    "١٢.٥",  # non-ASCII digits
    "1e5",
    "NaN",
    "Infinity",
    "abc.def",
    "2024-02-29",
    "2024-02-30",
    "2024-05-02",
    "2024-05-02T10:15:00+00:00",
    "2024-05-02T10:15:00.123456+00:00",
    "2024-05-02T10:15:00+02:00",
    "2024-05-02 10:15:00",
    "2024-05-02T10:15:00",
    "2024-05-02T10:15:00.5",
    "t",
    "false",
    "yes",
    "off",
    "6f1c4e1e-8a0b-4a3e-9a57-0f5a3c7f1d2b",
    0,
    1,
    -1,
    2,
    123,
    999_999_999,
    1_000_000_000,
    -1_000_000_000,
    9_007_199_254_740_993,
    999_999_999_999_999_999,
    1_000_000_000_000_000_000,
    -(10**30),
    True,
    False,
    0.0,
    0.1,
    -2.5,
    3.0,
    1e20,
    1e-12,
    math.inf,
    -math.inf,
    math.nan,
    [],
    ["red", "blue", None],
    [1, 2, True, 1.5],
    [["nested"]],
    [{"a": 1}],
    {},
    {"a": [1, 2]},
]


def _table(type_name: str | None, **extra: Any) -> TableSettings:
    field: dict[str, Any] = {"field": "F"}
    if type_name is not None:
        field["type"] = type_name
    return TableSettings.model_validate(
        {
            "source": "public.t",
            "module": "M",
            "external_id": {"column": "id", "field": "ext"},
            "fields": {"col": field, "other": {"field": "Other"}, **extra},
        }
    )


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        record = fn(*args)
    except MappingError as exc:
        return ("error", (str(exc), exc.code, exc.details))
    except Exception as exc:  # e.g. orjson on an int beyond 64 bits (json type): same too
        return ("raised", (type(exc), str(exc)))
    # repr keeps types apart (1 vs True vs Decimal("1")) and Decimal exponents ("1.50")
    return ("ok", (repr(record), dumps(record)))


def _check(table: TableSettings, after: dict[str, Any], unchanged: Any = ()) -> tuple[str, Any]:
    expected = _outcome(map_record, table, after, unchanged)
    got = _outcome(record_mapper(table), after, unchanged)
    assert got == expected, (after, unchanged)
    return got


@pytest.mark.parametrize("type_name", TYPES)
def test_every_type_and_value_maps_like_map_record(type_name: str | None) -> None:
    table = _table(type_name)
    errors = 0
    for value in VALUES:
        kind, _ = _check(table, {"id": 7, "col": value, "other": "x"})
        errors += kind == "error"
    assert errors < len(VALUES) or type_name == "no-such-type"


@pytest.mark.parametrize(
    "ext",
    [7, "7", -1, 10**20, "", True, False, 1.5, None, [1], {"a": 1}, "ORD-1"],
)
def test_external_id_like_map_record(ext: Any) -> None:
    table = _table(None)
    _check(table, {"id": ext, "col": "v"})
    _check(table, {"col": "v"})  # missing


def test_unchanged_absent_and_duplicate_fields() -> None:
    table = _table("numeric", dup={"field": "F"}, id={"field": "Id_Copy"})
    after = {"id": 7, "col": "1.50", "other": None, "dup": "2.5"}
    _check(table, after)
    _check(table, after, ["dup"])
    _check(table, after, frozenset({"col", "other"}))
    _check(table, {"id": 7})
    _check(table, {"id": 7, "dup": [1]})


def test_first_unmappable_column_is_reported() -> None:
    table = TableSettings.model_validate(
        {
            "source": "public.t",
            "module": "M",
            "external_id": {"column": "id", "field": "ext"},
            "fields": {
                "a": {"field": "A", "type": "integer"},
                "b": {"field": "B", "type": "date"},
            },
        }
    )
    kind, (_message, code, details) = _check(table, {"id": 1, "a": "x", "b": "y"})
    assert kind == "error" and code == "UNMAPPABLE_VALUE" and details["column"] == "a"
    kind, (_message, code, details) = _check(table, {"id": 1, "a": 5, "b": "y"})
    assert details["column"] == "b" and details["type"] == "date"


def test_default_tables() -> None:
    for table in default_tables():
        columns = [table.external_id.column, *table.fields]
        for value in VALUES:
            _check(table, dict.fromkeys(columns, value) | {table.external_id.column: 3})


def test_mapper_decimals_keep_their_digits() -> None:
    record = record_mapper(_table(None))({"id": 1, "col": "10.50"})
    assert record == {"ext": "1", "F": Decimal("10.50")}
    assert dumps(record) == b'{"ext":"1","F":10.50}'
