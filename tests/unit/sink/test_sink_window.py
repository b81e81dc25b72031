"""Window: coalescing per key, readiness by size and age, in-flight keys, chunking."""

from __future__ import annotations

import pytest

from streamsync.events import Position
from streamsync.sink.window import Window, chunks
from tests.unit.sink.sinkev import ev

TP0, TP1 = ("t", 0), ("t", 1)


def test_latest_version_wins_and_all_offsets_are_kept() -> None:
    w = Window(max_keys=100, max_wait_s=5)
    w.add(ev(1, 10, "c", {"id": 1, "a": 1}), TP0, 0, now=0)
    w.add(ev(1, 11, "u", {"id": 1, "a": 2}), TP0, 1, now=1)
    w.add(ev(2, 12, "c"), TP0, 2, now=2)
    (batch,) = w.flush("shutdown")
    assert [e.key for e in batch.entries] == [[1], [2]]
    first = batch.entries[0]
    assert first.after == {"id": 1, "a": 2}
    assert first.pos == Position(11)
    assert first.offsets == [(TP0, 0), (TP0, 1)]
    assert first.events == 2
    assert batch.reason == "shutdown"


def test_delete_supersedes_and_a_later_insert_revives() -> None:
    w = Window()
    w.add(ev(1, 10, "c", {"id": 1, "a": 1}), TP0, 0, now=0)
    w.add(ev(1, 11, "d"), TP0, 1, now=0)
    (batch,) = w.flush()
    (entry,) = batch.entries
    assert entry.op == "delete" and entry.after is None
    w.release(batch)
    w.add(ev(2, 10, "d"), TP0, 2, now=0)
    w.add(ev(2, 11, "c", {"id": 2, "a": 5}), TP0, 3, now=0)
    (batch,) = w.flush()
    (entry,) = batch.entries
    assert entry.op == "upsert" and entry.after == {"id": 2, "a": 5}
    assert entry.unchanged == frozenset()


def test_unchanged_toast_columns_are_not_written_unless_known() -> None:
    w = Window()
    w.add(ev(1, 10, "u", {"id": 1, "a": 1}, unchanged=["notes"]), TP0, 0, now=0)
    w.add(ev(1, 11, "u", {"id": 1, "a": 2}, unchanged=["notes"]), TP0, 1, now=0)
    (batch,) = w.flush()
    assert batch.entries[0].unchanged == frozenset({"notes"})
    assert "notes" not in (batch.entries[0].after or {})
    w.release(batch)
    # an earlier version carried notes: the later version's unchanged notes keep that value
    w.add(ev(2, 10, "u", {"id": 2, "notes": "long"}), TP0, 2, now=0)
    w.add(ev(2, 11, "u", {"id": 2, "a": 3}, unchanged=["notes"]), TP0, 3, now=0)
    (batch,) = w.flush()
    entry = batch.entries[0]
    assert entry.after == {"id": 2, "notes": "long", "a": 3}
    assert entry.unchanged == frozenset()


def test_a_stale_version_never_overwrites_a_newer_one() -> None:
    w = Window()
    w.add(ev(1, 20, "u", {"id": 1, "a": "new"}), TP0, 0, now=0)
    w.add(ev(1, 10, "u", {"id": 1, "a": "old"}), TP0, 1, now=0)  # e.g. a replayed dead letter
    (batch,) = w.flush()
    entry = batch.entries[0]
    assert entry.after == {"id": 1, "a": "new"} and entry.pos == Position(20)
    assert entry.offsets == [(TP0, 0), (TP0, 1)]


def test_seq_orders_events_within_one_commit() -> None:
    w = Window()
    w.add(ev(1, 10, "u", {"id": 1, "a": 1}, seq=2), TP0, 0, now=0)
    w.add(ev(1, 10, "d", seq=3), TP0, 1, now=0)
    (batch,) = w.flush()
    assert batch.entries[0].op == "delete"


def test_size_flush_at_max_distinct_keys_not_events() -> None:
    w = Window(max_keys=3, max_wait_s=5)
    assert w.add(ev(1, 1), TP0, 0, now=0) == []
    assert w.add(ev(1, 2), TP0, 1, now=0) == []
    assert w.add(ev(2, 3), TP1, 0, now=0) == []
    ready = w.add(ev(3, 4), TP0, 2, now=0)
    assert len(ready) == 1 and ready[0].reason == "size"
    assert sorted(e.key[0] for e in ready[0].entries) == [1, 2, 3]
    assert w.pending == 0 and w.inflight == 3


def test_age_flush_and_next_deadline() -> None:
    w = Window(max_keys=100, max_wait_s=5)
    assert w.next_deadline() is None
    w.add(ev(1, 1), TP0, 0, now=10)
    w.add(ev(2, 2), TP0, 1, now=12)
    assert w.next_deadline() == 15
    assert w.due(14.9) == []
    (batch,) = w.due(15)
    assert batch.reason == "age" and len(batch) == 2
    assert w.next_deadline() is None


def test_a_key_in_flight_is_held_back_until_released() -> None:
    w = Window(max_keys=2, max_wait_s=5)
    w.add(ev(1, 1), TP0, 0, now=0)
    (first,) = w.add(ev(2, 2), TP0, 1, now=0)
    # key 1 changes again while its call is in flight
    w.add(ev(1, 3), TP0, 2, now=1)
    assert w.add(ev(3, 4), TP0, 3, now=1) == []  # only one flushable key (3)
    assert w.flushable() == 1
    assert w.next_deadline() == 6  # key 3's age; key 1 is held
    (batch,) = w.flush()
    assert [e.key for e in batch.entries] == [[3]]
    assert w.flush() == []
    assert w.next_deadline() is None
    w.release(first)
    (batch,) = w.flush()
    assert [e.key for e in batch.entries] == [[1]] and batch.entries[0].pos == Position(3)


def test_held_keys_count_once_released_and_size_flush_cuts_full_batches_only() -> None:
    w = Window(max_keys=2, max_wait_s=5)
    w.add(ev(1, 1), TP0, 0, now=0)
    (first,) = w.add(ev(2, 1), TP0, 1, now=0)
    w.add(ev(1, 2), TP0, 2, now=0)
    w.add(ev(2, 2), TP0, 3, now=0)
    w.release(first)
    (batch,) = w.add(ev(3, 3), TP0, 4, now=0)
    assert len(batch) == 2 and w.pending == 1


def test_flush_cuts_into_batches_of_max_keys() -> None:
    w = Window(max_keys=100, max_wait_s=5)
    for k in range(99):
        w.add(ev(k, k + 1), TP0, k, now=0)
    w2 = Window(max_keys=10, max_wait_s=5)
    for k in range(25):
        w2.add(ev(k, k + 1), TP0, k, now=0)
    # adds of 10, 20 produced size batches already
    assert w2.pending == 5
    batches = w.flush("revoke")
    assert [len(b) for b in batches] == [99]


def test_tables_are_distinct_keys() -> None:
    w = Window(max_keys=2, max_wait_s=5)
    w.add(ev(1, 1, table="public.a"), TP0, 0, now=0)
    (batch,) = w.add(ev(1, 2, table="public.b"), TP0, 1, now=0)
    assert {e.table for e in batch.entries} == {"public.a", "public.b"}


def test_drop_partitions_forgets_only_their_pending_keys() -> None:
    w = Window(max_keys=100, max_wait_s=5)
    w.add(ev(1, 1), TP0, 0, now=0)
    w.add(ev(2, 1), TP1, 0, now=0)
    assert w.drop_partitions({TP1}) == 1
    (batch,) = w.flush()
    assert [e.key for e in batch.entries] == [[1]]


def test_chunks() -> None:
    w = Window(max_keys=1000, max_wait_s=5)
    for k in range(250):
        w.add(ev(k, 1), TP0, k, now=0)
    (batch,) = w.flush()
    assert [len(c) for c in chunks(batch.entries, 100)] == [100, 100, 50]
    assert list(chunks([], 100)) == []
    with pytest.raises(ValueError):
        list(chunks(batch.entries, 0))


@pytest.mark.parametrize(("max_keys", "max_wait"), [(0, 1.0), (1, 0.0)])
def test_bad_limits(max_keys: int, max_wait: float) -> None:
    with pytest.raises(ValueError):
        Window(max_keys, max_wait)


def test_size_batches_hold_one_kind_so_calls_stay_full() -> None:
    w = Window(max_keys=3, max_wait_s=5)
    w.add(ev(1, 1, "c"), TP0, 0, now=0)
    w.add(ev(1, 2, "d"), TP0, 1, now=0)  # key 1 becomes a delete
    w.add(ev(2, 3, "c"), TP0, 2, now=0)
    assert w.add(ev(3, 4, "c"), TP0, 3, now=0) == []  # 2 upserts + 1 delete: not full
    (batch,) = w.add(ev(4, 5, "c"), TP0, 4, now=0)
    assert {e.op for e in batch.entries} == {"upsert"} and len(batch) == 3
    assert w.flushable("delete") == 1 and w.flushable() == 1
    assert w.add(ev(5, 6, "d"), TP0, 5, now=0) == []
    (batch,) = w.add(ev(6, 7, "d"), TP0, 6, now=0)
    assert [(e.key[0], e.op) for e in batch.entries] == [
        (1, "delete"),
        (5, "delete"),
        (6, "delete"),
    ]
