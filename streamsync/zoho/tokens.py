"""The async driver of the OAuth flow: a cached token, refreshed ahead of expiry, single-flight.

Concurrent callers share one refresh (an asyncio.Lock); ``invalidate(token)`` after an
INVALID_TOKEN answer forces the next ``get()`` to refresh unless another caller already did.
Refreshes go through ``RefreshLimiter``: past 10 per 10 minutes ``get()`` raises CrmRateLimited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamsync.errors import CrmRateLimited
from streamsync.settings import ZohoSettings
from streamsync.zoho.auth import (
    RefreshLimiter,
    Token,
    build_refresh_request,
    parse_token_response,
)
from streamsync.zoho.transport import CrmTransport

__all__ = ["TokenManager"]

log = logging.getLogger(__name__)


class TokenManager:
    def __init__(
        self,
        settings: ZohoSettings,
        transport: CrmTransport,
        *,
        clock: Callable[[], float] = time.time,
        limiter: RefreshLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self.limiter = limiter or RefreshLimiter()
        self._token: Token | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    @property
    def token(self) -> Token | None:
        return self._token

    async def get(self) -> Token:
        token = self._token
        if token is not None and token.fresh(self._clock()):
            return token
        async with self._lock:  # single flight: late arrivals find the new token
            current = self._token
            if current is not None and current.fresh(self._clock()):
                return current
            return await self._refresh()

    async def invalidate(self, token: Token) -> Token:
        """The token was refused: refresh (once for all callers that saw the same token)."""
        async with self._lock:
            if self._token is not None and self._token is not token:
                return self._token
            return await self._refresh()

    async def _refresh(self) -> Token:
        now = self._clock()
        wait = self.limiter.wait_time(now)
        if wait > 0:
            raise CrmRateLimited(
                "not refreshing the Zoho token: 10 refreshes in 10 minutes already",
                code="TOKEN_REFRESH_LIMIT",
                retry_after=wait,
            )
        s = self._settings
        request = build_refresh_request(
            s.resolved_accounts_url,
            s.client_id,
            s.client_secret.get_secret_value(),
            s.refresh_token.get_secret_value(),
        )
        self.limiter.record(now)
        resp = await self._transport.send(request)
        token = parse_token_response(resp, self._clock())
        self._token = token
        self.refreshes += 1
        log.info("zoho token refreshed (refreshes=%d)", self.refreshes)
        return token
