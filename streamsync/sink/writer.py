"""Step 1 of a batch: the CRM outcome of every entry (``Done`` or ``Dead``), never a guess.

``CrmWriter.sync`` plans a window batch against the record map (``planner.plan_batch``) and
sends it as Upsert Records calls (≤100 records), deletes by Zoho id (≤100 ids) or exact-match
searches; ``CrmWriter.bulk`` sends a large coalesced batch as one Bulk Write job per table.

Failures, by kind (design.md §4.4):
- a record Zoho rejects -> ``Dead`` with Zoho's code and details;
- a retryable per-record code -> only those records are resent, with backoff, up to
  ``sink.max_record_attempts``;
- a whole-call failure (429, 5xx, timeout) -> backed off and retried until it passes (live),
  or raised after three tries (``drain_mode``: the next interval run resumes);
- a request-level rejection of a whole call -> the call is halved until the culprit is alone.
While the role stops, a retry loop raises ``Stopping`` instead of waiting: nothing of that
batch is committed, so the next owner resends it.
"""

from __future__ import annotations

import asyncio
import functools
import random
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamsync.errors import CrmAuthError, CrmError, MappingError
from streamsync.events import Position
from streamsync.ops import metrics
from streamsync.settings import Settings, TableSettings
from streamsync.sink.outcomes import (
    Dead,
    Done,
    Judged,
    bisect_refused,
    judge_bulk_rows,
    judge_deletes,
    judge_marks,
    judge_upserts,
)
from streamsync.sink.planner import Known, plan_batch, upsert_credits
from streamsync.sink.stats import SinkStats
from streamsync.sink.window import Entry
from streamsync.store import record_map
from streamsync.zoho.bulkfile import zip_rows
from streamsync.zoho.records import (
    RecordMapper,
    bulk_formats,
    csv_columns,
    csv_row,
    map_record,
    record_mapper,
)

__all__ = ["CrmWriter", "Stopping", "chunks_of"]

_BACKOFF_CAP_S = 30.0
_MAX_DELETE_IDS = 100  # Zoho's Delete Records limit
_DRAIN_CALL_TRIES = 3
_DELETE_MODES = frozenset({"delete", "ignore"})  # any other on_delete names a mark field


class Stopping(Exception):
    """A retry loop gave up because the role is stopping (the batch stays uncommitted)."""


@dataclass(frozen=True, slots=True)
class _Split:
    """A call Zoho rejected as a whole (not retryable): split it to find the culprit."""

    error: CrmError


class CrmWriter:
    """Sends entries to Zoho and judges every record's answer.

    Args:
        settings: the whole configuration (tables, sink and zoho sections).
        crm: a started ``ZohoClient`` (or anything with its methods).
        pool: the asyncpg pool of the state schema (record-map lookups).
        stats: the role's counters.
        stopping: set when the role stops; retry loops then raise ``Stopping``.
        work_dir: where Bulk Write zips are written (removed after each job).
    """

    drain_mode = False  # interval mode: whole-call failures raise after a few tries

    def __init__(
        self,
        settings: Settings,
        *,
        crm: Any,
        pool: Any,
        stats: SinkStats,
        stopping: asyncio.Event,
        work_dir: Path,
    ) -> None:
        self._cfg = settings.sink
        self._backoff_base_s = settings.zoho.backoff_base_s
        self._schema = settings.postgres.state_schema
        self._tables: Mapping[str, TableSettings] = {t.source: t for t in settings.tables}
        # map_record compiled once per table (same records, same MappingError)
        self._mappers: dict[str, RecordMapper] = {
            t.source: record_mapper(t) for t in settings.tables
        }
        self._crm = crm
        self._pool = pool
        self._stats = stats
        self._stopping = stopping
        self._work_dir = work_dir

    # ------------------------------------------------------------------ upserts, deletes ----
    async def sync(self, entries: Sequence[Entry]) -> Judged:
        """A window batch through Upsert Records, Delete Records and exact searches."""
        out = Judged()
        for name, group in _by_table(entries).items():
            table = self._tables[name]
            plan = plan_batch(group, await self._known(name, group), table.on_delete)
            for entry, why in plan.skipped:
                if why == "stale":
                    self._stats.skipped_stale += 1
                out.done.append(Done(entry, None, why))
            records: list[tuple[Entry, dict[str, Any]]] = []
            for entry in plan.upserts:
                self._add_record(table, entry, records, out)
            if records:
                out.extend(await self._upsert(table, records))
            marks = list(plan.marks)
            marks += await self._find_ids(table, plan.mark_searches, "mark", out)
            if marks:
                out.extend(await self._mark(table, marks))
            deletes = list(plan.deletes)
            deletes += await self._find_ids(table, plan.searches, "delete", out)
            if deletes:
                out.extend(await self._delete(table, deletes))
        return out

    def _add_record(
        self,
        table: TableSettings,
        entry: Entry,
        records: list[tuple[Entry, dict[str, Any]]],
        out: Judged,
    ) -> None:
        """Map one entry to its Zoho record; a value the mapping refuses is a dead letter.

        With a mark field (``on_delete`` = field name) every upsert clears the mark: a row
        inserted again under a marked key is live again.
        """
        try:
            record = self._mappers[table.source](entry.after or {}, entry.unchanged)
        except MappingError as exc:
            out.dead.append(Dead.of(entry, exc, 1))
            return
        if table.on_delete not in _DELETE_MODES:
            record[table.on_delete] = False
        records.append((entry, record))

    async def _mark(self, table: TableSettings, pairs: list[tuple[Entry, str]]) -> Judged:
        """Set the mark field by Zoho id through Update Records: an upsert by the external id
        would create a record Zoho no longer holds (and Zoho would refuse it)."""

        async def send(part: list[tuple[Entry, str]], attempt: int) -> Judged:
            marks = [{"id": zoho_id, table.on_delete: True} for _, zoho_id in part]
            results = await self._call(
                "update", len(part), functools.partial(self._crm.update, table.module, marks)
            )
            if isinstance(results, _Split):
                return await bisect_refused(part, results.error, attempt, send)
            return judge_marks(part, results, attempt, self._cfg.max_record_attempts)

        return await self._until_final(list(pairs), self._cfg.max_records, send)

    async def _known(self, table: str, entries: Sequence[Entry]) -> dict[str, Known]:
        rows = await record_map.fetch(
            self._pool, self._schema, table, [e.key_text for e in entries]
        )
        return {
            k: Known(r.zoho_id, Position(r.lsn, r.seq), r.status, r.attempts)  # type: ignore[arg-type]
            for k, r in rows.items()
        }

    async def _upsert(
        self, table: TableSettings, records: list[tuple[Entry, dict[str, Any]]]
    ) -> Judged:
        async def send(part: list[tuple[Entry, dict[str, Any]]], attempt: int) -> Judged:
            results = await self._call(
                "upsert",
                len(part),
                functools.partial(
                    self._crm.upsert,
                    table.module,
                    [r for _, r in part],
                    duplicate_check_fields=[table.external_id.field],
                ),
            )
            if isinstance(results, _Split):
                return await bisect_refused(part, results.error, attempt, send)
            entries = [e for e, _ in part]
            return judge_upserts(entries, results, attempt, self._cfg.max_record_attempts)

        return await self._until_final(records, self._cfg.max_records, send)

    async def _until_final(
        self,
        pending: list[tuple[Entry, Any]],
        per_call: int,
        send: Callable[[list[tuple[Entry, Any]], int], Awaitable[Judged]],
    ) -> Judged:
        """Send in calls of ``per_call``; resend only the records judged ``Retry``, backed
        off, until every one is ``Done`` or ``Dead`` (the judges dead-letter a record once it
        reaches ``sink.max_record_attempts``)."""
        out = Judged()
        attempt = 1
        while pending:
            judged = Judged()
            for part in chunks_of(pending, per_call):
                judged.extend(await send(part, attempt))
            out.done.extend(judged.done)
            out.dead.extend(judged.dead)
            retry = {id(r.entry) for r in judged.retry}
            pending = [p for p in pending if id(p[0]) in retry]
            if pending:
                attempt += 1
                await self._backoff(attempt)
        return out

    async def _delete(self, table: TableSettings, pairs: list[tuple[Entry, str]]) -> Judged:
        async def send(part: list[tuple[Entry, str]], attempt: int) -> Judged:
            results = await self._call(
                "delete",
                len(part),
                functools.partial(self._crm.delete, table.module, [z for _, z in part]),
            )
            if isinstance(results, _Split):
                return await bisect_refused(part, results.error, attempt, send)
            return judge_deletes(part, results, attempt, self._cfg.max_record_attempts)

        out = await self._until_final(list(pairs), _MAX_DELETE_IDS, send)
        # an entry with several Zoho ids (never expected) is done once, when all of them are
        seen: set[int] = set()
        uniq: list[Done] = []
        for d in out.done:
            if id(d.entry) not in seen:
                seen.add(id(d.entry))
                uniq.append(d)
        dead = {id(x.entry) for x in out.dead}
        out.done = [d for d in uniq if id(d.entry) not in dead]
        return out

    async def _find_ids(
        self, table: TableSettings, entries: Sequence[Entry], action: str, out: Judged
    ) -> list[tuple[Entry, str]]:
        """Zoho ids of ``entries`` by an exact search on the external id. A key Zoho does not
        hold is done (nothing to ``action``); a search Zoho refuses is that entry's failure."""
        found: list[tuple[Entry, str]] = []
        for entry in entries:
            value = _ext_value(table, entry)
            hits = await self._call(
                "search",
                0,
                functools.partial(
                    self._crm.search_exact, table.module, table.external_id.field, value
                ),
            )
            if isinstance(hits, _Split):
                out.dead.append(Dead.of(entry, hits.error, 1))
                continue
            ids = [str(h["id"]) for h in hits if h.get("id")]
            if not ids:
                out.done.append(Done(entry, None, action))
            found.extend((entry, zoho_id) for zoho_id in ids)
        return found

    async def _call(self, api: str, records: int, make: Callable[[], Any]) -> Any:
        """One CRM call; retryable whole-call failures back off and retry (live mode: until
        stopped; drain: raise). A non-retryable request rejection returns ``_Split``; 5xx,
        429 and timeouts are never a record's fault (design invariant 4): they only wait."""
        attempt = 0
        while True:
            try:
                # The client holds a Zoho slot (``zoho.concurrency``, shared by the process)
                # for the HTTP exchange only: building the body and judging the answer
                # happen outside it, so a slot never waits on this process's CPU.
                result = await make()
            except CrmAuthError:
                metrics.crm_call(api, "auth_error")
                raise
            except CrmError as exc:
                if not exc.retryable:
                    metrics.crm_call(api, "rejected")
                    return _Split(exc)
                metrics.crm_call(api, "retry")
                attempt += 1
                await self._retry_or_raise(exc, attempt, floor=getattr(exc, "retry_after", None))
                continue
            credits = upsert_credits(records) if records else 1
            metrics.crm_call(api, "ok", credits if api in ("upsert", "update", "delete") else 0)
            if api in ("upsert", "update"):
                self._stats.upsert_calls += 1
                self._stats.records_sent += records
            elif api == "delete":
                self._stats.delete_calls += 1
            return result

    async def _retry_or_raise(self, exc: CrmError, attempt: int, floor: float | None) -> None:
        """Back off before another try of a whole call, unless this run should give up."""
        if self.drain_mode and attempt >= _DRAIN_CALL_TRIES:
            raise exc
        if self._stopping.is_set() and not self.drain_mode:
            raise Stopping() from exc
        await self._backoff(attempt, floor=floor or 0.0)

    async def _backoff(self, attempt: int, floor: float = 0.0) -> None:
        """Full-jitter exponential backoff, cut short when the role stops."""
        ceiling = min(_BACKOFF_CAP_S, self._backoff_base_s * (2 ** min(attempt, 10)))
        delay = max(floor, ceiling * (0.5 + random.random() / 2))
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return

    # ------------------------------------------------------------------ bulk write ----
    async def bulk(self, entries: Sequence[Entry]) -> Judged:
        """A large coalesced batch through one Bulk Write job per table.

        Rows missing from the result, and updated rows with NULLs (the job runs with
        ``ignore_empty``, so a NULL would leave the old value), follow up as upserts.
        """
        out = Judged()
        for name, group in _by_table(entries).items():
            table = self._tables[name]
            known = await self._known(name, group)
            plan = plan_batch(group, known, table.on_delete)
            for entry, why in plan.skipped:
                out.done.append(Done(entry, None, why))
            rows: list[list[str]] = []
            sent: list[Entry] = []
            unmark: list[Entry] = []  # marked keys inserted again: an upsert clears the mark
            for entry in plan.upserts:
                state = known.get(entry.key_text)
                if table.on_delete not in _DELETE_MODES and state and state.status == "deleted":
                    unmark.append(entry)
                    continue
                try:
                    rows.append(csv_row(table, entry.after or {}))
                    sent.append(entry)
                except MappingError as exc:
                    out.dead.append(Dead.of(entry, exc, 1))
            again = unmark
            if sent:
                results = await self._bulk_file(table, rows)
                judged = judge_bulk_rows(sent, results, attempt=1)
                out.dead.extend(judged.dead)
                again += [r.entry for r in judged.retry]
                again += [
                    d.entry
                    for d in judged.done
                    if d.action == "update" and _has_nulls(table, d.entry)
                ]
                redo = {id(e) for e in again}
                out.done.extend(d for d in judged.done if id(d.entry) not in redo)
            if again:
                records: list[tuple[Entry, dict[str, Any]]] = []
                for entry in again:
                    self._add_record(table, entry, records, out)
                out.extend(await self._upsert(table, records))
        return out

    async def _bulk_file(self, table: TableSettings, rows: list[list[str]]) -> list[Any]:
        """Zip the rows, run the job, return the parsed result rows (the zip is removed)."""
        columns = csv_columns(table)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._work_dir) as tmp:
            path = Path(tmp) / "sink-bulk.zip"
            await asyncio.to_thread(zip_rows, rows, columns, path)
            rows.clear()  # the zip holds them now: the job's wait needs no second copy
            return await self._bulk_job(table, path, columns, bulk_formats(table), tmp)

    async def _bulk_job(
        self,
        table: TableSettings,
        path: Path,
        columns: list[str],
        formats: dict[str, str],
        tmp: str,
    ) -> list[Any]:
        attempt = 0
        while True:
            try:
                job_id = await self._crm.bulk_upsert(
                    table.module,
                    path,
                    find_by=table.external_id.field,
                    columns=columns,
                    formats=formats,
                )
                metrics.crm_call("bulk", "ok", 500)
                self._stats.bulk_jobs += 1
                interval = self._cfg.bulk_poll_interval_s
                job = await self._crm.wait_bulk_job(
                    job_id,
                    poll_interval_s=interval,
                    first_poll_after_s=interval,
                    max_interval_s=max(interval, 30.0),
                    timeout_s=3600,
                )
                rows: list[Any] = await self._crm.bulk_results(job, tmp)
                return rows
            except CrmAuthError:
                raise
            except CrmError as exc:
                metrics.crm_call("bulk", "retry" if exc.retryable else "rejected")
                attempt += 1
                await self._retry_or_raise(exc, attempt, floor=None)


def chunks_of(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _by_table(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    by_table: dict[str, list[Entry]] = {}
    for entry in entries:
        by_table.setdefault(entry.table, []).append(entry)
    return by_table


def _ext_value(table: TableSettings, entry: Entry) -> str:
    """The external id (Zoho's unique field value) of an entry, from its key."""
    value = entry.key[0] if len(entry.key) == 1 else entry.key_text
    record = map_record(table, {table.external_id.column: value})
    return str(record[table.external_id.field])


def _has_nulls(table: TableSettings, entry: Entry) -> bool:
    after = entry.after or {}
    return any(after.get(col, 0) is None for col in table.fields if col in after)
