"""Assembler: recorded pgoutput session → ChangeEvents (positions, TOAST, schema changes)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamsync.capture.assemble import Assembler
from streamsync.capture.pgoutput import (
    Begin,
    Column,
    Commit,
    Insert,
    Relation,
    StreamStart,
    Truncate,
    Update,
    decode,
)
from streamsync.errors import CaptureError, DecodeError
from streamsync.events import ChangeEvent

DATA = Path(__file__).resolve().parents[2] / "data" / "pgoutput_session.jsonl"


def session() -> list[bytes]:
    return [bytes.fromhex(orjson.loads(line)["hex"]) for line in DATA.read_text().splitlines()]


def run(asm: Assembler) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for payload in session():
        out.extend(asm.feed(decode(payload)))
    return out


def test_recorded_session_events() -> None:
    asm = Assembler(["public.rec_orders"])
    events = run(asm)
    assert [(e.op, e.key) for e in events] == [
        ("c", [1]),
        ("u", [1]),
        ("c", [2]),
        ("c", [3]),
        ("d", [3]),  # key change 3 → 4: delete old key, create new
        ("c", [4]),
        ("d", [2]),
        ("c", [5]),
        ("u", [5]),
    ]
    first = events[0]
    assert first.after is not None
    assert first.after["amount"] == "1234.50"
    assert first.after["created"] == "2024-05-06T05:08:09.123456+00:00"
    assert first.after["doc"] == {"a": [1, 2.5]}
    assert first.after["tags"] == ["x", "y z", None]
    assert first.after["blob"] == "\\xdeadbeef"
    assert len(first.after["big"]) == 12800
    assert first.table == "public.rec_orders" and first.source == "stream"


def test_unchanged_toast_listed_and_absent() -> None:
    update = run(Assembler())[1]
    assert update.unchanged == ["big"]
    assert update.after is not None
    assert "big" not in update.after and update.after["paid"] is False


def test_positions_commit_lsn_and_index() -> None:
    events = run(Assembler())
    tx = events[2:6]
    assert len({e.pos.lsn for e in tx}) == 1
    assert [e.pos.seq for e in tx] == [0, 1, 2, 3]
    assert [e.pos for e in events] == sorted(e.pos for e in events)
    assert events[0].pos.seq == 0 and events[1].pos.lsn > events[0].pos.lsn
    assert len({e.xid for e in tx}) == 1
    assert all(e.ts_ms > 1_600_000_000_000 for e in events)


def test_schema_change_adds_and_drops_columns() -> None:
    events = run(Assembler())
    added, after_drop = events[7], events[8]
    assert added.after is not None and added.after["extra"] == 42 and "blob" in added.after
    assert after_drop.after is not None
    assert after_drop.after["extra"] == 43 and "blob" not in after_drop.after


def test_truncate_is_counted_not_published_by_default() -> None:
    asm = Assembler()
    events = run(asm)
    assert all(e.op != "t" for e in events)
    assert asm.truncates == 1 and asm.truncated_tables == ["public.rec_orders"]


def test_truncate_published_when_configured() -> None:
    events = run(Assembler(on_truncate="publish"))
    assert events[-1].op == "t" and events[-1].key == [] and events[-1].after is None


def test_unlisted_tables_are_ignored() -> None:
    asm = Assembler(["public.other"])
    assert run(asm) == []
    assert asm.truncates == 0


REL = Relation(7, "public", "t", "d", (Column("id", 23, -1, True), Column("v", 25, -1, False)))


def test_change_before_relation_is_an_error() -> None:
    asm = Assembler()
    asm.feed(Begin(100, 0, 1))
    with pytest.raises(DecodeError, match="before its Relation"):
        asm.feed(Insert(7, ("1", "x")))


def test_tuple_width_mismatch_is_an_error() -> None:
    asm = Assembler()
    asm.feed(REL)
    asm.feed(Begin(100, 0, 1))
    with pytest.raises(DecodeError, match="columns"):
        asm.feed(Insert(7, ("1",)))


def test_table_without_key_is_skipped_and_counted() -> None:
    asm = Assembler()
    asm.feed(Relation(8, "public", "nokey", "n", (Column("v", 25, -1, False),)))
    asm.feed(Begin(100, 0, 1))
    assert asm.feed(Insert(8, ("x",))) == []
    assert asm.skipped_unkeyed == 1


def test_transaction_state_and_protocol_misuse() -> None:
    asm = Assembler()
    asm.feed(REL)
    asm.feed(Begin(100, 0, 1))
    assert asm.in_transaction
    with pytest.raises(DecodeError):
        asm.feed(Begin(200, 0, 2))
    asm.feed(Commit(0, 100, 120, 0))
    assert not asm.in_transaction
    with pytest.raises(CaptureError):
        asm.feed(StreamStart(3, True))


def test_seq_restarts_per_transaction_and_update_without_old() -> None:
    asm = Assembler()
    asm.feed(REL)
    asm.feed(Begin(100, 0, 1))
    a = asm.feed(Insert(7, ("1", "x")))
    b = asm.feed(Update(7, ("1", None)))
    asm.feed(Commit(0, 100, 120, 0))
    asm.feed(Begin(200, 0, 2))
    c = asm.feed(Truncate((7,), False, False))
    d = asm.feed(Insert(7, ("2", "y")))
    assert [e.pos.seq for e in a + b] == [0, 1]
    assert c == [] and d[0].pos.lsn == 200 and d[0].pos.seq == 0
    assert b[0].after == {"id": 1, "v": None}
