"""The ops HTTP server: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``, and
``POST /zoho/bulk-callback`` (Zoho's Bulk Write job callback, for ``backfill.callback_url``).

One small aiohttp app per process, on ``ops.host:ops.port`` (port 0 picks a free port; read
it from :attr:`OpsServer.port`). It also runs its own heartbeat ``ops.loop`` once a second, so
``/healthz`` fails when the event loop itself is blocked. Use as an async context manager::

    async with OpsServer(settings.ops) as server:
        print(server.port)

The callback route hands the job id (Zoho's JSON body ``{"id": ...}``, or ``?job_id=``) to
every function registered with :func:`register_bulk_callback` (the backfill worker registers
``job_callback`` while it runs). A callback only cuts the worker's polling wait short: the
worker then asks Zoho for the job's status itself, so a forged callback cannot finish a job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from streamsync.ops import metrics
from streamsync.ops.health import HEALTH, HealthRegistry, Status
from streamsync.settings import OpsSettings

__all__ = ["BULK_CALLBACK_PATH", "LOOP_BEAT", "OpsServer", "register_bulk_callback"]

BULK_CALLBACK_PATH = "/zoho/bulk-callback"
_bulk_callbacks: list[Callable[[str], None]] = []


def register_bulk_callback(fn: Callable[[str], None]) -> Callable[[], None]:
    """Call ``fn(job_id)`` for every Bulk Write callback received; returns the unregister."""
    _bulk_callbacks.append(fn)

    def unregister() -> None:
        with contextlib.suppress(ValueError):
            _bulk_callbacks.remove(fn)

    return unregister


def _job_id_of(body: Any) -> str | None:
    """The job id in a callback body: ``{"id"}``, ``{"details": {"id"}}`` or ``{"data": [...]}``."""
    if isinstance(body, dict):
        for candidate in (body.get("id"), (body.get("details") or {}).get("id")):
            if isinstance(candidate, str | int) and not isinstance(candidate, bool):
                return str(candidate)
        data = body.get("data")
        if isinstance(data, list) and data:
            return _job_id_of(data[0])
    return None


LOOP_BEAT = "ops.loop"
_LOOP_BEAT_INTERVAL_S = 1.0
_LOOP_BEAT_MAX_AGE_S = 30.0


def _status_response(status: Status) -> web.Response:
    body = orjson.dumps({"ok": status.ok, "checks": status.checks})
    return web.Response(
        body=body, status=200 if status.ok else 503, content_type="application/json"
    )


class OpsServer:
    """Serves health and metrics until closed."""

    def __init__(self, settings: OpsSettings, *, health: HealthRegistry = HEALTH) -> None:
        self._settings = settings
        self._health = health
        self._runner: web.AppRunner | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self.port: int = 0

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post(BULK_CALLBACK_PATH, self._bulk_callback)
        return app

    async def _bulk_callback(self, request: web.Request) -> web.Response:
        job_id = request.query.get("job_id")
        if not job_id:
            try:
                job_id = _job_id_of(orjson.loads(await request.read()))
            except orjson.JSONDecodeError:
                job_id = None
        if not job_id:
            return web.json_response({"ok": False, "error": "no job id"}, status=400)
        for fn in list(_bulk_callbacks):
            fn(job_id)
        return web.json_response({"ok": True, "job_id": job_id})

    async def _healthz(self, request: web.Request) -> web.Response:
        return _status_response(self._health.liveness())

    async def _readyz(self, request: web.Request) -> web.Response:
        return _status_response(self._health.readiness())

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = metrics.CONTENT_TYPE
        return resp

    async def _beat_loop(self) -> None:
        while True:
            self._health.beat(LOOP_BEAT, _LOOP_BEAT_MAX_AGE_S)
            await asyncio.sleep(_LOOP_BEAT_INTERVAL_S)

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])
        self._beat_task = asyncio.create_task(self._beat_loop(), name="ops-heartbeat")
        return self.port

    async def close(self) -> None:
        if self._beat_task is not None:
            self._beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat_task
            self._beat_task = None
            self._health.forget_beat(LOOP_BEAT)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
