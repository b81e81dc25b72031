"""decode_change's fast path (well-formed events) agrees with its full validation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamsync.errors import DecodeError
from streamsync.events import _decode_change_checked, decode_change

GOOD: dict[str, Any] = {
    "op": "u",
    "table": "public.orders",
    "key": [7],
    "after": {"id": 7, "amount": "1.50"},
    "unchanged": ["notes"],
    "pos": {"lsn": "16/B374D848", "seq": 3},
    "xid": 812,
    "ts_ms": 1714644900000,
    "source": "stream",
}

VARIANTS: list[dict[str, Any]] = [
    {},
    {"op": "c"},
    {"op": "r", "source": "resync"},
    {"op": "d", "after": None, "unchanged": []},
    {"op": "d"},
    {"op": "t", "key": [], "after": None},
    {"op": "x"},
    {"op": None},
    {"table": "orders"},
    {"table": 5},
    {"key": []},
    {"key": "7"},
    {"key": None},
    {"after": None},
    {"after": []},
    {"unchanged": None},
    {"unchanged": ""},
    {"unchanged": [1]},
    {"unchanged": "notes"},
    {"source": None},
    {"source": "other"},
    {"pos": None},
    {"pos": {"lsn": "zz"}},
    {"pos": {"lsn": "0/10"}},
    {"pos": {"lsn": 42, "seq": 1}},
    {"pos": {"lsn": "0/10", "seq": True}},
    {"pos": {"lsn": "0/10", "seq": "2"}},
    {"xid": None},
    {"xid": "9"},
    {"ts_ms": None},
    {"ts_ms": 0},
    {"ts_ms": "5"},
]


def _result(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return ("ok", repr(fn(raw)))
    except DecodeError as exc:
        return ("decode_error", str(exc))
    except Exception as exc:
        return ("raised", type(exc).__name__)


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_fast_path_matches_full_validation(variant: dict[str, Any]) -> None:
    data = {**GOOD, **variant}
    raw = orjson.dumps(data)
    expected = _result(lambda r: _decode_change_checked(orjson.loads(r)), raw)
    assert _result(decode_change, raw) == expected
    for missing in GOOD:  # absent keys too
        partial = orjson.dumps({k: v for k, v in data.items() if k != missing})
        expected = _result(lambda r: _decode_change_checked(orjson.loads(r)), partial)
        assert _result(decode_change, partial) == expected, missing


def test_not_an_object_or_not_json() -> None:
    for raw in (b"[1]", b'"x"', b"null", b"{", None):
        with pytest.raises(DecodeError):
            decode_change(raw)
