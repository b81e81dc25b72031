"""Capture role on a ReplaySource with an in-memory producer that acks batches out of order.

Checks the at-least-once rule end to end inside the role: whenever a flush position is sent
to the source, every event below it has been acknowledged; in the end everything is flushed.
"""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

from streamsync.capture.pgoutput import PG_EPOCH_US
from streamsync.capture.replication import ReplaySource
from streamsync.capture.role import Capture
from streamsync.events import decode_change
from streamsync.settings import load_settings


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"t" + struct.pack("!I", len(raw)) + raw


def relation() -> bytes:
    cols = b"".join(
        struct.pack("!B", key) + name + b"\x00" + struct.pack("!Ii", oid, -1)
        for key, name, oid in ((1, b"id", 23), (0, b"v", 25))
    )
    return b"R" + struct.pack("!I", 7) + b"public\x00t\x00d" + struct.pack("!h", 2) + cols


def synthetic_stream(rng: random.Random, txns: int) -> tuple[list[bytes], list[tuple[int, int]]]:
    """pgoutput payloads of ``txns`` transactions; also (commit_lsn, end_lsn) of each."""
    payloads = [relation()]
    bounds = []
    lsn = 0x1000
    key = 0
    for xid in range(1, txns + 1):
        lsn += 0x100
        commit_lsn, end_lsn = lsn, lsn + 0x30
        payloads.append(b"B" + struct.pack("!QqI", commit_lsn, 1_000_000, xid))
        for _ in range(rng.randint(0, 30)):
            key += 1
            tup = struct.pack("!h", 2) + _text(str(key)) + _text(f"v{key}")
            payloads.append(b"I" + struct.pack("!I", 7) + b"N" + tup)
        payloads.append(b"C" + struct.pack("!BQQq", 0, commit_lsn, end_lsn, 1_000_000))
        bounds.append((commit_lsn, end_lsn))
        lsn = end_lsn
    return payloads, bounds


class _Batch:
    def __init__(self, size: int, appended: list[bytes]) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.size = size
        self.appended = appended
        self.closed = False

    def append(self, *, timestamp: Any, key: bytes, value: bytes) -> object | None:
        if self.closed or len(self.records) >= self.size:
            self.closed = True  # as aiokafka's BatchBuilder: a full batch takes no more
            return None
        self.records.append((key, value))
        self.appended.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class ShuffledProducer:
    """Acks batches in random order, a few at a time, from the loop (like a real broker)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pending: list[tuple[asyncio.Future[None], _Batch]] = []
        self.acked: list[bytes] = []
        self.appended: list[bytes] = []  # every event handed to a batch, acked or not

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> _Batch:
        return _Batch(self.rng.randint(1, 8), self.appended)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((fut, batch))
        asyncio.get_running_loop().call_soon(self._ack_some)
        return fut

    def _ack_some(self) -> None:
        self.rng.shuffle(self.pending)
        for _ in range(self.rng.randint(0, len(self.pending))):
            fut, batch = self.pending.pop()
            self.acked.extend(value for _, value in batch.records)
            fut.set_result(None)

    async def flush(self) -> None:
        while self.pending:
            self._ack_some()
            await asyncio.sleep(0)


class CheckingReplay(ReplaySource):
    def __init__(self, payloads: list[bytes], producer: ShuffledProducer) -> None:
        super().__init__(payloads, chunk=7, pause_s=0.0005)  # lets acks and feedback interleave
        self.producer = producer
        self.violations: list[str] = []

    def send_feedback(self, flush_lsn: int) -> None:
        acked = set(self.producer.acked)
        for value in self.producer.appended:
            lsn = decode_change(value).pos.lsn
            if value not in acked and lsn < flush_lsn:
                self.violations.append(f"flushed {flush_lsn:X} past unacked event at {lsn:X}")
        super().send_feedback(flush_lsn)


async def test_flush_never_passes_an_unacked_event() -> None:
    rng = random.Random(3)
    settings = load_settings(
        capture={"status_interval_s": 0.001, "max_inflight_events": 100},
        tables=[
            {"source": "public.t", "module": "T", "external_id": {"column": "id", "field": "p"}}
        ],
    )
    for _ in range(2):
        payloads, bounds = synthetic_stream(rng, txns=60)
        producer = ShuffledProducer(rng)
        source = CheckingReplay(payloads, producer)
        cap = Capture(settings, source=source, producer=producer, until_idle=True)
        await asyncio.wait_for(cap.run(), timeout=30)
        assert source.violations == []
        assert len(source.flushed) > 10  # the slot moved many times mid-stream
        assert source.flushed[-1] == bounds[-1][1]  # everything acked: the last commit's end
        assert source.flushed == sorted(source.flushed)
        events = [decode_change(v) for v in producer.acked]
        keys = sorted(e.key[0] for e in events)
        assert keys == list(range(1, len(keys) + 1))
        assert cap.stats.events == len(events) and cap.acks.inflight == 0
        assert all(e.ts_ms == (1_000_000 + PG_EPOCH_US) // 1000 for e in events)
