"""Credit planner: paths per key, stale skips, prices, bulk vs upsert."""

from __future__ import annotations

import pytest

from streamsync.events import Position
from streamsync.sink.planner import (
    Known,
    bulk_credits,
    cheapest_credits,
    choose_path,
    drain_chunks,
    is_stale,
    plan_batch,
    split_even,
    upsert_credits,
)
from streamsync.sink.window import Window
from tests.unit.sink.sinkev import ev

TP = ("t", 0)


def _entries(*events):  # type: ignore[no-untyped-def]
    w = Window(max_keys=1000, max_wait_s=5)
    for i, e in enumerate(events):
        w.add(e, TP, i, now=0)
    (batch,) = w.flush()
    return batch.entries


def test_paths_per_key_with_on_delete_delete() -> None:
    entries = _entries(
        ev(1, 10, "u"), ev(2, 10, "d"), ev(3, 10, "d"), ev(4, 10, "d"), ev(5, 5, "u")
    )
    known = {
        "[2]": Known("z2", Position(5), "ok"),
        "[4]": Known(None, Position(4), "deleted"),
        "[5]": Known("z5", Position(5), "ok"),
    }
    plan = plan_batch(entries, known, "delete")
    assert [e.key for e in plan.upserts] == [[1]]
    assert [(e.key, zid) for e, zid in plan.deletes] == [([2], "z2")]
    assert [e.key for e in plan.searches] == [[3]]
    assert sorted((e.key[0], why) for e, why in plan.skipped) == [(4, "stale"), (5, "stale")]
    assert plan.marks == []
    assert plan.calls_needed


def test_on_delete_ignore_and_mark() -> None:
    entries = _entries(ev(1, 10, "d"))
    assert [why for _, why in plan_batch(entries, {}, "ignore").skipped] == ["ignored"]
    assert not plan_batch(entries, {}, "ignore").calls_needed
    # a key the record map does not know is searched for first: there may be nothing to mark
    unknown = plan_batch(entries, {}, "Deleted_In_Legacy")
    assert [e.key for e in unknown.mark_searches] == [[1]] and unknown.marks == []
    assert unknown.calls_needed
    known = {"[1]": Known("z1", Position(5), "ok")}
    marked = plan_batch(entries, known, "Deleted_In_Legacy")
    assert [(e.key, z) for e, z in marked.marks] == [([1], "z1")]
    assert marked.mark_searches == []
    # already marked: nothing to do
    gone = {"[1]": Known("z1", Position(5), "deleted")}
    assert [why for _, why in plan_batch(entries, gone, "Deleted_In_Legacy").skipped] == ["stale"]


@pytest.mark.parametrize(
    ("event_pos", "known", "stale"),
    [
        (Position(10), None, False),
        (Position(10), Known("z", None, "failed"), False),
        (Position(10), Known("z", Position(9), "ok"), False),
        (Position(10), Known("z", Position(10), "ok"), True),
        (Position(10), Known("z", Position(10), "deleted"), True),
        (Position(10), Known("z", Position(10), "failed"), False),  # dlq replay re-sends it
        (Position(10), Known("z", Position(11), "failed"), True),
        (Position(10, 1), Known("z", Position(10, 2), "ok"), True),
        (Position(10, 3), Known("z", Position(10, 2), "ok"), False),
    ],
)
def test_is_stale(event_pos: Position, known: Known | None, stale: bool) -> None:
    (entry,) = _entries(ev(1, event_pos.lsn, seq=event_pos.seq))
    assert is_stale(entry, known) is stale


@pytest.mark.parametrize(
    ("records", "credits"), [(0, 0), (1, 1), (10, 1), (11, 2), (100, 10), (101, 11), (250, 25)]
)
def test_upsert_credits(records: int, credits: int) -> None:
    assert upsert_credits(records) == credits


def test_bulk_credits_and_break_even() -> None:
    assert bulk_credits(0) == 0
    assert bulk_credits(1) == 500
    assert bulk_credits(25_000) == 500
    assert bulk_credits(25_001) == 1000
    assert upsert_credits(5_000) == bulk_credits(5_000)  # the break-even
    assert upsert_credits(20_000) == 4 * bulk_credits(20_000)


@pytest.mark.parametrize(
    ("backlog", "path"), [(0, "upsert"), (5_000, "upsert"), (5_001, "bulk"), (10**6, "bulk")]
)
def test_choose_path(backlog: int, path: str) -> None:
    assert choose_path(backlog, 5_000) == path


@pytest.mark.parametrize(
    ("records", "plan"),
    [
        (0, []),
        (300, [("upsert", 300)]),
        (5_000, [("upsert", 5_000)]),
        (12_000, [("bulk", 12_000)]),
        (30_000, [("bulk", 25_000), ("upsert", 5_000)]),
        (60_000, [("bulk", 25_000), ("bulk", 25_000), ("bulk", 10_000)]),
    ],
)
def test_drain_chunks(records: int, plan: list[tuple[str, int]]) -> None:
    assert drain_chunks(records, 5_000) == plan
    assert sum(n for _, n in plan) == records


def test_cheapest_credits_never_exceeds_either_pure_path() -> None:
    for n in (1, 99, 4_999, 5_001, 12_000, 30_000, 100_000):
        best = cheapest_credits(n, 5_000)
        assert best <= upsert_credits(n)
        assert best <= bulk_credits(n) or n <= 5_000


def test_split_even() -> None:
    entries = _entries(*(ev(k, 1) for k in range(201)))
    parts = split_even(entries, 100)
    assert [len(p) for p in parts] == [67, 67, 67]
    assert split_even([], 100) == []


def test_resync_delete_always_searches_by_external_id() -> None:
    """A Bulk Write job may re-create a record the sink already deleted (new Zoho id): the
    backfill's resync delete must look the key up, not trust the record map."""
    import dataclasses

    resync_delete = dataclasses.replace(ev(4, 10, "d"), source="resync")
    known = {"[4]": Known(None, Position(4), "deleted")}
    plan = plan_batch(_entries(resync_delete), known, "delete")
    assert [e.key for e in plan.searches] == [[4]]
    assert plan.skipped == []
    stream_delete = ev(4, 10, "d")
    plan = plan_batch(_entries(stream_delete), known, "delete")
    assert [why for _, why in plan.skipped] == ["stale"]


def test_a_delete_of_a_key_unknown_to_the_record_map_is_searched_even_if_born_here() -> None:
    # a sink killed after the Zoho call but before the record-map write left it in Zoho
    born, updated = _entries(ev(1, 10, "c"), ev(1, 11, "d"), ev(2, 10, "u"), ev(2, 11, "d"))
    plan = plan_batch([born, updated], {}, "delete")
    assert plan.skipped == []
    assert [e.key for e in plan.searches] == [[1], [2]]
    plan = plan_batch([born], {"[1]": Known("z1", Position(5), "ok")}, "delete")
    assert [(e.key, z) for e, z in plan.deletes] == [([1], "z1")]
