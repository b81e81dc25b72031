"""The capture role: Postgres slot → pgoutput → ChangeEvents → Kafka, flushing only acked WAL.

``Capture(settings).run()`` holds one TaskGroup with three loops:

- read: payloads from the replication source → ``decode`` → ``Assembler`` → ``Publisher``;
  Begin/Commit drive the ``AckTracker``; backpressure (un-acked cap, full batches) stops
  reading, which pushes back on the walsender through TCP;
- feedback: every ``status_interval_s`` a standby status update with the tracker's safe LSN;
- heartbeat: every ``heartbeat_interval_s`` a transactional ``pg_logical_emit_message`` so the
  slot advances while the captured tables are idle and the rest of the cluster writes; it
  also refreshes the slot-lag figure.

``stop()`` is idempotent and only sets an event: reading stops, every enqueued event is awaited
(acks), the slot is flushed to the safe LSN, connections close, ``run()`` returns. A failure in
any loop cancels the others and ``run()`` raises; a restart resumes from the slot (at-least-once).

``until_idle=True`` (tests, tools): emit a marker message at start, capture until the marker's
transaction is acknowledged and flushed, then return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from streamsync.capture.acks import AckTracker, Txn
from streamsync.capture.assemble import Assembler
from streamsync.capture.pgoutput import Begin, Commit, LogicalMessage, decode
from streamsync.capture.publish import Publisher
from streamsync.capture.replication import (
    HEARTBEAT_PREFIX,
    PgReplicationSource,
    ReplaySource,
    ReplicationSource,
    emit_heartbeat,
)
from streamsync.errors import CaptureError, DecodeError
from streamsync.events import format_lsn
from streamsync.kafka.producer import create_producer
from streamsync.ops import metrics
from streamsync.ops.health import HEALTH
from streamsync.ops.logging import bind
from streamsync.settings import Settings

__all__ = ["Capture", "CaptureStats"]

log = logging.getLogger("streamsync.capture")

_READ_BATCH = 2000
# A partition's batch is sent when its previous one is acknowledged (or when full). Under a
# backlog it waits at most _MAX_OPEN_S for that ack before everything is flushed; once the
# stream pauses for _IDLE_FLUSH_S (the old linger_ms), everything is flushed too.
_MAX_OPEN_S = 0.1
_IDLE_FLUSH_S = 0.005
_SHUTDOWN_TIMEOUT_S = 30.0


@dataclass(slots=True)
class CaptureStats:
    events: int = 0
    transactions: int = 0
    truncates: int = 0
    heartbeats: int = 0
    flushed_lsn: int = 0
    slot_lag_bytes: int | None = None
    tables: dict[str, int] = field(default_factory=dict)


class Capture:
    """One capture per slot. See the module docstring.

    Args:
        settings: the whole configuration (postgres, capture, kafka, tables).
        source: the replication source; default ``PgReplicationSource`` on the configured slot.
        producer: an unstarted aiokafka producer; default ``create_producer(settings.kafka)``.
        until_idle: return once everything written before ``run()`` started is acknowledged.
        heartbeat: send heartbeats (default True; off for replay sources).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source: ReplicationSource | None = None,
        producer: AIOKafkaProducer | None = None,
        until_idle: bool = False,
        heartbeat: bool | None = None,
    ) -> None:
        self._settings = settings
        cap = settings.capture
        self._source: ReplicationSource = source or PgReplicationSource(
            settings.postgres.dsn,
            settings.postgres.slot,
            settings.postgres.publication,
            proto_version=cap.proto_version,
            status_interval_s=cap.status_interval_s,
        )
        self._replay = isinstance(self._source, ReplaySource)
        self._producer = producer
        self._until_idle = until_idle
        self._heartbeat = (not self._replay) if heartbeat is None else heartbeat
        self._stop = asyncio.Event()
        self._done = asyncio.Event()
        self._acks = AckTracker()
        self._assembler = Assembler(
            tables=[t.source for t in settings.tables], on_truncate=cap.on_truncate
        )
        self._marker: str | None = None
        self._marker_seen = False
        self._marker_txn: Txn | None = None
        self._marker_flushable = False
        self.stats = CaptureStats()
        self._last_feedback = -1

    @property
    def acks(self) -> AckTracker:
        return self._acks

    def stop(self) -> None:
        """Ask ``run()`` to stop reading, wait for acks, flush the slot and return. Idempotent."""
        self._stop.set()

    async def run(self) -> None:
        """Capture until ``stop()`` (or idle, with ``until_idle``).

        Raises:
            SlotInUseError: another capture streams from the slot (fails fast, not retried).
            CaptureError: replication problems; PublishError: Kafka did not acknowledge.
        """
        bind(role="capture", slot=self._settings.postgres.slot)
        HEALTH.require("replication_connected")
        try:
            await self._source.start()
        except CaptureError as exc:
            HEALTH.fail("replication_connected", exc.code)
            raise
        HEALTH.ok("replication_connected")
        producer = self._producer or create_producer(self._settings.kafka)
        try:
            await producer.start()
            publisher = Publisher(
                producer,
                self._acks,
                topic_prefix=self._settings.kafka.topic_prefix,
                max_inflight=self._settings.capture.max_inflight_events,
            )
            if self._until_idle and not self._replay:
                await self._emit_marker()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._read_loop(publisher))
                    tg.create_task(self._feedback_loop())
                    if self._heartbeat:
                        tg.create_task(self._heartbeat_loop())
            except BaseExceptionGroup as group:
                # One loop failed and the group cancelled the rest: raise the cause itself.
                raise group.exceptions[0] from None
        finally:
            self._done.set()
            HEALTH.fail("replication_connected", "stopped")
            HEALTH.forget_beat("capture.read")
            with contextlib.suppress(Exception):
                await producer.stop()
            await self._source.close()

    # -- loops ------------------------------------------------------------------------------
    async def _read_loop(self, publisher: Publisher) -> None:
        try:
            await self._read(publisher)
            await publisher.drain(_SHUTDOWN_TIMEOUT_S)
            self._feedback(force=True)
            log.info(
                "capture stopped",
                extra={"events": self.stats.events, "flushed": format_lsn(self.stats.flushed_lsn)},
            )
        finally:
            self._done.set()

    async def _read(self, publisher: Publisher) -> None:
        source = self._source
        acks = self._acks
        asm = self._assembler
        stats = self.stats
        interval = self._settings.capture.status_interval_s
        wait_s = min(interval, 0.2)  # how soon an idle reader notices stop()
        txn: Txn | None = None
        while not self._stop.is_set():
            publisher.check()
            HEALTH.beat("capture.read", max_age_s=max(30.0, 3 * interval))
            metrics.CAPTURE_INFLIGHT_EVENTS.set(acks.inflight)
            # Open batches (their partition's previous batch was in flight) are flushed as soon
            # as a read finds nothing for _IDLE_FLUSH_S.
            payloads = await source.read_batch(
                _READ_BATCH, _IDLE_FLUSH_S if publisher.open_batches else wait_s
            )
            if not payloads:
                await publisher.flush()
                if txn is None and not self._replay:
                    acks.idle(source.wal_end)
                if self._until_idle and self._idle_reached(source):
                    return
                continue
            encode_dml = asm.encode_dml
            append = publisher.append
            tables = stats.tables
            for payload in payloads:
                tag = payload[0]
                if tag == 0x49 or tag == 0x55 or tag == 0x44:  # Insert, Update, Delete: hot path
                    for record in encode_dml(payload):
                        if txn is None:
                            raise CaptureError("change outside a transaction")
                        if not append(record, txn):
                            await publisher.publish_encoded(record, txn)
                        stats.events += 1
                        table = record[0]
                        tables[table] = tables.get(table, 0) + 1
                    continue
                msg = decode(payload)
                if isinstance(msg, Begin):
                    txn = acks.begin(msg.final_lsn)
                    asm.feed(msg)
                    continue
                if isinstance(msg, Commit):
                    if txn is None:
                        raise DecodeError("Commit without Begin")
                    asm.feed(msg)
                    acks.commit(txn, msg.end_lsn)
                    stats.transactions += 1
                    if self._marker_seen and self._marker_txn is None:
                        self._marker_txn = txn
                    txn = None
                    continue
                if isinstance(msg, LogicalMessage):
                    asm.feed(msg)
                    if (
                        self._marker is not None
                        and msg.prefix == HEARTBEAT_PREFIX
                        and msg.content == self._marker.encode()
                    ):
                        self._marker_seen = True
                    continue
                events = asm.feed(msg)
                if events:
                    if txn is None:
                        raise CaptureError("change outside a transaction")
                    for event in events:
                        await publisher.publish(event, txn)
                        stats.events += 1
                        stats.tables[event.table] = stats.tables.get(event.table, 0) + 1
                elif asm.truncates != stats.truncates:
                    for table in asm.truncated_tables[-(asm.truncates - stats.truncates) :]:
                        metrics.CAPTURE_TRUNCATES.labels(table=table).inc()
                    stats.truncates = asm.truncates
                    log.warning(
                        "truncate captured; not propagated as deletes",
                        extra={"tables": asm.truncated_tables[-5:], "count": asm.truncates},
                    )
            if publisher.open_age() >= _MAX_OPEN_S:
                await publisher.flush()
            else:
                await publisher.flush_ready()  # partitions with nothing in flight; never waits
            # Let the loop run the producer's sender and the ack callbacks (a read that finds
            # data does not yield), so Kafka works while the next batch is decoded.
            await asyncio.sleep(0)
            if self._until_idle and self._marker_txn is not None:
                return  # everything up to the marker was read; run() drains and flushes

    def _idle_reached(self, source: ReplicationSource) -> bool:
        if self._replay:
            return isinstance(source, ReplaySource) and source.exhausted
        marker_txn = self._marker_txn
        if marker_txn is None or marker_txn.end_lsn is None:
            return False
        return self._acks.inflight == 0 and self._acks.safe_lsn >= marker_txn.end_lsn

    def _feedback(self, force: bool = False) -> None:
        safe = self._acks.safe_lsn
        if force or safe != self._last_feedback:
            self._source.send_feedback(safe)
            self._last_feedback = safe
            self.stats.flushed_lsn = safe
            metrics.CAPTURE_FLUSHED_LSN.set(safe)

    async def _wait_done(self, wait_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._done.wait()
        return self._done.is_set()

    async def _feedback_loop(self) -> None:
        interval = self._settings.capture.status_interval_s
        while not await self._wait_done(interval):
            self._feedback(force=True)

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.capture.heartbeat_interval_s
        pg = self._settings.postgres
        conn: Any = None
        try:
            while not self._done.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(pg.dsn, timeout=10)
                    await emit_heartbeat(conn, pg.slot)
                    self.stats.heartbeats += 1
                    metrics.CAPTURE_HEARTBEATS.inc()
                    lag = await conn.fetchval(
                        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
                        " FROM pg_replication_slots WHERE slot_name = $1",
                        pg.slot,
                    )
                    self.stats.slot_lag_bytes = None if lag is None else int(lag)
                    if lag is not None:
                        metrics.CAPTURE_SLOT_LAG.set(int(lag))
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("heartbeat failed", extra={"error": type(exc).__name__})
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                if await self._wait_done(interval):
                    return
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _emit_marker(self) -> None:
        self._marker = uuid.uuid4().hex
        conn = await asyncpg.connect(self._settings.postgres.dsn, timeout=10)
        try:
            await conn.fetchval(
                "SELECT pg_logical_emit_message(true, $1, $2)", HEARTBEAT_PREFIX, self._marker
            )
        finally:
            await conn.close()
