"""In-flight transactions → the LSN the slot may safely be flushed to. Pure: no I/O, no asyncio.

The rule (design.md §6, yugabyte#33126): the slot moves only to the end of the highest
*committed* transaction below which every event was acknowledged by Kafka — never to the
latest ack callback, which arrive in no fixed order across partitions.

Usage by the capture loop, in stream order::

    txn = tracker.begin(begin.final_lsn)
    tracker.add(txn)            # per event handed to the producer
    tracker.ack(txn)            # from the producer's ack callback (any order)
    tracker.commit(txn, commit.end_lsn)
    tracker.idle(wal_end)       # keepalive with nothing open or pending
    tracker.safe_lsn            # → standby status update flush_lsn
"""

from __future__ import annotations

from collections import deque

from streamsync.errors import InvariantError

__all__ = ["AckTracker", "Txn"]


class Txn:
    """One transaction's bookkeeping: events not yet acked, and its end LSN once committed."""

    __slots__ = ("end_lsn", "lsn", "pending")

    def __init__(self, lsn: int) -> None:
        self.lsn = lsn
        self.pending = 0
        self.end_lsn: int | None = None

    def __repr__(self) -> str:
        return f"Txn(lsn={self.lsn:X}, pending={self.pending}, end_lsn={self.end_lsn})"


class AckTracker:
    """Tracks transactions in stream order and computes the safe flush LSN."""

    def __init__(self, start_lsn: int = 0) -> None:
        self._txns: deque[Txn] = deque()
        self._safe = start_lsn
        self.inflight = 0  # events handed to Kafka and not acked yet

    @property
    def safe_lsn(self) -> int:
        """The highest LSN below which every event is acknowledged (never decreases)."""
        txns = self._txns
        while txns and txns[0].end_lsn is not None and txns[0].pending == 0:
            end = txns.popleft().end_lsn
            assert end is not None
            self._advance(end)
        return self._safe

    @property
    def open_transactions(self) -> int:
        return len(self._txns)

    def begin(self, lsn: int) -> Txn:
        txn = Txn(lsn)
        self._txns.append(txn)
        return txn

    def add(self, txn: Txn) -> None:
        if txn.end_lsn is not None:
            raise InvariantError("event added to a committed transaction")
        txn.pending += 1
        self.inflight += 1

    def ack(self, txn: Txn, count: int = 1) -> None:
        """``count`` events of ``txn`` were acknowledged."""
        if txn.pending < count or count <= 0:
            raise InvariantError(f"more acks than events in {txn!r}")
        txn.pending -= count
        self.inflight -= count

    def commit(self, txn: Txn, end_lsn: int) -> None:
        if txn.end_lsn is not None:
            raise InvariantError(f"transaction committed twice: {txn!r}")
        if end_lsn < self._safe:
            raise InvariantError(
                f"commit end {end_lsn:X} below the flushed position {self._safe:X}",
                details={"end_lsn": end_lsn, "safe_lsn": self._safe},
            )
        txn.end_lsn = end_lsn

    def idle(self, wal_end: int) -> None:
        """The server has sent everything up to ``wal_end``; with nothing open, flush there."""
        if self.safe_lsn >= wal_end or self._txns:
            return
        self._advance(wal_end)

    def _advance(self, lsn: int) -> None:
        if lsn < self._safe:
            raise InvariantError(
                f"flush position would move backwards ({self._safe:X} → {lsn:X})",
                details={"from": self._safe, "to": lsn},
            )
        self._safe = lsn
