"""The replication stream (shell): psycopg2's logical replication connection on the asyncio loop.

``PgReplicationSource`` opens a ``replication=database`` connection in psycopg2's asynchronous
mode, starts pgoutput streaming (protocol 1, ``messages`` on) and reads with the non-blocking
``read_message()`` whenever ``loop.add_reader`` says the socket is readable: the loop is never
blocked. Standby status updates carry only the flush LSN the caller computed from Kafka acks.

``ReplaySource`` plays recorded pgoutput payloads (tests/data, bench) through the same
interface, so the role can run without Postgres.

Also here: idempotent slot and publication creation, heartbeats and slot lag (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import asyncpg
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from streamsync.errors import CaptureError, ConfigError, SlotInUseError

__all__ = [
    "HEARTBEAT_PREFIX",
    "PgReplicationSource",
    "ReplaySource",
    "ReplicationSource",
    "current_wal_lsn",
    "emit_heartbeat",
    "ensure_publication",
    "ensure_slot",
    "slot_lag_bytes",
]

log = logging.getLogger("streamsync.capture")

HEARTBEAT_PREFIX = "streamsync.heartbeat"
_SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c IntervalStyle=postgres"
)


class ReplicationSource(Protocol):
    """What the capture role reads from: a stream of pgoutput payloads plus feedback."""

    @property
    def wal_end(self) -> int:
        """Server WAL position from the last message or keepalive."""
        ...

    async def start(self) -> None: ...

    async def read_batch(self, max_messages: int, wait_s: float) -> list[bytes]:
        """Up to ``max_messages`` payloads; [] when none arrived within ``wait_s`` seconds."""
        ...

    def send_feedback(self, flush_lsn: int) -> None: ...

    async def close(self) -> None: ...


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(source: str) -> str:
    schema, table = source.split(".")
    return f"{_quote_ident(schema)}.{_quote_ident(table)}"


class PgReplicationSource:
    """pgoutput over the streaming replication protocol (psycopg2 async mode)."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        *,
        proto_version: int = 1,
        status_interval_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._slot = slot
        self._publication = publication
        self._proto_version = proto_version
        self._status_interval = status_interval_s
        self._conn: Any = None
        self._cur: Any = None
        self._readable = asyncio.Event()
        self._fd: int | None = None
        self._flushed = 0

    @property
    def wal_end(self) -> int:
        return int(self._cur.wal_end) if self._cur is not None else 0

    async def start(self) -> None:
        """Connect and start streaming from the slot's confirmed position.

        Raises:
            SlotInUseError: another process is streaming from the slot.
            CaptureError: the slot or publication is missing, or the server refused.
        """
        try:
            self._conn = psycopg2.connect(
                self._dsn,
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
                async_=True,
                options=_SESSION_OPTIONS,
            )
            await self._poll()
            self._cur = self._conn.cursor()
            self._cur.start_replication(
                slot_name=self._slot,
                decode=False,
                options={
                    "proto_version": str(self._proto_version),
                    "publication_names": self._publication,
                    "messages": "true",
                },
                status_interval=max(1, int(self._status_interval)),
            )
            await self._poll()
        except psycopg2.Error as exc:
            await self.close()
            raise self._map_error(exc) from exc
        loop = asyncio.get_running_loop()
        self._fd = self._conn.fileno()
        loop.add_reader(self._fd, self._readable.set)
        log.info("replication started", extra={"slot": self._slot})

    def _map_error(self, exc: psycopg2.Error) -> CaptureError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg2.errors.ObjectInUse) or "is active for PID" in text:
            return SlotInUseError(
                f"replication slot {self._slot!r} is already in use by another capture: {text}",
                details={"slot": self._slot},
            )
        if isinstance(exc, psycopg2.errors.UndefinedObject) or "does not exist" in text:
            return CaptureError(
                f"{text} (run `streamsync setup` first)",
                code="SLOT_MISSING",
                details={"slot": self._slot},
            )
        return CaptureError(f"replication connection failed: {text}", details={"slot": self._slot})

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            state = self._conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            fut: asyncio.Future[None] = loop.create_future()
            fd = self._conn.fileno()

            def ready(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            if state == psycopg2.extensions.POLL_READ:
                loop.add_reader(fd, ready)
                try:
                    await fut
                finally:
                    loop.remove_reader(fd)
            elif state == psycopg2.extensions.POLL_WRITE:
                loop.add_writer(fd, ready)
                try:
                    await fut
                finally:
                    loop.remove_writer(fd)
            else:  # pragma: no cover - psycopg2 documents only the three states
                raise CaptureError(f"unexpected poll state {state}")

    async def read_batch(self, max_messages: int, wait_s: float) -> list[bytes]:
        out: list[bytes] = []
        try:
            out = self._drain(max_messages)
            if out:
                return out
            self._readable.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._readable.wait()
            return self._drain(max_messages)
        except psycopg2.Error as exc:
            raise CaptureError(f"replication stream failed: {exc}".strip()) from exc

    def _drain(self, max_messages: int) -> list[bytes]:
        out: list[bytes] = []
        read = self._cur.read_message
        for _ in range(max_messages):
            msg = read()
            if msg is None:
                break
            out.append(msg.payload)
        return out

    def send_feedback(self, flush_lsn: int) -> None:
        """Report ``flush_lsn`` as written, flushed and applied (0 keeps the last value)."""
        if self._cur is None:
            return
        if flush_lsn > self._flushed:
            self._flushed = flush_lsn
        try:
            self._cur.send_feedback(
                write_lsn=self._flushed,
                flush_lsn=self._flushed,
                apply_lsn=self._flushed,
                force=True,
            )
        except psycopg2.Error as exc:
            raise CaptureError(f"standby status update failed: {exc}".strip()) from exc

    async def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            self._cur = None


class ReplaySource:
    """Recorded pgoutput payloads through the ReplicationSource interface (tests, bench)."""

    def __init__(
        self, payloads: Iterable[bytes], wal_end: int = 0, *, chunk: int = 0, pause_s: float = 0
    ) -> None:
        """``chunk`` caps messages per read (0: no cap); ``pause_s`` is awaited before each."""
        self._it = iter(payloads)
        self._wal_end = wal_end
        self._chunk = chunk
        self._pause_s = pause_s
        self.flushed: list[int] = []
        self.exhausted = False

    @property
    def wal_end(self) -> int:
        return self._wal_end

    async def start(self) -> None:
        return None

    async def read_batch(self, max_messages: int, wait_s: float) -> list[bytes]:
        await asyncio.sleep(self._pause_s)
        limit = min(max_messages, self._chunk) if self._chunk else max_messages
        out: list[bytes] = []
        for payload in self._it:
            out.append(payload)
            if len(out) >= limit:
                break
        if not out:
            self.exhausted = True
        return out

    def send_feedback(self, flush_lsn: int) -> None:
        if not self.flushed or flush_lsn > self.flushed[-1]:
            self.flushed.append(flush_lsn)

    async def close(self) -> None:
        return None


# -- admin (asyncpg) ------------------------------------------------------------------------
async def ensure_publication(conn: Any, publication: str, tables: Sequence[str]) -> None:
    """Create the publication for ``tables``, or set its table list if it exists (idempotent)."""
    if not tables:
        raise ConfigError("no [[tables]] configured: nothing to publish")
    for source in tables:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$", source):
            raise ConfigError(f"invalid table name {source!r}")
    table_list = ", ".join(_qualified(t) for t in tables)
    exists = await conn.fetchval("SELECT 1 FROM pg_publication WHERE pubname = $1", publication)
    if exists:
        await conn.execute(f"ALTER PUBLICATION {_quote_ident(publication)} SET TABLE {table_list}")
    else:
        try:
            await conn.execute(
                f"CREATE PUBLICATION {_quote_ident(publication)} FOR TABLE {table_list}"
            )
        except asyncpg.DuplicateObjectError:  # a concurrent setup won
            await conn.execute(
                f"ALTER PUBLICATION {_quote_ident(publication)} SET TABLE {table_list}"
            )


async def ensure_slot(conn: Any, slot: str) -> bool:
    """Create the logical slot with pgoutput if missing; True when it was created."""
    row = await conn.fetchrow(
        "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    if row is not None:
        if row["plugin"] != "pgoutput":
            raise ConfigError(
                f"replication slot {slot!r} exists with plugin {row['plugin']!r}, not pgoutput"
            )
        return False
    try:
        await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    except asyncpg.DuplicateObjectError:
        return False
    return True


async def current_wal_lsn(conn: Any) -> int:
    value = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    return int(value)


async def emit_heartbeat(conn: Any, slot: str) -> int:
    """A transactional logical message: the slot advances though captured tables are idle."""
    value = await conn.fetchval(
        "SELECT pg_logical_emit_message(true, $1, $2) - '0/0'::pg_lsn", HEARTBEAT_PREFIX, slot
    )
    return int(value)


async def slot_lag_bytes(dsn: str, slot: str) -> int | None:
    """Bytes of WAL between the server's current position and the slot's confirmed flush.

    None when the slot does not exist (or has never confirmed a position).
    """
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        value = await conn.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = $1",
            slot,
        )
    finally:
        await conn.close()
    return None if value is None else int(value)
