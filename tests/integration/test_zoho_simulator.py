"""The simulator's own rules: token limits, credits, validation, sub-concurrency, the CLI."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from streamsync.errors import CrmRateLimited, CrmRequestError
from streamsync.zoho import RecordFailure, RecordSuccess, ZohoClient
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

FORM = {
    "grant_type": "refresh_token",
    "client_id": "streamsync-local",
    "client_secret": "streamsync-local-secret",
    "refresh_token": "streamsync-local-refresh",
}


async def test_token_endpoint_allows_10_refreshes_per_10_minutes(crm_sim: CrmSim) -> None:
    async with aiohttp.ClientSession() as session:
        bodies = []
        for _ in range(11):
            async with session.post(f"{crm_sim.url}/oauth/v2/token", data=FORM) as resp:
                bodies.append((resp.status, await resp.json()))
        assert all(s == 200 and "access_token" in b for s, b in bodies[:10])
        assert bodies[10][0] == 400 and bodies[10][1]["error"] == "Access Denied"
        async with session.post(
            f"{crm_sim.url}/oauth/v2/token", data={**FORM, "refresh_token": "nope"}
        ) as resp:
            assert (await resp.json())["error"] == "invalid_code"
        token = bodies[0][1]["access_token"]
        async with session.get(
            f"{crm_sim.url}/crm/v8/org", headers={"Authorization": f"Zoho-oauthtoken {token}"}
        ) as resp:
            assert resp.status == 200
        async with session.get(f"{crm_sim.url}/crm/v8/org") as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "AUTHENTICATION_FAILURE"
        async with session.get(
            f"{crm_sim.url}/crm/v8/org", headers={"Authorization": "Zoho-oauthtoken bad"}
        ) as resp:
            assert (await resp.json())["code"] == "INVALID_TOKEN"


async def test_client_reports_refused_refresh_as_rate_limited(crm_sim: CrmSim) -> None:
    crm_sim.configure(token_refresh_limit=0)
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        with pytest.raises(CrmRateLimited) as info:
            await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}])
    assert info.value.code == "TOKEN_REFRESH_LIMIT"


async def test_daily_credit_budget_and_remaining_header(crm_sim: CrmSim) -> None:
    crm_sim.configure(daily_credit_budget=4)
    async with ZohoClient(crm_sim.zoho_settings(max_retries=0)) as client:
        await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}], ["parent_id"])
        await client.upsert("Orders", [{"Name": "b", "parent_id": "2"}], ["parent_id"])
        assert client.credits.server_remaining == 2  # X-API-CREDITS-REMAINING from 50% on
        await client.upsert("Orders", [{"Name": "c", "parent_id": "3"}] * 1, ["parent_id"])
        await client.upsert("Orders", [{"Name": "d", "parent_id": "4"}], ["parent_id"], urgent=True)
        with pytest.raises(CrmRateLimited):
            await client.upsert(
                "Orders", [{"Name": "e", "parent_id": "5"}], ["parent_id"], urgent=True
            )
    assert crm_sim.state.credits_used() == 4
    assert crm_sim.state.faults["credits_429"] == 1


@pytest.mark.parametrize(
    "record,code,api_name",
    [
        ({"parent_id": "1"}, "MANDATORY_NOT_FOUND", "Name"),
        ({"Name": "x" * 121, "parent_id": "1"}, "INVALID_DATA", "Name"),
        ({"Name": 5, "parent_id": "1"}, "INVALID_DATA", "Name"),
        (
            {"Name": "a", "parent_id": "1", "Customer_Email": "not-an-email"},
            "INVALID_DATA",
            "Customer_Email",
        ),
        (
            {"Name": "a", "parent_id": "1", "Customer_Email": "poison@invalid.example"},
            "INVALID_DATA",
            "Customer_Email",
        ),
        ({"Name": "a __poison__ b", "parent_id": "1"}, "INVALID_DATA", "Name"),
        ({"Name": "a", "parent_id": "1", "Amount": "12"}, "INVALID_DATA", "Amount"),
        ({"Name": "a", "parent_id": "1", "Order_Date": "05/01/2024"}, "INVALID_DATA", "Order_Date"),
        (
            {"Name": "a", "parent_id": "1", "Legacy_Updated_At": "2024-05-01T10:00:00"},
            "INVALID_DATA",
            "Legacy_Updated_At",
        ),
        ({"Name": "a", "parent_id": "1", "Deleted": "yes"}, "INVALID_DATA", "Deleted"),
        ({"Name": "a", "parent_id": "1", "Status": "lost"}, "INVALID_DATA", "Status"),
    ],
)
async def test_field_validation(
    crm_sim: CrmSim, record: dict[str, Any], code: str, api_name: str
) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        (out,) = await client.upsert("Orders", [record], ["parent_id"])
    assert isinstance(out, RecordFailure)
    assert (out.code, out.details["api_name"]) == (code, api_name)
    assert out.details["json_path"] == f"$.data[0].{api_name}"
    assert crm_sim.state.records["Orders"] == {}


async def test_duplicate_check_fields_semantics(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        (a,) = await client.upsert("Orders", [{"Name": "same", "parent_id": "1"}], ["parent_id"])
        (b,) = await client.upsert("Orders", [{"Name": "same", "parent_id": "2"}], ["parent_id"])
        assert isinstance(a, RecordSuccess) and isinstance(b, RecordSuccess)
        assert a.id != b.id  # matched on parent_id only
        # Without duplicate_check_fields a custom module checks its system field Name first.
        (c,) = await client.upsert("Orders", [{"Name": "unique-name", "parent_id": "3"}])
        (d,) = await client.upsert("Orders", [{"Name": "unique-name", "parent_id": "4"}])
        assert isinstance(c, RecordSuccess) and isinstance(d, RecordSuccess)
        assert d.action == "update" and d.id == c.id
        # Updating record 1 onto parent_id 2 collides with the unique field.
        (e,) = await client.update("Orders", [{"id": a.id, "parent_id": "2"}])
        assert isinstance(e, RecordFailure) and e.code == "DUPLICATE_DATA"
        with pytest.raises(CrmRequestError) as info:  # only unique/system fields may be used
            await client.upsert("Orders", [{"Name": "x"}], ["Notes"])
        assert info.value.code == "INVALID_DATA"


async def test_sub_concurrency_is_respected_by_the_client(crm_sim: CrmSim) -> None:
    crm_sim.configure(latency_ms=30, concurrency=25)
    async with ZohoClient(crm_sim.zoho_settings(concurrency=25)) as client:
        batches = [
            [{"Name": f"n{b}-{i}", "parent_id": f"{b}-{i}"} for i in range(11)] for b in range(20)
        ]
        await asyncio.gather(*(client.upsert("Orders", batch, ["parent_id"]) for batch in batches))
    assert crm_sim.state.faults.get("sub_concurrency_429", 0) == 0
    assert len(crm_sim.state.records["Orders"]) == 220


async def test_sub_concurrency_429_when_exceeded(crm_sim: CrmSim) -> None:
    crm_sim.configure(latency_ms=50, concurrency=25)
    from streamsync.zoho.limits import ProcessLimits

    async with ZohoClient(
        crm_sim.zoho_settings(concurrency=25, max_retries=30),
        limits=ProcessLimits(25, sub_concurrency=25),
    ) as client:
        batches = [
            [{"Name": f"n{b}-{i}", "parent_id": f"{b}-{i}"} for i in range(11)] for b in range(20)
        ]
        await asyncio.gather(*(client.upsert("Orders", batch, ["parent_id"]) for batch in batches))
    assert crm_sim.state.faults["sub_concurrency_429"] > 0
    assert len(crm_sim.state.records["Orders"]) == 220  # retried until done


async def test_metadata_endpoints(crm_sim: CrmSim) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        assert await client.org_id() == crm_sim.config.org_id
        from streamsync.zoho.models import CrmRequest

        resp = await client._send(
            CrmRequest("GET", "/crm/v8/settings/fields", params={"module": "Orders"}), credits=1
        )
        fields = {f["api_name"]: f for f in resp.json()["fields"]}
        assert fields["parent_id"]["unique"] == {"case_sensitive": False}
        assert fields["Name"]["system_mandatory"] is True
        assert [v["actual_value"] for v in fields["Status"]["pick_list_values"]][:2] == [
            "new",
            "paid",
        ]
        assert set(fields) >= {
            "Customer_Email",
            "Amount",
            "Currency",
            "Order_Date",
            "Legacy_Updated_At",
            "Notes",
            "Deleted",
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_crm_sim_command_serves(tmp_path: Any) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamsync",
        "crm-sim",
        "--port",
        str(port),
        "--bulk-job-seconds",
        "0.1",
        "--rate-429",
        "0.0",
        "--seed",
        "3",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def up() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/__sim/stats") as resp,
            ):
                return resp.status == 200 and (await resp.json())["config"]["seed"] == 3

        await wait_for(up, timeout=30, message="crm-sim did not come up")
        from streamsync.settings import ZohoSettings

        url = f"http://127.0.0.1:{port}"
        settings = ZohoSettings(accounts_url=url, api_domain=url)
        async with ZohoClient(settings) as client:
            (out,) = await client.upsert("Orders", [{"Name": "a", "parent_id": "1"}], ["parent_id"])
        assert isinstance(out, RecordSuccess)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
