"""ZohoClient ↔ simulator over real HTTP on loopback: upserts, errors, faults, tokens."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pytest

from streamsync.errors import CreditBudgetExhausted, CrmRateLimited, CrmRequestError
from streamsync.settings import default_tables
from streamsync.zoho import RecordFailure, RecordSuccess, ZohoClient, map_record
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

ORDERS = default_tables()[0]


def row(i: int, **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": i,
        "order_number": f"SO-{i}",
        "customer_email": f"c{i}@example.com",
        "amount": "1234.50",
        "currency": "EUR",
        "status": "new",
        "order_date": "2024-05-01",
        "updated_at": "2024-05-02T10:15:00.123456+00:00",
        "notes": "first",
    }
    base.update(extra)
    return base


async def test_upsert_inserts_then_updates(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        records = [map_record(ORDERS, row(i)) for i in range(1, 4)]
        first = await client.upsert("Orders", records, duplicate_check_fields=["parent_id"])
        assert [type(o) for o in first] == [RecordSuccess] * 3
        assert [o.action for o in first if isinstance(o, RecordSuccess)] == ["insert"] * 3
        second = await client.upsert(
            "Orders",
            [map_record(ORDERS, row(2, notes="second", amount="99.90"))],
            duplicate_check_fields=["parent_id"],
        )
        assert isinstance(second[0], RecordSuccess)
        assert second[0].action == "update"
        assert second[0].id == first[1].id  # type: ignore[union-attr]
        stored = await client.get_record("Orders", second[0].id)
        assert stored is not None
        assert stored["Notes"] == "second"
        assert Decimal(str(stored["Amount"])) == Decimal("99.90")
        assert stored["Legacy_Updated_At"] == "2024-05-02T10:15:00+00:00"
        assert len(crm_sim.state.records["Orders"]) == 3
        assert crm_sim.state.records_per_call("upsert") == [3, 1]


async def test_record_errors_are_returned_in_order(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        good = map_record(ORDERS, row(1))
        poison = map_record(ORDERS, row(2, order_number="POISON"))
        bad_status = map_record(ORDERS, row(3, status="lost"))
        out = await client.upsert(
            "Orders",
            [good, poison, bad_status, map_record(ORDERS, row(4))],
            duplicate_check_fields=["parent_id"],
        )
        assert isinstance(out[0], RecordSuccess) and isinstance(out[3], RecordSuccess)
        assert isinstance(out[1], RecordFailure) and out[1].code == "INVALID_DATA"
        assert out[1].details["api_name"] == "Name" and out[1].index == 1
        assert isinstance(out[2], RecordFailure) and out[2].details["api_name"] == "Status"
        assert not out[1].retryable
        everything_bad = await client.upsert(
            "Orders", [poison], duplicate_check_fields=["parent_id"]
        )
        assert isinstance(everything_bad[0], RecordFailure)  # HTTP 400 with data[] is per record


async def test_duplicate_data_on_unique_field(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        a = await client.insert("Orders", [{"Name": "A", "parent_id": "X-1"}])
        assert isinstance(a[0], RecordSuccess) and a[0].action == "insert"
        b = await client.insert("Orders", [{"Name": "B", "parent_id": "x-1"}])
        assert isinstance(b[0], RecordFailure)
        assert b[0].code == "DUPLICATE_DATA"
        assert b[0].details["duplicate_record"]["id"] == a[0].id
        missing = await client.insert("Orders", [{"parent_id": "X-2"}])
        assert isinstance(missing[0], RecordFailure) and missing[0].code == "MANDATORY_NOT_FOUND"


async def test_request_level_error_raises_with_zoho_code(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        with pytest.raises(CrmRequestError) as info:
            await client.upsert("Nope", [{"Name": "x"}])
        assert info.value.code == "INVALID_MODULE"
        assert "module name" in info.value.message


async def test_search_exact_filters_contains_like_equals(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        await client.insert(
            "Orders",
            [
                {"Name": "A", "parent_id": "ORD-1"},
                {"Name": "B", "parent_id": "ORD-10"},
                {"Name": "C", "parent_id": "(ORD,1)"},
            ],
        )
        raw = await client.search("Orders", "parent_id", "ORD-1")
        assert len(raw) == 2  # equals behaves like contains
        exact = await client.search_exact("Orders", "parent_id", "ORD-1")
        assert [r["Name"] for r in exact] == ["A"]
        assert [r["Name"] for r in await client.search_exact("Orders", "parent_id", "(ORD,1)")] == [
            "C"
        ]
        assert await client.search_exact("Orders", "parent_id", "nothing") == []


async def test_delete_and_iter_records(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        out = await client.insert(
            "Orders", [{"Name": f"N{i}", "parent_id": f"P{i}"} for i in range(30)]
        )
        ids = [o.id for o in out if isinstance(o, RecordSuccess)]
        seen = [r async for r in client.iter_records("Orders", ["parent_id"])]
        assert len(seen) == 30
        gone = await client.delete("Orders", [*ids[:5], "123"])
        assert [type(o) for o in gone] == [RecordSuccess] * 5 + [RecordFailure]
        assert gone[0].action == "delete"  # type: ignore[union-attr]
        assert len(crm_sim.state.records["Orders"]) == 25
        assert await client.get_record("Orders", ids[0]) is None


async def test_survives_429_and_500_storms(crm_sim: CrmSim) -> None:
    crm_sim.configure(rate_429=0.3, rate_500=0.2, rate_drop=0.05, seed=7)
    async with ZohoClient(crm_sim.zoho_settings(max_retries=40)) as client:
        for batch in range(10):
            records = [map_record(ORDERS, row(batch * 10 + i)) for i in range(10)]
            out = await client.upsert("Orders", records, duplicate_check_fields=["parent_id"])
            assert all(isinstance(o, RecordSuccess) for o in out)
    faults = crm_sim.state.faults
    assert faults["429"] > 0 and faults["500"] > 0 and faults["drop"] > 0
    assert len(crm_sim.state.records["Orders"]) == 100


async def test_rate_limited_raises_when_retries_exhausted(crm_sim: CrmSim) -> None:
    crm_sim.configure(rate_429=1.0)
    async with ZohoClient(crm_sim.zoho_settings(max_retries=2)) as client:
        with pytest.raises(CrmRateLimited):
            await client.upsert("Orders", [{"Name": "x", "parent_id": "p"}])
    assert crm_sim.state.faults["429"] == 3


async def test_token_expiry_mid_run_refreshes_once(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}])
        assert crm_sim.state.tokens_issued == 1
        crm_sim.state.expire_tokens()  # the server forgets every token: 401 INVALID_TOKEN
        results = await asyncio.gather(
            *(client.upsert("Orders", [{"Name": f"n{i}", "parent_id": f"k{i}"}]) for i in range(8))
        )
        assert all(isinstance(r[0], RecordSuccess) for r in results)
        assert crm_sim.state.tokens_issued == 2  # one refresh for all concurrent callers
        assert crm_sim.state.faults["invalid_token"] >= 1


async def test_short_lived_tokens_are_refreshed_ahead(crm_sim: CrmSim) -> None:
    crm_sim.configure(token_ttl_s=0.5)
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}])
        first = client.tokens.token
        assert first is not None
        await wait_for(lambda: not first.fresh(time.time()), timeout=5)
        await client.upsert("Orders", [{"Name": "b", "parent_id": "2"}])
        assert crm_sim.state.tokens_issued == 2
        assert crm_sim.state.faults["invalid_token"] == 0  # refreshed before it expired


async def test_credit_budget_refuses_non_urgent_work(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings(daily_credit_budget=3)) as client:
        records = [{"Name": f"n{i}", "parent_id": f"p{i}"} for i in range(20)]
        await client.upsert("Orders", records)  # 2 credits
        with pytest.raises(CreditBudgetExhausted):
            await client.upsert("Orders", records)
        assert client.credits.used_24h() == 2
        await client.upsert("Orders", records, urgent=True)
        assert client.credits.used_24h() == 4


async def test_concurrency_limit_is_honoured(crm_sim: CrmSim) -> None:
    crm_sim.configure(concurrency=4, latency_ms=20)
    async with ZohoClient(crm_sim.zoho_settings(concurrency=4)) as client:
        await asyncio.gather(
            *(client.upsert("Orders", [{"Name": f"n{i}", "parent_id": f"p{i}"}]) for i in range(20))
        )
    assert crm_sim.state.faults.get("concurrency_429", 0) == 0
    assert crm_sim.state.max_in_flight <= 4


async def test_numeric_is_sent_exactly(crm_sim: CrmSim) -> None:
    record = map_record(ORDERS, row(1, amount="12345678901234.56"))
    assert b'"Amount":12345678901234.56' in orjson.dumps(
        record, default=lambda d: orjson.Fragment(str(d))
    )
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        out = await client.upsert("Orders", [record], duplicate_check_fields=["parent_id"])
        assert isinstance(out[0], RecordSuccess)


async def test_sim_over_http_endpoints(crm_sim: CrmSim) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{crm_sim.url}/__sim/config", json={"rate_429": 0.5}) as resp:
            assert resp.status == 200
        assert crm_sim.config.rate_429 == 0.5
        async with session.get(f"{crm_sim.url}/__sim/stats") as resp:
            stats = await resp.json()
            assert "credits_used" in stats and "calls" in stats
        async with session.post(f"{crm_sim.url}/__sim/reset") as resp:
            assert resp.status == 200


async def test_drop_after_processing_is_idempotent_with_upsert(crm_sim: CrmSim) -> None:
    crm_sim.configure(rate_drop=1.0, drop_after_processing=True)
    # 40 retries with backoff up to 0.2 s: seconds of room before the client would give up.
    async with ZohoClient(crm_sim.zoho_settings(max_retries=40)) as client:
        task = asyncio.create_task(
            client.upsert("Orders", [{"Name": "a", "parent_id": "1"}], ["parent_id"])
        )
        await wait_for(lambda: crm_sim.state.faults["drop"] >= 2, timeout=10)
        crm_sim.configure(rate_drop=0.0)
        (out,) = await task
    assert isinstance(out, RecordSuccess) and out.action == "update"  # the write had landed
    assert len(crm_sim.state.records["Orders"]) == 1


async def test_timeouts_are_retried_then_raised(crm_sim: CrmSim) -> None:
    from streamsync.errors import CrmUnavailable

    settings = crm_sim.zoho_settings(request_timeout_s=0.2, max_retries=1)
    async with ZohoClient(settings) as client:
        await client.tokens.get()  # the token endpoint would be slow too: fetch it first
        crm_sim.configure(rate_slow=1.0, slow_ms=1000)
        with pytest.raises(CrmUnavailable) as info:
            await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}], ["parent_id"])
        assert info.value.code == "REQUEST_TIMEOUT"
        assert info.value.retryable
        crm_sim.configure(rate_slow=0.0)
        (out,) = await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}], ["parent_id"])
    assert isinstance(out, RecordSuccess)
    assert len(crm_sim.state.records["Orders"]) == 1  # the timed-out writes landed: upsert
