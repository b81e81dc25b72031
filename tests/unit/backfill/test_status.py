"""`backfill status` plain rendering: pure lines from checkpoint records."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

from streamsync.backfill.status import lines, render, view
from streamsync.store.checkpoints import BackfillRecord

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def record(**overrides: Any) -> BackfillRecord:
    values: dict[str, Any] = {
        "backfill_id": "0b8f6a2e-0000-4000-8000-000000000001",
        "table_name": "public.orders",
        "chunk_rows": 25_000,
        "status": "running",
        "cancel_requested": False,
        "rows_estimate": 100_000,
        "cursor_last": 50_000,
        "cursor_end": 100_000,
        "round": 1,
        "chunks_planned": 2,
        "chunks_done": 2,
        "rows_read": 50_000,
        "rows_done": 50_000,
        "added": 49_990,
        "updated": 5,
        "skipped": 5,
        "dead_lettered": 3,
        "resynced": 12,
        "jobs": 2,
        "credits": 1_000,
        "waiting_for": None,
        "error": None,
        "created_at": T0,
        "updated_at": T0 + dt.timedelta(seconds=100),
        "finished_at": None,
    }
    values.update(overrides)
    return BackfillRecord(**values)


def test_running_backfill_line_has_progress_counters_rate_and_eta() -> None:
    [line] = lines([view(record())])
    assert line == (
        "0b8f6a2e-0000-4000-8000-000000000001 public.orders running: chunks 2/4"
        " rows 50000/100000 (added 49990, updated 5) skipped 5 dead-lettered 3 resynced 12"
        " jobs 2 credits 1000 rate 500 rows/s eta 1m40s"
    )


def test_waiting_round_and_error_are_appended() -> None:
    [waiting] = lines([view(record(waiting_for="credit budget", round=2))])
    assert waiting.endswith(" round 2 waiting for credit budget")
    [failed] = lines([view(record(status="failed", error="boom", finished_at=T0))])
    assert " failed: " in failed and failed.endswith(" error: boom")


def test_finished_backfill_has_no_eta_and_counts_chunks_done_as_total() -> None:
    done = record(
        status="done",
        chunks_done=4,
        chunks_planned=4,
        rows_done=100_000,
        finished_at=T0 + dt.timedelta(seconds=200),
    )
    cancelled = record(status="cancelled", chunks_done=1, finished_at=T0 + dt.timedelta(seconds=10))
    text = lines([view(done), view(cancelled)])
    assert "done: chunks 4/4" in text[0] and text[0].endswith("rate 500 rows/s eta -")
    assert "cancelled: chunks 1/1" in text[1] and text[1].endswith("eta -")


def test_long_eta_in_hours_and_no_backfills() -> None:
    slow = record(
        rows_done=1_000, rows_estimate=10_000_000, updated_at=T0 + dt.timedelta(seconds=10)
    )
    assert lines([view(slow)])[0].endswith("rate 100 rows/s eta 27h46m")
    assert lines([]) == ["no backfills"]


def test_render_on_a_pipe_prints_the_plain_lines() -> None:
    out = io.StringIO()
    views = [view(record()), view(record(backfill_id="other", status="done", finished_at=T0))]
    render(views, out)
    assert out.getvalue().splitlines() == lines(views)
    empty = io.StringIO()
    render([], empty)
    assert empty.getvalue() == "no backfills\n"
