"""Auth flow through MockTransport: refresh, 401 once then OK, single flight, 10/10 min."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from streamsync.errors import CrmAuthError, CrmRateLimited, CrmUnavailable
from streamsync.settings import ZohoSettings
from streamsync.zoho import ZohoClient
from streamsync.zoho.auth import RefreshLimiter, parse_token_response
from streamsync.zoho.transport import CrmRequest, CrmResponse, MockTransport, json_response

SETTINGS = ZohoSettings(dc="eu", backoff_base_s=0.001, backoff_cap_s=0.01)
OK_UPSERT = {
    "data": [
        {
            "code": "SUCCESS",
            "status": "success",
            "action": "insert",
            "details": {"id": "1"},
            "message": "record added",
        }
    ]
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class ZohoApp:
    """Token endpoint + upsert; answers 401 INVALID_TOKEN to the first ``reject`` CRM calls."""

    def __init__(self, reject: int = 0, expires_in: int = 3600) -> None:
        self.reject = reject
        self.expires_in = expires_in
        self.tokens = itertools.count(1)
        self.refreshes = 0
        self.crm_calls: list[CrmRequest] = []

    async def __call__(self, request: CrmRequest) -> CrmResponse:
        if request.api == "token":
            self.refreshes += 1
            await asyncio.sleep(0)  # let concurrent callers pile up on the lock
            return json_response(
                200,
                {
                    "access_token": f"t{next(self.tokens)}",
                    "api_domain": "https://www.zohoapis.eu",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                },
            )
        self.crm_calls.append(request)
        if self.reject > 0:
            self.reject -= 1
            return json_response(
                401,
                {
                    "code": "INVALID_TOKEN",
                    "details": {},
                    "message": "invalid oauth token",
                    "status": "error",
                },
            )
        return json_response(200, OK_UPSERT)


def client_for(app: Any, clock: Clock | None = None, **settings: Any) -> ZohoClient:
    s = SETTINGS.model_copy(update=settings) if settings else SETTINGS
    return ZohoClient(s, transport=MockTransport(app), clock=clock or Clock(), sleep=_no_sleep)


async def _no_sleep(_: float) -> None:
    return None


async def test_refresh_request_and_header() -> None:
    app = ZohoApp()
    async with client_for(app) as client:
        await client.upsert("Orders", [{"Name": "x"}], duplicate_check_fields=["parent_id"])
    transport = client._transport
    assert isinstance(transport, MockTransport)
    token_req = transport.requests[0]
    assert token_req.url == "https://accounts.zoho.eu/oauth/v2/token"
    assert token_req.form is not None and token_req.form["grant_type"] == "refresh_token"
    call = app.crm_calls[0]
    assert call.url == "https://www.zohoapis.eu/crm/v8/Orders/upsert"
    assert call.headers["Authorization"] == "Zoho-oauthtoken t1"


async def test_invalid_token_refreshes_once_then_retries() -> None:
    app = ZohoApp(reject=1)
    async with client_for(app) as client:
        out = await client.upsert("Orders", [{"Name": "x"}])
    assert out[0].__class__.__name__ == "RecordSuccess"
    assert app.refreshes == 2
    assert [c.headers["Authorization"] for c in app.crm_calls] == [
        "Zoho-oauthtoken t1",
        "Zoho-oauthtoken t2",
    ]


async def test_invalid_token_twice_raises_auth_error() -> None:
    app = ZohoApp(reject=2)
    async with client_for(app) as client:
        with pytest.raises(CrmAuthError) as info:
            await client.upsert("Orders", [{"Name": "x"}])
    assert info.value.code == "INVALID_TOKEN"
    assert app.refreshes == 2


async def test_single_flight_refresh() -> None:
    app = ZohoApp()
    async with client_for(app) as client:
        await asyncio.gather(*(client.upsert("Orders", [{"Name": str(i)}]) for i in range(20)))
    assert app.refreshes == 1


async def test_refresh_ahead_of_expiry() -> None:
    app = ZohoApp(expires_in=3600)
    clock = Clock()
    async with client_for(app, clock) as client:
        await client.upsert("Orders", [{"Name": "x"}])
        clock.now += 3200  # still > 5 min of life left
        await client.upsert("Orders", [{"Name": "x"}])
        assert app.refreshes == 1
        clock.now += 200  # inside the last 5 minutes: refresh before using it
        await client.upsert("Orders", [{"Name": "x"}])
        assert app.refreshes == 2


async def test_never_more_than_10_refreshes_per_10_minutes() -> None:
    app = ZohoApp(expires_in=1)
    clock = Clock()
    async with client_for(app, clock) as client:
        for _ in range(10):
            clock.now += 2
            await client.upsert("Orders", [{"Name": "x"}])
        clock.now += 2
        with pytest.raises(CrmRateLimited) as info:
            await client.upsert("Orders", [{"Name": "x"}])
        assert info.value.code == "TOKEN_REFRESH_LIMIT"
        assert 0 < info.value.retry_after <= 600
        assert app.refreshes == 10
        clock.now += 600
        await client.upsert("Orders", [{"Name": "x"}])
        assert app.refreshes == 11


def test_follows_api_domain_and_maps_upload_host() -> None:
    from streamsync.zoho.auth import Token

    def client(**kw: Any) -> ZohoClient:
        return ZohoClient(ZohoSettings(**kw), transport=MockTransport(lambda r: CrmResponse(500)))

    c = client(dc="us")
    assert c.upload_base == "https://content.zohoapis.com"
    c.tokens._token = Token("t", 2e9, "https://www.zohoapis.com.au")
    assert c.api_domain == "https://www.zohoapis.com.au"
    assert c.upload_base == "https://content.zohoapis.com.au"
    assert client(dc="ca").upload_base == "https://upload.zohocloud.ca"
    assert client(dc="sa").upload_base == "https://files.zoho.sa"
    assert client(api_domain="https://sandbox.zohoapis.eu").upload_base == (
        "https://content.zohoapis.eu"
    )
    explicit = client(dc="us", api_domain="http://127.0.0.1:1", upload_url="http://127.0.0.1:2")
    explicit.tokens._token = Token("t", 2e9, "https://www.zohoapis.eu")
    assert explicit.api_domain == "http://127.0.0.1:1"
    assert explicit.upload_base == "http://127.0.0.1:2"
    assert client(api_domain="http://127.0.0.1:9").upload_base == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "dc,accounts",
    [
        ("us", "https://accounts.zoho.com"),
        ("eu", "https://accounts.zoho.eu"),
        ("in", "https://accounts.zoho.in"),
        ("au", "https://accounts.zoho.com.au"),
        ("jp", "https://accounts.zoho.jp"),
        ("cn", "https://accounts.zoho.com.cn"),
        ("ca", "https://accounts.zohocloud.ca"),
        ("sa", "https://accounts.zoho.sa"),
    ],
)
def test_data_centres(dc: str, accounts: str) -> None:
    assert ZohoSettings(dc=dc).resolved_accounts_url == accounts  # type: ignore[arg-type]


def test_token_parsing_variants() -> None:
    token = parse_token_response(json_response(200, {"access_token": "a", "expires_in": 3600}), 0)
    assert token.expires_at == 3600 and token.fresh(3200) and not token.fresh(3400)
    old = parse_token_response(
        json_response(200, {"access_token": "a", "expires_in": 3600000, "expires_in_sec": 3600}), 0
    )
    assert old.expires_at == 3600
    with pytest.raises(CrmRateLimited):
        parse_token_response(
            json_response(
                400,
                {
                    "error": "Access Denied",
                    "status": "failure",
                    "error_description": "too many requests",
                },
            ),
            0,
        )
    with pytest.raises(CrmUnavailable):
        parse_token_response(CrmResponse(502, {}, b"<html>"), 0)
    with pytest.raises(CrmAuthError) as info:
        parse_token_response(json_response(200, {"error": "invalid_code"}), 0)
    assert "invalid_code" in str(info.value)


def test_refresh_limiter_window() -> None:
    limiter = RefreshLimiter(limit=2, window=10)
    limiter.record(0)
    limiter.record(1)
    assert limiter.wait_time(5) == 5
    assert limiter.wait_time(9.5) == 0.5
    assert limiter.wait_time(10) == 0  # the first refresh left the window


async def test_process_limits_are_shared_and_bound_sub_concurrency() -> None:
    from streamsync.zoho.limits import ProcessLimits, process_limits

    assert process_limits(5) is process_limits(5)
    limits = ProcessLimits(concurrency=20, sub_concurrency=2)
    active = 0
    peak = 0

    async def heavy() -> None:
        nonlocal active, peak
        async with limits.slot(records=50):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            active -= 1

    await asyncio.gather(*(heavy() for _ in range(10)))
    assert peak == 2
    light_peak = 0

    async def light() -> None:
        nonlocal light_peak
        async with limits.slot(records=10):
            light_peak = max(light_peak, limits.in_flight)
            await asyncio.sleep(0)

    await asyncio.gather(*(light() for _ in range(10)))
    assert light_peak == 10  # writes of 10 records or fewer skip the sub-concurrency limit
