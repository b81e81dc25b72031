"""The pure backfill core: keyset cursor, digests, resync plan, result tally, progress."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streamsync.backfill.chunks import (
    ChunkDigest,
    KeysetCursor,
    ResyncAction,
    chunk_batches,
    is_retryable_skip,
    progress,
    resync_actions,
    row_hash,
    tally_results,
)
from streamsync.errors import InvariantError


@dataclass
class Res:
    row: int
    status: str
    errors: dict[str, str] = field(default_factory=dict)


def digest_of(rows: dict[int, dict[str, object]]) -> ChunkDigest:
    d = ChunkDigest()
    for key, after in rows.items():
        d.add(key, after)
    return d


def test_cursor_walks_forward_and_finishes() -> None:
    cur = KeysetCursor(last=None, end=10)
    assert not cur.exhausted
    cur.advance(4)
    assert cur.last == 4 and not cur.exhausted
    cur.advance(10)
    assert cur.exhausted


def test_cursor_refuses_to_stay_on_the_same_key() -> None:
    cur = KeysetCursor(last=4, end=10)
    with pytest.raises(InvariantError):
        cur.advance(4)


def test_cursor_empty_table_is_exhausted_and_finish_jumps_to_end() -> None:
    assert KeysetCursor(last=None, end=None).exhausted
    cur = KeysetCursor(last=3, end=9)
    cur.finish()
    assert cur.exhausted


def test_row_hash_depends_on_every_value() -> None:
    a = {"id": 1, "amount": "1.00"}
    assert row_hash(a) == row_hash(dict(a))
    assert row_hash(a) != row_hash({"id": 1, "amount": "1.01"})
    assert len(row_hash(a)) == 8


def test_digest_round_trips_through_storage() -> None:
    d = digest_of({1: {"a": 1}, 2: {"a": 2}, 3: {"a": None}})
    keys, hashes = d.encode()
    back = ChunkDigest.decode(keys, hashes)
    assert back.keys == [1, 2, 3]
    assert back.as_map() == d.as_map()
    assert ChunkDigest.decode(None, None).keys == []


def test_digest_decode_rejects_mismatched_hashes() -> None:
    keys, hashes = digest_of({1: {"a": 1}}).encode()
    with pytest.raises(InvariantError):
        ChunkDigest.decode(keys, hashes + b"x")


def test_resync_sends_changed_rows_and_deletes_vanished_keys_only() -> None:
    d = digest_of({1: {"v": "a"}, 2: {"v": "b"}, 3: {"v": "c"}})
    current = [(1, {"v": "a"}), (2, {"v": "B"}), (9, {"v": "new"})]
    assert resync_actions(d, current) == [
        ResyncAction("r", 2, {"v": "B"}),
        ResyncAction("d", 3, None),
    ]


def test_resync_of_an_unchanged_chunk_is_empty() -> None:
    rows = {k: {"v": k} for k in range(100)}
    assert resync_actions(digest_of(rows), list(rows.items())) == []


def test_tally_counts_added_updated_and_classifies_skips() -> None:
    d = digest_of({10: {}, 11: {"x": 1}, 12: {"x": 2}, 13: {"x": 3}})
    tally = tally_results(
        d,
        [
            Res(0, "Added"),
            Res(1, "UPDATED"),
            Res(2, "skipped", {"Amount": "INVALID_DATA"}),
            Res(9, "ADDED"),  # outside the file: ignored
            Res(0, "ADDED"),  # duplicate report: ignored
        ],
    )
    assert (tally.added, tally.updated) == (1, 1)
    assert [(o.key, o.code, o.retryable) for o in tally.skipped] == [
        (12, "INVALID_DATA", False),
        (13, "NOT_PROCESSED", True),
    ]
    assert "Amount" in tally.skipped[0].message


def test_retryable_skip_needs_every_code_retryable() -> None:
    assert is_retryable_skip({"a": "LIMIT_EXCEEDED"})
    assert not is_retryable_skip({"a": "LIMIT_EXCEEDED", "b": "INVALID_DATA"})
    assert not is_retryable_skip({})


def test_chunk_batches_sorts_and_cuts() -> None:
    assert list(chunk_batches([5, 1, 4, 2, 3], 2)) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        list(chunk_batches([1], 0))


def test_progress_rate_eta_and_total() -> None:
    p = progress(
        chunks_done=2,
        chunks_planned=3,
        rows_done=50_000,
        rows_estimate=200_000,
        chunk_rows=25_000,
        started_at=100.0,
        now=110.0,
        finished=False,
    )
    assert p.chunks_total == 8
    assert p.rate == pytest.approx(5_000)
    assert p.eta_s == pytest.approx(30.0)
    assert p.fraction == pytest.approx(0.25)


def test_progress_when_finished_and_when_nothing_done() -> None:
    done = progress(
        chunks_done=3,
        chunks_planned=3,
        rows_done=60_000,
        rows_estimate=70_000,
        chunk_rows=25_000,
        started_at=0.0,
        now=10.0,
        finished=True,
    )
    assert (done.chunks_total, done.fraction, done.eta_s) == (3, 1.0, None)
    idle = progress(
        chunks_done=0,
        chunks_planned=0,
        rows_done=0,
        rows_estimate=10,
        chunk_rows=25_000,
        started_at=0.0,
        now=0.0,
        finished=False,
    )
    assert (idle.rate, idle.eta_s, idle.chunks_total) == (0.0, None, 1)
