"""The HTTP seam of the Zoho client: CrmRequest, CrmResponse, CrmTransport and its two kinds.

``AiohttpTransport`` is the production transport; ``MockTransport(handler)`` answers from a
function (unit tests). ``map_http_errors()`` is the one place where aiohttp and timeout errors
become streamsync errors; nothing above this module catches a foreign exception type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from streamsync.errors import CrmUnavailable

__all__ = [
    "AiohttpTransport",
    "CrmRequest",
    "CrmResponse",
    "CrmTransport",
    "MockTransport",
    "dumps",
    "map_http_errors",
]

Base = Literal["api", "upload", "accounts", "absolute"]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Exact: the decimal's own digits go on the wire, never through a float.
        return orjson.Fragment(format(value, "f"))
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """JSON bytes; ``Decimal`` values are written exactly as JSON numbers."""
    return orjson.dumps(value, default=_default)


@dataclass(frozen=True, slots=True)
class CrmRequest:
    """One HTTP call. ``url`` is a path relative to ``base`` unless ``base == "absolute"``."""

    method: str
    url: str
    base: Base = "api"
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    form: Mapping[str, str] | None = None
    file: Path | None = None  # multipart field "file"
    download_to: Path | None = None  # stream the body into this file instead of memory
    auth: bool = True
    api: str = "other"  # a name for logs and stats: "upsert", "token", "bulk.create", ...

    def body_bytes(self) -> bytes | None:
        return None if self.json is None else dumps(self.json)


@dataclass(frozen=True, slots=True)
class CrmResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        """The parsed body, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None


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


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> CrmResponse:
    """A CrmResponse with a JSON body (for MockTransport handlers)."""
    return CrmResponse(status, dict(headers or {}), _json.dumps(body).encode())
