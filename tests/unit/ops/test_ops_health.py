from __future__ import annotations

from streamsync.ops.health import DEFAULT_MAX_AGE_S, HealthRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_readiness_needs_every_required_event() -> None:
    health = HealthRegistry(Clock())
    assert health.readiness().ok  # nothing required yet
    health.require("replication_connected", "partitions_assigned")
    assert not health.readiness().ok
    health.ok("replication_connected")
    assert not health.readiness().ok
    health.ok("partitions_assigned")
    status = health.readiness()
    assert status.ok
    assert status.checks["partitions_assigned"] == {"ok": True, "required": True}


def test_failed_event_carries_detail_and_unrequired_events_do_not_gate() -> None:
    health = HealthRegistry(Clock())
    health.require("crm_reachable")
    health.ok("crm_reachable")
    health.fail("optional_thing", "down")
    status = health.readiness()
    assert status.ok
    assert status.checks["optional_thing"] == {"ok": False, "required": False, "detail": "down"}
    health.fail("crm_reachable", "CRM_UNAVAILABLE")
    assert not health.readiness().ok
    health.release("crm_reachable")
    assert health.readiness().ok


def test_liveness_is_heartbeat_freshness() -> None:
    clock = Clock()
    health = HealthRegistry(clock)
    assert health.liveness().ok
    health.beat("sink.consume", max_age_s=5)
    health.beat("capture.read")
    clock.now += 5
    assert health.liveness().ok
    clock.now += 0.5
    status = health.liveness()
    assert not status.ok
    assert status.checks["sink.consume"]["ok"] is False
    assert status.checks["capture.read"]["max_age_s"] == DEFAULT_MAX_AGE_S
    health.beat("sink.consume")  # keeps its max age of 5
    assert health.liveness().ok
    clock.now += 6
    assert not health.liveness().ok
    health.forget_beat("sink.consume")
    assert health.liveness().ok
