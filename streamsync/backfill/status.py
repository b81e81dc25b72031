"""`backfill status`: per backfill, chunks done of total, rows, skipped, credits, rate, ETA.

``collect()`` reads the checkpoint store; ``lines()`` renders plain text (pure); ``render()``
draws rich progress bars when stdout is a terminal and plain lines otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

from streamsync.backfill.chunks import Progress, progress
from streamsync.store import checkpoints as cp
from streamsync.store.checkpoints import BackfillRecord

__all__ = ["BackfillView", "collect", "lines", "render"]


@dataclass(frozen=True, slots=True)
class BackfillView:
    record: BackfillRecord
    progress: Progress

    def as_json(self) -> dict[str, Any]:
        r, p = self.record, self.progress
        return {
            "backfill_id": r.backfill_id,
            "table": r.table_name,
            "status": r.status,
            "round": r.round,
            "chunks_done": p.chunks_done,
            "chunks_total": p.chunks_total,
            "rows": r.rows_done,
            "rows_estimate": r.rows_estimate,
            "added": r.added,
            "updated": r.updated,
            "skipped": r.skipped,
            "dead_lettered": r.dead_lettered,
            "resynced": r.resynced,
            "jobs": r.jobs,
            "credits": r.credits,
            "rate_rows_per_s": round(p.rate, 1),
            "eta_s": None if p.eta_s is None else round(p.eta_s, 1),
            "waiting_for": r.waiting_for,
            "error": r.error,
        }


def view(record: BackfillRecord) -> BackfillView:
    finished = record.status != "running"
    end = record.finished_at or record.updated_at
    prog = progress(
        chunks_done=record.chunks_done,
        chunks_planned=record.chunks_planned,
        rows_done=record.rows_done,
        rows_estimate=record.rows_estimate,
        chunk_rows=record.chunk_rows,
        started_at=record.created_at.timestamp(),
        now=end.timestamp(),
        finished=finished,
    )
    return BackfillView(record, prog)


async def collect(conn: Any, schema: str, backfill_id: str | None = None) -> list[BackfillView]:
    records = await cp.list_backfills(conn, schema)
    if backfill_id is not None:
        records = [r for r in records if r.backfill_id == backfill_id]
    return [view(r) for r in records]


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def lines(views: list[BackfillView]) -> list[str]:
    """One plain line per backfill. Pure."""
    if not views:
        return ["no backfills"]
    out = []
    for v in views:
        r, p = v.record, v.progress
        text = (
            f"{r.backfill_id} {r.table_name} {r.status}: chunks {p.chunks_done}/{p.chunks_total}"
            f" rows {r.rows_done}/{r.rows_estimate} (added {r.added}, updated {r.updated})"
            f" skipped {r.skipped} dead-lettered {r.dead_lettered} resynced {r.resynced}"
            f" jobs {r.jobs} credits {r.credits} rate {p.rate:.0f} rows/s eta {_eta(p.eta_s)}"
        )
        if r.round > 1:
            text += f" round {r.round}"
        if r.waiting_for:
            text += f" waiting for {r.waiting_for}"
        if r.error:
            text += f" error: {r.error}"
        out.append(text)
    return out


def render(views: list[BackfillView], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if not stream.isatty() or not views:
        for line in lines(views):
            print(line, file=stream)
        return
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn
    from rich.progress import Progress as Bars

    console = Console(file=stream)
    with Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        auto_refresh=False,
    ) as bars:
        for v in views:
            r, p = v.record, v.progress
            detail = (
                f"{p.chunks_done}/{p.chunks_total} chunks, {r.rows_done} rows, "
                f"{r.skipped} skipped, {r.credits} credits, {p.rate:.0f} rows/s, "
                f"ETA {_eta(p.eta_s)}" + (f", waiting for {r.waiting_for}" if r.waiting_for else "")
            )
            bars.add_task(
                f"{r.backfill_id[:8]} {r.table_name} {r.status}",
                total=max(p.chunks_total, 1),
                completed=p.chunks_done if p.chunks_total else 1,
                detail=detail,
            )
        bars.refresh()
