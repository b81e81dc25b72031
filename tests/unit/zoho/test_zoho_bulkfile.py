"""Bulk Write files: streamed CSV-in-zip writer and the result parser."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamsync.zoho.bulkfile import parse_bulk_result, parse_errors, write_bulk_zip


async def test_write_bulk_zip_streams_rows(tmp_path: Path) -> None:
    async def rows() -> AsyncIterator[list[str]]:
        for i in range(2500):
            yield [str(i), f"name, with comma {i}", 'quote "q"\nnewline']

    path = tmp_path / "chunk.zip"
    assert await write_bulk_zip(rows(), ["parent_id", "Name", "Notes"], path) == 2500
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["chunk.csv"]
        data = list(csv.reader(io.StringIO(archive.read("chunk.csv").decode(), newline="")))
    assert data[0] == ["parent_id", "Name", "Notes"]
    assert len(data) == 2501
    assert data[2500] == ["2499", "name, with comma 2499", 'quote "q"\nnewline']
    assert not list(tmp_path.glob("*.part"))  # noqa: ASYNC240


async def test_write_bulk_zip_accepts_plain_iterables(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    assert await write_bulk_zip([["1"], ["2"]], ["a"], path, csv_name="Orders.csv") == 2
    with zipfile.ZipFile(path) as archive:
        assert archive.read("Orders.csv").decode() == "a\n1\n2\n"


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("Orders-orders.csv", text)
    return buf.getvalue()


@pytest.mark.parametrize("case", [str.upper, str.lower, str.title])
def test_parse_result_any_status_case(case: type[str] | object) -> None:
    f = case  # type: ignore[assignment]
    text = (
        "parent_id,Name,Amount,STATUS,RECORD_ID,ERRORS\n"
        f"ORD-1,Order 1,120.5,{f('ADDED')},111,\n"  # type: ignore[operator]
        f"ORD-2,Order 2,99.0,{f('UPDATED')},222,\n"  # type: ignore[operator]
        f"ORD-3,,abc,{f('SKIPPED')},,MANDATORY_NOT_FOUND-Name:INVALID_DATA-Amount\n"  # type: ignore[operator]
    )
    out = parse_bulk_result(_zip(text))
    assert [(r.row, r.status, r.record_id) for r in out] == [
        (0, "ADDED", "111"),
        (1, "UPDATED", "222"),
        (2, "SKIPPED", None),
    ]
    assert out[2].errors == {"Name": "MANDATORY_NOT_FOUND", "Amount": "INVALID_DATA"}
    assert out[0].values == {"parent_id": "ORD-1", "Name": "Order 1", "Amount": "120.5"}
    assert out[0].ok and not out[2].ok


def test_parse_result_from_path_and_lowercase_headers(tmp_path: Path) -> None:
    path = tmp_path / "r.zip"
    path.write_bytes(_zip("parent_id,status,record_id,errors\nA,added,1,\n"))
    assert parse_bulk_result(path)[0].status == "ADDED"


def test_parse_errors() -> None:
    assert parse_errors("MANDATORY_NOT_FOUND-Company,Last_Name:DUPLICATE_DATA-Email") == {
        "Company": "MANDATORY_NOT_FOUND",
        "Last_Name": "MANDATORY_NOT_FOUND",
        "Email": "DUPLICATE_DATA",
    }
    assert parse_errors("") == {}
    assert parse_errors("LIMIT_EXCEEDED") == {"": "LIMIT_EXCEEDED"}


def test_parse_result_without_status_column() -> None:
    with pytest.raises(ValueError):
        parse_bulk_result(_zip("a,b\n1,2\n"))
