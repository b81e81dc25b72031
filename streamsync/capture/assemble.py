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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from streamsync.capture.pgoutput import (
    PG_EPOCH_US,
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Relation,
    StreamStart,
    Truncate,
    TupleValue,
    Update,
)
from streamsync.errors import CaptureError, DecodeError
from streamsync.events import ChangeEvent, Position
from streamsync.values import converter, identity

__all__ = ["Assembler", "TableShape"]


@dataclass(frozen=True, slots=True)
class TableShape:
    """One relation as last described by a Relation message, ready for fast row building."""

    source: str
    names: tuple[str, ...]
    converters: tuple[Callable[[str], Any] | None, ...]  # None: the text is the value
    key_index: tuple[int, ...]

    @classmethod
    def of(cls, rel: Relation) -> TableShape:
        convs = (converter(c.type_oid) for c in rel.columns)
        return cls(
            source=rel.source,
            names=tuple(c.name for c in rel.columns),
            converters=tuple(None if conv is identity else conv for conv in convs),
            key_index=tuple(i for i, c in enumerate(rel.columns) if c.is_key),
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
        self._lsn = 0
        self._xid: int | None = None
        self._ts_ms = 0
        self._seq = 0
        self.in_transaction = False
        self.truncates = 0
        self.truncated_tables: list[str] = []
        self.skipped_unkeyed = 0

    def shape(self, relation_oid: int) -> TableShape:
        try:
            return self._shapes[relation_oid]
        except KeyError:
            raise DecodeError(
                f"change for relation {relation_oid} before its Relation message"
            ) from None

    def feed(self, msg: Message) -> list[ChangeEvent]:
        """The change events of one message (empty for control messages)."""
        if isinstance(msg, Insert):
            return self._insert(msg)
        if isinstance(msg, Update):
            return self._update(msg)
        if isinstance(msg, Delete):
            return self._delete(msg)
        if isinstance(msg, Begin):
            if self.in_transaction:
                raise DecodeError("Begin inside a transaction")
            self.in_transaction = True
            self._lsn = msg.final_lsn
            self._xid = msg.xid
            self._ts_ms = (msg.commit_ts + PG_EPOCH_US) // 1000
            self._seq = 0
            return []
        if isinstance(msg, Commit):
            self.in_transaction = False
            return []
        if isinstance(msg, Relation):
            self._shapes[msg.oid] = TableShape.of(msg)
            return []
        if isinstance(msg, Truncate):
            return self._truncate(msg)
        if isinstance(msg, StreamStart):
            raise CaptureError("streamed transaction received, but capture asked for protocol 1")
        return []  # Origin, Type, LogicalMessage (heartbeats), Unsupported

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
