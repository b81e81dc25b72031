"""The topic contract: positions order like tuples; codecs round-trip and reject bad input."""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamsync.errors import DecodeError
from streamsync.events import (
    BackfillCancel,
    BackfillStart,
    ChangeEvent,
    Position,
    decode_change,
    decode_control,
    encode_change,
    encode_control,
    encode_key,
    format_lsn,
    parse_lsn,
)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_lsn_format() -> None:
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    with pytest.raises(DecodeError):
        parse_lsn("nonsense")


def test_position_orders_by_lsn_then_seq() -> None:
    assert Position(10, 5) < Position(11, 0) < Position(11, 1)
    assert sorted([Position(2, 1), Position(1, 9), Position(2, 0)]) == [
        Position(1, 9),
        Position(2, 0),
        Position(2, 1),
    ]


def _event(**kw: object) -> ChangeEvent:
    base: dict[str, object] = {
        "op": "u",
        "table": "public.orders",
        "key": [42],
        "after": {"id": 42, "amount": "10.50"},
        "pos": Position(1234, 2),
        "xid": 7,
        "ts_ms": 1700000000000,
        "unchanged": ["notes"],
    }
    base.update(kw)
    return ChangeEvent(**base)  # type: ignore[arg-type]


def test_change_round_trip() -> None:
    event = _event()
    assert decode_change(encode_change(event)) == event
    assert encode_key([42]) == b"[42]"


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"op": "x"}, "unknown op"),
        ({"table": "orders"}, "schema.table"),
        ({"key": []}, "key must be"),
        ({"after": None}, "needs an after image"),
        ({"after": [1]}, "after must be"),
        ({"unchanged": [1]}, "unchanged"),
        ({"pos": None}, "pos must be"),
        ({"pos": {"lsn": "zz"}}, "not an LSN"),
        ({"source": "elsewhere"}, "unknown source"),
    ],
)
def test_change_rejects_malformed(patch: dict[str, object], reason: str) -> None:
    data = _event().to_json()
    data.update(patch)
    with pytest.raises(DecodeError, match=reason):
        decode_change(orjson.dumps(data))


def test_change_rejects_non_json() -> None:
    with pytest.raises(DecodeError, match="not JSON"):
        decode_change(b"{nope")
    with pytest.raises(DecodeError, match="tombstone"):
        decode_change(None)
    with pytest.raises(DecodeError, match="JSON object"):
        decode_change(b"[1]")


def test_delete_without_after_is_valid() -> None:
    event = _event(op="d", after=None, unchanged=[])
    assert decode_change(encode_change(event)).after is None


def test_control_round_trip() -> None:
    bid = str(uuid.uuid4())
    start = BackfillStart(backfill_id=bid, table="public.orders", chunk_rows=1000)
    assert decode_control(encode_control(start)) == start
    cancel = BackfillCancel(backfill_id=bid)
    assert decode_control(encode_control(cancel)) == cancel


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"garbage", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"type": "backfill.start"}', "backfill_id"),
        (b'{"type": "backfill.start", "backfill_id": "x"}', "not a UUID"),
        (
            b'{"type": "backfill.pause", "backfill_id": "00000000-0000-0000-0000-000000000001"}',
            "unknown control event type",
        ),
        (
            b'{"type": "backfill.start", "backfill_id": "00000000-0000-0000-0000-000000000001",'
            b' "table": "orders"}',
            "schema.table",
        ),
        (
            b'{"type": "backfill.start", "backfill_id": "00000000-0000-0000-0000-000000000001",'
            b' "table": "public.orders", "chunk_rows": 30000}',
            "between 1 and 25000",
        ),
    ],
)
def test_control_rejects_malformed(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_control(payload)
