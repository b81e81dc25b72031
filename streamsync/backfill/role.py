"""BackfillWorker: control topic → chunks → Bulk Write jobs → results → resync; resumable.

    worker = BackfillWorker(settings)            # optional crm=, producer=, pool=, clock=
    task = asyncio.create_task(worker.run())     # returns on stop() (or raises on failure)
    worker.job_callback(job_id)                  # from an HTTP callback handler (optional)
    worker.stop()                                # idempotent; running backfills resume later

One loop consumes ``<prefix>.control``; each started backfill runs as a task that walks its
table in key order. At most ``backfill.max_parallel_jobs`` chunks are in flight across all
backfills (a slot is held from reading a chunk to its resync). Each chunk moves through
``prepared → submitted → loaded → done`` in the checkpoint store, so a restarted worker picks
every chunk up where it stopped: a submitted job is waited for, never submitted again.
Skipped rows with retryable errors are loaded again in later rounds (up to
``backfill.max_rounds``); the others are dead-lettered at once. A cancel stops reading new
chunks, lets submitted jobs finish and resync, then marks the backfill cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from streamsync.backfill.chunks import (
    BULK_JOB_CREDITS,
    MAX_CHUNK_ROWS,
    BackfillStatus,
    ChunkDigest,
    ChunkStatus,
    KeysetCursor,
    chunk_batches,
    tally_results,
)
from streamsync.backfill.read import (
    ChunkFile,
    TableReader,
    describe_table,
    read_chunk,
    session_settings,
)
from streamsync.backfill.resync import ChangePublisher, resync_chunk, stable_lsn
from streamsync.dlq import publish_dead_letter
from streamsync.errors import (
    BulkJobFailed,
    ConfigError,
    CreditBudgetExhausted,
    DecodeError,
    StreamsyncError,
)
from streamsync.events import (
    BackfillCancel,
    BackfillStart,
    ChangeEvent,
    Position,
    decode_control,
)
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic, control_topic
from streamsync.ops import metrics
from streamsync.ops.health import HEALTH
from streamsync.ops.logging import bind
from streamsync.ops.server import register_bulk_callback
from streamsync.settings import Settings, TableSettings
from streamsync.store import checkpoints as cp
from streamsync.store.checkpoints import ChunkRecord
from streamsync.store.credits import CreditJournal, process_id
from streamsync.store.schema import ensure_schema
from streamsync.zoho.client import ZohoClient
from streamsync.zoho.records import bulk_formats, csv_columns

__all__ = ["BackfillWorker"]

log = logging.getLogger("streamsync.backfill")

MAX_JOB_ATTEMPTS = 5
RETRY_DELAY_S = 5.0
_MAX_EARLY_CALLBACKS = 1_000


@dataclass(slots=True)
class _Run:
    """One backfill being worked on."""

    backfill_id: str
    table: TableSettings
    reader: TableReader
    publisher: ChangePublisher
    work_dir: Path
    chunk_rows: int
    cancel: asyncio.Event = field(default_factory=asyncio.Event)


class BackfillWorker:
    """The ``backfill-worker`` role (see the module docstring)."""

    name = "backfill-worker"

    def __init__(
        self,
        settings: Settings,
        *,
        crm: ZohoClient | None = None,
        producer: Any | None = None,
        pool: Any | None = None,
        consumer_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.schema = settings.postgres.state_schema
        self.prefix = settings.kafka.topic_prefix
        self._crm = crm
        self._own_crm = crm is None
        self._producer: Any = producer
        self._own_producer = producer is None
        self._pool: Any = pool
        self._own_pool = pool is None
        self._consumer_factory = consumer_factory
        self._clock = clock
        self._stopped = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.backfill.max_parallel_jobs)
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._job_events: dict[str, asyncio.Event] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._shielded: set[asyncio.Future[str]] = set()

    # ---- public API -------------------------------------------------------------------
    def stop(self) -> None:
        """Ask ``run()`` to return; idempotent. Chunks in flight resume on the next start."""
        self._stopped.set()

    def job_callback(self, job_id: str) -> None:
        """Zoho called back for ``job_id``: cut its polling wait short.

        Served by the ops server (``POST /zoho/bulk-callback``, registered while ``run()``
        runs). A callback that arrives before the wait starts is kept (a bounded number).
        """
        event = self._job_events.get(job_id)
        if event is None:
            if len(self._job_events) >= _MAX_EARLY_CALLBACKS:
                return
            event = self._job_events[job_id] = asyncio.Event()
        event.set()

    @property
    def crm(self) -> ZohoClient:
        assert self._crm is not None, "run() not started"
        return self._crm

    async def run(self) -> None:
        """Consume control events and work on backfills until ``stop()``."""
        bind(role=self.name)
        HEALTH.require("backfill_control_consumer")
        async with contextlib.AsyncExitStack() as stack:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.settings.postgres.dsn,
                    min_size=1,
                    max_size=self.settings.backfill.max_parallel_jobs + 3,
                    server_settings=session_settings(),
                )
                stack.push_async_callback(self._pool.close)
            async with self._pool.acquire() as conn:
                await ensure_schema(conn, self.schema)
            if self._crm is None:
                self._crm = ZohoClient(self.settings.zoho)
            if self._own_crm:
                await self._crm.start()
                stack.push_async_callback(self._crm.close)
            if self._producer is None:
                self._producer = create_producer(self.settings.kafka)
            if self._own_producer:
                await self._producer.start()
                stack.push_async_callback(self._producer.stop)
            consumer = self._make_consumer()
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            stack.callback(register_bulk_callback(self.job_callback))
            HEALTH.ok("backfill_control_consumer")
            journal = CreditJournal(
                self._pool, self.schema, self._crm.credits, process_id(self.name)
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    tg.create_task(journal.run(), name="backfill.credit-journal")
                    control = tg.create_task(self._control_loop(consumer), name="backfill.control")
                    await self._resume_all()
                    await self._stopped.wait()
                    journal.stop()
                    control.cancel()
                    for task in list(self._tasks.values()):
                        task.cancel()
            finally:
                self._tg = None
                if self._shielded:  # a job being created: let its id be recorded
                    await asyncio.wait(set(self._shielded), timeout=30)
                HEALTH.forget_beat("backfill.control")
                HEALTH.release("backfill_control_consumer")

    async def start_backfill(self, event: BackfillStart) -> bool:
        """Handle a start event (also usable without Kafka). False if it was a repeat."""
        table = self.settings.table(event.table)
        async with self._pool.acquire() as conn:
            existing = await cp.get_backfill(conn, self.schema, event.backfill_id)
            if existing is None:
                shape = await describe_table(conn, table.source)
                reader = TableReader(table, shape)
                count, end = await reader.extent(conn)
                created = await cp.create_backfill(
                    conn,
                    self.schema,
                    backfill_id=event.backfill_id,
                    table_name=table.source,
                    chunk_rows=min(event.chunk_rows, self.settings.backfill.chunk_rows),
                    rows_estimate=count,
                    cursor_end=end,
                )
                log.info(
                    "backfill %s of %s started: ~%d rows",
                    event.backfill_id,
                    table.source,
                    count,
                    extra={"backfill_id": event.backfill_id},
                )
            else:
                created = False
                log.info(
                    "backfill %s already known (%s): not started again",
                    event.backfill_id,
                    existing.status,
                )
        self._launch(event.backfill_id)
        return created

    async def cancel_backfill(self, backfill_id: str) -> bool:
        async with self._pool.acquire() as conn:
            flagged = await cp.request_cancel(conn, self.schema, backfill_id)
        run = self._runs.get(backfill_id)
        if run is not None:
            run.cancel.set()
        elif flagged:
            self._launch(backfill_id)  # drains submitted jobs, then marks it cancelled
        return flagged

    # ---- control topic ----------------------------------------------------------------
    def _make_consumer(self) -> Any:
        if self._consumer_factory is not None:
            return self._consumer_factory()
        return AIOKafkaConsumer(
            control_topic(self.prefix),
            **self.settings.kafka.client_options(),
            group_id=self.settings.backfill.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.kafka.client_id}-backfill",
        )

    async def _control_loop(self, consumer: Any) -> None:
        while not self._stopped.is_set():
            HEALTH.beat("backfill.control")
            batches = await consumer.getmany(timeout_ms=500, max_records=50)
            for tp, messages in batches.items():
                for msg in messages:
                    await self._handle_control(msg)
                    await consumer.commit({tp: msg.offset + 1})

    async def _handle_control(self, msg: Any) -> None:
        source = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
        try:
            event = decode_control(msg.value)
            if isinstance(event, BackfillStart):
                await self.start_backfill(event)
            elif isinstance(event, BackfillCancel):
                await self.cancel_backfill(event.backfill_id)
        except (DecodeError, ConfigError) as exc:
            log.warning("control event dead-lettered: %s", exc, extra=source)
            await publish_dead_letter(
                self._producer,
                self.prefix,
                event_or_raw=msg.value if msg.value is not None else b"",
                reason_code=exc.code,
                message=exc.message,
                origin="backfill",
                source={**source, "key": msg.key},
            )
            metrics.dead_lettered(exc.code)

    # ---- backfills --------------------------------------------------------------------
    async def _resume_all(self) -> None:
        async with self._pool.acquire() as conn:
            running = await cp.list_backfills(conn, self.schema, ["running"])
        for bf in running:
            self._launch(bf.backfill_id)

    def _launch(self, backfill_id: str) -> None:
        task = self._tasks.get(backfill_id)
        if task is not None and not task.done():
            return
        if self._tg is None:
            raise RuntimeError("BackfillWorker.run() is not running")
        self._tasks[backfill_id] = self._tg.create_task(
            self._backfill_task(backfill_id), name=f"backfill.{backfill_id}"
        )

    async def _backfill_task(self, backfill_id: str) -> None:
        bind(backfill_id=backfill_id)  # this task's context: every log line names the backfill
        while not self._stopped.is_set():
            try:
                await self._run_backfill(backfill_id)
                return
            except StreamsyncError as exc:
                if not exc.retryable:
                    log.error("backfill %s failed: %s", backfill_id, exc)
                    async with self._pool.acquire() as conn:
                        await cp.set_backfill_status(
                            conn, self.schema, backfill_id, "failed", error=str(exc)
                        )
                    return
                log.warning("backfill %s: %s; retrying", backfill_id, exc)
            finally:
                self._runs.pop(backfill_id, None)
            await self._sleep(RETRY_DELAY_S)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up on stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), timeout=seconds)

    async def _run_backfill(self, backfill_id: str) -> None:
        async with self._pool.acquire() as conn:
            bf = await cp.get_backfill(conn, self.schema, backfill_id)
            if bf is None or bf.status != "running":
                return
            table = self.settings.table(bf.table_name)
            shape = await describe_table(conn, table.source)
        run = _Run(
            backfill_id=backfill_id,
            table=table,
            reader=TableReader(table, shape),
            publisher=ChangePublisher(self._producer, change_topic(self.prefix, table.source)),
            work_dir=Path(self.settings.backfill.work_dir) / backfill_id,
            chunk_rows=bf.chunk_rows,
        )
        if bf.cancel_requested:
            run.cancel.set()
        self._runs[backfill_id] = run
        cursor = KeysetCursor(bf.cursor_last, bf.cursor_end)
        # Round 1 (and whatever was unfinished when the worker stopped).
        await self._drive_chunks(run, cursor if bf.round == 1 else None)
        round_ = bf.round
        while not run.cancel.is_set() and round_ < self.settings.backfill.max_rounds:
            async with self._pool.acquire() as conn:
                waiting = await cp.skipped_rows(conn, self.schema, backfill_id, "retry")
                if not waiting:
                    break
                round_ += 1
                keys = [k for k, *_ in waiting]
                await cp.plan_retry_round(
                    conn,
                    self.schema,
                    backfill_id,
                    round_=round_,
                    batches=(
                        ChunkDigest.encode_keys(b) for b in chunk_batches(keys, run.chunk_rows)
                    ),
                )
            log.info("backfill %s: round %d for %d rows", backfill_id, round_, len(keys))
            await self._drive_chunks(run, None)
        if run.cancel.is_set():
            async with self._pool.acquire() as conn:
                await cp.set_backfill_status(conn, self.schema, backfill_id, "cancelled")
            log.info("backfill %s cancelled", backfill_id)
            return
        async with self._pool.acquire() as conn:
            leftover = await cp.fail_retry_skips(conn, self.schema, backfill_id)
        await self._dead_letter_keys(run, leftover, "RETRIES_EXHAUSTED", "still skipped")
        async with self._pool.acquire() as conn:
            await cp.set_backfill_status(conn, self.schema, backfill_id, BackfillStatus.DONE)
        log.info("backfill %s done", backfill_id)

    async def _drive_chunks(self, run: _Run, cursor: KeysetCursor | None) -> None:
        """Finish the unfinished chunks, then (round 1) read new ones, ``max_parallel_jobs`` at
        a time across the worker."""
        async with self._pool.acquire() as conn:
            pending = await cp.unfinished_chunks(conn, self.schema, run.backfill_id)
            seq = await cp.next_seq(conn, self.schema, run.backfill_id)
        async with asyncio.TaskGroup() as tg:
            for chunk in pending:
                await self._slots.acquire()
                tg.create_task(self._chunk_task(run, chunk))
            while cursor is not None and not cursor.exhausted and not run.cancel.is_set():
                await self._slots.acquire()
                try:
                    next_chunk = await self._read_next(run, cursor, seq)
                except BaseException:
                    self._slots.release()
                    raise
                if next_chunk is None:
                    self._slots.release()
                    break
                seq += 1
                tg.create_task(self._chunk_task(run, next_chunk))

    async def _read_next(self, run: _Run, cursor: KeysetCursor, seq: int) -> ChunkRecord | None:
        path = run.work_dir / f"{seq:06d}.zip"
        async with self._pool.acquire() as conn:
            chunk_file = await read_chunk(
                conn, run.reader, path=path, lo=cursor.last, end=cursor.end, limit=run.chunk_rows
            )
        if chunk_file.rows_read == 0:
            path.unlink(missing_ok=True)
            cursor.finish()
            async with self._pool.acquire() as conn:
                await cp.finish_cursor(conn, self.schema, run.backfill_id, cursor.end)
            return None
        short = chunk_file.rows_read < run.chunk_rows
        hi = cursor.end if short else chunk_file.last_key
        await self._dead_letter_unmappable(run, chunk_file)
        lo = cursor.last
        async with self._pool.acquire() as conn:
            await cp.record_prepared_chunk(
                conn,
                self.schema,
                backfill_id=run.backfill_id,
                seq=seq,
                lo=lo,
                hi=hi,
                rows=len(chunk_file.digest),
                digest=chunk_file.digest.encode(),
                zip_path=str(path),
                cursor_last=hi,
            )
        cursor.advance(hi)
        keys, hashes = chunk_file.digest.encode()
        return ChunkRecord(
            backfill_id=run.backfill_id,
            seq=seq,
            round=1,
            lo=lo,
            hi=hi,
            key_list=None,
            status=ChunkStatus.PREPARED,
            rows=len(chunk_file.digest),
            digest_keys=keys,
            digest_hashes=hashes,
            zip_path=str(path),
            job_id=None,
            attempts=0,
        )

    async def _chunk_task(self, run: _Run, chunk: ChunkRecord) -> None:
        try:
            await self._drive_chunk(run, chunk)
        finally:
            self._slots.release()

    async def _reread(self, run: _Run, chunk: ChunkRecord) -> tuple[ChunkDigest, Path]:
        """Read a planned chunk (retry round) or one whose zip was lost, and store the digest."""
        path = run.work_dir / f"{chunk.seq:06d}-r{chunk.round}-{chunk.attempts}.zip"
        keys = ChunkDigest.decode_keys(chunk.key_list) if chunk.key_list else None
        async with self._pool.acquire() as conn:
            chunk_file = await read_chunk(
                conn,
                run.reader,
                path=path,
                lo=chunk.lo,
                end=chunk.hi,
                limit=MAX_CHUNK_ROWS,
                keys=keys,
            )
        await self._dead_letter_unmappable(run, chunk_file)
        async with self._pool.acquire() as conn:
            if keys is not None:
                present = set(chunk_file.digest.keys)
                gone = [k for k in keys if k not in present]
                await cp.resolve_skipped(conn, self.schema, run.backfill_id, gone)
            await cp.mark_chunk_prepared(
                conn,
                self.schema,
                run.backfill_id,
                chunk.seq,
                rows=len(chunk_file.digest),
                digest=chunk_file.digest.encode(),
                zip_path=str(path),
            )
        return chunk_file.digest, path

    async def _drive_chunk(self, run: _Run, chunk: ChunkRecord) -> None:
        status = chunk.status
        digest = ChunkDigest.decode(chunk.digest_keys, chunk.digest_hashes)
        zip_path = Path(chunk.zip_path) if chunk.zip_path else None
        job_id = chunk.job_id
        attempts = chunk.attempts
        if status is ChunkStatus.PLANNED:
            if run.cancel.is_set():
                return
            digest, zip_path = await self._reread(run, chunk)
            status = ChunkStatus.PREPARED
        while status in (ChunkStatus.PREPARED, ChunkStatus.SUBMITTED):
            if status is ChunkStatus.PREPARED:
                if run.cancel.is_set():
                    return
                if not len(digest):  # every row was unmappable (dead-lettered): no job
                    async with self._pool.acquire() as conn:
                        await cp.mark_chunk_empty(conn, self.schema, run.backfill_id, chunk.seq)
                    status = ChunkStatus.LOADED
                    break
                if zip_path is None or not zip_path.exists():
                    digest, zip_path = await self._reread(run, chunk)
                job_id = await self._submit(run, chunk, zip_path)
                attempts += 1
                status = ChunkStatus.SUBMITTED
            assert job_id is not None
            try:
                results = await self._await_job(run, job_id)
            except BulkJobFailed as exc:
                metrics.BACKFILL_CHUNKS.labels(status="job_failed").inc()
                if attempts >= MAX_JOB_ATTEMPTS:
                    await self._give_up(run, chunk, digest, str(exc))
                    return
                log.warning(
                    "backfill %s chunk %d: job %s failed; resubmitting",
                    run.backfill_id,
                    chunk.seq,
                    job_id,
                )
                status = ChunkStatus.PREPARED
                continue
            await self._load(run, chunk, digest, results)
            status = ChunkStatus.LOADED
        if status is ChunkStatus.LOADED:
            async with self._pool.acquire() as conn:
                resynced = await resync_chunk(conn, run.reader, digest, run.publisher)
                await cp.mark_chunk_done(
                    conn,
                    self.schema,
                    run.backfill_id,
                    chunk.seq,
                    resynced=resynced,
                    round_=chunk.round,
                )
            metrics.BACKFILL_CHUNKS.labels(status="done").inc()
            if zip_path is not None:
                zip_path.unlink(missing_ok=True)

    async def _submit(self, run: _Run, chunk: ChunkRecord, zip_path: Path) -> str:
        """Create the job, waiting for credits when the daily budget is spent; record its id.

        Only the create-and-record step is shielded from cancellation (a job created must have
        its id recorded); waiting for credits is not.
        """
        waiting = False
        while True:
            if self.crm.credits.would_exceed(BULK_JOB_CREDITS + 1):
                if not waiting:
                    log.warning("backfill %s: credit budget spent; waiting", run.backfill_id)
                    async with self._pool.acquire() as conn:
                        await cp.set_waiting(conn, self.schema, run.backfill_id, "credit budget")
                    waiting = True
                await asyncio.sleep(min(self.settings.backfill.poll_interval_s, 60.0))
                continue
            task = asyncio.ensure_future(self._create_job(run, chunk, zip_path))
            self._shielded.add(task)
            task.add_done_callback(self._shielded.discard)
            try:
                return await asyncio.shield(task)
            except CreditBudgetExhausted as exc:
                async with self._pool.acquire() as conn:
                    await cp.set_waiting(conn, self.schema, run.backfill_id, "credit budget")
                waiting = True
                await asyncio.sleep(min(max(exc.retry_after, 1.0), 60.0))
            except StreamsyncError as exc:
                if not exc.retryable:
                    raise
                log.warning("backfill %s: submit failed (%s); retrying", run.backfill_id, exc)
                await asyncio.sleep(RETRY_DELAY_S)

    async def _create_job(self, run: _Run, chunk: ChunkRecord, zip_path: Path) -> str:
        job_id = await self.crm.bulk_upsert(
            run.table.module,
            zip_path,
            find_by=run.table.external_id.field,
            columns=csv_columns(run.table),
            formats=bulk_formats(run.table),
            callback_url=self.settings.backfill.callback_url,
        )
        async with self._pool.acquire() as conn:
            await cp.mark_chunk_submitted(conn, self.schema, run.backfill_id, chunk.seq, job_id)
        metrics.BACKFILL_CREDITS.inc(BULK_JOB_CREDITS)
        return job_id

    async def _await_job(self, run: _Run, job_id: str) -> list[Any]:
        event = self._job_events.setdefault(job_id, asyncio.Event())
        metrics.BACKFILL_JOBS_IN_FLIGHT.inc()
        try:
            while True:
                try:
                    job = await self.crm.wait_bulk_job(
                        job_id,
                        poll_interval_s=self.settings.backfill.poll_interval_s,
                        done_event=event,
                        max_interval_s=max(self.settings.backfill.poll_interval_s, 5.0),
                    )
                    return list(await self.crm.bulk_results(job, run.work_dir / "results"))
                except BulkJobFailed:
                    raise
                except StreamsyncError as exc:
                    if not exc.retryable:
                        raise
                    log.warning("backfill job %s: %s; polling again", job_id, exc)
                    await asyncio.sleep(RETRY_DELAY_S)
        finally:
            metrics.BACKFILL_JOBS_IN_FLIGHT.dec()
            self._job_events.pop(job_id, None)

    async def _load(
        self, run: _Run, chunk: ChunkRecord, digest: ChunkDigest, results: list[Any]
    ) -> None:
        tally = tally_results(digest, results)
        final = [o for o in tally.skipped if not o.retryable]
        last_round = chunk.round >= self.settings.backfill.max_rounds
        if last_round:
            final = list(tally.skipped)
        by_key = {o.key: o for o in final}
        await self._dead_letter_keys(
            run,
            list(by_key),
            None,
            None,
            reasons={k: (o.code, o.message) for k, o in by_key.items()},
        )
        skipped_delta = len(tally.skipped) if chunk.round == 1 else len(tally.skipped) - len(digest)
        async with self._pool.acquire() as conn:
            if chunk.round > 1:
                skipped_keys = {o.key for o in tally.skipped}
                loaded = [k for k in digest.keys if k not in skipped_keys]
                await cp.resolve_skipped(conn, self.schema, run.backfill_id, loaded)
            outcomes = [
                o if not last_round else type(o)(o.index, o.key, o.code, o.message, False)
                for o in tally.skipped
            ]
            await cp.mark_chunk_loaded(
                conn,
                self.schema,
                run.backfill_id,
                chunk.seq,
                round_=chunk.round,
                added=tally.added,
                updated=tally.updated,
                skipped=outcomes,
                skipped_delta=skipped_delta,
                dead_lettered=len(by_key),
            )
        metrics.BACKFILL_ROWS.labels(outcome="added").inc(tally.added)
        metrics.BACKFILL_ROWS.labels(outcome="updated").inc(tally.updated)
        metrics.BACKFILL_ROWS.labels(outcome="skipped").inc(len(tally.skipped))

    async def _give_up(
        self, run: _Run, chunk: ChunkRecord, digest: ChunkDigest, error: str
    ) -> None:
        await self._dead_letter_keys(run, list(digest.keys), "BULK_JOB_FAILED", error)
        async with self._pool.acquire() as conn:
            await cp.mark_chunk_failed(
                conn,
                self.schema,
                run.backfill_id,
                chunk.seq,
                error=error,
                dead_lettered=len(digest),
            )

    async def _dead_letter_keys(
        self,
        run: _Run,
        keys: list[Any],
        code: str | None,
        message: str | None,
        *,
        reasons: dict[Any, tuple[str, str]] | None = None,
    ) -> None:
        """Dead-letter rows by key, each with its current row (replayable through the sink)."""
        if not keys:
            return
        async with self._pool.acquire() as conn:
            lsn = await stable_lsn(conn)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = await run.reader.fetch_keys(conn, keys)
        now_ms = int(self._clock() * 1000)
        for i, (key, after) in enumerate(rows):
            reason_code, text = (reasons or {}).get(key, (code or "SKIPPED", message or ""))
            event = ChangeEvent(
                op="r",
                table=run.table.source,
                key=[key],
                after=after,
                pos=Position(lsn - 1, i),
                ts_ms=now_ms,
                source="resync",
            )
            await publish_dead_letter(
                self._producer,
                self.prefix,
                event_or_raw=event,
                reason_code=reason_code,
                message=text,
                origin="backfill",
                details={"backfill_id": run.backfill_id},
            )
        metrics.dead_lettered("backfill_skipped", len(rows))

    async def _dead_letter_unmappable(self, run: _Run, chunk_file: ChunkFile) -> None:
        if not chunk_file.unmappable:
            return
        async with self._pool.acquire() as conn:
            lsn = await stable_lsn(conn)
        for i, (key, after, exc) in enumerate(chunk_file.unmappable):
            event = ChangeEvent(
                op="r",
                table=run.table.source,
                key=[key],
                after=after,
                pos=Position(lsn - 1, i),
                ts_ms=int(self._clock() * 1000),
                source="resync",
            )
            await publish_dead_letter(
                self._producer,
                self.prefix,
                event_or_raw=event,
                reason_code=exc.code,
                message=exc.message,
                details=exc.details,
                origin="backfill",
            )
        metrics.dead_lettered("UNMAPPABLE_VALUE", len(chunk_file.unmappable))
