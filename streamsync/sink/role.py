"""``Sink``: change topics -> window -> credit planner -> Zoho CRM, with safe offset commits.

Lifecycle (style items 13, 14): ``run()`` returns only on ``stop()`` or failure; ``stop()``
only sets an event. ``drain()`` is the interval mode (``streamsync sink --drain``): read up to
the end offsets seen at start, sync, commit, return a report; ``DrainIncomplete`` otherwise.

One turn of the consume loop: poll (at most until the window's next deadline), track every
offset, decode (undecodable -> DLQ), add to the window, dispatch ready batches as tasks (at
most ``zoho.concurrency`` CRM calls at once, a key never in two), commit what is final.

A batch becomes final in numbered steps (style item 11), and a failing step stops the rest:
  1. CRM outcomes final (Done / Dead; retryable failures backed off and resent),
  2. dead letters produced and acked,
  3. the record map updated (and the optional sync flag written back),
  4. the batch's offsets marked done; ``_commit`` then commits per partition up to the lowest
     offset not yet done.
The same commit runs on revoke (after flushing the window) and on shutdown (aiokafka's
``stop()`` does not commit).

Credit planner: when the assigned partitions' backlog exceeds ``sink.bulk_threshold``, the
window grows to ``sink.max_bulk_records`` keys; once full or caught up, the partitions are
paused, the coalesced records go out as one Bulk Write job (deletes by id), its result is
handled, offsets are committed, and the partitions resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from streamsync.dlq import publish_dead_letter
from streamsync.errors import (
    ConfigError,
    CrmAuthError,
    CrmError,
    DecodeError,
    MappingError,
    StreamsyncError,
)
from streamsync.events import Position, decode_change
from streamsync.kafka.topics import change_topic
from streamsync.ops import metrics
from streamsync.ops.health import HEALTH
from streamsync.settings import Settings, TableSettings
from streamsync.sink.consume import REVOKE_BUDGET_S, Listener, create_consumer
from streamsync.sink.offsets import Offsets
from streamsync.sink.outcomes import (
    Dead,
    Done,
    Judged,
    judge_bulk_rows,
    judge_deletes,
    judge_upserts,
)
from streamsync.sink.planner import Known, choose_path, drain_chunks, plan_batch, upsert_credits
from streamsync.sink.window import Batch, Entry, Window, chunks
from streamsync.store import record_map
from streamsync.store.credits import CreditJournal, process_id
from streamsync.zoho.credits import CreditLedger
from streamsync.zoho.records import RecordMapper, map_record, record_mapper

__all__ = ["DrainIncomplete", "DrainReport", "Sink"]

log = logging.getLogger("streamsync.sink")

WRITEBACK_MESSAGE_PREFIX = "streamsync.writeback"
_MAX_POLL_S = 0.25  # the loop turns at least this often (stop, health, bulk checks)
# Events per poll: decoding and windowing them runs without a pause, so a smaller poll keeps
# the loop free to read the CRM answers of the calls in flight (their latency is throughput).
_POLL_RECORDS = 100
_BACKOFF_CAP_S = 30.0


class DrainIncomplete(StreamsyncError):
    """``drain()`` could not finish: something is left for the next run (exit non-zero)."""

    default_code = "DRAIN_INCOMPLETE"
    retryable = True


@dataclass(slots=True)
class SinkStats:
    events: int = 0
    records_sent: int = 0
    upsert_calls: int = 0
    delete_calls: int = 0
    bulk_jobs: int = 0
    dead_letters: int = 0
    skipped_stale: int = 0
    commits: int = 0
    revokes: int = 0
    flush_reasons: dict[str, int] = field(default_factory=dict)
    # commit-to-CRM latency of synced records (ms), the most recent ones (benchmarks, demo)
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(slots=True)
class DrainReport:
    events: int = 0
    records: int = 0
    bulk_jobs: int = 0
    upsert_calls: int = 0
    dead_letters: int = 0
    committed: dict[str, int] = field(default_factory=dict)


class _Stopping(Exception):
    """Internal: a retry loop gave up because the role is stopping."""


class Sink:
    """The sink role. See the module docstring.

    Args:
        settings: the whole configuration (kafka, zoho, sink, postgres state schema, tables).
        crm: a ZohoClient (default: one built from ``settings.zoho``; started and closed here).
        producer: an unstarted aiokafka producer for the DLQ (default ``create_producer``).
        consumer: an unstarted aiokafka consumer (default ``consume.create_consumer``).
        pool: an asyncpg pool for the record map (default: created from ``postgres.dsn``).
        clock: monotonic clock for the window.
        until_idle: ``run()`` returns once nothing is pending and the partitions are caught up
            (tests and tools).
    """

    name = "sink"

    def __init__(
        self,
        settings: Settings,
        *,
        crm: Any | None = None,
        producer: Any | None = None,
        consumer: Any | None = None,
        pool: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        until_idle: bool = False,
    ) -> None:
        self._settings = settings
        self._cfg = settings.sink
        self._tables: dict[str, TableSettings] = {t.source: t for t in settings.tables}
        # map_record compiled once per table (same records, same MappingError)
        self._pk_types: dict[str, str] = {}
        self._mappers: dict[str, RecordMapper] = {
            t.source: record_mapper(t) for t in settings.tables
        }
        self._topics = [change_topic(settings.kafka.topic_prefix, t) for t in self._tables]
        self._prefix = settings.kafka.topic_prefix
        self._schema = settings.postgres.state_schema
        self._crm: Any = crm
        self._own_crm = crm is None
        self._producer: Any = producer
        self._consumer: Any = consumer
        self._pool: Any = pool
        self._own_pool = pool is None
        self._clock = clock
        self._until_idle = until_idle
        self._stop = asyncio.Event()
        self._window = Window(self._cfg.max_records, self._cfg.max_wait_s)
        self._offsets = Offsets()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._assigned: set[Any] = set()
        self._bulk_mode = False
        self._bulk_task: asyncio.Task[None] | None = None
        self._large: list[Batch] = []
        self._last_commit = 0.0
        self._work_dir = Path(settings.backfill.work_dir) / "sink"
        self._drain_mode = False
        self._failure: BaseException | None = None
        self.stats = SinkStats()

    # ------------------------------------------------------------------ lifecycle ----
    def stop(self) -> None:
        """Stop taking new events, drain in-flight work within the shutdown budget, commit."""
        self._stop.set()

    async def run(self) -> None:
        """Consume and sync until ``stop()`` (or idle with ``until_idle``).

        Raises:
            CrmAuthError: Zoho refused the credentials (not retried).
            StreamsyncError / aiokafka / asyncpg errors: the role restarts from the committed
                offsets; replays are skipped by the record map.
        """
        async with self._resources():
            HEALTH.require("sink.partitions_assigned")
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    tg.create_task(self._consume_loop(), name="sink.consume")
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None
            finally:
                self._tg = None
                HEALTH.release("sink.partitions_assigned")

    async def drain(self, *, assign_timeout_s: float = 60.0) -> DrainReport:
        """Sync everything up to the end offsets seen at start, commit, return.

        Raises:
            DrainIncomplete: Zoho down, budget reached, or anything else left undone; the
                offsets of what did finish are committed, the rest is left for the next run.
        """
        self._drain_mode = True
        report = DrainReport()
        try:
            async with self._resources(), asyncio.TaskGroup() as tg:
                self._tg = tg
                await self._drain(report, assign_timeout_s)
        except BaseExceptionGroup as group:
            raise _as_drain_error(group.exceptions[0]) from None
        except DrainIncomplete:
            raise
        except Exception as exc:
            raise _as_drain_error(exc) from exc
        finally:
            self._tg = None
        return report

    @contextlib.asynccontextmanager
    async def _resources(self) -> Any:
        import asyncpg

        from streamsync.kafka.producer import create_producer
        from streamsync.store.schema import ensure_schema
        from streamsync.zoho import ZohoClient

        if self._crm is None:
            self._crm = ZohoClient(self._settings.zoho)
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._settings.postgres.dsn,
                min_size=1,
                max_size=self._settings.zoho.concurrency + 2,
                reset=_keep_session,
            )
        producer = self._producer or create_producer(self._settings.kafka)
        self._producer = producer
        consumer = self._consumer or create_consumer(self._settings.kafka, self._cfg)
        self._consumer = consumer
        journal: CreditJournal | None = None
        journal_task: asyncio.Task[None] | None = None
        try:
            async with self._pool.acquire() as conn:
                await ensure_schema(conn, self._schema)
            ledger = getattr(self._crm, "credits", None)
            if isinstance(ledger, CreditLedger):  # share the org's daily budget (store/credits.py)
                journal = CreditJournal(self._pool, self._schema, ledger, process_id("sink"))
                journal_task = asyncio.create_task(journal.run(), name="sink.credit-journal")
            await producer.start()
            await consumer.start()
            consumer.subscribe(
                topics=self._topics, listener=Listener(self._on_revoked, self._on_assigned)
            )
            yield
        finally:
            if journal is not None and journal_task is not None:
                journal.stop()  # run() never raises; it writes the last charges and returns
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(journal_task, timeout=10)
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            if self._own_crm and self._crm is not None:
                with contextlib.suppress(Exception):
                    await self._crm.close()
            if self._own_pool and self._pool is not None:
                with contextlib.suppress(Exception):
                    await self._pool.close()
                self._pool = None

    # ------------------------------------------------------------------ consume loop ----
    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            turns = 0
            while not self._stop.is_set():
                HEALTH.beat("sink.consume")
                turns += 1
                if turns % 20 == 0:
                    log.debug(
                        "sink: tasks=%d pending=%d inflight=%d unfinished=%d bulk=%s/%s",
                        len(self._tasks),
                        self._window.pending,
                        self._window.inflight,
                        self._offsets.unfinished(),
                        self._bulk_mode,
                        self._bulk_task is not None,
                    )
                await self._backpressure()
                if self._stop.is_set():
                    break
                now = self._clock()
                deadline = self._window.next_deadline()
                if deadline is None or self._bulk_mode or self._bulk_task is not None:
                    wait = _MAX_POLL_S  # bulk collection ignores the window's age
                else:
                    wait = max(0.0, min(_MAX_POLL_S, deadline - now))
                # Always yield: getmany returns buffered records without suspending, so
                # without this the loop could window thousands of records while the CRM
                # answers of the calls in flight wait unread (their latency is throughput).
                await asyncio.sleep(0)
                data = await consumer.getmany(
                    timeout_ms=int(wait * 1000), max_records=_POLL_RECORDS
                )
                now = self._clock()
                if data and not self._bulk_mode and self._bulk_task is None:
                    await self._check_backlog(data)
                for tp, msgs in data.items():
                    for msg in msgs:
                        self._ingest(tp, msg, now)
                if not self._bulk_mode:
                    for batch in self._window.due(now):
                        self._dispatch(batch)
                await self._plan_bulk()
                await self._commit(force=False)
                if self._until_idle and await self._idle():
                    break
        except BaseException:
            raise  # a failure or a cancel: no drain; what is final was committed already
        else:
            await self._shutdown()

    async def _check_backlog(self, data: dict[Any, list[Any]]) -> None:
        """Enter bulk mode before the first records of a large backlog reach the window."""
        if self._drain_mode:
            return
        fetched = sum(len(msgs) for msgs in data.values())
        backlog = self._window.pending + fetched + await self._lag()
        if choose_path(backlog, self._cfg.bulk_threshold) == "bulk":
            self._start_bulk_mode(backlog)

    def _start_bulk_mode(self, backlog: int) -> None:
        log.info(
            "sink: backlog %d > %d: collecting a Bulk Write job", backlog, self._cfg.bulk_threshold
        )
        self._bulk_mode = True
        self._window.max_keys = self._cfg.max_bulk_records

    def _ingest(self, tp: Any, msg: Any, now: float) -> None:
        self._offsets.track(tp, msg.offset)
        self.stats.events += 1
        try:
            event = decode_change(msg.value)
        except DecodeError as exc:
            self._spawn(self._dead_letter_raw(tp, msg, "UNDECODABLE", exc.message))
            return
        if event.table not in self._tables:
            self._spawn(
                self._dead_letter_raw(
                    tp, msg, "UNKNOWN_TABLE", f"table {event.table!r} is not mapped"
                )
            )
            return
        if event.op == "t":
            self._spawn(
                self._dead_letter_raw(
                    tp, msg, "TRUNCATE_NOT_SYNCED", "truncate is not synced to the CRM"
                )
            )
            return
        for batch in self._window.add(event, tp, msg.offset, now):
            if self._bulk_mode or self._drain_mode:
                self._large.append(batch)  # sent by the credit planner, not as upserts
            else:
                self._dispatch(batch)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        assert self._tg is not None
        task: asyncio.Task[None] = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _dispatch(self, batch: Batch) -> None:
        reason = {"size": "full", "age": "deadline"}.get(batch.reason, batch.reason)
        metrics.batch_flushed(len(batch), reason)
        self.stats.flush_reasons[reason] = self.stats.flush_reasons.get(reason, 0) + 1
        self._spawn(self._process(batch))

    async def _backpressure(self) -> None:
        """Bounded memory: wait while too much work is in flight (the loop still polls soon)."""
        limit = max(20, self._settings.zoho.concurrency * 4)
        while len(self._tasks) >= limit and not self._stop.is_set():
            await asyncio.wait(
                set(self._tasks), timeout=_MAX_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
            HEALTH.beat("sink.consume")

    async def _idle(self) -> bool:
        if self._tasks or self._window.pending or self._bulk_task is not None:
            return False
        if not self._assigned:
            return False
        lag = await self._lag()
        return lag == 0 and self._offsets.unfinished() == 0 and not self._offsets.committable()

    async def _lag(self) -> int:
        consumer = self._consumer
        total = 0
        for tp in self._assigned:
            high = consumer.highwater(tp)
            if high is None:
                ends = await consumer.end_offsets([tp])
                high = ends.get(tp, 0)
            pos = await consumer.position(tp)
            lag = max(0, high - pos)
            metrics.consumer_lag(tp.partition, lag)
            total += lag
        return total

    async def _shutdown(self) -> None:
        """Flush the window, let in-flight work finish within the budget, then commit."""
        budget = self._cfg.shutdown_timeout_s
        ends_at = time.monotonic() + budget
        if self._bulk_mode and self._bulk_task is None:
            self._bulk_mode = False
            self._window.max_keys = self._cfg.max_records
        for batch in self._window.flush("shutdown"):
            self._dispatch(batch)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=max(0.1, budget * 0.9))
            for task in pending:
                task.cancel()
            if pending:
                log.warning("sink shutdown: %d batches unfinished, left uncommitted", len(pending))
                await asyncio.wait(pending, timeout=max(0.1, ends_at - time.monotonic()))
        with contextlib.suppress(Exception):
            await asyncio.shield(self._commit(force=True))

    # ------------------------------------------------------------------ rebalance ----
    async def _on_assigned(self, assigned: set[Any]) -> None:
        for tp in assigned:
            if tp not in self._assigned:
                self._offsets.reset(tp)
        self._assigned = set(assigned)
        if assigned:
            HEALTH.ok("sink.partitions_assigned")
        else:
            HEALTH.fail("sink.partitions_assigned", "no partitions assigned")
        log.info("sink: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    async def _on_revoked(self, revoked: set[Any]) -> None:
        """Flush the window, wait for its outcomes (within the revoke budget), commit."""
        if not revoked:
            return
        self.stats.revokes += 1
        if self._bulk_mode and self._bulk_task is None:
            self._end_bulk_mode()
        if self._tg is not None:
            for batch in self._window.flush("revoke"):
                self._dispatch(batch)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=REVOKE_BUDGET_S)
        with contextlib.suppress(Exception):
            await self._commit(force=True)
        self._window.drop_partitions(revoked)
        self._offsets.forget(revoked)
        for tp in revoked:
            metrics.forget_partition(tp.partition)
        self._assigned -= revoked
        log.info("sink: revoked %d partitions", len(revoked))

    # ------------------------------------------------------------------ commit ----
    async def _commit(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < 1.0:
            return
        offsets = self._offsets.committable(tps=self._assigned)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            if force:
                raise
            log.info("sink: commit deferred (%s)", type(exc).__name__)
            return
        self._offsets.committed(offsets)
        self._last_commit = now
        self.stats.commits += 1

    # ------------------------------------------------------------------ credit planner ----
    async def _plan_bulk(self) -> None:
        if self._drain_mode or not self._assigned:
            return
        if self._bulk_task is not None:
            if self._bulk_task.done():
                self._bulk_task = None
                self._end_bulk_mode()
                self._consumer.resume(*self._assigned)
                await self._commit(force=True)
            return
        lag = await self._lag()
        if not self._bulk_mode:
            if choose_path(lag + self._window.pending, self._cfg.bulk_threshold) == "bulk":
                self._start_bulk_mode(lag + self._window.pending)
            return
        full = self._window.flushable() >= self._cfg.max_bulk_records or bool(self._large)
        if not full and lag > 0 and self._offsets.unfinished() < 20 * self._cfg.max_bulk_records:
            return
        batches = self._large + self._window.flush("bulk")
        self._large = []
        self._consumer.pause(*self._assigned)
        entries = [e for b in batches for e in b.entries]
        metrics.batch_flushed(len(entries), "bulk")
        self._bulk_task = self._spawn(self._process_large(Batch(entries, "bulk")))

    def _end_bulk_mode(self) -> None:
        self._bulk_mode = False
        self._window.max_keys = self._cfg.max_records

    async def _process_large(self, batch: Batch) -> None:
        """A large coalesced batch: Bulk Write jobs of at most ``sink.max_bulk_records`` while
        what is left exceeds the threshold, then upserts of 100 (``planner.drain_chunks``).

        The batch may hold more than one job's worth: a full window plus what the same poll
        added after it (Zoho refuses a file of more than 25,000 rows with LIMIT_EXCEEDED).
        """
        try:
            upserts: list[Entry] = []
            small: list[Entry] = []
            for entry in batch.entries:
                (upserts if entry.op == "upsert" else small).append(entry)
            jobs: list[list[Entry]] = []
            start = 0
            for path, count in drain_chunks(
                len(upserts), self._cfg.bulk_threshold, self._cfg.max_bulk_records
            ):
                part = upserts[start : start + count]
                start += count
                if path == "bulk":
                    jobs.append(part)
                else:
                    small.extend(part)
            tasks = []
            for part in chunks(_by_table(small), self._cfg.max_records):
                tasks.append(self._spawn(self._process(Batch(part, batch.reason), release=False)))
            for job in jobs:
                await self._process_bulk(job)
            if tasks:
                await asyncio.gather(*tasks)
        except _Stopping:
            log.info("sink: bulk batch of %d left unfinished (stopping)", len(batch))
        finally:
            self._window.release(batch)

    # ------------------------------------------------------------------ one batch ----
    async def _process(self, batch: Batch, *, release: bool = True) -> None:
        try:
            judged = await self._sync(batch.entries)
            await self._finalize(judged)
        except _Stopping:
            log.info("sink: batch of %d left unfinished (stopping)", len(batch))
        finally:
            if release:
                self._window.release(batch)

    async def _sync(self, entries: Sequence[Entry]) -> Judged:
        """Step 1: the CRM outcome of every entry (Done or Dead)."""
        out = Judged()
        by_table: dict[str, list[Entry]] = {}
        for entry in entries:
            by_table.setdefault(entry.table, []).append(entry)
        for name, group in by_table.items():
            table = self._tables[name]
            known = await self._known(name, [e.key_text for e in group])
            plan = plan_batch(group, known, table.on_delete)
            for entry, why in plan.skipped:
                if why == "stale":
                    self.stats.skipped_stale += 1
                out.done.append(Done(entry, None, why))
            records: list[tuple[Entry, dict[str, Any]]] = []
            for entry in plan.upserts:
                try:
                    records.append((entry, self._map(table, entry)))
                except MappingError as exc:
                    out.dead.append(Dead(entry, exc.code, exc.message, exc.details, 1))
            for entry in plan.marks:
                try:
                    records.append((entry, {**_ext_record(table, entry), table.on_delete: True}))
                except MappingError as exc:
                    out.dead.append(Dead(entry, exc.code, exc.message, exc.details, 1))
            if records:
                out.extend(await self._upsert(table, records))
            deletes = list(plan.deletes)
            for entry in plan.searches:
                ids = await self._search_ids(table, entry)
                if not ids:
                    out.done.append(Done(entry, None, "delete"))
                for zoho_id in ids:
                    deletes.append((entry, zoho_id))
            if deletes:
                out.extend(await self._delete(table, deletes))
        return out

    def _map(self, table: TableSettings, entry: Entry) -> dict[str, Any]:
        return self._mappers[table.source](entry.after or {}, entry.unchanged)

    async def _known(self, table: str, keys: list[str]) -> dict[str, Known]:
        rows = await record_map.fetch(self._pool, self._schema, table, keys)
        return {
            k: Known(r.zoho_id, Position(r.lsn, r.seq), r.status, r.attempts)  # type: ignore[arg-type]
            for k, r in rows.items()
        }

    async def _upsert(
        self, table: TableSettings, records: list[tuple[Entry, dict[str, Any]]]
    ) -> Judged:
        out = Judged()
        pending = records
        attempt = 1
        while pending:
            judged = Judged()
            for part in chunks_of(pending, self._cfg.max_records):
                entries = [e for e, _ in part]
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
                    judged.extend(await self._split(table, part, results.error, attempt))
                    continue
                judged.extend(
                    judge_upserts(entries, results, attempt, self._cfg.max_record_attempts)
                )
            out.done.extend(judged.done)
            out.dead.extend(judged.dead)
            retry = {id(r.entry) for r in judged.retry}
            pending = [(e, rec) for e, rec in pending if id(e) in retry]
            if pending:
                attempt += 1
                await self._backoff(attempt)
        return out

    async def _split(
        self,
        table: TableSettings,
        part: list[tuple[Entry, dict[str, Any]]],
        error: CrmError,
        attempt: int,
    ) -> Judged:
        """A request-level rejection: isolate the culprit by halving (split retry)."""
        if len(part) == 1:
            entry = part[0][0]
            return Judged(dead=[Dead(entry, error.code, error.message, error.details, attempt)])
        mid = len(part) // 2
        out = Judged()
        for half in (part[:mid], part[mid:]):
            out.extend(await self._upsert(table, half))
        return out

    async def _delete(self, table: TableSettings, pairs: list[tuple[Entry, str]]) -> Judged:
        out = Judged()
        pending = pairs
        attempt = 1
        while pending:
            judged = Judged()
            for part in chunks_of(pending, 100):
                results = await self._call(
                    "delete",
                    len(part),
                    functools.partial(self._crm.delete, table.module, [z for _, z in part]),
                )
                if isinstance(results, _Split):
                    for entry, _ in part:
                        judged.dead.append(
                            Dead(
                                entry,
                                results.error.code,
                                results.error.message,
                                results.error.details,
                                attempt,
                            )
                        )
                    continue
                judged.extend(judge_deletes(part, results, attempt, self._cfg.max_record_attempts))
            out.done.extend(judged.done)
            out.dead.extend(judged.dead)
            retry = {id(r.entry) for r in judged.retry}
            pending = [(e, z) for e, z in pending if id(e) in retry]
            if pending:
                attempt += 1
                await self._backoff(attempt)
        # an entry with several Zoho ids (never expected) is done once all are
        seen: set[int] = set()
        uniq: list[Done] = []
        for d in out.done:
            if id(d.entry) not in seen:
                seen.add(id(d.entry))
                uniq.append(d)
        out.done = [d for d in uniq if not any(x.entry is d.entry for x in out.dead)]
        return out

    async def _search_ids(self, table: TableSettings, entry: Entry) -> list[str]:
        value = _ext_value(table, entry)
        hits = await self._call(
            "search",
            0,
            lambda: self._crm.search_exact(table.module, table.external_id.field, value),
        )
        if isinstance(hits, _Split):
            return []
        return [str(h["id"]) for h in hits if h.get("id")]

    async def _call(self, api: str, records: int, make: Callable[[], Any]) -> Any:
        """One CRM call; retryable whole-call failures back off and retry (live mode: until
        stopped; drain: raise). A non-retryable request rejection returns ``_Split``."""
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
                if self._drain_mode and attempt >= 3:
                    raise
                if self._stop.is_set() and not self._drain_mode:
                    raise _Stopping() from exc
                delay = getattr(exc, "retry_after", None) or 0.0
                await self._backoff(attempt, floor=delay)
                continue
            credits = upsert_credits(records) if records else 1
            metrics.crm_call(api, "ok", credits if api in ("upsert", "delete") else 0)
            if api == "upsert":
                self.stats.upsert_calls += 1
                self.stats.records_sent += records
            elif api == "delete":
                self.stats.delete_calls += 1
            return result

    async def _backoff(self, attempt: int, floor: float = 0.0) -> None:
        base = self._settings.zoho.backoff_base_s
        delay = max(
            floor, min(_BACKOFF_CAP_S, base * (2 ** min(attempt, 10))) * (0.5 + random.random() / 2)
        )
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
        except TimeoutError:
            return

    # ------------------------------------------------------------------ bulk write ----
    async def _process_bulk(self, entries: list[Entry]) -> None:
        from streamsync.zoho import csv_columns, csv_row
        from streamsync.zoho.records import bulk_formats

        out = Judged()
        by_table: dict[str, list[Entry]] = {}
        for entry in entries:
            by_table.setdefault(entry.table, []).append(entry)
        for name, group in by_table.items():
            table = self._tables[name]
            known = await self._known(name, [e.key_text for e in group])
            plan = plan_batch(group, known, table.on_delete)
            for entry, why in plan.skipped:
                out.done.append(Done(entry, None, why))
            rows: list[list[str]] = []
            sent: list[Entry] = []
            for entry in plan.upserts:
                try:
                    rows.append(csv_row(table, entry.after or {}))
                    sent.append(entry)
                except MappingError as exc:
                    out.dead.append(Dead(entry, exc.code, exc.message, exc.details, 1))
            if not sent:
                continue
            columns = csv_columns(table)
            self._work_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=self._work_dir) as tmp:
                path = Path(tmp) / "sink-bulk.zip"
                await asyncio.to_thread(_write_zip, rows, columns, path)
                del rows
                results = await self._bulk_job(table, path, columns, bulk_formats(table), tmp)
            judged = judge_bulk_rows(sent, results, attempt=1)
            out.done.extend(judged.done)
            out.dead.extend(judged.dead)
            # rows missing from the result, and updated rows whose NULLs Bulk Write ignores
            # (ignore_empty), go out as upserts
            again = [r.entry for r in judged.retry]
            again += [
                d.entry for d in judged.done if d.action == "update" and _has_nulls(table, d.entry)
            ]
            if again:
                redo = {id(e) for e in again}
                out.done = [d for d in out.done if id(d.entry) not in redo]
                records = []
                for entry in again:
                    try:
                        records.append((entry, self._map(table, entry)))
                    except MappingError as exc:
                        out.dead.append(Dead(entry, exc.code, exc.message, exc.details, 1))
                out.extend(await self._upsert(table, records))
        await self._finalize(out)

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
                self.stats.bulk_jobs += 1
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
                if self._drain_mode and attempt >= 3:
                    raise
                if self._stop.is_set() and not self._drain_mode:
                    raise _Stopping() from exc
                await self._backoff(attempt)

    # ------------------------------------------------------------------ finalize ----
    async def _finalize(self, judged: Judged) -> None:
        """Steps 2-4: dead letters acked, record map (and sync flag) written, offsets done."""
        # 2. dead letters
        if judged.dead:
            await asyncio.gather(*(self._dead_letter(d) for d in judged.dead))
        # 3. the record map
        outcomes: list[record_map.Outcome] = []
        now_ms = time.time() * 1000
        for d in judged.done:
            if d.action in ("stale", "ignored"):
                continue
            status = "deleted" if d.action == "delete" else "ok"
            outcomes.append(
                record_map.Outcome(
                    d.entry.table,
                    d.entry.key_text,
                    d.zoho_id,
                    d.entry.pos.lsn,
                    d.entry.pos.seq,
                    status,
                )
            )
            if d.entry.ts_ms:
                latency_ms = max(0.0, now_ms - d.entry.ts_ms)
                metrics.SINK_COMMIT_TO_CRM.observe(latency_ms / 1000)
                if len(self.stats.latencies_ms) >= 200_000:
                    del self.stats.latencies_ms[:100_000]
                self.stats.latencies_ms.append(latency_ms)
        for dead in judged.dead:
            e = dead.entry
            outcomes.append(
                record_map.Outcome(
                    e.table,
                    e.key_text,
                    None,
                    e.pos.lsn,
                    e.pos.seq,
                    "failed",
                    dead.code,
                    dead.attempts,
                )
            )
        if outcomes:
            await record_map.record_outcomes(self._pool, self._schema, outcomes)
            await self._write_back(outcomes)
        ops: dict[str, int] = {}
        for d in judged.done:
            if d.action not in ("stale", "ignored"):
                ops[d.action] = ops.get(d.action, 0) + 1
        for op, n in ops.items():
            metrics.records_synced(op, n)
        # 4. offsets
        for d in judged.done:
            self._offsets.done_all(d.entry.offsets)
        for dead in judged.dead:
            self._offsets.done_all(dead.entry.offsets)

    async def _dead_letter(self, dead: Dead) -> None:
        tp, offset = dead.entry.offsets[-1]
        await publish_dead_letter(
            self._producer,
            self._prefix,
            event_or_raw=dead.entry.event,
            reason_code=dead.code,
            message=dead.message,
            details=dead.details,
            attempts=dead.attempts,
            origin="sink",
            source={
                "topic": getattr(tp, "topic", None),
                "partition": getattr(tp, "partition", None),
                "offset": offset,
            },
        )
        metrics.dead_lettered(dead.code)
        self.stats.dead_letters += 1

    async def _dead_letter_raw(self, tp: Any, msg: Any, code: str, message: str) -> None:
        await publish_dead_letter(
            self._producer,
            self._prefix,
            event_or_raw=msg.value if msg.value is not None else b"",
            reason_code=code,
            message=message,
            details={},
            attempts=1,
            origin="sink",
            source={
                "topic": tp.topic,
                "partition": tp.partition,
                "offset": msg.offset,
                "key": msg.key,
            },
        )
        metrics.dead_lettered(code)
        self.stats.dead_letters += 1
        self._offsets.done(tp, msg.offset)

    async def _write_back(self, outcomes: list[record_map.Outcome]) -> None:
        """The optional sync flag: true for ok, false for failed, written loop-free.

        The writing transaction starts with a transactional logical message
        (prefix ``streamsync.writeback``); capture drops every change of a transaction that
        carries it. ``IS DISTINCT FROM`` skips rows whose flag already holds the value, so even
        a capture that ignores the marker causes at most one extra round per flip.
        """
        by_table: dict[str, dict[bool, list[Any]]] = {}
        for o in outcomes:
            table = self._tables.get(o.table)
            if table is None or not table.sync_flag_column or o.status == "deleted":
                continue
            key = _key_value(o.key)
            by_table.setdefault(o.table, {}).setdefault(o.status == "ok", []).append(key)
        for name, groups in by_table.items():
            table = self._tables[name]
            schema, rel = table.schema_name, table.table_name
            flag = table.sync_flag_column
            pk = table.external_id.column
            rel_q = f'"{schema}"."{rel}"'
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    await conn.execute(
                        "SELECT pg_logical_emit_message(true, $1, $2)",
                        WRITEBACK_MESSAGE_PREFIX,
                        name,
                    )
                    typ = await self._pk_type(conn, rel_q, pk)
                    for value, keys in groups.items():
                        # SKIP LOCKED: a row a user transaction holds is being changed right
                        # now; its new version is synced (and flagged) after it. No deadlocks.
                        # The keys are cast to the key's own type so the primary key index
                        # finds them (``pk::text = ANY(...)`` reads the whole table).
                        await conn.execute(
                            f'UPDATE {rel_q} SET "{flag}" = $1 WHERE "{pk}" IN ('
                            f'SELECT "{pk}" FROM {rel_q} WHERE "{pk}" = ANY($2::text[]::{typ}[]) '
                            f'AND "{flag}" IS DISTINCT FROM $1 ORDER BY "{pk}" '
                            "FOR UPDATE SKIP LOCKED)",
                            value,
                            [str(k) for k in keys],
                        )
            except Exception as exc:  # a side effect: never blocks the partition
                if not _is_pg_error(exc):
                    raise
                log.warning("sink: sync flag write-back skipped (%s)", type(exc).__name__)

    async def _pk_type(self, conn: Any, rel_q: str, column: str) -> str:
        """The SQL type of a legacy table's key column (looked up once per table)."""
        typ = self._pk_types.get(rel_q)
        if typ is None:
            typ = await conn.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attname = $2",
                rel_q,
                column,
            )
            if typ is None:
                raise ConfigError(f"{rel_q} has no column {column!r}")
            self._pk_types[rel_q] = typ
        return typ

    # ------------------------------------------------------------------ drain ----
    async def _drain(self, report: DrainReport, assign_timeout_s: float) -> None:
        consumer = self._consumer
        deadline = time.monotonic() + assign_timeout_s
        early: list[tuple[Any, Any]] = []  # records returned by the call that joined the group
        while not self._assigned:
            data = await consumer.getmany(timeout_ms=200)
            early.extend((tp, msg) for tp, msgs in data.items() for msg in msgs)
            if time.monotonic() > deadline:
                raise DrainIncomplete(
                    "no partitions assigned to this drain run", code="NO_ASSIGNMENT"
                )
        consumer.pause(*self._assigned)
        ends = await consumer.end_offsets(list(self._assigned))
        self._window = Window(self._cfg.max_bulk_records, 1e9)
        now = self._clock()
        for tp, msg in early:
            if tp in self._assigned and msg.offset < ends[tp]:
                self._ingest(tp, msg, now)
                report.events += 1
        remaining = set()
        for tp in self._assigned:
            if await consumer.position(tp) < ends[tp]:
                remaining.add(tp)
        log.info("sink drain: %d partitions with a backlog", len(remaining))
        if remaining:
            consumer.resume(*remaining)
        while remaining:
            data = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            now = self._clock()
            for tp, msgs in data.items():
                for msg in msgs:
                    if msg.offset >= ends[tp]:
                        continue
                    self._ingest(tp, msg, now)
                    report.events += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if self._large or self._offsets.unfinished() > 500_000:
                await self._drain_flush(report)
        await self._drain_flush(report)
        await self._wait_tasks()
        if self._offsets.unfinished():
            raise DrainIncomplete(
                f"{self._offsets.unfinished()} events have no final outcome",
                code="DRAIN_INCOMPLETE",
            )
        await self._commit(force=True)
        committed = await self._committed_offsets()
        report.committed = committed
        report.bulk_jobs = self.stats.bulk_jobs
        report.upsert_calls = self.stats.upsert_calls
        report.dead_letters = self.stats.dead_letters
        if self._offsets.committable(tps=self._assigned):
            raise DrainIncomplete("offsets not committed", code="DRAIN_INCOMPLETE")

    async def _drain_flush(self, report: DrainReport) -> None:
        batches = self._large + self._window.flush("drain")
        self._large = []
        entries = [e for b in batches for e in b.entries]
        if not entries:
            await self._wait_tasks()
            return
        report.records += len(entries)
        metrics.batch_flushed(len(entries), "drain")
        await self._process_large(Batch(entries, "drain"))
        await self._wait_tasks()
        await self._commit(force=True)

    async def _wait_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*set(self._tasks))

    async def _committed_offsets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for tp in self._assigned:
            value = await self._consumer.committed(tp)
            out[f"{tp.topic}[{tp.partition}]"] = int(value or 0)
        return out


@dataclass(frozen=True, slots=True)
class _Split:
    error: CrmError


def chunks_of(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _by_table(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.table)


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release, without asyncpg's reset query (one round trip per
    release): the sink's own connections hold no session state (no LISTEN, cursors, advisory
    locks or session settings; the write-back uses SET LOCAL). asyncpg still rolls back an
    open transaction before calling this."""


def _key_value(key_text: str) -> Any:
    key = orjson.loads(key_text)
    return key[0] if isinstance(key, list) and len(key) == 1 else key_text


def _ext_value(table: TableSettings, entry: Entry) -> str:
    """The external id (Zoho's unique field value) of an entry, from its key."""
    value = entry.key[0] if len(entry.key) == 1 else entry.key_text
    record = map_record(table, {table.external_id.column: value})
    return str(record[table.external_id.field])


def _ext_record(table: TableSettings, entry: Entry) -> dict[str, Any]:
    return {table.external_id.field: _ext_value(table, entry)}


def _has_nulls(table: TableSettings, entry: Entry) -> bool:
    after = entry.after or {}
    return any(after.get(col, 0) is None for col in table.fields if col in after)


def _is_pg_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(exc, asyncpg.PostgresError)


def _write_zip(rows: list[list[str]], columns: list[str], path: Path) -> None:
    """One CSV (header + rows) zipped, in a worker thread: one hop, not one per row."""
    import csv
    import io
    import zipfile

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.stem + ".csv", buf.getvalue())


def _as_drain_error(exc: BaseException) -> DrainIncomplete:
    if isinstance(exc, DrainIncomplete):
        return exc
    code = getattr(exc, "code", type(exc).__name__)
    return DrainIncomplete(f"drain left work undone: {exc}", code=str(code))
