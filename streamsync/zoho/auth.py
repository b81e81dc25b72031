"""OAuth refresh-token flow for Zoho (pure: no I/O, the clock is passed in).

- ``build_refresh_request()`` → the form POST to ``{accounts}/oauth/v2/token``;
- ``parse_token_response()`` → ``Token`` (``expires_in`` seconds, or the old ``expires_in_sec``
  form where ``expires_in`` was milliseconds), or a CrmAuthError / CrmRateLimited;
- ``RefreshLimiter``: never more than 10 refreshes per 10 minutes per refresh token;
- ``is_invalid_token()``: a 401 INVALID_TOKEN answer (refresh once, then retry).
The async driver that holds the single-flight lock is ``streamsync.zoho.tokens``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from streamsync.errors import CrmAuthError, CrmRateLimited, CrmUnavailable
from streamsync.zoho.models import CrmRequest, CrmResponse

__all__ = [
    "REFRESH_LIMIT",
    "REFRESH_WINDOW_S",
    "RefreshLimiter",
    "Token",
    "authorize",
    "build_refresh_request",
    "is_invalid_token",
    "parse_token_response",
]

REFRESH_LIMIT = 10
REFRESH_WINDOW_S = 600.0
REFRESH_AHEAD_S = 300.0


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_at: float
    api_domain: str | None = None

    refresh_at: float = 0.0

    def fresh(self, now: float) -> bool:
        """Not yet due for a refresh (due ``REFRESH_AHEAD_S`` before expiry, or at 90% of a
        short lifetime)."""
        return now < (self.refresh_at or self.expires_at)

    def __repr__(self) -> str:  # never print the secret
        return f"Token(expires_at={self.expires_at:.0f}, api_domain={self.api_domain!r})"


def build_refresh_request(
    accounts_url: str, client_id: str, client_secret: str, refresh_token: str
) -> CrmRequest:
    return CrmRequest(
        "POST",
        accounts_url.rstrip("/") + "/oauth/v2/token",
        base="absolute",
        form={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        },
        auth=False,
        api="token",
    )


def parse_token_response(resp: CrmResponse, now: float) -> Token:
    if resp.status >= 500:
        raise CrmUnavailable(
            f"token endpoint answered HTTP {resp.status}", code="TOKEN_ENDPOINT_UNAVAILABLE"
        )
    body = resp.json()
    if not isinstance(body, dict):
        raise CrmAuthError(
            f"token endpoint answered HTTP {resp.status} without JSON", code="TOKEN_ENDPOINT_ERROR"
        )
    if "error" in body or "access_token" not in body:
        error = str(body.get("error", "no access_token"))
        description = str(body.get("error_description", ""))
        if error == "Access Denied" or "too many requests" in description.lower():
            raise CrmRateLimited(
                "token endpoint: too many refreshes; blocked for the rest of the window",
                code="TOKEN_REFRESH_LIMIT",
                retry_after=REFRESH_WINDOW_S,
            )
        raise CrmAuthError(
            f"token refresh refused: {error}", code="TOKEN_REFRESH_FAILED", details={"error": error}
        )
    expires = float(body.get("expires_in", 3600))
    if "expires_in_sec" in body:
        expires = float(body["expires_in_sec"])
    domain = body.get("api_domain")
    return Token(
        access_token=str(body["access_token"]),
        expires_at=now + expires,
        refresh_at=now + max(expires - REFRESH_AHEAD_S, expires * 0.9),
        api_domain=str(domain).rstrip("/") if domain else None,
    )


class RefreshLimiter:
    """At most ``limit`` refreshes in any ``window`` seconds (Zoho blocks the 11th)."""

    def __init__(self, limit: int = REFRESH_LIMIT, window: float = REFRESH_WINDOW_S) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def wait_time(self, now: float) -> float:
        """0 if a refresh may happen now, else seconds until one may."""
        self._prune(now)
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window - now

    def record(self, now: float) -> None:
        self._prune(now)
        self._times.append(now)

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self._times)


def is_invalid_token(resp: CrmResponse) -> bool:
    if resp.status != 401:
        return False
    body = resp.json()
    code = body.get("code") if isinstance(body, dict) else None
    return code in (None, "INVALID_TOKEN", "INVALID_OAUTHTOKEN")


def authorize(request: CrmRequest, token: Token) -> CrmRequest:
    """The request with ``Authorization: Zoho-oauthtoken …`` added."""
    from dataclasses import replace

    headers = dict(request.headers)
    headers["Authorization"] = f"Zoho-oauthtoken {token.access_token}"
    return replace(request, headers=headers)
