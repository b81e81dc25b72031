"""Change events → Kafka (shell): batches per partition, ack futures into the AckTracker.

Events are appended to one aiokafka ``BatchBuilder`` per topic-partition (partition chosen by
Kafka's default murmur2 on the key bytes, exactly as aiokafka's ``DefaultPartitioner`` and the
Java client do — capture/partition.py — so all versions of a key share a partition whichever
streamsync producer wrote them). ``flush()`` hands the
open batches to the producer with ``send_batch``: awaiting it waits while the partition still
has a batch queued (backpressure); the returned future resolves on the broker's ack (acks=all,
idempotent producer), and its callback acks, per transaction, the events the batch carried.

``max_inflight`` caps un-acked events: when reached, open batches are flushed and publishing
waits for acks — that stops the read loop, which pushes back on the walsender through TCP, so
memory stays bounded whatever the transaction size. A failed batch is kept and raised by
``check()``: the role fails and restarts from the slot's flushed position (nothing past the
failed events was confirmed).

The hot path is synchronous: ``append(record, txn)`` takes an already encoded record
(``Assembler.encode_dml``) and returns False when it cannot go on without waiting — unknown
topic, full batch, un-acked cap reached; the caller then awaits ``publish_encoded``, which does
the same with the waiting. Batches are closed before ``send_batch``, so the sender ships them at
once instead of lingering. Between read batches the role calls ``flush_ready()``: only
partitions whose previous batch is acknowledged are sent, the others keep filling (bigger
batches under load, and the read loop never waits for the broker there); ``flush()`` — when
caught up, idle, or an open batch is older than the role's limit — sends everything.

Cancelling ``publish()``/``flush()`` loses nothing durable: events that were not acknowledged
hold the slot's flush position back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from streamsync.capture.acks import AckTracker, Txn
from streamsync.capture.assemble import Encoded
from streamsync.capture.partition import murmur2
from streamsync.errors import PublishError
from streamsync.events import ChangeEvent, encode_change, encode_key
from streamsync.kafka.topics import change_topic
from streamsync.ops import metrics

__all__ = ["Publisher"]


class _Open:
    """One batch being filled for a topic-partition, and the events it holds per transaction."""

    __slots__ = ("builder", "counts", "created", "ops", "partition", "table", "topic")

    def __init__(self, builder: Any, table: str, topic: str, partition: int) -> None:
        self.builder = builder
        self.table = table
        self.topic = topic
        self.partition = partition
        self.counts: list[list[Any]] = []  # [txn, n], consecutive events of one txn merged
        self.ops: dict[str, int] = {}
        self.created = time.monotonic()

    def count(self, txn: Txn, op: str) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1
        counts = self.counts
        if counts and counts[-1][0] is txn:
            counts[-1][1] += 1
        else:
            counts.append([txn, 1])


class Publisher:
    """Produces change events to ``<prefix>.<schema>.<table>``, keyed by primary key."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        acks: AckTracker,
        *,
        topic_prefix: str,
        max_inflight: int,
    ) -> None:
        self._producer = producer
        self._acks = acks
        self._prefix = topic_prefix
        self._max_inflight = max_inflight
        self._low_water = max_inflight // 2
        self._room = asyncio.Event()
        self._room.set()
        self._topics: dict[str, tuple[str, list[int]]] = {}
        self._open: dict[tuple[str, int], _Open] = {}
        self._unacked: dict[tuple[str, int], int] = {}  # batches sent and not acked, per slot
        self._error: BaseException | None = None
        self.published = 0
        self.batches = 0

    def check(self) -> None:
        """Raise the first produce failure, if any."""
        if self._error is not None:
            raise PublishError(
                f"Kafka did not acknowledge a batch: {type(self._error).__name__}: {self._error}"
            ) from self._error

    async def _topic(self, table: str) -> tuple[str, list[int]]:
        topic = change_topic(self._prefix, table)
        partitions = sorted(await self._producer.partitions_for(topic))
        if not partitions:
            raise PublishError(f"topic {topic!r} has no partitions (run `streamsync setup`)")
        self._topics[table] = (topic, partitions)
        return topic, partitions

    async def publish(self, event: ChangeEvent, txn: Txn) -> None:
        """Append one event to its partition's open batch; its ack will ack ``txn``."""
        await self.publish_encoded(
            (event.table, event.op, encode_key(event.key), encode_change(event)), txn
        )

    def append(self, record: Encoded, txn: Txn) -> bool:
        """Append one encoded record without waiting; False: await ``publish_encoded`` instead.

        Nothing is changed when it returns False.
        """
        acks = self._acks
        if acks.inflight >= self._max_inflight:
            return False
        table, op, key, value = record
        target = self._topics.get(table)
        if target is None:
            return False
        topic, partitions = target
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._new_batch(slot, table)
        if batch.builder.append(timestamp=None, key=key, value=value) is None:
            return False  # the builder is closed now: publish_encoded sends it
        acks.add(txn)
        ops = batch.ops
        ops[op] = ops.get(op, 0) + 1
        counts = batch.counts
        if counts and counts[-1][0] is txn:
            counts[-1][1] += 1
        else:
            counts.append([txn, 1])
        self.published += 1
        return True

    async def publish_encoded(self, record: Encoded, txn: Txn) -> None:
        """Append one encoded record, waiting for room (un-acked cap, full batch) if needed."""
        acks = self._acks
        if acks.inflight >= self._max_inflight:
            await self.flush()
            while acks.inflight >= self._max_inflight and self._error is None:
                self._room.clear()
                await self._room.wait()
            self.check()
        table, op, key, value = record
        target = self._topics.get(table)
        if target is None:
            target = await self._topic(table)
        topic, partitions = target
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._new_batch(slot, table)
        if batch.builder.append(timestamp=None, key=key, value=value) is None:
            await self._send(slot)
            batch = self._new_batch(slot, table)
            if batch.builder.append(timestamp=None, key=key, value=value) is None:
                raise PublishError(f"event of {len(value)} bytes does not fit in a batch")
        acks.add(txn)
        batch.count(txn, op)
        self.published += 1

    def _new_batch(self, slot: tuple[str, int], table: str) -> _Open:
        batch = self._open[slot] = _Open(self._producer.create_batch(), table, slot[0], slot[1])
        return batch

    @property
    def open_batches(self) -> int:
        """Batches being filled, not handed to the producer yet."""
        return len(self._open)

    def open_age(self) -> float:
        """Seconds since the oldest open batch was created (0 with none open)."""
        if not self._open:
            return 0.0
        return time.monotonic() - min(batch.created for batch in self._open.values())

    async def flush_ready(self) -> None:
        """Send the open batches of partitions with no batch awaiting its ack; keep the others.

        Never waits for Kafka: a partition's next batch keeps filling while the previous one is
        in flight (adaptive batching under load); ``flush()`` sends everything.
        """
        unacked = self._unacked
        for slot in [slot for slot in self._open if not unacked.get(slot)]:
            await self._send(slot)

    async def flush(self) -> None:
        """Hand every open batch to the producer (waits while a partition's queue is full)."""
        for slot in list(self._open):
            await self._send(slot)

    async def _send(self, slot: tuple[str, int]) -> None:
        batch = self._open.pop(slot)
        if not batch.counts:
            return
        batch.builder.close()  # complete: no linger in the sender
        try:
            fut = await self._producer.send_batch(
                batch.builder, batch.topic, partition=batch.partition
            )
        except Exception as exc:
            self._error = self._error or exc
            self.check()
            raise
        self.batches += 1
        self._unacked[slot] = self._unacked.get(slot, 0) + 1
        fut.add_done_callback(lambda f, b=batch, s=slot: self._on_ack(f, b, s))

    def _on_ack(self, fut: asyncio.Future[Any], batch: _Open, slot: tuple[str, int]) -> None:
        self._unacked[slot] -= 1
        if fut.cancelled():
            self._error = self._error or asyncio.CancelledError("produce cancelled")
        elif fut.exception() is not None:
            self._error = self._error or fut.exception()
        else:
            ack = self._acks.ack
            for txn, n in batch.counts:
                ack(txn, n)
            for op, n in batch.ops.items():
                metrics.CAPTURE_EVENTS_PUBLISHED.labels(table=batch.table, op=op).inc(n)
        if self._error is not None or self._acks.inflight <= self._low_water:
            self._room.set()

    async def drain(self, wait_s: float) -> None:
        """Send open batches and wait until every event is acknowledged (TimeoutError)."""
        async with asyncio.timeout(wait_s):
            await self.flush()
            await self._producer.flush()
            while self._acks.inflight > 0 and self._error is None:
                self._room.clear()
                if self._acks.inflight == 0:
                    break
                await self._room.wait()
        self.check()
