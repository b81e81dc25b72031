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
from streamsync.events import ChangeEvent, encode_change, encode_key

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


# -- hot path: encode_dml(payload) == encode(feed(decode(payload))) --------------------------
def _records(
    asm: Assembler, payloads: list[bytes], fast: bool
) -> list[tuple[str, str, bytes, bytes]]:
    out: list[tuple[str, str, bytes, bytes]] = []
    for payload in payloads:
        if fast and payload[:1] in (b"I", b"U", b"D"):
            out.extend(asm.encode_dml(payload))
        else:
            events = asm.feed(decode(payload))
            out.extend((e.table, e.op, encode_key(e.key), encode_change(e)) for e in events)
    return out


@pytest.mark.parametrize("tables", [None, ["public.rec_orders"], ["public.other"]])
def test_encode_dml_matches_the_general_path(tables: list[str] | None) -> None:
    payloads = session()
    general = Assembler(tables, on_truncate="publish")
    fast = Assembler(tables, on_truncate="publish")
    expected = _records(general, payloads, fast=False)
    assert _records(fast, payloads, fast=True) == expected
    assert len(expected) == (0 if tables == ["public.other"] else 10)
    assert fast.skipped_unkeyed == general.skipped_unkeyed


def _payload(tag: bytes, relid: int, *tuples: tuple[bytes, list[bytes | None]]) -> bytes:
    out = tag + relid.to_bytes(4, "big")
    for kind, cols in tuples:
        out += kind + len(cols).to_bytes(2, "big")
        for col in cols:
            if col is None:
                out += b"n"
            elif col == b"<u>":
                out += b"u"
            elif col.startswith(b"<b>"):
                out += b"b" + (len(col) - 3).to_bytes(4, "big") + col[3:]
            else:
                out += b"t" + len(col).to_bytes(4, "big") + col
    return out


KEYED2 = Relation(
    9,
    "public",
    "k2",
    "d",
    (Column("a", 23, -1, True), Column("b", 25, -1, True), Column("v", 3802, -1, False)),
)


@pytest.mark.parametrize(
    "payload",
    [
        _payload(b"I", 9, (b"N", [b"1", b"x", b'{"z": [1, 2]}'])),
        _payload(b"I", 9, (b"N", [b"1", b"\xc3\xa9t\xc3\xa9", None])),
        _payload(b"U", 9, (b"N", [b"1", b"x", b"<u>"])),  # unchanged TOAST value
        _payload(b"U", 9, (b"K", [b"1", b"x", None]), (b"N", [b"2", b"x", b"[]"])),  # key change
        _payload(b"U", 9, (b"O", [b"1", b"x", b"1"]), (b"N", [b"1", b"x", b"2"])),  # FULL
        _payload(b"D", 9, (b"K", [b"1", b"x", None])),
        _payload(b"D", 9, (b"O", [b"1", b"x", b"{}"])),
        _payload(b"I", 9, (b"N", [b"1", b"x", b"<b>\x01\x02"])),  # binary value
    ],
)
def test_encode_dml_edge_cases_match(payload: bytes) -> None:
    general, fast = Assembler(), Assembler()
    for asm in (general, fast):
        asm.feed(KEYED2)
        asm.feed(Begin(0x1_0000_0000, 0, 5))
        asm.feed(Insert(9, ("0", "w", None)))  # seq 0: the hot path continues from seq 1
    assert _records(fast, [payload] * 2, fast=True) == _records(general, [payload] * 2, fast=False)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_payload(b"I", 99, (b"N", [b"1"])), "before its Relation"),
        (_payload(b"I", 9, (b"N", [b"1", b"x"])), "columns"),
        (_payload(b"U", 9, (b"N", [b"<u>", b"x", None])), "was not sent"),
        (_payload(b"I", 9, (b"N", [b"1", b"x", b"y"]))[:-1], "overruns"),
        (_payload(b"I", 9, (b"N", [b"1", b"x", b"{bad"])), None),
    ],
)
def test_encode_dml_raises_what_the_general_path_raises(payload: bytes, match: str | None) -> None:
    asm = Assembler()
    asm.feed(KEYED2)
    asm.feed(Begin(100, 0, 1))
    with pytest.raises((DecodeError, ValueError), match=match):
        asm.encode_dml(payload)
    assert asm.encode_dml(_payload(b"I", 9, (b"N", [b"1", b"x", None])))[0][3].count(b'"seq":0')


def test_plain_dml_takes_the_hot_path() -> None:
    asm = Assembler()
    asm.feed(KEYED2)
    asm.feed(Begin(100, 0, 1))
    for payload, want in (
        (_payload(b"I", 9, (b"N", [b"1", b"x", b"{}"])), "c"),
        (_payload(b"U", 9, (b"N", [b"1", b"x", b"<u>"])), "u"),
        (_payload(b"D", 9, (b"K", [b"1", b"x", None])), "d"),
    ):
        table, op, key, _ = asm._encode_fast(payload)  # raises when it would fall back
        assert (table, op, key) == ("public.k2", want, b'[1,"x"]')


def test_sync_flag_writeback_transaction_is_dropped() -> None:
    """The sink's write-back transaction starts with a transactional logical message: its row
    changes of that table are not captured (no loop); other tables and later transactions are."""
    from streamsync.capture.assemble import WRITEBACK_PREFIX
    from streamsync.capture.pgoutput import LogicalMessage

    other = Relation(10, "public", "other", "d", (Column("a", 23, -1, True),))
    asm = Assembler()
    asm.feed(KEYED2)
    asm.feed(other)
    asm.feed(Begin(100, 0, 1))
    asm.feed(LogicalMessage(True, 90, WRITEBACK_PREFIX, b"public.k2"))
    flagged = _payload(b"U", 9, (b"N", [b"1", b"x", b"{}"]))
    assert asm.encode_dml(flagged) == []
    assert asm.feed(Update(9, ("1", "x", "{}"))) == []
    assert [e[0] for e in asm.encode_dml(_payload(b"I", 10, (b"N", [b"7"])))] == ["public.other"]
    assert asm.skipped_writeback == 2
    asm.feed(Commit(0, 100, 110, 1))
    asm.feed(Begin(200, 0, 2))
    assert [e[1] for e in asm.encode_dml(flagged)] == ["u"]
    # a non-transactional message, or one outside a transaction, changes nothing
    asm.feed(LogicalMessage(False, 201, WRITEBACK_PREFIX, b"public.k2"))
    assert [e[1] for e in asm.encode_dml(flagged)] == ["u"]
