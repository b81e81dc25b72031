"""The compiled CSV encoder gives exactly ``csv_row``'s cells and errors, per Postgres type."""

from __future__ import annotations

from typing import Any

import pytest

from streamsync.backfill.chunks import ChunkDigest, row_hash, row_hash_values
from streamsync.backfill.read import _tstz_utc
from streamsync.errors import MappingError
from streamsync.settings import TableSettings
from streamsync.values import converter
from streamsync.zoho.records import csv_row, csv_row_encoder, csv_values_encoder

COLUMNS = [
    ("id", "int8"),
    ("name", "text"),
    ("code", "varchar"),
    ("ref", "uuid"),
    ("amount", "numeric"),
    ("qty", "int4"),
    ("big", "int8"),
    ("flag", "bool"),
    ("day", "date"),
    ("seen", "timestamp"),
    ("at", "timestamptz"),
    ("ratio", "float8"),
    ("doc", "jsonb"),
    ("tags", "_text"),
    ("mood", "mood_enum"),
    ("typed", "text"),
    ("day_fmt", "date"),
    ("at_fmt", "timestamptz"),
]

TABLE = TableSettings.model_validate(
    {
        "source": "public.t",
        "module": "T",
        "external_id": {"column": "id", "field": "parent_id"},
        "fields": {
            **{c: c.title() for c, _ in COLUMNS if c not in ("id", "typed", "day_fmt", "at_fmt")},
            "typed": {"field": "Typed", "type": "integer"},
            "day_fmt": {"field": "Day_Fmt", "type": "date", "format": "MM/dd/yyyy"},
            "at_fmt": {"field": "At_Fmt", "format": "yyyy-MM-dd HH:mm"},
            "missing": "Missing",  # mapped but not a column of the table
        },
    }
)

# Values per column (canonical form); each row takes the i-th value of every column (cycled).
VALUES: dict[str, list[Any]] = {
    "id": [1, 2, 10**12, "k-1", "007"],
    "name": ["SO-1", "", None, "1.5", "-3", "2024-01-02T03:04:05+00:00", "1.1234567890123", "é"],
    "code": ["00123", "a,b", 'quo"te', "x\ny", None],
    "ref": ["00000000-0000-0000-0000-000000000001", "f47ac10b-58cc-4372-a567-0e02b2c3d479"],
    "amount": [
        "1.25",
        "-0.50",
        "0.00",
        "1000",
        "NaN",
        "1234567890123456.5",
        "12345678901234567.5",
        "1.1234567890",
        "-1234567890123456.25",
        None,
    ],
    "qty": [0, -5, 2147483647, None],
    "big": [999_999_999, 10**9, 10**17 * 9, 10**18, -(10**18), 9223372036854775807, None],
    "flag": [True, False, None],
    "day": ["2024-02-29", "infinity", "0044-03-15 BC", None],
    "seen": ["2024-01-02T03:04:05", "2024-01-02T03:04:05.120000", "infinity", None],
    "at": [
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05.000001+00:00",
        "infinity",
        "12024-01-02T03:04:05+00:00",
        None,
    ],
    "ratio": [1.5, 1e-12, "NaN", "Infinity", 3.0, None],
    "doc": [{"a": 1}, [1, 2], "s", 5, None],
    "tags": [["a", "b"], [], ["x", None], [["nested"]], None],
    "mood": ["happy", "1.5", None],
    "typed": ["12", "x", None, 123],
    "day_fmt": ["2024-03-04", "bad", None],
    "at_fmt": ["2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05.5+00:00", None],
}


def _rows() -> list[dict[str, Any]]:
    n = max(len(v) for v in VALUES.values())
    rows = []
    for i in range(n * 3):
        rows.append(
            {c: VALUES[c][(i * (k + 1)) % len(VALUES[c])] for k, (c, _) in enumerate(COLUMNS)}
        )
    return rows


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except MappingError as exc:
        return ("error", exc.code, exc.details)


@pytest.mark.parametrize("row", _rows())
def test_compiled_encoder_matches_csv_row(row: dict[str, Any]) -> None:
    expected = _outcome(csv_row, TABLE, row)
    values = csv_values_encoder(TABLE, COLUMNS)
    assert _outcome(values, [row[c] for c, _ in COLUMNS]) == expected
    mapping = csv_row_encoder(TABLE, dict(COLUMNS))
    assert _outcome(mapping, row) == expected


def test_every_column_value_alone_matches() -> None:
    base = {c: None for c, _ in COLUMNS} | {"id": 1}
    encode = csv_values_encoder(TABLE, COLUMNS)
    checked = 0
    for column, values in VALUES.items():
        for value in values:
            row = base | {column: value}
            assert _outcome(encode, [row[c] for c, _ in COLUMNS]) == _outcome(csv_row, TABLE, row)
            checked += 1
    assert checked > 60


def test_errors_name_the_column() -> None:
    encode = csv_values_encoder(TABLE, COLUMNS)
    row = {c: None for c, _ in COLUMNS} | {"id": 1, "amount": "1.1234567890"}
    with pytest.raises(MappingError) as info:
        encode([row[c] for c, _ in COLUMNS])
    assert info.value.details["column"] == "amount"


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-02 03:04:05+00",
        "2024-01-02 03:04:05.123456+00",
        "2024-01-02 03:04:05.5+00",
        "2024-01-02 03:04:05+02",
        "infinity",
        "-infinity",
        "0044-03-15 03:04:05+00 BC",
        "12024-01-02 03:04:05+00",
    ],
)
def test_inlined_timestamptz_matches_capture(text: str) -> None:
    assert _tstz_utc(text) == converter(1184)(text)


def test_digest_hash_of_values_equals_row_hash() -> None:
    row = {"id": 1, "name": "x", "amount": "1.25", "doc": {"a": [1]}}
    digest = ChunkDigest()
    digest.add_values(1, list(row.values()))
    assert digest.hash_of(0) == row_hash(row) == row_hash_values(list(row.values()))
    assert row_hash(row | {"name": "y"}) != row_hash(row)


@pytest.mark.parametrize("width", [1, 2, 4])
def test_csv_text_is_what_csv_writer_writes(width: int) -> None:
    import csv
    import io
    import itertools

    from streamsync.backfill.read import csv_text

    cells = ["", "a", " b ", "a,b", 'say "hi"', "x\ny", "x\r\ny", "\t", "é", ",", '"', "-1.5"]
    rows = [list(combo) for combo in itertools.product(cells, repeat=min(width, 2))]
    rows = [(r * width)[:width] for r in rows]
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerows(rows)
    assert csv_text(rows, width) == expected.getvalue()
    assert csv_text([], width) == ""
