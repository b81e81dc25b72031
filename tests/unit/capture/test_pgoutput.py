"""The pgoutput decoder on recorded payloads (tests/data) and on hand-built edge cases."""

from __future__ import annotations

import struct
from pathlib import Path

import orjson
import pytest

from streamsync.capture.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    Type,
    Unsupported,
    Update,
    decode,
)
from streamsync.errors import DecodeError

DATA = Path(__file__).resolve().parents[2] / "data" / "pgoutput_session.jsonl"


def session() -> list[bytes]:
    return [bytes.fromhex(orjson.loads(line)["hex"]) for line in DATA.read_text().splitlines()]


def test_recorded_session_decodes_in_order() -> None:
    msgs = [decode(p) for p in session()]
    kinds = [type(m).__name__ for m in msgs]
    assert kinds == [
        "Begin", "Relation", "Insert", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Insert", "Insert", "Update", "Commit",
        "Begin", "Delete", "Commit",
        "Begin", "Relation", "Insert", "Commit",
        "Begin", "Relation", "Update", "Commit",
        "Begin", "LogicalMessage", "Commit",
        "Begin", "Relation", "Truncate", "Commit",
    ]  # fmt: skip
    begin, rel, ins, commit = msgs[:4]
    assert isinstance(begin, Begin) and isinstance(commit, Commit)
    assert begin.final_lsn == commit.commit_lsn
    assert commit.end_lsn > commit.commit_lsn
    assert begin.xid > 0 and begin.commit_ts > 0
    assert isinstance(rel, Relation)
    assert rel.source == "public.rec_orders"
    assert rel.replica_identity == "d"
    assert [c.name for c in rel.columns][:3] == ["id", "amount", "paid"]
    assert [c.is_key for c in rel.columns] == [True] + [False] * 9
    assert [c.type_oid for c in rel.columns][:3] == [20, 1700, 16]
    assert isinstance(ins, Insert) and ins.relation_oid == rel.oid
    assert ins.new[:3] == ("1", "1234.50", "t")
    assert isinstance(ins.new[9], str) and len(ins.new[9]) > 8192


def test_unchanged_toast_is_a_sentinel_not_none() -> None:
    update = decode(session()[5])
    assert isinstance(update, Update)
    assert update.new[9] is UNCHANGED_TOAST
    assert update.new[2] == "f"
    assert update.old is None
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"


def test_key_change_carries_old_key_and_delete_carries_key() -> None:
    msgs = [decode(p) for p in session()]
    upd = msgs[10]
    assert isinstance(upd, Update) and upd.old_is_key and upd.old is not None
    assert upd.old[0] == "3" and upd.new[0] == "4"
    delete = msgs[13]
    assert isinstance(delete, Delete) and delete.old_is_key and delete.old[0] == "2"


def test_relation_refresh_on_added_and_dropped_column() -> None:
    msgs = [decode(p) for p in session()]
    added, dropped = msgs[16], msgs[20]
    assert isinstance(added, Relation) and isinstance(dropped, Relation)
    assert [c.name for c in added.columns][-1] == "extra"
    assert "blob" not in [c.name for c in dropped.columns]
    assert len(dropped.columns) == len(added.columns) - 1


def test_message_and_truncate() -> None:
    msgs = [decode(p) for p in session()]
    message = msgs[24]
    assert isinstance(message, LogicalMessage)
    assert message.transactional and message.prefix == "streamsync.heartbeat"
    assert message.content == b"hb"
    trunc = msgs[28]
    assert isinstance(trunc, Truncate) and not trunc.cascade and not trunc.restart_identity
    assert len(trunc.relation_oids) == 1


def _tuple(*cols: bytes) -> bytes:
    return struct.pack("!h", len(cols)) + b"".join(cols)


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"t" + struct.pack("!I", len(raw)) + raw


def test_tuple_kinds_including_binary_and_null() -> None:
    payload = (
        b"I"
        + struct.pack("!I", 7)
        + b"N"
        + _tuple(_text("é"), b"n", b"u", b"b" + struct.pack("!I", 2) + b"\x00\x01")
    )
    msg = decode(payload)
    assert msg == Insert(7, ("é", None, UNCHANGED_TOAST, b"\x00\x01"))


def test_update_with_full_old_row() -> None:
    payload = b"U" + struct.pack("!I", 7) + b"O" + _tuple(_text("1")) + b"N" + _tuple(_text("2"))
    msg = decode(payload)
    assert msg == Update(7, ("2",), ("1",), old_is_key=False)


def test_streaming_messages_and_xid_prefix() -> None:
    assert decode(b"S" + struct.pack("!IB", 9, 1)) == StreamStart(9, True)
    assert decode(b"E") == StreamStop()
    assert decode(b"c" + struct.pack("!IBQQq", 9, 0, 100, 120, 5)) == StreamCommit(
        9, 0, 100, 120, 5
    )
    assert decode(b"A" + struct.pack("!II", 9, 10)) == StreamAbort(9, 10)
    ins = b"I" + struct.pack("!II", 9, 7) + b"N" + _tuple(_text("1"))
    assert decode(ins, in_stream=True) == Insert(7, ("1",), xid=9)


def test_origin_type_and_unknown_tags() -> None:
    assert decode(b"O" + struct.pack("!Q", 5) + b"node\x00") == Origin(5, "node")
    typ = b"Y" + struct.pack("!I", 16400) + b"public\x00mood\x00"
    assert decode(typ) == Type(16400, "public", "mood")
    assert decode(b"Zabc") == Unsupported("Z", b"abc")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"B\x00\x01",
        b"I" + struct.pack("!I", 7) + b"X",
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"t\x00\x00\x00\x09ab",
        b"I" + struct.pack("!I", 7) + b"N" + struct.pack("!h", 1) + b"q",
        b"D" + struct.pack("!I", 7) + b"N" + _tuple(_text("1")),
        b"R" + struct.pack("!I", 7) + b"public",
    ],
)
def test_malformed_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(payload)
