from __future__ import annotations

import aiohttp

from streamsync.ops import metrics
from streamsync.ops.health import HealthRegistry
from streamsync.ops.server import LOOP_BEAT, OpsServer
from streamsync.settings import OpsSettings


async def test_endpoints_on_loopback() -> None:
    health = HealthRegistry()
    health.require("partitions_assigned")
    metrics.event_published("public.orders", "c")
    async with OpsServer(OpsSettings(host="127.0.0.1", port=0), health=health) as server:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["checks"][LOOP_BEAT]["ok"] is True
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["partitions_assigned"]["ok"] is False
            health.ok("partitions_assigned")
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
    assert 'streamsync_capture_events_published_total{op="c",table="public.orders"}' in text
    assert 'streamsync_health_event{event="partitions_assigned"} 1.0' in text
    assert "streamsync_sink_commit_to_crm_seconds_bucket" in text
    assert LOOP_BEAT not in health.liveness().checks  # closed: heartbeat forgotten


async def test_liveness_fails_on_stale_heartbeat() -> None:
    now = [0.0]
    health = HealthRegistry(lambda: now[0])
    async with OpsServer(OpsSettings(host="127.0.0.1", port=0), health=health) as server:
        health.beat("sink.consume", max_age_s=10)
        now[0] = 11.0
        url = f"http://127.0.0.1:{server.port}/healthz"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 503
            assert (await resp.json())["checks"]["sink.consume"]["ok"] is False


def test_lsn_to_int() -> None:
    assert metrics.lsn_to_int("0/0") == 0
    assert metrics.lsn_to_int("16/B374D848") == (0x16 << 32) | 0xB374D848


async def test_bulk_callback_route_hands_the_job_id_to_registered_functions() -> None:
    from streamsync.ops.server import BULK_CALLBACK_PATH, register_bulk_callback

    seen: list[str] = []
    unregister = register_bulk_callback(seen.append)
    try:
        async with OpsServer(OpsSettings(host="127.0.0.1", port=0)) as server:
            url = f"http://127.0.0.1:{server.port}{BULK_CALLBACK_PATH}"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json={"id": "111", "status": "COMPLETED"}) as resp:
                    assert resp.status == 200
                async with http.post(url, json={"data": [{"details": {"id": 222}}]}) as resp:
                    assert resp.status == 200
                async with http.post(url + "?job_id=333") as resp:
                    assert resp.status == 200
                async with http.post(url, data=b"not json") as resp:
                    assert resp.status == 400
                async with http.post(url, json={"status": "COMPLETED"}) as resp:
                    assert resp.status == 400
                unregister()
                async with http.post(url, json={"id": "444"}) as resp:
                    assert resp.status == 200
    finally:
        unregister()
    assert seen == ["111", "222", "333"]
