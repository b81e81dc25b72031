"""Dead-letter format: encode/decode round trips and what the key is."""

from __future__ import annotations

import base64

import orjson
import pytest

from streamsync.dlq import dead_letter_summary, decode_dead_letter, encode_dead_letter
from streamsync.errors import DecodeError
from streamsync.events import ChangeEvent, Position, encode_key


def _event() -> ChangeEvent:
    return ChangeEvent(
        op="u",
        table="public.orders",
        key=[42],
        after={"id": 42, "amount": "1.50"},
        pos=Position(0x16_0000_0010, 3),
        unchanged=["notes"],
    )


def test_event_round_trip_keeps_the_original_event() -> None:
    key, value = encode_dead_letter(
        event_or_raw=_event(),
        reason_code="INVALID_DATA",
        message="invalid data",
        details={"api_name": "Amount", "json_path": "$.data[0].Amount"},
        attempts=2,
        origin="sink",
        source={"topic": "p.public.orders", "partition": 1, "offset": 7},
        now_ms=1234,
    )
    assert key == encode_key([42])
    letter = decode_dead_letter(value, offset=5)
    assert letter.reason_code == "INVALID_DATA"
    assert letter.details["api_name"] == "Amount"
    assert letter.attempts == 2
    assert letter.table == "public.orders" and letter.key == [42]
    assert letter.source == {"topic": "p.public.orders", "partition": 1, "offset": 7}
    assert letter.ts_ms == 1234 and letter.offset == 5
    assert letter.raw is None
    assert letter.change_event() == _event()


def test_raw_bytes_are_kept_base64_and_keyed_by_source_key() -> None:
    key, value = encode_dead_letter(
        event_or_raw=b"\xff not json",
        reason_code="UNDECODABLE",
        message="not JSON",
        source={"topic": "t", "partition": 0, "offset": 1, "key": b"[1]"},
        origin="sink",
    )
    assert key == b"[1]"
    data = orjson.loads(value)
    assert base64.b64decode(data["raw"]) == b"\xff not json"
    assert "key" not in data["source"]
    letter = decode_dead_letter(value)
    assert letter.raw == b"\xff not json"
    assert letter.change_event() is None


@pytest.mark.parametrize("value", [None, b"nope", b"[1,2]", b'{"a": 1}'])
def test_non_dead_letters_are_rejected(value: bytes | None) -> None:
    with pytest.raises(DecodeError):
        decode_dead_letter(value)


def test_summary_counts_per_reason() -> None:
    letters = [
        decode_dead_letter(encode_dead_letter(event_or_raw=None, reason_code=c, message="")[1])
        for c in ("A", "B", "A")
    ]
    assert dead_letter_summary(letters) == {"A": 2, "B": 1}
