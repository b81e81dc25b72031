"""`streamsync reconcile`: the I/O around the pure :mod:`streamsync.reconcile` comparison.

Memory. Zoho cannot list a module sorted by the external id, so the two sides cannot be merged
in key-ordered windows. Instead the table side holds only ``{external id: digest}`` (a 16-byte
BLAKE2b of the *normalised* mapped fields, the normalisation ``reconcile.normalise`` applies),
read in keyset pages of ``page_rows``. The CRM is then listed once (``iter_records``): a record
whose digest matches is marked seen; one whose digest differs is kept as a *suspect*. Only the
suspects' rows are read again and handed, with their CRM records, to
:func:`streamsync.reconcile.diff_records`, which names the differing fields. Memory is
O(rows × (key + digest)) for the table plus O(differences) — roughly 100 bytes a row, not the
whole mapped row.

Rows are mapped exactly as the sink and the backfill map them: asyncpg values → canonical
values (``backfill.rows.RowConverter``, through ``backfill.read.TableReader`` and the backfill's
session settings) → ``zoho.records.map_record``.

Repair publishes resync events to the table's ordered change topic, built like the backfill's
resync (``backfill.resync.stable_lsn`` + ``resync_events``): op ``r`` with the current row for
missing and different keys, op ``d`` for extra ones (and for rows deleted meanwhile), at a
position after every commit the re-read could see, so the sink applies them in per-key order
and any later change still wins.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.errors import MappingError, PublishError
from streamsync.events import ChangeEvent
from streamsync.reconcile import Difference, ReconcileReport, diff_records, normalise
from streamsync.settings import Settings, TableSettings

__all__ = [
    "ReconcileRun",
    "compare_fields",
    "compare_table",
    "connect",
    "digest",
    "publish_repair",
    "reconcile",
    "reconcile_table",
]

PAGE_ROWS = 2_000
EXAMPLES = 20
_SEEN = b""  # replaces a digest once its CRM record was read (shared object: no allocation)


def compare_fields(table: TableSettings) -> list[str]:
    """The Zoho fields the mapping writes (the external id excluded)."""
    out: list[str] = []
    for column, mapping in table.fields.items():
        if column != table.external_id.column and mapping.field not in out:
            out.append(mapping.field)
    return out


def digest(record: dict[str, Any], fields: Sequence[str]) -> bytes:
    """16 bytes standing for the normalised values of ``fields`` (equal iff they compare equal
    under ``reconcile.normalise``; absent and empty count as null on both sides)."""
    h = hashlib.blake2b(digest_size=16)
    for name in fields:
        value = normalise(record.get(name))
        h.update(f"{name}\x1f{type(value).__name__}\x1f{value!s}\x1e".encode())
    return h.digest()


@dataclass(slots=True)
class ReconcileRun:
    """The outcome for one table: the pure report plus what the shell adds."""

    table: str
    report: ReconcileReport
    unmappable: list[str] = field(default_factory=list)  # keys whose row cannot be mapped
    crm_without_id: int = 0  # CRM records without an external id (ignored)
    published: dict[str, int] | None = None  # {"r": n, "d": m} after --repair

    @property
    def in_sync(self) -> bool:
        return self.report.in_sync

    def to_json(self, examples: int = EXAMPLES) -> dict[str, Any]:
        r = self.report
        out: dict[str, Any] = {
            "table": self.table,
            "in_sync": r.in_sync,
            **r.summary(),
            "unmappable": len(self.unmappable),
            "crm_without_external_id": self.crm_without_id,
            "examples": {
                "missing": r.missing[:examples],
                "extra": r.extra[:examples],
                "duplicates": r.duplicates[:examples],
                "different": [_difference_json(d) for d in r.different[:examples]],
            },
        }
        if self.published is not None:
            out["published"] = self.published
        return out


def _plain(value: Any) -> Any:
    """A JSON value for a mapped one (the mapping yields Decimal for numbers, dates for dates)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _difference_json(d: Difference) -> dict[str, Any]:
    return {
        "key": d.key,
        "fields": {
            k: {"expected": _plain(e), "actual": _plain(a)} for k, (e, a) in d.fields.items()
        },
    }


def _parse_key(reader: Any, text: str) -> Any:
    """An external id (text) → the canonical key value of the primary-key column."""
    if reader.shape.pk.type_name in ("int2", "int4", "int8"):
        try:
            return int(text)
        except ValueError:
            return text  # not a key of this table: the sink still deletes by external id
    return text


async def connect(dsn: str) -> Any:
    """An asyncpg connection with the session settings the backfill reads with."""
    import asyncpg

    from streamsync.backfill.read import session_settings

    settings = session_settings()
    settings["application_name"] = "streamsync-reconcile"
    return await asyncpg.connect(dsn, server_settings=settings, timeout=10)


async def _table_digests(
    conn: Any, reader: Any, table: TableSettings, fields: list[str], page_rows: int
) -> tuple[dict[str, bytes], list[str]]:
    from streamsync.backfill.read import key_text

    ext_field = table.external_id.field
    digests: dict[str, bytes] = {}
    unmappable: list[str] = []
    _, end = await reader.extent(conn)
    if end is None:
        return digests, unmappable
    lo: Any = None
    while True:
        sql, args = reader.cursor_args(lo, end, page_rows)
        records = await conn.fetch(sql, *args)
        for record in records:
            after = reader.convert(record)
            try:
                mapped = _map(table, after)
            except MappingError:
                unmappable.append(key_text(reader.key_of(record)))
                continue
            digests[str(mapped[ext_field])] = digest(mapped, fields)
        if len(records) < page_rows:
            return digests, unmappable
        lo = reader.key_of(records[-1])


def _map(table: TableSettings, after: dict[str, Any]) -> dict[str, Any]:
    from streamsync.zoho.records import map_record

    return map_record(table, after)


async def compare_table(
    table: TableSettings, *, conn: Any, crm: Any, page_rows: int = PAGE_ROWS
) -> tuple[ReconcileRun, Any]:
    """Compare one table with its CRM module. Returns the run and the table reader (for repair).

    Args:
        conn: an asyncpg connection opened with the backfill's session settings
            (:func:`connect`); crm: a started ``ZohoClient``.
    """
    from streamsync.backfill.read import TableReader, describe_table

    reader = TableReader(table, await describe_table(conn, table.source))
    fields = compare_fields(table)
    ext_field = table.external_id.field
    digests, unmappable = await _table_digests(conn, reader, table, fields, page_rows)
    table_rows = len(digests)

    suspects: dict[str, dict[str, Any]] = {}
    extra: list[str] = []
    extra_seen: set[str] = set()
    duplicates: list[str] = []
    crm_records = 0
    without_id = 0
    async for record in crm.iter_records(table.module, [ext_field, *fields]):
        crm_records += 1
        raw = record.get(ext_field)
        if raw is None or raw == "":
            without_id += 1
            continue
        ext = str(raw)
        want = digests.get(ext)
        if want is None:
            if ext in extra_seen:
                duplicates.append(ext)
            else:
                extra_seen.add(ext)
                extra.append(ext)
        elif want is _SEEN or ext in suspects:
            duplicates.append(ext)
        else:
            if want != digest(record, fields):
                suspects[ext] = record
            digests[ext] = _SEEN
    missing = sorted(k for k, v in digests.items() if v is not _SEEN and k not in suspects)
    del digests

    # Only the suspects' rows are read again; diff_records names the differing fields.
    expected: dict[str, dict[str, Any]] = {}
    if suspects:
        keys = [_parse_key(reader, k) for k in suspects]
        for _, after in await reader.fetch_keys(conn, keys):
            try:
                mapped = _map(table, after)
            except MappingError:
                continue
            expected[str(mapped[ext_field])] = mapped
    detail = diff_records(expected, ((k, suspects[k]) for k in expected), fields)
    gone = sorted(k for k in suspects if k not in expected)  # deleted since the first read
    report = ReconcileReport(
        table_rows=table_rows,
        crm_records=crm_records,
        missing=missing,
        extra=sorted(extra + gone),
        duplicates=sorted(duplicates),
        different=sorted(detail.different, key=lambda d: d.key),
    )
    run = ReconcileRun(table.source, report, unmappable, without_id)
    return run, reader


async def publish_repair(
    run: ReconcileRun,
    reader: Any,
    *,
    conn: Any,
    producer: Any,
    topic: str,
    clock: Any = time.time,
) -> dict[str, int]:
    """Publish resync events for the differences of ``run`` to ``topic``; returns counts per op.

    Missing and different keys: op ``r`` with the row as it is now (op ``d`` if it is gone);
    extra keys: op ``d``. Positions follow ``backfill.resync``: every commit below the
    position is visible to the re-read, so a change committed later wins in per-key order.
    """
    from streamsync.backfill.chunks import ResyncAction
    from streamsync.backfill.resync import ChangePublisher, resync_events, stable_lsn

    report = run.report
    upsert_ids = [*report.missing, *(d.key for d in report.different)]
    lsn = await stable_lsn(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        current = await reader.fetch_keys(conn, [_parse_key(reader, k) for k in upsert_ids])
    actions: list[ResyncAction] = []
    found: set[str] = set()
    for key, after in current:
        found.add(str(key))
        actions.append(ResyncAction("r", key, after))
    for ext in upsert_ids:
        if ext not in found:
            actions.append(ResyncAction("d", _parse_key(reader, ext), None))
    for ext in report.extra:
        actions.append(ResyncAction("d", _parse_key(reader, ext), None))
    events: list[ChangeEvent] = resync_events(run.table, actions, lsn, int(clock() * 1000))
    if events:
        await ChangePublisher(producer, topic).publish(events)
    counts = {
        "r": sum(1 for e in events if e.op == "r"),
        "d": sum(1 for e in events if e.op == "d"),
    }
    run.published = counts
    return counts


async def reconcile(
    settings: Settings, sources: Sequence[str], *, repair: bool = False
) -> list[ReconcileRun]:
    """Compare each of ``sources`` (mapped tables) with its module; with ``repair``, publish
    resync events for the differences to the table's change topic.

    Raises:
        ConfigError: an unknown table, or one without a single-column primary key.
        CrmError / PublishError / asyncpg errors: the CRM, Kafka or Postgres failed.
    """
    from aiokafka.errors import KafkaError

    from streamsync.kafka.producer import create_producer
    from streamsync.kafka.topics import change_topic
    from streamsync.zoho.client import ZohoClient

    tables = [settings.table(s) for s in sources]
    runs: list[ReconcileRun] = []
    conn = await connect(settings.postgres.dsn)
    try:
        async with ZohoClient(settings.zoho) as crm:
            for table in tables:
                run, reader = await compare_table(table, conn=conn, crm=crm)
                if repair and not run.in_sync:
                    producer = create_producer(settings.kafka)
                    try:
                        await producer.start()
                    except KafkaError as exc:
                        raise PublishError(f"cannot reach Kafka: {type(exc).__name__}") from exc
                    try:
                        topic = change_topic(settings.kafka.topic_prefix, table.source)
                        await publish_repair(run, reader, conn=conn, producer=producer, topic=topic)
                    finally:
                        await producer.stop()
                runs.append(run)
    finally:
        await conn.close()
    return runs


async def reconcile_table(settings: Settings, table: TableSettings) -> ReconcileReport:
    """Compare one mapped table with its module (no repair): the pure report."""
    (run,) = await reconcile(settings, [table.source])
    return run.report
