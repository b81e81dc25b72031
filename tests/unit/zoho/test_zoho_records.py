"""Type mapping Postgres canonical values → Zoho JSON and CSV cells; credits ledger."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from streamsync.errors import CreditBudgetExhausted, MappingError
from streamsync.settings import TableSettings, default_tables
from streamsync.zoho.credits import CreditLedger, write_cost
from streamsync.zoho.records import csv_cell, csv_columns, csv_row, map_record, to_zoho
from streamsync.zoho.transport import dumps

ORDERS = default_tables()[0]


@pytest.mark.parametrize(
    "value,type_name,expected",
    [
        ("hello", "text", "hello"),
        (42, "text", "42"),
        (42, "integer", 42),
        ("42", "int4", 42),
        (9_007_199_254_740_993, "bigint", "9007199254740993"),
        (9_007_199_254_740_993, None, "9007199254740993"),
        (123, None, 123),
        ("1234.50", "numeric", Decimal("1234.50")),
        ("1234.50", None, Decimal("1234.50")),
        ("0.1", "numeric", Decimal("0.1")),
        (0.1, "double", Decimal("0.1")),
        ("12345678901234.123456789", "numeric", Decimal("12345678901234.123456789")),
        (True, "boolean", True),
        ("f", "bool", False),
        (True, None, True),
        ("2024-02-29", "date", "2024-02-29"),
        ("2024-05-02T10:15:00.123456+00:00", "timestamptz", "2024-05-02T10:15:00+00:00"),
        ("2024-05-02T10:15:00+02:00", None, "2024-05-02T10:15:00+02:00"),
        ("2024-05-02T10:15:00", "timestamp", "2024-05-02T10:15:00+00:00"),
        ({"a": [1, 2]}, "jsonb", '{"a":[1,2]}'),
        ({"a": 1}, None, '{"a":1}'),
        ("6f1c4e1e-8a0b-4a3e-9a57-0f5a3c7f1d2b", "uuid", "6f1c4e1e-8a0b-4a3e-9a57-0f5a3c7f1d2b"),
        (["red", "blue", None], "text[]", ["red", "blue"]),
        ([1, 2], None, ["1", "2"]),
        ("00123", None, "00123"),  # digit-only strings stay text
        (None, "integer", None),
    ],
)
def test_to_zoho(value: Any, type_name: str | None, expected: Any) -> None:
    result = to_zoho(value, type_name)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "value,type_name",
    [
        ("abc", "integer"),
        (1_000_000_000, "integer"),
        ("NaN", "numeric"),
        ("Infinity", "double"),
        (float("nan"), "double"),
        ("1.0000000001", "numeric"),  # 10 decimals: Zoho keeps 9, we never round
        ("12345678901234567.5", "numeric"),  # 17 digits before the point
        ("maybe", "boolean"),
        ("2024-02-30", "date"),
        ("yesterday", "date"),
        ("2024-05-02T10:15:00", "timestamptz"),
        ([[1]], "text[]"),
        ("x", "geometry"),
        (True, "integer"),
    ],
)
def test_unmappable_values_raise_value_error(value: Any, type_name: str) -> None:
    with pytest.raises(ValueError):
        to_zoho(value, type_name)


def test_numeric_goes_on_the_wire_exactly() -> None:
    body = dumps({"Amount": to_zoho("12345678901234.10", "numeric"), "x": to_zoho("0.1", None)})
    assert body == b'{"Amount":12345678901234.10,"x":0.1}'


def row(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 7,
        "order_number": "SO-7",
        "customer_email": "a@b.example",
        "amount": "10.50",
        "currency": "EUR",
        "status": "paid",
        "order_date": "2024-05-01",
        "updated_at": "2024-05-02T10:15:00.5+00:00",
        "notes": None,
    }
    base.update(extra)
    return base


def test_map_record_default_table() -> None:
    record = map_record(ORDERS, row(), unchanged=["notes"])
    assert record == {
        "parent_id": "7",
        "Name": "SO-7",
        "Customer_Email": "a@b.example",
        "Amount": Decimal("10.50"),
        "Currency": "EUR",
        "Status": "paid",
        "Order_Date": "2024-05-01",
        "Legacy_Updated_At": "2024-05-02T10:15:00+00:00",
    }
    with_null = map_record(ORDERS, row())
    assert with_null["Notes"] is None  # NULL clears, unchanged TOAST is left out
    partial = map_record(ORDERS, {"id": 7, "amount": "1.00"})
    assert partial == {"parent_id": "7", "Amount": Decimal("1.00")}


def test_map_record_errors_name_the_column() -> None:
    table = TableSettings.model_validate(
        {
            "source": "public.t",
            "module": "M",
            "external_id": {"column": "id", "field": "ext"},
            "fields": {"qty": {"field": "Qty", "type": "integer"}},
        }
    )
    with pytest.raises(MappingError) as info:
        map_record(table, {"id": 1, "qty": "lots"})
    assert info.value.details["column"] == "qty" and info.value.details["field"] == "Qty"
    assert info.value.code == "UNMAPPABLE_VALUE"
    with pytest.raises(MappingError):
        map_record(table, {"qty": 1})  # no external id


def test_csv_columns_and_row() -> None:
    assert csv_columns(ORDERS) == [
        "parent_id",
        "Name",
        "Customer_Email",
        "Amount",
        "Currency",
        "Status",
        "Order_Date",
        "Legacy_Updated_At",
        "Notes",
    ]
    assert csv_row(ORDERS, row()) == [
        "7",
        "SO-7",
        "a@b.example",
        "10.50",
        "EUR",
        "paid",
        "2024-05-01",
        "2024-05-02T10:15:00+00:00",
        "",
    ]


@pytest.mark.parametrize(
    "value,type_name,fmt,cell",
    [
        ("2024-05-01", "date", None, "05/01/2024"),  # Zoho's CSV default MM/dd/yyyy
        ("2024-05-01", "date", "dd/MM/yyyy", "01/05/2024"),
        (["a", "b"], "text[]", None, "a;b"),
        (False, None, None, "false"),
        ("99.990", "numeric", None, "99.990"),
        (None, "text", None, ""),
        ("2024-05-02T10:15:00+00:00", None, None, "2024-05-02T10:15:00+00:00"),
    ],
)
def test_csv_cells(value: Any, type_name: str | None, fmt: str | None, cell: str) -> None:
    assert csv_cell(value, type_name, fmt) == cell


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_write_cost() -> None:
    assert [write_cost(n) for n in (1, 9, 10, 11, 100)] == [1, 1, 1, 2, 10]


def test_credit_ledger_rolling_window_and_budget(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    ledger = CreditLedger(100, clock)
    ledger.charge(50)
    clock.now = 3600
    ledger.charge(30)
    assert ledger.used_24h() == 80 and ledger.remaining() == 20
    assert "80%" in caplog.text
    assert not ledger.would_exceed(20) and ledger.would_exceed(21)
    with pytest.raises(CreditBudgetExhausted) as info:
        ledger.check(21)
    assert info.value.retry_after == pytest.approx(82800, abs=1)  # when the 50 age out
    ledger.check(21, urgent=True)  # urgent work is never refused
    clock.now = 86400.5
    assert ledger.used_24h() == 30
    ledger.check(70)


def test_credit_ledger_reads_server_remaining() -> None:
    ledger = CreditLedger(1000, Clock())
    ledger.observe_remaining("40")
    assert ledger.remaining() == 40
    ledger.charge(10)
    assert ledger.remaining() == 30
    ledger.observe_remaining("junk")
    assert ledger.remaining() == 30
