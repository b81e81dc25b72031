"""Per-partition offsets that are safe to commit.

Every consumed offset is ``track``-ed in order; it becomes ``done`` once its outcome is final
(synced, skipped as stale, or dead-lettered and acked). The committable offset of a partition is
the lowest offset not yet done (or one past the last tracked offset when all are done): Kafka's
"next offset to read". Offsets must increase per partition (``InvariantError`` otherwise); a
partition that is (re)assigned starts afresh with ``reset``.

Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

from streamsync.errors import InvariantError

__all__ = ["Offsets", "PartitionOffsets"]


class PartitionOffsets:
    """Offsets of one partition."""

    __slots__ = ("_committed", "_done", "_last", "_open")

    def __init__(self, committed: int | None = None) -> None:
        self._open: deque[int] = deque()  # tracked, in order, not yet all done from the left
        self._done: set[int] = set()
        self._last: int | None = None
        self._committed = committed

    def track(self, offset: int) -> None:
        if self._last is not None and offset <= self._last:
            raise InvariantError(
                f"offset {offset} does not increase (last tracked {self._last})",
                details={"offset": offset, "last": self._last},
            )
        self._last = offset
        self._open.append(offset)

    def done(self, offset: int) -> None:
        if self._last is None or offset > self._last:
            raise InvariantError(f"offset {offset} was never tracked", details={"offset": offset})
        self._done.add(offset)
        while self._open and self._open[0] in self._done:
            self._done.discard(self._open.popleft())

    @property
    def unfinished(self) -> int:
        """Tracked offsets whose outcome is not final yet."""
        return len(self._open) - len(self._done)

    def safe(self) -> int | None:
        """The next offset to read after a restart, or None when nothing was tracked."""
        if self._open:
            return self._open[0]
        return None if self._last is None else self._last + 1

    def committable(self) -> int | None:
        """``safe()`` when it moved past the last commit, else None."""
        safe = self.safe()
        if safe is None or (self._committed is not None and safe <= self._committed):
            return None
        return safe

    def committed(self, offset: int) -> None:
        if self._committed is not None and offset < self._committed:
            raise InvariantError(
                f"commit {offset} moves backwards (was {self._committed})",
                details={"offset": offset, "committed": self._committed},
            )
        self._committed = offset


class Offsets:
    """``PartitionOffsets`` for every owned partition (keys are aiokafka TopicPartitions)."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, PartitionOffsets] = {}

    def reset(self, tp: Hashable, committed: int | None = None) -> None:
        self._parts[tp] = PartitionOffsets(committed)

    def forget(self, tps: Iterable[Hashable]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)

    def owns(self, tp: Hashable) -> bool:
        return tp in self._parts

    def track(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionOffsets()
        part.track(offset)

    def done(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None:
            return  # the partition was revoked meanwhile: its new owner redoes the work
        part.done(offset)

    def done_all(self, offsets: Iterable[tuple[Hashable, int]]) -> None:
        for tp, offset in offsets:
            self.done(tp, offset)

    def committable(self, tps: Iterable[Hashable] | None = None) -> dict[Hashable, int]:
        """Offsets to commit now (only partitions that moved)."""
        out: dict[Hashable, int] = {}
        for tp, part in self._parts.items():
            if tps is not None and tp not in tps:
                continue
            safe = part.committable()
            if safe is not None:
                out[tp] = safe
        return out

    def committed(self, offsets: dict[Hashable, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed(offset)

    def unfinished(self) -> int:
        return sum(p.unfinished for p in self._parts.values())

    def partitions(self) -> list[Hashable]:
        return list(self._parts)
