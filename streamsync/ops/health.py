"""Named health events and loop heartbeats: what ``/readyz`` and ``/healthz`` report.

- **Readiness** = every *required* event is ok. A role declares what it needs at start
  (``HEALTH.require("replication_connected")``) and reports it as it changes
  (``HEALTH.ok(...)`` / ``HEALTH.fail(..., detail)``). Events that are reported but not
  required are shown and do not gate readiness.
- **Liveness** = every heartbeat was touched within its ``max_age_s``. Loops call
  ``HEALTH.beat("sink.consume")`` once per turn (idle polling counts as a turn). Liveness never
  depends on Kafka, Postgres or Zoho being reachable: an outage must not restart every pod.

Pure bookkeeping, no I/O; the clock is injectable. ``HEALTH`` is the process-wide registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamsync.ops import metrics

__all__ = ["DEFAULT_MAX_AGE_S", "HEALTH", "HealthRegistry", "Status"]

DEFAULT_MAX_AGE_S = 60.0


@dataclass
class _Event:
    ok: bool = False
    detail: str = ""
    changed_at: float = 0.0


@dataclass
class _Beat:
    max_age_s: float
    last: float


@dataclass(frozen=True)
class Status:
    ok: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


class HealthRegistry:
    """Named events (readiness) and heartbeats (liveness)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: dict[str, _Event] = {}
        self._required: set[str] = set()
        self._beats: dict[str, _Beat] = {}

    # ---- events -----------------------------------------------------------------------
    def require(self, *names: str) -> None:
        """Make readiness wait for these events (they start as not ok unless reported)."""
        for name in names:
            self._required.add(name)
            self._events.setdefault(name, _Event(changed_at=self._clock()))

    def release(self, *names: str) -> None:
        """Stop requiring these events (a role that has stopped)."""
        for name in names:
            self._required.discard(name)

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        event = self._events.get(name)
        if event is None or event.ok != ok or event.detail != detail:
            self._events[name] = _Event(ok=ok, detail=detail, changed_at=self._clock())
        metrics.set_health_event(name, ok)

    def ok(self, name: str) -> None:
        self.set(name, True)

    def fail(self, name: str, detail: str = "") -> None:
        self.set(name, False, detail)

    def is_ok(self, name: str) -> bool:
        event = self._events.get(name)
        return event is not None and event.ok

    # ---- heartbeats -------------------------------------------------------------------
    def beat(self, name: str, max_age_s: float | None = None) -> None:
        """Record that loop ``name`` turned now; ``max_age_s`` sets (or keeps) its limit."""
        beat = self._beats.get(name)
        if beat is None:
            self._beats[name] = _Beat(max_age_s or DEFAULT_MAX_AGE_S, self._clock())
        else:
            beat.last = self._clock()
            if max_age_s is not None:
                beat.max_age_s = max_age_s

    def forget_beat(self, name: str) -> None:
        """A loop that ended on purpose no longer counts for liveness."""
        self._beats.pop(name, None)

    # ---- verdicts ---------------------------------------------------------------------
    def readiness(self) -> Status:
        checks: dict[str, dict[str, Any]] = {}
        for name, event in sorted(self._events.items()):
            check: dict[str, Any] = {"ok": event.ok, "required": name in self._required}
            if event.detail:
                check["detail"] = event.detail
            checks[name] = check
        ready = all(self.is_ok(name) for name in self._required)
        return Status(ok=ready, checks=checks)

    def liveness(self) -> Status:
        now = self._clock()
        checks: dict[str, dict[str, Any]] = {}
        alive = True
        for name, beat in sorted(self._beats.items()):
            age = now - beat.last
            fresh = age <= beat.max_age_s
            alive = alive and fresh
            checks[name] = {"ok": fresh, "age_s": round(age, 3), "max_age_s": beat.max_age_s}
        return Status(ok=alive, checks=checks)

    def reset(self) -> None:
        """Forget everything (tests)."""
        self._events.clear()
        self._required.clear()
        self._beats.clear()


HEALTH = HealthRegistry()
