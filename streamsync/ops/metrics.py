"""Every Prometheus metric of streamsync, declared once, in one section per role.

No other module creates a metric: roles import the objects below (or the typed helpers) and
update them. Names carry the ``streamsync_`` prefix and their unit as a suffix (``_seconds``,
``_bytes``, ``_total`` for counters). Labels are bounded: tables, ops, reasons, Zoho API names
and partitions (at most ``kafka.partitions``), never keys, record ids or error messages.

To add a metric, append it to its role's section with a one-line comment; keep the label set
small and closed. All metrics live in :data:`REGISTRY`, which ``ops/server.py`` serves.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "REGISTRY", "lsn_to_int", "render"]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_NS = "streamsync"
# Batch sizes: Zoho's Upsert limit is 100 records; Bulk Write chunks go up to 25,000.
_RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 75, 100, 500, 1_000, 5_000, 25_000)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)


def render() -> bytes:
    """The exposition text of every metric (what ``/metrics`` serves)."""
    return generate_latest(REGISTRY)


def lsn_to_int(lsn: str) -> int:
    """``'16/B374D848'`` -> its 64-bit integer, for gauges (which cannot hold strings)."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


# ------------------------------------------------------------------------------- ops ----
HEALTH_EVENT = Gauge(
    f"{_NS}_health_event",
    "1 when a named health event is ok, 0 otherwise",
    ["event"],
    registry=REGISTRY,
)
ROLE_UP = Gauge(f"{_NS}_role_up", "1 while a role's run() is active", ["role"], registry=REGISTRY)

# --------------------------------------------------------------------------- capture ----
CAPTURE_EVENTS_PUBLISHED = Counter(
    f"{_NS}_capture_events_published_total",
    "Change events acknowledged by Kafka",
    ["table", "op"],
    registry=REGISTRY,
)
CAPTURE_SLOT_LAG = Gauge(
    f"{_NS}_capture_slot_lag_bytes",
    "WAL bytes between the server's current LSN and the slot's confirmed flush LSN",
    registry=REGISTRY,
)
CAPTURE_FLUSHED_LSN = Gauge(
    f"{_NS}_capture_flushed_lsn",
    "Last LSN reported as flushed to the slot (as a 64-bit integer)",
    registry=REGISTRY,
)
CAPTURE_HEARTBEATS = Counter(
    f"{_NS}_capture_heartbeats_total",
    "Heartbeat messages emitted (pg_logical_emit_message)",
    registry=REGISTRY,
)
CAPTURE_TRUNCATES = Counter(
    f"{_NS}_capture_truncates_total",
    "TRUNCATEs seen on captured tables",
    ["table"],
    registry=REGISTRY,
)
CAPTURE_INFLIGHT_EVENTS = Gauge(
    f"{_NS}_capture_inflight_events",
    "Events sent to Kafka and not yet acknowledged",
    registry=REGISTRY,
)

# ------------------------------------------------------------------------------ sink ----
SINK_BATCH_RECORDS = Histogram(
    f"{_NS}_sink_batch_records",
    "Records per flushed batch (after coalescing)",
    buckets=_RECORD_BUCKETS,
    registry=REGISTRY,
)
SINK_FLUSHES = Counter(
    f"{_NS}_sink_flushes_total",
    "Window flushes by reason (full, deadline, revoke, shutdown, drain)",
    ["reason"],
    registry=REGISTRY,
)
SINK_CRM_CALLS = Counter(
    f"{_NS}_sink_crm_calls_total",
    "CRM calls made by the sink, by API (upsert, delete, bulk) and outcome",
    ["api", "outcome"],
    registry=REGISTRY,
)
SINK_CREDITS_USED = Counter(
    f"{_NS}_sink_credits_used_total",
    "Zoho credits spent by the sink, by kind (upsert, bulk)",
    ["kind"],
    registry=REGISTRY,
)
SINK_CONSUMER_LAG = Gauge(
    f"{_NS}_sink_consumer_lag_records",
    "Records between the committed offset and the high watermark, per assigned partition",
    ["partition"],
    registry=REGISTRY,
)
SINK_COMMIT_TO_CRM = Histogram(
    f"{_NS}_sink_commit_to_crm_seconds",
    "Time from the Postgres commit (ts_ms) to the final Zoho outcome",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SINK_DLQ_EVENTS = Counter(
    f"{_NS}_sink_dlq_events_total",
    "Events dead-lettered, by reason (a Zoho code or UNDECODABLE)",
    ["reason"],
    registry=REGISTRY,
)
SINK_RECORDS_SYNCED = Counter(
    f"{_NS}_sink_records_synced_total",
    "Records whose CRM outcome is success, by op",
    ["op"],
    registry=REGISTRY,
)

# -------------------------------------------------------------------------- backfill ----
BACKFILL_CHUNKS = Counter(
    f"{_NS}_backfill_chunks_total",
    "Backfill chunks finished, by status",
    ["status"],
    registry=REGISTRY,
)
BACKFILL_ROWS = Counter(
    f"{_NS}_backfill_rows_total",
    "Backfill rows by outcome (added, updated, skipped, failed)",
    ["outcome"],
    registry=REGISTRY,
)
BACKFILL_JOBS_IN_FLIGHT = Gauge(
    f"{_NS}_backfill_jobs_in_flight",
    "Bulk Write jobs submitted and not finished",
    registry=REGISTRY,
)
BACKFILL_CREDITS = Counter(
    f"{_NS}_backfill_credits_total",
    "Zoho credits spent by backfill jobs",
    registry=REGISTRY,
)

# ------------------------------------------------------------------------------ zoho ----
ZOHO_REQUESTS = Counter(
    f"{_NS}_zoho_requests_total",
    "HTTP requests to Zoho by endpoint (upsert, delete, search, bulk_upload, bulk_job, token) "
    "and status (HTTP status or 'error')",
    ["endpoint", "status"],
    registry=REGISTRY,
)
ZOHO_RETRIES = Counter(
    f"{_NS}_zoho_retries_total",
    "Zoho requests retried, by reason (429, 5xx, timeout, token)",
    ["reason"],
    registry=REGISTRY,
)
ZOHO_TOKEN_REFRESHES = Counter(
    f"{_NS}_zoho_token_refreshes_total",
    "OAuth access-token refreshes",
    registry=REGISTRY,
)
ZOHO_CREDITS_REMAINING = Gauge(
    f"{_NS}_zoho_credits_remaining",
    "Credits left in the configured daily budget (rolling 24 h)",
    registry=REGISTRY,
)


# --------------------------------------------------------------------- typed helpers ----
def set_health_event(name: str, ok: bool) -> None:
    HEALTH_EVENT.labels(event=name).set(1 if ok else 0)


def event_published(table: str, op: str) -> None:
    CAPTURE_EVENTS_PUBLISHED.labels(table=table, op=op).inc()


def flushed_lsn(lsn: str) -> None:
    CAPTURE_FLUSHED_LSN.set(lsn_to_int(lsn))


def batch_flushed(records: int, reason: str) -> None:
    SINK_BATCH_RECORDS.observe(records)
    SINK_FLUSHES.labels(reason=reason).inc()


def crm_call(api: str, outcome: str, credits: int = 0) -> None:
    SINK_CRM_CALLS.labels(api=api, outcome=outcome).inc()
    if credits:
        SINK_CREDITS_USED.labels(kind="bulk" if api == "bulk" else "upsert").inc(credits)


def dead_lettered(reason: str, count: int = 1) -> None:
    SINK_DLQ_EVENTS.labels(reason=reason).inc(count)


def records_synced(op: str, count: int = 1) -> None:
    SINK_RECORDS_SYNCED.labels(op=op).inc(count)


def consumer_lag(partition: int, lag: int) -> None:
    SINK_CONSUMER_LAG.labels(partition=str(partition)).set(lag)


def forget_partition(partition: int) -> None:
    """Drop a revoked partition's lag series (keeps the label set to assigned partitions)."""
    try:
        SINK_CONSUMER_LAG.remove(str(partition))
    except KeyError:
        pass


def zoho_request(endpoint: str, status: int | str) -> None:
    ZOHO_REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
