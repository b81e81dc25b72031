"""asyncpg values → canonical values, matching what capture derives from Postgres text."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from streamsync.backfill.rows import Column, RowConverter, canonical_value
from streamsync.values import canonical


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (42, 42),
        ("x", "x"),
        (1.5, 1.5),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (Decimal("1234.50"), "1234.50"),
        (Decimal("0.0000001"), "0.0000001"),
        (Decimal("NaN"), "NaN"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.date.max, "infinity"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 120000), "2024-01-02T03:04:05.120000"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "2024-01-02T03:04:05+00:00"),
        (
            dt.datetime(2024, 1, 2, 5, 4, 5, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-02T03:04:05.000001+00:00",
        ),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x00\xff", "\\x00ff"),
        ([1, None, 3], [1, None, 3]),
        ([dt.date(2024, 1, 1)], ["2024-01-01"]),
    ],
)
def test_canonical_value(value: object, expected: object) -> None:
    assert canonical_value(value) == expected


@pytest.mark.parametrize(
    ("text", "oid", "value"),
    [
        ("2024-01-02 03:04:05.12", 1114, dt.datetime(2024, 1, 2, 3, 4, 5, 120000)),
        ("2024-01-02 03:04:05+00", 1184, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2024-01-02 03:04:05.5+00", 1184, dt.datetime(2024, 1, 2, 3, 4, 5, 500000, dt.UTC)),
    ],
)
def test_same_canonical_form_as_capture(text: str, oid: int, value: object) -> None:
    assert canonical_value(value) == canonical(oid, text)


def test_row_converter_selects_text_for_lossy_types_and_converts() -> None:
    cols = [
        Column("id", "int8", 20),
        Column("amount", "numeric", 1700),
        Column("ratio", "float4", 700),
        Column("meta", "jsonb", 3802),
        Column("tags", "_text", 1009),
        Column("status", "order_status", 99999),
        Column("span", "interval", 1186),
    ]
    conv = RowConverter(cols)
    assert conv.select_list() == (
        '"id", "amount", "ratio"::text, "meta", "tags", "status"::text, "span"::text'
    )
    row = conv((7, Decimal("1.10"), "0.1", '{"a": [1]}', ["x", None], "paid", "1 day"))
    assert row == {
        "id": 7,
        "amount": "1.10",
        "ratio": 0.1,
        "meta": {"a": [1]},
        "tags": ["x", None],
        "status": "paid",
        "span": "1 day",
    }
    assert conv((1, None, None, None, None, None, None))["meta"] is None


def test_json_arrays_are_read_as_text() -> None:
    col = Column("docs", "_jsonb", 3807)
    assert not col.native
    assert RowConverter([col])(['{"{\\"a\\": 1}"}'])["docs"] == [{"a": 1}]
