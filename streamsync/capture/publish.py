"""Change events → Kafka (shell): await send(), hand each ack future to the AckTracker.

Two-phase produce (aiokafka): awaiting ``producer.send()`` enqueues the record, waiting while the
partition's batch is full — that, plus the ``max_inflight`` cap on un-acked events, is the
backpressure onto the replication stream, so memory stays bounded whatever the transaction
size. The returned future resolves on the broker's ack (acks=all); its callback acks the
event's transaction. A failed ack is kept and raised by ``check()``: the role then fails and
restarts from the slot's flushed position (nothing past it was confirmed).

Cancelling ``publish()`` while it waits for room or for the enqueue loses nothing durable: the
event was not acknowledged, so the slot was not flushed past it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from streamsync.capture.acks import AckTracker, Txn
from streamsync.errors import PublishError
from streamsync.events import ChangeEvent, encode_change, encode_key
from streamsync.kafka.topics import change_topic

__all__ = ["Publisher"]


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
        self._topics: dict[str, str] = {}
        self._error: BaseException | None = None
        self.published = 0

    def check(self) -> None:
        """Raise the first produce failure, if any."""
        if self._error is not None:
            raise PublishError(
                f"Kafka did not acknowledge an event: {type(self._error).__name__}: {self._error}"
            ) from self._error

    async def publish(self, event: ChangeEvent, txn: Txn) -> None:
        """Enqueue one event; its ack (later) acks ``txn`` in the tracker."""
        acks = self._acks
        if acks.inflight >= self._max_inflight:
            self._room.clear()
            await self._room.wait()
            self.check()
        topic = self._topics.get(event.table)
        if topic is None:
            topic = self._topics[event.table] = change_topic(self._prefix, event.table)
        acks.add(txn)
        try:
            fut = await self._producer.send(
                topic, value=encode_change(event), key=encode_key(event.key)
            )
        except Exception as exc:
            acks.ack(txn)  # never confirmed: the error fails the role before any flush past it
            self._error = exc
            self.check()
            raise
        fut.add_done_callback(lambda f, t=txn: self._on_ack(f, t))
        self.published += 1

    def _on_ack(self, fut: asyncio.Future[Any], txn: Txn) -> None:
        if fut.cancelled():
            self._error = self._error or asyncio.CancelledError("produce cancelled")
        elif fut.exception() is not None:
            self._error = self._error or fut.exception()
        else:
            self._acks.ack(txn)
        if self._error is not None or self._acks.inflight <= self._low_water:
            self._room.set()

    async def drain(self, wait_s: float) -> None:
        """Wait until every enqueued event is acknowledged (TimeoutError after ``wait_s``)."""
        async with asyncio.timeout(wait_s):
            await self._producer.flush()
            while self._acks.inflight > 0 and self._error is None:
                self._room.clear()
                await self._room.wait()
        self.check()
