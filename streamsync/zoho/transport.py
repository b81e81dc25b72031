"""The HTTP seam of the Zoho client: CrmRequest, CrmResponse, CrmTransport and its two kinds.

``AiohttpTransport`` is the production transport; ``MockTransport(handler)`` answers from a
function (unit tests). ``map_http_errors()`` is the one place where aiohttp and timeout errors
become streamsync errors; nothing above this module catches a foreign exception type.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import aiohttp

from streamsync.errors import CrmUnavailable
from streamsync.zoho.models import CrmRequest, CrmResponse, dumps, json_response

__all__ = [
    "AiohttpTransport",
    "CrmRequest",
    "CrmResponse",
    "CrmTransport",
    "MockTransport",
    "dumps",
    "json_response",
    "map_http_errors",
]


class CrmTransport(Protocol):
    async def send(self, request: CrmRequest) -> CrmResponse: ...

    async def close(self) -> None: ...


@contextlib.contextmanager
def map_http_errors(request: CrmRequest) -> Iterator[None]:
    """Translate aiohttp / timeout errors into ``CrmUnavailable`` (retryable), chained."""
    try:
        yield
    except TimeoutError as exc:
        raise CrmUnavailable(
            f"{request.api}: timed out", code="REQUEST_TIMEOUT", details={"api": request.api}
        ) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise CrmUnavailable(
            f"{request.api}: connection dropped ({type(exc).__name__})",
            code="CONNECTION_DROPPED",
            details={"api": request.api},
        ) from exc
    except aiohttp.ClientError as exc:
        raise CrmUnavailable(
            f"{request.api}: HTTP client error ({type(exc).__name__})",
            code="CONNECTION_ERROR",
            details={"api": request.api},
        ) from exc


class AiohttpTransport:
    """Sends CrmRequests over one aiohttp session (created lazily, closed by ``close()``)."""

    def __init__(self, *, timeout_s: float = 30.0, limit: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._limit),
                json_serialize=lambda v: dumps(v).decode(),
            )
        return self._session

    async def send(self, request: CrmRequest) -> CrmResponse:
        session = self._get_session()
        headers = dict(request.headers)
        data: Any = None
        if request.json is not None:
            data = request.body_bytes()
            headers.setdefault("Content-Type", "application/json")
        elif request.form is not None:
            data = dict(request.form)
        with map_http_errors(request):
            if request.file is not None:
                form = aiohttp.FormData()
                handle = request.file.open("rb")
                try:
                    form.add_field(
                        "file", handle, filename=request.file.name, content_type="application/zip"
                    )
                    return await self._do(session, request, headers, form)
                finally:
                    handle.close()
            return await self._do(session, request, headers, data)

    async def _do(
        self,
        session: aiohttp.ClientSession,
        request: CrmRequest,
        headers: dict[str, str],
        data: Any,
    ) -> CrmResponse:
        async with session.request(
            request.method, request.url, params=dict(request.params), headers=headers, data=data
        ) as resp:
            if request.download_to is not None and resp.status == 200:
                with request.download_to.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        out.write(chunk)
                return CrmResponse(resp.status, dict(resp.headers), b"")
            body = await resp.read()
            return CrmResponse(resp.status, dict(resp.headers), body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Handler = Callable[[CrmRequest], "CrmResponse | Awaitable[CrmResponse]"]


class MockTransport:
    """Answers every request from ``handler`` (sync or async); records the requests sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[CrmRequest] = []

    async def send(self, request: CrmRequest) -> CrmResponse:
        self.requests.append(request)
        result = self.handler(request)
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        assert isinstance(result, CrmResponse)
        if request.download_to is not None and result.status == 200:
            request.download_to.write_bytes(result.body)
        return result

    async def close(self) -> None:
        return None
