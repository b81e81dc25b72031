"""`streamsync status`: gather the state of every part into sections, render them.

Sections (each ``ok``, ``absent`` or ``error``, so one unreachable service never hides the
rest and never raises):

- ``slot``: the replication slot's lag in bytes (current WAL position - confirmed flush),
  whether a capture is attached, its confirmed flush and restart LSNs, its WAL status;
- ``consumer_lag``: per partition of each change topic, end offset - committed offset of the
  sink's consumer group (nothing committed yet: lag = end - beginning);
- ``dlq``: messages on ``<prefix>.dlq`` (end - beginning offsets, summed over partitions);
- ``backfills``: the checkpoint store's backfills (chunks done/total, rows, skipped, credits);
- ``record_map``: keys per status (ok / failed / deleted);
- ``credits``: credits every process spent in the last 24 hours (the shared journal,
  ``store/credits.py``) against ``zoho.daily_credit_budget``, and the credits of each backfill.

``gather()`` does the I/O; ``render()`` and ``StatusReport.to_json()`` are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from streamsync.kafka.topics import change_topic, dlq_topic
from streamsync.settings import Settings

__all__ = ["Section", "StatusReport", "gather", "render"]

State = Literal["ok", "absent", "error"]

SECTION_TIMEOUT_S = 20.0
CREDITS_NOTE = "last 24 h, every streamsync process, from the shared credit journal"


@dataclass(slots=True)
class Section:
    """One part of the status. ``error`` is a one-line reason when ``state == "error"``."""

    name: str
    state: State
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, **self.data}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class StatusReport:
    sections: list[Section]

    @property
    def ok(self) -> bool:
        """False when any section could not be read (the CLI exits 1)."""
        return all(s.state != "error" for s in self.sections)

    def section(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **{s.name: s.to_json() for s in self.sections}}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError):
        text = text or f"no answer within {SECTION_TIMEOUT_S:.0f}s"
    name = type(exc).__name__
    if not text or text.startswith(name):
        return text or name
    return f"{name}: {text}"


# ---------------------------------------------------------------------------- postgres ----
async def _slot(conn: Any, slot: str) -> Section:
    row = await conn.fetchrow(
        """SELECT active, confirmed_flush_lsn::text AS confirmed_flush_lsn,
                  restart_lsn::text AS restart_lsn, wal_status,
                  pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag
           FROM pg_replication_slots WHERE slot_name = $1""",
        slot,
    )
    if row is None:
        return Section("slot", "absent", {"slot": slot})
    return Section(
        "slot",
        "ok",
        {
            "slot": slot,
            "active": bool(row["active"]),
            "lag_bytes": None if row["lag"] is None else int(row["lag"]),
            "confirmed_flush_lsn": row["confirmed_flush_lsn"],
            "restart_lsn": row["restart_lsn"],
            "wal_status": row["wal_status"],
        },
    )


async def _daily_credits(conn: Any, schema: str) -> int | str:
    from streamsync.store.credits import credits_24h

    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".credit_log') is None:
        return "n/a"
    return await credits_24h(conn, schema)


async def _backfills(conn: Any, schema: str) -> tuple[Section, Section]:
    from streamsync.backfill import status as backfill_status

    views = await backfill_status.collect(conn, schema)
    keep = (
        "backfill_id",
        "table",
        "status",
        "chunks_done",
        "chunks_total",
        "rows",
        "skipped",
        "dead_lettered",
        "credits",
        "error",
    )
    items = [{k: v.as_json()[k] for k in keep} for v in views]
    backfills = Section("backfills", "ok", {"backfills": items})
    credits = Section(
        "credits",
        "ok",
        {
            "backfills_total": sum(int(i["credits"] or 0) for i in items),
            "per_backfill": {str(i["backfill_id"]): int(i["credits"] or 0) for i in items},
            "daily_used": await _daily_credits(conn, schema),
            "note": CREDITS_NOTE,
        },
    )
    return backfills, credits


async def _record_map(conn: Any, schema: str) -> Section:
    from streamsync.store import record_map

    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".record_map') is None:
        return Section("record_map", "absent", {"schema": schema})
    counts = await record_map.counts(conn, schema)
    by_status = {s: counts.get(s, 0) for s in ("ok", "failed", "deleted")}
    return Section("record_map", "ok", {"counts": by_status, "total": sum(counts.values())})


async def _postgres_sections(settings: Settings) -> list[Section]:
    import asyncpg

    pg = settings.postgres
    names = ("slot", "backfills", "record_map", "credits")
    try:
        async with asyncio.timeout(SECTION_TIMEOUT_S):
            conn = await asyncpg.connect(pg.dsn, timeout=10)
            try:
                slot = await _slot(conn, pg.slot)
                backfills, credits = await _backfills(conn, pg.state_schema)
                credits.data["budget"] = settings.zoho.daily_credit_budget
                rmap = await _record_map(conn, pg.state_schema)
            finally:
                await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = f"postgres: {_reason(exc)}"
        return [Section(n, "error", error=reason) for n in names]
    return [slot, backfills, rmap, credits]


# ------------------------------------------------------------------------------- kafka ----
async def _offsets(
    settings: Settings, topics: list[str]
) -> tuple[dict[str, dict[int, tuple[int, int]]], dict[tuple[str, int], int]]:
    """(topic → partition → (beginning, end)) for existing topics, and the sink group's
    committed offsets ((topic, partition) → offset)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    opts = settings.kafka.client_options()
    consumer = AIOKafkaConsumer(**opts, enable_auto_commit=False, request_timeout_ms=15_000)
    admin = AIOKafkaAdminClient(**opts, request_timeout_ms=15_000)
    try:
        await consumer.start()
        await consumer._client.force_metadata_update()
        tps: list[TopicPartition] = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            tps.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
        begins = await consumer.beginning_offsets(tps) if tps else {}
        ends = await consumer.end_offsets(tps) if tps else {}
        result: dict[str, dict[int, tuple[int, int]]] = {}
        for tp in tps:
            result.setdefault(tp.topic, {})[tp.partition] = (begins[tp], ends[tp])
        await admin.start()
        committed_raw = await admin.list_consumer_group_offsets(settings.sink.group_id)
        committed = {
            (tp.topic, tp.partition): int(meta.offset)
            for tp, meta in committed_raw.items()
            if meta.offset >= 0
        }
        return result, committed
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()


def _lag_section(
    group: str,
    change_topics: list[str],
    offsets: dict[str, dict[int, tuple[int, int]]],
    committed: dict[tuple[str, int], int],
) -> Section:
    partitions: list[dict[str, Any]] = []
    absent: list[str] = []
    for topic in change_topics:
        parts = offsets.get(topic)
        if parts is None:
            absent.append(topic)
            continue
        for p, (begin, end) in sorted(parts.items()):
            done = committed.get((topic, p))
            lag = end - (done if done is not None else begin)
            partitions.append(
                {"topic": topic, "partition": p, "end": end, "committed": done, "lag": lag}
            )
    state: State = "absent" if absent and not partitions else "ok"
    data: dict[str, Any] = {
        "group": group,
        "total": sum(p["lag"] for p in partitions),
        "partitions": partitions,
    }
    if absent:
        data["topics_absent"] = absent
    return Section("consumer_lag", state, data)


def _dlq_section(topic: str, offsets: dict[str, dict[int, tuple[int, int]]]) -> Section:
    parts = offsets.get(topic)
    if parts is None:
        return Section("dlq", "absent", {"topic": topic})
    messages = sum(end - begin for begin, end in parts.values())
    return Section("dlq", "ok", {"topic": topic, "messages": messages, "partitions": len(parts)})


async def _kafka_sections(settings: Settings) -> list[Section]:
    prefix = settings.kafka.topic_prefix
    changes = [change_topic(prefix, t.source) for t in settings.tables]
    dlq = dlq_topic(prefix)
    try:
        async with asyncio.timeout(SECTION_TIMEOUT_S):
            offsets, committed = await _offsets(settings, [*changes, dlq])
    except Exception as exc:  # aiokafka raises many unrelated types: report, never crash
        reason = f"kafka: {_reason(exc)}"
        return [
            Section("consumer_lag", "error", {"group": settings.sink.group_id}, reason),
            Section("dlq", "error", {"topic": dlq}, reason),
        ]
    return [
        _lag_section(settings.sink.group_id, changes, offsets, committed),
        _dlq_section(dlq, offsets),
    ]


async def gather(settings: Settings) -> StatusReport:
    """Read every section (Postgres and Kafka in parallel). Never raises for an outage."""
    pg, kafka = await asyncio.gather(_postgres_sections(settings), _kafka_sections(settings))
    by_name = {s.name: s for s in [*pg, *kafka]}
    order = ("slot", "consumer_lag", "dlq", "backfills", "record_map", "credits")
    return StatusReport([by_name[n] for n in order])


# ----------------------------------------------------------------------------- render ----
def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _error_line(console: Console, section: Section) -> None:
    console.print(f"[bold red]{section.name}[/]: error: {section.error}", highlight=False)


def _absent_line(console: Console, section: Section, what: str) -> None:
    console.print(f"[bold]{section.name}[/]: {what} absent", highlight=False)


def _render_slot(console: Console, s: Section) -> None:
    if s.state == "absent":
        _absent_line(console, s, f"slot {s.data['slot']!r}")
        return
    t = Table(title="replication slot", title_justify="left")
    for col in ("slot", "active", "lag", "confirmed flush", "restart", "wal status"):
        t.add_column(col)
    d = s.data
    t.add_row(
        d["slot"],
        "yes" if d["active"] else "no",
        _fmt_bytes(d["lag_bytes"]),
        str(d["confirmed_flush_lsn"] or "-"),
        str(d["restart_lsn"] or "-"),
        str(d["wal_status"] or "-"),
    )
    console.print(t)


def _render_lag(console: Console, s: Section) -> None:
    d = s.data
    for topic in d.get("topics_absent", []):
        console.print(f"[bold]consumer_lag[/]: topic {topic} absent", highlight=False)
    if not d["partitions"]:
        return
    t = Table(title=f"consumer lag (group {d['group']}, total {d['total']})", title_justify="left")
    for col in ("topic", "partition", "end", "committed", "lag"):
        t.add_column(col, justify="left" if col == "topic" else "right")
    for p in d["partitions"]:
        committed = "-" if p["committed"] is None else str(p["committed"])
        t.add_row(p["topic"], str(p["partition"]), str(p["end"]), committed, str(p["lag"]))
    console.print(t)


def _render_dlq(console: Console, s: Section) -> None:
    if s.state == "absent":
        _absent_line(console, s, f"topic {s.data['topic']}")
        return
    console.print(
        f"[bold]dlq[/]: {s.data['messages']} messages on {s.data['topic']}", highlight=False
    )


def _render_backfills(console: Console, s: Section) -> None:
    items = s.data["backfills"]
    if not items:
        console.print("[bold]backfills[/]: none", highlight=False)
        return
    t = Table(title="backfills", title_justify="left")
    for col in ("id", "table", "state", "chunks", "rows", "skipped", "credits"):
        t.add_column(col)
    for i in items:
        state = i["status"] + (f" ({i['error']})" if i.get("error") else "")
        t.add_row(
            str(i["backfill_id"]),
            str(i["table"]),
            state,
            f"{i['chunks_done']}/{i['chunks_total']}",
            str(i["rows"]),
            str(i["skipped"]),
            str(i["credits"]),
        )
    console.print(t)


def _render_record_map(console: Console, s: Section) -> None:
    if s.state == "absent":
        _absent_line(console, s, f"record map in schema {s.data['schema']!r}")
        return
    t = Table(title="record map", title_justify="left")
    for col in ("ok", "failed", "deleted", "total"):
        t.add_column(col, justify="right")
    c = s.data["counts"]
    t.add_row(str(c["ok"]), str(c["failed"]), str(c["deleted"]), str(s.data["total"]))
    console.print(t)


def _render_credits(console: Console, s: Section) -> None:
    d = s.data
    console.print(
        f"[bold]credits[/]: daily used {d['daily_used']} of {d.get('budget', '?')} "
        f"({d['note']}); backfills {d['backfills_total']}",
        highlight=False,
    )


_RENDERERS = {
    "slot": _render_slot,
    "consumer_lag": _render_lag,
    "dlq": _render_dlq,
    "backfills": _render_backfills,
    "record_map": _render_record_map,
    "credits": _render_credits,
}


def render(report: StatusReport, console: Console) -> None:
    """Rich tables, one per section; an error line for a section that could not be read."""
    for section in report.sections:
        if section.state == "error":
            _error_line(console, section)
        else:
            _RENDERERS[section.name](console, section)
