"""The contract on every topic: Position, ChangeEvent, ControlEvent and their orjson codec.

A change event's Kafka key is the canonical JSON array of its primary-key values, so every
version of one row lands on one partition, in order. ``pos`` = (commit LSN, index in the
transaction) orders all events of one key. Pure: no I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from streamsync.errors import DecodeError

__all__ = [
    "WRITEBACK_MESSAGE_PREFIX",
    "BackfillCancel",
    "BackfillStart",
    "ChangeEvent",
    "ControlEvent",
    "Op",
    "Position",
    "Source",
    "decode_change",
    "decode_control",
    "encode_change",
    "encode_control",
    "encode_key",
    "format_lsn",
    "parse_lsn",
]

Op = Literal["c", "u", "d", "r", "t"]

# The sink's sync-flag write-back transactions start with a transactional logical message of
# this prefix (content: the table); capture drops their row changes of that table (no loop).
WRITEBACK_MESSAGE_PREFIX = "streamsync.writeback"
Source = Literal["stream", "resync"]
_OPS = frozenset({"c", "u", "d", "r", "t"})


def parse_lsn(text: str) -> int:
    """'16/B374D848' → int."""
    try:
        hi, lo = text.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise DecodeError(f"not an LSN: {text!r}") from None


def format_lsn(lsn: int) -> str:
    """int → '16/B374D848'."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(slots=True, order=True, unsafe_hash=True)  # not frozen: one per event (hot path)
class Position:
    """Where an event sits in the WAL: commit LSN, then index within the transaction."""

    lsn: int
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"lsn": format_lsn(self.lsn), "seq": self.seq}

    @classmethod
    def from_json(cls, data: Any) -> Position:
        if not isinstance(data, dict) or "lsn" not in data:
            raise DecodeError("pos must be an object with lsn and seq")
        lsn = data["lsn"]
        lsn_int = parse_lsn(lsn) if isinstance(lsn, str) else int(lsn)
        return cls(lsn_int, int(data.get("seq", 0)))


@dataclass(slots=True)
class ChangeEvent:
    """One row change (or resync row) of one table.

    Treated as immutable, but not ``frozen``: the sink builds one per Kafka record, and a
    frozen dataclass's ``__init__`` costs three times as much.
    """

    op: Op
    table: str
    key: list[Any]
    after: dict[str, Any] | None
    pos: Position
    xid: int | None = None
    ts_ms: int = 0
    unchanged: list[str] = field(default_factory=list)
    source: Source = "stream"

    @property
    def key_bytes(self) -> bytes:
        return encode_key(self.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "table": self.table,
            "key": self.key,
            "after": self.after,
            "unchanged": self.unchanged,
            "pos": self.pos.to_json(),
            "xid": self.xid,
            "ts_ms": self.ts_ms,
            "source": self.source,
        }


def encode_key(key: list[Any]) -> bytes:
    """Canonical Kafka key: the JSON array of primary-key values."""
    return orjson.dumps(key)


def encode_change(event: ChangeEvent) -> bytes:
    return orjson.dumps(event.to_json())


_FAST_OPS = frozenset({"c", "u", "r", "d"})
_LSN_CACHE: dict[str, int] = {}  # events of one transaction share their commit LSN


def decode_change(value: bytes | None) -> ChangeEvent:
    """Parse a change event; DecodeError says what is wrong (the caller dead-letters it).

    The sink's hot path: a well-formed event (what capture writes) is checked with a few
    exact type tests; anything unusual goes through the full validation, which gives the
    reason (same result, same errors).
    """
    if value is None:
        raise DecodeError("empty message (tombstone)")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if type(data) is dict:
        get = data.get
        op = get("op")
        table = get("table")
        key = get("key")
        after = get("after")
        unchanged = get("unchanged")
        source = get("source", "stream")
        pos = get("pos")
        xid = get("xid")
        ts_ms = get("ts_ms")
        if (
            op in _FAST_OPS
            and type(table) is str
            and "." in table
            and type(key) is list
            and key
            and (type(after) is dict or (after is None and op == "d"))
            and (
                not unchanged
                or (type(unchanged) is list and all(type(c) is str for c in unchanged))
            )
            and (source == "stream" or source == "resync")
            and type(pos) is dict
            and (xid is None or type(xid) is int)
            and (ts_ms is None or type(ts_ms) is int)
        ):
            lsn = pos.get("lsn")
            seq = pos.get("seq", 0)
            if type(lsn) is str and type(seq) is int:
                lsn_int = _LSN_CACHE.get(lsn)
                if lsn_int is None:
                    lsn_int = parse_lsn(lsn)
                    if len(_LSN_CACHE) >= 4096:
                        _LSN_CACHE.clear()
                    _LSN_CACHE[lsn] = lsn_int
                return ChangeEvent(
                    op,
                    table,
                    key,
                    after,
                    Position(lsn_int, seq),
                    xid,
                    ts_ms or 0,
                    unchanged or [],
                    source,
                )
    return _decode_change_checked(data)


def _decode_change_checked(data: Any) -> ChangeEvent:
    """decode_change's full validation (the slow path: says what is wrong)."""
    if not isinstance(data, dict):
        raise DecodeError("change event must be a JSON object")
    op = data.get("op")
    if op not in _OPS:
        raise DecodeError(f"unknown op {op!r}")
    table = data.get("table")
    if not isinstance(table, str) or "." not in table:
        raise DecodeError("table must be 'schema.table'")
    key = data.get("key")
    if not isinstance(key, list) or not key:
        if op != "t":
            raise DecodeError("key must be a non-empty array")
        key = key if isinstance(key, list) else []
    after = data.get("after")
    if after is not None and not isinstance(after, dict):
        raise DecodeError("after must be an object or null")
    if op in ("c", "u", "r") and after is None:
        raise DecodeError(f"op {op!r} needs an after image")
    unchanged = data.get("unchanged") or []
    if not isinstance(unchanged, list) or not all(isinstance(c, str) for c in unchanged):
        raise DecodeError("unchanged must be an array of column names")
    source = data.get("source", "stream")
    if source not in ("stream", "resync"):
        raise DecodeError(f"unknown source {source!r}")
    xid = data.get("xid")
    return ChangeEvent(
        op=op,
        table=table,
        key=key,
        after=after,
        pos=Position.from_json(data.get("pos")),
        xid=int(xid) if xid is not None else None,
        ts_ms=int(data.get("ts_ms") or 0),
        unchanged=unchanged,
        source=source,
    )


@dataclass(frozen=True, slots=True)
class BackfillStart:
    backfill_id: str
    table: str
    chunk_rows: int = 25_000
    type: Literal["backfill.start"] = "backfill.start"


@dataclass(frozen=True, slots=True)
class BackfillCancel:
    backfill_id: str
    type: Literal["backfill.cancel"] = "backfill.cancel"


ControlEvent = BackfillStart | BackfillCancel


def encode_control(event: ControlEvent) -> bytes:
    if isinstance(event, BackfillStart):
        return orjson.dumps(
            {
                "type": event.type,
                "backfill_id": event.backfill_id,
                "table": event.table,
                "chunk_rows": event.chunk_rows,
            }
        )
    return orjson.dumps({"type": event.type, "backfill_id": event.backfill_id})


def decode_control(value: bytes | None) -> ControlEvent:
    """Parse a control event; DecodeError gives the reason it is dead-lettered."""
    if value is None:
        raise DecodeError("empty control message")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError("control event must be a JSON object")
    kind = data.get("type")
    backfill_id = data.get("backfill_id")
    if not isinstance(backfill_id, str):
        raise DecodeError("backfill_id must be a string")
    try:
        uuid.UUID(backfill_id)
    except ValueError:
        raise DecodeError(f"backfill_id {backfill_id!r} is not a UUID") from None
    if kind == "backfill.cancel":
        return BackfillCancel(backfill_id)
    if kind != "backfill.start":
        raise DecodeError(f"unknown control event type {kind!r}")
    table = data.get("table")
    if not isinstance(table, str) or table.count(".") != 1:
        raise DecodeError("table must be 'schema.table'")
    chunk_rows = data.get("chunk_rows", 25_000)
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool):
        raise DecodeError("chunk_rows must be an integer")
    if not 1 <= chunk_rows <= 25_000:
        raise DecodeError("chunk_rows must be between 1 and 25000")
    return BackfillStart(backfill_id=backfill_id, table=table, chunk_rows=chunk_rows)
