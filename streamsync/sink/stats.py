"""What a sink run did, for the demo, benchmarks, tests and ``sink --drain``'s report."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DrainReport", "SinkStats"]

# commit-to-CRM latencies kept for the demo and benchmarks: the newest, at most this many
_LATENCY_KEEP = 200_000


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

    def flushed(self, reason: str) -> None:
        self.flush_reasons[reason] = self.flush_reasons.get(reason, 0) + 1

    def latency(self, ms: float) -> None:
        if len(self.latencies_ms) >= _LATENCY_KEEP:
            del self.latencies_ms[: _LATENCY_KEEP // 2]
        self.latencies_ms.append(ms)


@dataclass(slots=True)
class DrainReport:
    """``Sink.drain()``'s answer: what one interval run synced and committed."""

    events: int = 0
    records: int = 0
    bulk_jobs: int = 0
    upsert_calls: int = 0
    dead_letters: int = 0
    committed: dict[str, int] = field(default_factory=dict)
