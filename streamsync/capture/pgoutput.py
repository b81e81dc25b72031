"""pgoutput logical replication messages: bytes → frozen dataclasses. Pure: no I/O, no asyncio.

One entry point, ``decode(payload, in_stream=False)``, dispatches on the tag byte (PostgreSQL
"Logical Replication Message Formats"). Protocol 1 messages are complete; the protocol 2
streaming messages (Stream Start/Stop/Commit/Abort, and the xid prefix that DML carries inside
a stream, selected by ``in_stream``) are decoded too. Anything else becomes ``Unsupported``.

Column values stay in Postgres' text form (``str``), ``None`` for NULL, and the
``UNCHANGED_TOAST`` sentinel for an unchanged TOAST value that Postgres did not send — never
``None``. Binary-format values (``b``) come back as ``bytes``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from streamsync.errors import DecodeError

__all__ = [
    "PG_EPOCH_US",
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "Relation",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleValue",
    "Type",
    "Unsupported",
    "Update",
    "decode",
]


class _Unchanged:
    """Marker for an unchanged TOAST column (pgoutput 'u'): the value exists but was not sent."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Final = _Unchanged()

TupleValue = str | bytes | None | _Unchanged

# Microseconds between the Unix epoch and the Postgres epoch (2000-01-01 UTC).
PG_EPOCH_US: Final = 946_684_800_000_000

# Precompiled layouts (network byte order).
_BEGIN = struct.Struct("!QqI")  # final_lsn, commit_ts (µs since 2000-01-01), xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit_lsn, end_lsn, commit_ts
_U64 = struct.Struct("!Q")  # an LSN
_I16 = struct.Struct("!h")  # column count
_U32 = struct.Struct("!I")  # oid, xid, length
_I32 = struct.Struct("!i")  # typmod, length
_BQ = struct.Struct("!BQ")  # message flags, message lsn
_COLUMN = struct.Struct("!Ii")  # column type oid, typmod
_TRUNC = struct.Struct("!IB")  # relation count, options
_STREAM_START = struct.Struct("!IB")  # xid, first segment
_STREAM_COMMIT = struct.Struct("!IBQQq")  # xid, flags, commit_lsn, end_lsn, commit_ts
_STREAM_ABORT = struct.Struct("!II")  # xid, subtransaction xid


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: every event of the transaction gets it
    commit_ts: int  # µs since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the position after the commit record: what the slot may be flushed to
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]
    xid: int | None = None

    @property
    def source(self) -> str:
        return f"{self.namespace or 'pg_catalog'}.{self.name}"


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: tuple[TupleValue, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    new: tuple[TupleValue, ...]
    old: tuple[TupleValue, ...] | None = None  # key ('K') or full old row ('O'), when sent
    old_is_key: bool = False
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: tuple[TupleValue, ...]
    old_is_key: bool = True
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    tag: str
    data: bytes


Message = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
    | Unsupported
)


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode("utf-8"), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[tuple[TupleValue, ...], int]:
    (count,) = _I16.unpack_from(buf, pos)
    size = len(buf)
    pos += 2
    values: list[TupleValue] = []
    append = values.append
    unpack_len = _U32.unpack_from
    for _ in range(count):
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't' text
            (length,) = unpack_len(buf, pos)
            pos += 4
            if pos + length > size:
                raise DecodeError(f"column value of {length} bytes overruns the message")
            append(buf[pos : pos + length].decode("utf-8"))
            pos += length
        elif kind == 0x6E:  # 'n' null
            append(None)
        elif kind == 0x75:  # 'u' unchanged TOAST
            append(UNCHANGED_TOAST)
        elif kind == 0x62:  # 'b' binary
            (length,) = unpack_len(buf, pos)
            pos += 4
            if pos + length > size:
                raise DecodeError(f"column value of {length} bytes overruns the message")
            append(bytes(buf[pos : pos + length]))
            pos += length
        else:
            raise DecodeError(f"unknown tuple column kind {chr(kind)!r} at {pos - 1}")
    return tuple(values), pos


def _xid(buf: bytes, pos: int, in_stream: bool) -> tuple[int | None, int]:
    if not in_stream:
        return None, pos
    return _U32.unpack_from(buf, pos)[0], pos + 4


def decode(payload: bytes, in_stream: bool = False) -> Message:
    """Decode one pgoutput message.

    Args:
        payload: the XLogData payload (starts with the tag byte).
        in_stream: True between Stream Start and Stream Stop (protocol 2): DML, Relation,
            Type, Truncate and Message then carry the transaction's xid first.

    Raises:
        DecodeError: the payload is truncated or malformed.
    """
    if not payload:
        raise DecodeError("empty pgoutput message")
    try:
        return _decode(payload, in_stream)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        tag = chr(payload[0])
        raise DecodeError(
            f"malformed pgoutput {tag!r} message ({len(payload)} bytes): {exc}"
        ) from None


def _decode(buf: bytes, in_stream: bool) -> Message:
    tag = buf[0]
    if tag == 0x49:  # 'I'
        xid, pos = _xid(buf, 1, in_stream)
        (relid,) = _U32.unpack_from(buf, pos)
        if buf[pos + 4] != 0x4E:
            raise DecodeError("insert without 'N' tuple")
        new, _ = _tuple(buf, pos + 5)
        return Insert(relid, new, xid)
    if tag == 0x55:  # 'U'
        xid, pos = _xid(buf, 1, in_stream)
        (relid,) = _U32.unpack_from(buf, pos)
        pos += 4
        old: tuple[TupleValue, ...] | None = None
        old_is_key = False
        kind = buf[pos]
        if kind in (0x4B, 0x4F):  # 'K' key / 'O' old row
            old_is_key = kind == 0x4B
            old, pos = _tuple(buf, pos + 1)
            kind = buf[pos]
        if kind != 0x4E:
            raise DecodeError("update without 'N' tuple")
        new, _ = _tuple(buf, pos + 1)
        return Update(relid, new, old, old_is_key, xid)
    if tag == 0x44:  # 'D'
        xid, pos = _xid(buf, 1, in_stream)
        (relid,) = _U32.unpack_from(buf, pos)
        kind = buf[pos + 4]
        if kind not in (0x4B, 0x4F):
            raise DecodeError("delete without 'K' or 'O' tuple")
        old, _ = _tuple(buf, pos + 5)
        return Delete(relid, old, kind == 0x4B, xid)
    if tag == 0x42:  # 'B'
        lsn, ts, xid_ = _BEGIN.unpack_from(buf, 1)
        return Begin(lsn, ts, xid_)
    if tag == 0x43:  # 'C'
        flags, commit_lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
        return Commit(flags, commit_lsn, end_lsn, ts)
    if tag == 0x52:  # 'R'
        xid, pos = _xid(buf, 1, in_stream)
        (oid,) = _U32.unpack_from(buf, pos)
        namespace, pos = _cstring(buf, pos + 4)
        name, pos = _cstring(buf, pos)
        replident = chr(buf[pos])
        (ncols,) = _I16.unpack_from(buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            colname, pos = _cstring(buf, pos + 1)
            type_oid, typmod = _COLUMN.unpack_from(buf, pos)
            pos += 8
            columns.append(Column(colname, type_oid, typmod, bool(flags & 1)))
        return Relation(oid, namespace, name, replident, tuple(columns), xid)
    if tag == 0x59:  # 'Y'
        xid, pos = _xid(buf, 1, in_stream)
        (oid,) = _U32.unpack_from(buf, pos)
        namespace, pos = _cstring(buf, pos + 4)
        name, pos = _cstring(buf, pos)
        return Type(oid, namespace, name, xid)
    if tag == 0x54:  # 'T'
        xid, pos = _xid(buf, 1, in_stream)
        count, options = _TRUNC.unpack_from(buf, pos)
        pos += 5
        oids = struct.unpack_from(f"!{count}I", buf, pos)
        return Truncate(tuple(oids), bool(options & 1), bool(options & 2), xid)
    if tag == 0x4D:  # 'M'
        xid, pos = _xid(buf, 1, in_stream)
        flags, lsn = _BQ.unpack_from(buf, pos)
        prefix, pos = _cstring(buf, pos + 9)
        (length,) = _U32.unpack_from(buf, pos)
        content = bytes(buf[pos + 4 : pos + 4 + length])
        if len(content) != length:
            raise DecodeError("truncated logical message content")
        return LogicalMessage(bool(flags & 1), lsn, prefix, content, xid)
    if tag == 0x4F:  # 'O'
        (lsn,) = _U64.unpack_from(buf, 1)
        name, _ = _cstring(buf, 9)
        return Origin(lsn, name)
    if tag == 0x53:  # 'S'
        xid_, first = _STREAM_START.unpack_from(buf, 1)
        return StreamStart(xid_, bool(first))
    if tag == 0x45:  # 'E'
        return StreamStop()
    if tag == 0x63:  # 'c'
        xid_, flags, commit_lsn, end_lsn, ts = _STREAM_COMMIT.unpack_from(buf, 1)
        return StreamCommit(xid_, flags, commit_lsn, end_lsn, ts)
    if tag == 0x41:  # 'A'
        xid_, subxid = _STREAM_ABORT.unpack_from(buf, 1)
        return StreamAbort(xid_, subxid)
    return Unsupported(chr(tag), bytes(buf[1:]))
