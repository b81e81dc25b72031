"""Offsets: commit only past events whose outcome is final; never backwards."""

from __future__ import annotations

import pytest

from streamsync.errors import InvariantError
from streamsync.sink.offsets import Offsets, PartitionOffsets


def test_commit_stops_at_the_lowest_unfinished_offset() -> None:
    p = PartitionOffsets()
    assert p.safe() is None and p.committable() is None
    for o in (5, 6, 7, 9):  # gaps are fine (transaction markers, compaction)
        p.track(o)
    assert p.committable() == 5
    p.done(6)
    p.done(9)
    assert p.committable() == 5
    p.done(5)
    assert p.committable() == 7
    p.done(7)
    assert p.committable() == 10
    p.committed(10)
    assert p.committable() is None
    assert p.unfinished == 0


def test_offsets_must_increase() -> None:
    p = PartitionOffsets()
    p.track(3)
    with pytest.raises(InvariantError):
        p.track(3)
    with pytest.raises(InvariantError):
        p.track(2)
    with pytest.raises(InvariantError):
        p.done(4)


def test_commits_never_move_backwards() -> None:
    p = PartitionOffsets(committed=10)
    p.track(10)
    assert p.committable() is None  # nothing done yet: still at the committed offset
    p.committed(10)
    with pytest.raises(InvariantError):
        p.committed(9)


def test_committable_respects_the_initial_commit() -> None:
    p = PartitionOffsets(committed=10)
    p.track(10)
    assert p.committable() is None
    p.done(10)
    assert p.committable() == 11


def test_many_partitions_and_revocation() -> None:
    o = Offsets()
    a, b = ("t", 0), ("t", 1)
    o.reset(a)
    o.track(a, 0)
    o.track(a, 1)
    o.track(b, 0)
    assert o.owns(b)
    o.done_all([(a, 1), (b, 0)])
    assert o.committable() == {a: 0, b: 1}
    assert o.committable(tps={b}) == {b: 1}
    o.committed({b: 1})
    assert o.committable() == {a: 0}
    assert o.unfinished() == 1
    o.forget([a])
    o.done(a, 0)  # a late outcome for a revoked partition is ignored
    assert o.committable() == {}
    assert o.partitions() == [b]
