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
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from streamsync.errors import DecodeError, StreamsyncError
from streamsync.events import decode_change
from streamsync.kafka.topics import change_topic
from streamsync.ops import metrics
from streamsync.ops.health import HEALTH
from streamsync.settings import Settings, TableSettings
from streamsync.sink.consume import REVOKE_BUDGET_S, Listener, create_consumer
from streamsync.sink.finalize import Finalizer
from streamsync.sink.offsets import Offsets
from streamsync.sink.planner import choose_path, drain_chunks
from streamsync.sink.stats import DrainReport, SinkStats
from streamsync.sink.window import Batch, Entry, Window, chunks
from streamsync.sink.writeback import SyncFlagWriter
from streamsync.sink.writer import CrmWriter, Stopping
from streamsync.store.credits import CreditJournal, process_id
from streamsync.zoho.credits import CreditLedger

__all__ = ["DrainIncomplete", "DrainReport", "Sink", "SinkStats"]

log = logging.getLogger("streamsync.sink")

_MAX_POLL_S = 0.25  # the loop turns at least this often (stop, health, bulk checks)
# Events per poll: decoding and windowing them runs without a pause, so a smaller poll keeps
# the loop free to read the CRM answers of the calls in flight (their latency is throughput).
_POLL_RECORDS = 100


class DrainIncomplete(StreamsyncError):
    """``drain()`` could not finish: something is left for the next run (exit non-zero)."""

    default_code = "DRAIN_INCOMPLETE"
    retryable = True


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
        self._topics = [change_topic(settings.kafka.topic_prefix, t) for t in self._tables]
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
        self.stats = SinkStats()
        # built in _resources, once the client, the pool and the producer exist
        self._writer: CrmWriter | None = None
        self._finalizer: Finalizer | None = None

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
        self._writer = CrmWriter(
            self._settings,
            crm=self._crm,
            pool=self._pool,
            stats=self.stats,
            stopping=self._stop,
            work_dir=self._work_dir,
        )
        self._writer.drain_mode = self._drain_mode
        self._finalizer = Finalizer(
            producer=producer,
            pool=self._pool,
            state_schema=self._schema,
            topic_prefix=self._settings.kafka.topic_prefix,
            offsets=self._offsets,
            stats=self.stats,
            writeback=SyncFlagWriter(self._pool, self._tables),
        )
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
            self._spawn(self._finalizer_().dead_letter_raw(tp, msg, "UNDECODABLE", exc.message))
            return
        if event.table not in self._tables:
            why = f"table {event.table!r} is not mapped"
            self._spawn(self._finalizer_().dead_letter_raw(tp, msg, "UNKNOWN_TABLE", why))
            return
        if event.op == "t":
            why = "truncate is not synced to the CRM"
            self._spawn(self._finalizer_().dead_letter_raw(tp, msg, "TRUNCATE_NOT_SYNCED", why))
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
        self.stats.flushed(reason)
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
            small.sort(key=lambda e: e.table)  # calls of one table each
            for part in chunks(small, self._cfg.max_records):
                tasks.append(self._spawn(self._process(Batch(part, batch.reason), release=False)))
            for job in jobs:
                await self._finalizer_().finalize(await self._writer_().bulk(job))
            if tasks:
                await asyncio.gather(*tasks)
        except Stopping:
            log.info("sink: bulk batch of %d left unfinished (stopping)", len(batch))
        finally:
            self._window.release(batch)

    # ------------------------------------------------------------------ one batch ----
    async def _process(self, batch: Batch, *, release: bool = True) -> None:
        """Steps 1-4 for one window batch (module docstring); the window then frees its keys."""
        try:
            judged = await self._writer_().sync(batch.entries)
            await self._finalizer_().finalize(judged)
        except Stopping:
            log.info("sink: batch of %d left unfinished (stopping)", len(batch))
        finally:
            if release:
                self._window.release(batch)

    def _writer_(self) -> CrmWriter:
        assert self._writer is not None, "run() or drain() not started"
        return self._writer

    def _finalizer_(self) -> Finalizer:
        assert self._finalizer is not None, "run() or drain() not started"
        return self._finalizer

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


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release, without asyncpg's reset query (one round trip per
    release): the sink's own connections hold no session state (no LISTEN, cursors, advisory
    locks or session settings; the write-back uses SET LOCAL). asyncpg still rolls back an
    open transaction before calling this."""


def _as_drain_error(exc: BaseException) -> DrainIncomplete:
    if isinstance(exc, DrainIncomplete):
        return exc
    code = getattr(exc, "code", type(exc).__name__)
    return DrainIncomplete(f"drain left work undone: {exc}", code=str(code))
