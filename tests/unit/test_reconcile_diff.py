"""Reconcile's comparison: missing, extra, duplicate and different records, Zoho's echo forms."""

from __future__ import annotations

from decimal import Decimal

import pytest

from streamsync.reconcile import diff_records, normalise


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("10.50", 10.5),
        ("10", 10),
        ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z"),
        ("2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05+00:00"),
        ("", None),
        (["a", "b"], ["b", "a"]),
        ({"id": "7", "name": "x"}, "7"),
    ],
)
def test_equal_after_normalising(a: object, b: object) -> None:
    assert normalise(a) == normalise(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("10.50", "10.51"), ("abc", "abd"), ("2024-01-02", "2024-01-03"), (True, False), ("1", None)],
)
def test_different_after_normalising(a: object, b: object) -> None:
    assert normalise(a) != normalise(b)


def test_text_that_looks_numeric_is_kept_exact() -> None:
    assert normalise("0012") == Decimal("12")
    assert normalise("ORD-0012") == "ORD-0012"
    assert normalise("2024-01-02") == "2024-01-02"


def test_diff_classifies_every_record() -> None:
    expected = {
        "1": {"Name": "A", "Amount": "1.50"},
        "2": {"Name": "B", "Amount": "2.00"},
        "3": {"Name": "C", "Amount": "3.00"},
    }
    actual = [
        ("1", {"Name": "A", "Amount": 1.5, "Owner": {"id": "9"}}),
        ("2", {"Name": "B!", "Amount": 2}),
        ("4", {"Name": "D"}),
        ("1", {"Name": "A", "Amount": 1.5}),
    ]
    report = diff_records(expected, actual, ["Name", "Amount"])
    assert report.missing == ["3"]
    assert report.extra == ["4"]
    assert report.duplicates == ["1"]
    assert [d.key for d in report.different] == ["2"]
    assert report.different[0].fields == {"Name": ("B", "B!")}
    assert report.summary() == {
        "table_rows": 3,
        "crm_records": 4,
        "missing": 1,
        "extra": 1,
        "duplicates": 1,
        "different": 1,
    }
    assert not report.in_sync


def test_in_sync() -> None:
    report = diff_records({"1": {"Name": "A"}}, [("1", {"Name": "A"})], ["Name"])
    assert report.in_sync
