"""The pure value types of the Zoho HTTP seam: CrmRequest, CrmResponse and the JSON encoder.

No I/O and no asyncio/aiohttp imports: requests.py and auth.py build and judge these.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = ["CrmRequest", "CrmResponse", "dumps", "json_response"]

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
    encoded: bytes | None = None  # ``json`` serialised ahead (see ``ready``)

    def body_bytes(self) -> bytes | None:
        if self.encoded is not None:
            return self.encoded
        return None if self.json is None else dumps(self.json)

    def ready(self) -> CrmRequest:
        """This request with its JSON body serialised now, so that the bytes are not built
        while a Zoho concurrency slot is held."""
        if self.json is None or self.encoded is not None:
            return self
        return replace(self, encoded=dumps(self.json))


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


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> CrmResponse:
    """A CrmResponse with a JSON body (for MockTransport handlers and tests)."""
    return CrmResponse(status, dict(headers or {}), _json.dumps(body).encode())
