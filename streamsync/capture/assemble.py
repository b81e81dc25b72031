"""pgoutput messages + a relation cache → ChangeEvents. Pure: no I/O, no asyncio.

``Assembler.feed(message)`` returns the change events one message produces (often none).
Every event of a transaction carries ``Position(commit LSN, index in the transaction)``; the
commit LSN is known from Begin (``final_lsn``), so nothing is buffered per transaction and a
transaction of any size passes through in constant memory.

- Relation messages replace the cached table description: an added column appears and a
  dropped one disappears from the next event on, without a restart.
- Key = the replica-identity columns (REPLICA IDENTITY DEFAULT = primary key), flagged in the
  Relation message, in table column order.
- Unchanged TOAST values are listed in ``unchanged`` and left out of ``after``; never null.
- An update that changes the key becomes a delete of the old key followed by a create.
- Truncate: ``on_truncate="log"`` (default) only counts it (``truncates``), never a mass delete;
  ``"publish"`` emits one ``op="t"`` event per table.

Hot path: ``Assembler.encode_dml(payload)`` takes the raw Insert/Update/Delete payload and returns
the Kafka records (``Encoded``: table, op, key bytes, value bytes) without building a message, a
tuple of values or a ``ChangeEvent``: each column is read from the bytes straight into the
``after`` dict through the converter the Relation message chose. The bytes are identical to
``encode_key``/``encode_change`` of the events ``feed`` returns (tests/unit/capture/test_assemble.py
checks it on the recorded session). Anything unusual — an old tuple on update (key change,
REPLICA IDENTITY FULL), binary values, a key column not sent, a filtered or unkeyed table, a
malformed payload — takes the general path (``decode`` + ``feed``), which also raises its errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamsync.capture.pgoutput import (
    PG_EPOCH_US,
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Relation,
    StreamStart,
    Truncate,
    TupleValue,
    Update,
    decode,
)
from streamsync.errors import CaptureError, DecodeError
from streamsync.events import (
    WRITEBACK_MESSAGE_PREFIX,
    ChangeEvent,
    Position,
    encode_change,
    encode_key,
    format_lsn,
)
from streamsync.values import converter, identity

__all__ = ["WRITEBACK_PREFIX", "Assembler", "Encoded", "TableShape"]

WRITEBACK_PREFIX = WRITEBACK_MESSAGE_PREFIX  # the sink's write-back marker (events.py)

Encoded = tuple[str, str, bytes, bytes]
"""One Kafka record of a change event: (table, op, key bytes, value bytes)."""

_EMPTY: list[str] = []  # shared "unchanged" of the hot path: never mutated


class _Fallback(Exception):
    """The hot path does not handle this payload: take decode + feed."""


def _read_tuple(
    buf: bytes,
    pos: int,
    names: tuple[str, ...],
    converters: tuple[Callable[[str], Any] | None, ...],
) -> tuple[dict[str, Any], list[str]]:
    """(after, unchanged) of the pgoutput TupleData at ``pos``, values converted on the way."""
    if (buf[pos] << 8) | buf[pos + 1] != len(names):
        raise _Fallback
    pos += 2
    size = len(buf)
    after: dict[str, Any] = {}
    unchanged = _EMPTY
    for name, conv in zip(names, converters):  # noqa: B905 - the count was checked
        kind = buf[pos]
        if kind == 0x74:  # 't' text
            start = pos + 5
            pos = start + (
                (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
            )
            if pos > size:
                raise _Fallback
            if conv is None:
                after[name] = buf[start:pos].decode()
            else:
                after[name] = conv(buf[start:pos].decode())
        elif kind == 0x6E:  # 'n' null
            after[name] = None
            pos += 1
        elif kind == 0x75:  # 'u' unchanged TOAST
            if unchanged is _EMPTY:
                unchanged = []
            unchanged.append(name)
            pos += 1
        else:  # binary or unknown: the general path keeps it visible or raises
            raise _Fallback
    return after, unchanged


@dataclass(frozen=True, slots=True)
class TableShape:
    """One relation as last described by a Relation message, ready for fast row building."""

    source: str
    names: tuple[str, ...]
    converters: tuple[Callable[[str], Any] | None, ...]  # None: the text is the value
    key_index: tuple[int, ...]
    key_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, rel: Relation) -> TableShape:
        convs = (converter(c.type_oid) for c in rel.columns)
        key_index = tuple(i for i, c in enumerate(rel.columns) if c.is_key)
        return cls(
            source=rel.source,
            names=tuple(c.name for c in rel.columns),
            converters=tuple(None if conv is identity else conv for conv in convs),
            key_index=key_index,
            key_names=tuple(rel.columns[i].name for i in key_index),
        )

    def row(self, values: tuple[TupleValue, ...]) -> tuple[dict[str, Any], list[str]]:
        """(after, unchanged) of one new tuple."""
        after: dict[str, Any] = {}
        unchanged: list[str] = []
        if len(values) != len(self.names):
            raise DecodeError(
                f"{self.source}: tuple has {len(values)} columns, relation has {len(self.names)}"
            )
        for name, conv, value in zip(self.names, self.converters, values):  # noqa: B905
            if type(value) is str:
                after[name] = value if conv is None else conv(value)
            elif value is None:
                after[name] = None
            elif value is UNCHANGED_TOAST:
                unchanged.append(name)
            else:  # binary format is never requested; keep it visible rather than lose it
                after[name] = "\\x" + bytes(value).hex()  # type: ignore[arg-type]
        return after, unchanged

    def key(self, values: tuple[TupleValue, ...]) -> list[Any]:
        out: list[Any] = []
        for i in self.key_index:
            value = values[i]
            if value is UNCHANGED_TOAST:
                raise DecodeError(f"{self.source}: key column {self.names[i]} was not sent")
            conv = self.converters[i]
            if value is None or conv is None:
                out.append(value)
            else:
                out.append(conv(value))  # type: ignore[arg-type]
        return out


class Assembler:
    """Turns a pgoutput message stream into ChangeEvents (see module docstring).

    Args:
        tables: the ``schema.table`` names to emit; None emits every published table.
        on_truncate: "log" (count only) or "publish" (one ``op="t"`` event per table).
    """

    def __init__(
        self,
        tables: Iterable[str] | None = None,
        on_truncate: Literal["log", "publish"] = "log",
    ) -> None:
        self._tables = frozenset(tables) if tables is not None else None
        self._on_truncate = on_truncate
        self._shapes: dict[int, TableShape] = {}
        self._fast: dict[int, TableShape] = {}  # wanted and keyed: the hot path may take them
        self._lsn = 0
        self._lsn_text = format_lsn(0)
        self._xid: int | None = None
        self._ts_ms = 0
        self._seq = 0
        self.in_transaction = False
        self.truncates = 0
        self.truncated_tables: list[str] = []
        self.skipped_unkeyed = 0
        self.skipped_writeback = 0
        self._writeback_tables: frozenset[str] = frozenset()

    def shape(self, relation_oid: int) -> TableShape:
        try:
            return self._shapes[relation_oid]
        except KeyError:
            raise DecodeError(
                f"change for relation {relation_oid} before its Relation message"
            ) from None

    def feed(self, msg: Message) -> list[ChangeEvent]:
        """The change events of one message (empty for control messages)."""
        if isinstance(msg, Insert | Update | Delete):
            events = (
                self._insert(msg)
                if isinstance(msg, Insert)
                else self._update(msg)
                if isinstance(msg, Update)
                else self._delete(msg)
            )
            if self._writeback_tables:
                return self._drop_writeback(events)
            return events
        if isinstance(msg, LogicalMessage):
            if msg.transactional and msg.prefix == WRITEBACK_PREFIX and self.in_transaction:
                # The sink's sync-flag write-back: its row changes must not come back to it.
                table = msg.content.decode("utf-8", "replace")
                self._writeback_tables = self._writeback_tables | {table}
            return []
        if isinstance(msg, Begin):
            if self.in_transaction:
                raise DecodeError("Begin inside a transaction")
            self.in_transaction = True
            self._lsn = msg.final_lsn
            self._lsn_text = format_lsn(msg.final_lsn)
            self._xid = msg.xid
            self._ts_ms = (msg.commit_ts + PG_EPOCH_US) // 1000
            self._seq = 0
            self._writeback_tables = frozenset()
            return []
        if isinstance(msg, Commit):
            self.in_transaction = False
            self._writeback_tables = frozenset()
            return []
        if isinstance(msg, Relation):
            shape = self._shapes[msg.oid] = TableShape.of(msg)
            wanted = self._tables is None or shape.source in self._tables
            if wanted and shape.key_index:
                self._fast[msg.oid] = shape
            else:
                self._fast.pop(msg.oid, None)
            return []
        if isinstance(msg, Truncate):
            return self._truncate(msg)
        if isinstance(msg, StreamStart):
            raise CaptureError("streamed transaction received, but capture asked for protocol 1")
        return []  # Origin, Type, LogicalMessage (heartbeats), Unsupported

    # -- hot path -------------------------------------------------------------------------
    def encode_dml(self, payload: bytes) -> list[Encoded]:
        """The Kafka records of one Insert/Update/Delete payload (protocol 1, not streamed).

        Same records, same positions and same errors as ``feed(decode(payload))`` followed by
        ``encode_key``/``encode_change`` (see the module docstring).

        Raises:
            DecodeError: malformed payload, unknown relation, key column not sent.
        """
        if not self._writeback_tables:
            try:
                return [self._encode_fast(payload)]
            except Exception:  # _Fallback, or malformed: the general path decides (and raises)
                pass
        return [
            (e.table, e.op, encode_key(e.key), encode_change(e)) for e in self.feed(decode(payload))
        ]

    def _encode_fast(self, buf: bytes) -> Encoded:
        # Raises _Fallback (or IndexError, ...) before changing any state.
        if not self.in_transaction:
            raise _Fallback
        shape = self._fast[(buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]]
        tag = buf[0]
        kind = buf[5]
        after: dict[str, Any] | None
        if tag == 0x49:  # 'I'
            if kind != 0x4E:
                raise _Fallback
            after, unchanged = _read_tuple(buf, 6, shape.names, shape.converters)
            op = "c"
            row = after
        elif tag == 0x55:  # 'U' with the new tuple only: the key did not change
            if kind != 0x4E:
                raise _Fallback
            after, unchanged = _read_tuple(buf, 6, shape.names, shape.converters)
            op = "u"
            row = after
        elif tag == 0x44:  # 'D'
            if kind != 0x4B and kind != 0x4F:
                raise _Fallback
            row, _ = _read_tuple(buf, 6, shape.names, shape.converters)
            after = None
            unchanged = _EMPTY
            op = "d"
        else:
            raise _Fallback
        key_names = shape.key_names
        # KeyError when a key column was not sent (unchanged TOAST): the general path raises.
        key = [row[key_names[0]]] if len(key_names) == 1 else [row[n] for n in key_names]
        key_bytes = orjson.dumps(key)
        seq = self._seq
        value = orjson.dumps(
            {
                "op": op,
                "table": shape.source,
                "key": key,
                "after": after,
                "unchanged": unchanged,
                "pos": {"lsn": self._lsn_text, "seq": seq},
                "xid": self._xid,
                "ts_ms": self._ts_ms,
                "source": "stream",
            }
        )
        self._seq = seq + 1
        return shape.source, op, key_bytes, value

    def _drop_writeback(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        kept = [e for e in events if e.table not in self._writeback_tables]
        self.skipped_writeback += len(events) - len(kept)
        return kept

    # -- DML ------------------------------------------------------------------------------
    def _wanted(self, shape: TableShape) -> bool:
        if self._tables is not None and shape.source not in self._tables:
            return False
        if not shape.key_index:
            self.skipped_unkeyed += 1
            return False
        return True

    def _event(
        self,
        op: Literal["c", "u", "d", "t"],
        shape: TableShape,
        key: list[Any],
        after: dict[str, Any] | None,
        unchanged: list[str],
    ) -> ChangeEvent:
        seq = self._seq
        self._seq = seq + 1
        return ChangeEvent(
            op=op,
            table=shape.source,
            key=key,
            after=after,
            pos=Position(self._lsn, seq),
            xid=self._xid,
            ts_ms=self._ts_ms,
            unchanged=unchanged,
        )

    def _insert(self, msg: Insert) -> list[ChangeEvent]:
        shape = self.shape(msg.relation_oid)
        if not self._wanted(shape):
            return []
        after, unchanged = shape.row(msg.new)
        return [self._event("c", shape, shape.key(msg.new), after, unchanged)]

    def _update(self, msg: Update) -> list[ChangeEvent]:
        shape = self.shape(msg.relation_oid)
        if not self._wanted(shape):
            return []
        after, unchanged = shape.row(msg.new)
        new_key = self._update_key(shape, msg)
        out: list[ChangeEvent] = []
        if msg.old is not None:
            old_key = shape.key(msg.old)
            if old_key != new_key:
                out.append(self._event("d", shape, old_key, None, []))
                out.append(self._event("c", shape, new_key, after, unchanged))
                return out
        out.append(self._event("u", shape, new_key, after, unchanged))
        return out

    @staticmethod
    def _update_key(shape: TableShape, msg: Update) -> list[Any]:
        if msg.old is not None and any(msg.new[i] is UNCHANGED_TOAST for i in shape.key_index):
            return shape.key(msg.old)  # a toasted key column that did not change
        return shape.key(msg.new)

    def _delete(self, msg: Delete) -> list[ChangeEvent]:
        shape = self.shape(msg.relation_oid)
        if not self._wanted(shape):
            return []
        return [self._event("d", shape, shape.key(msg.old), None, [])]

    def _truncate(self, msg: Truncate) -> list[ChangeEvent]:
        out: list[ChangeEvent] = []
        for oid in msg.relation_oids:
            shape = self._shapes.get(oid)
            if shape is None or (self._tables is not None and shape.source not in self._tables):
                continue
            self.truncates += 1
            self.truncated_tables.append(shape.source)
            del self.truncated_tables[:-20]
            if self._on_truncate == "publish":
                out.append(self._event("t", shape, [], None, []))
        return out
