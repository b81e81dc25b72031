"""Zoho's official Python SDK (zohocrmsdk8-0 7.0.0) against the simulator on loopback.

The SDK is synchronous: it runs in a worker thread (asyncio.to_thread) while the simulator is
served from the test's loop. It gets a plain ``DataCenter.Environment`` whose API, accounts and
upload URLs all point at the simulator (plain http works; the SDK does not insist on https).
``update_api_domain=False`` keeps it there: the simulator's token answer names its own loopback
origin as ``api_domain``, which ``DataCenter.get()`` would not recognise as a Zoho domain.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

sdk = pytest.importorskip("zohocrmsdk", reason="install the dev extras (zohocrmsdk8-0==7.0.0)")


def _sdk_session(url: str, tmp_path: Path) -> dict[str, Any]:
    """Initialise the SDK against ``url``, upsert one Order twice, read it back."""
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
    from zohocrmsdk.src.com.zoho.api.logger import Logger
    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
    from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.record import (
        ActionWrapper,
        BodyWrapper,
        Record,
        RecordOperations,
        ResponseWrapper,
        SuccessResponse,
    )
    from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
    from zohocrmsdk.src.com.zoho.crm.api.util import Choice

    environment = DataCenter.Environment(url, url + "/oauth/v2/token", url)
    token = OAuthToken(
        client_id="streamsync-local",
        client_secret="streamsync-local-secret",
        refresh_token="streamsync-local-refresh",
    )
    Initializer.initialize(
        environment=environment,
        token=token,
        store=FileStore(str(tmp_path / "sdk_tokens.csv")),
        sdk_config=SDKConfig(
            auto_refresh_fields=False, pick_list_validation=True, update_api_domain=False
        ),
        resource_path=str(tmp_path),
        logger=Logger.get_instance(Logger.Levels.INFO, str(tmp_path / "sdk.log")),
    )

    def upsert(notes: str) -> tuple[int, str, str]:
        record = Record()
        record.add_key_value("Name", "SDK order 1")
        record.add_key_value("parent_id", "SDK-1")
        record.add_key_value("Amount", 12.5)
        record.add_key_value("Status", Choice("paid"))  # a picklist per our field metadata
        record.add_key_value("Order_Date", dt.date(2024, 5, 1))
        record.add_key_value("Notes", notes)
        body = BodyWrapper()
        body.set_data([record])
        body.set_duplicate_check_fields(["parent_id"])
        response = RecordOperations("Orders").upsert_records(body, HeaderMap())
        wrapper = response.get_object()
        assert isinstance(wrapper, ActionWrapper), wrapper
        (result,) = wrapper.get_data()
        assert isinstance(result, SuccessResponse), result
        message = result.get_message()
        return response.get_status_code(), result.get_details()["id"], message.get_value()

    first = upsert("one")
    second = upsert("two")
    got = RecordOperations("Orders").get_record(int(first[1]), ParameterMap(), HeaderMap())
    wrapper = got.get_object()
    assert isinstance(wrapper, ResponseWrapper), wrapper
    (record,) = wrapper.get_data()
    return {
        "first": first,
        "second": second,
        "get_status": got.get_status_code(),
        "id": str(record.get_id()),
        "Name": record.get_key_value("Name"),
        "parent_id": record.get_key_value("parent_id"),
        "Notes": record.get_key_value("Notes"),
    }


async def test_official_sdk_initialises_and_upserts(crm_sim: CrmSim, tmp_path: Path) -> None:
    out = await asyncio.wait_for(asyncio.to_thread(_sdk_session, crm_sim.url, tmp_path), 120)
    first_status, first_id, first_message = out["first"]
    second_status, second_id, second_message = out["second"]
    assert first_status in (200, 201) and first_message == "record added"
    assert second_status == 200 and second_message == "record updated"
    assert first_id == second_id == out["id"]
    assert (out["Name"], out["parent_id"], out["Notes"]) == ("SDK order 1", "SDK-1", "two")
    assert out["get_status"] == 200
    stored = crm_sim.state.records["Orders"][first_id]
    assert stored["Order_Date"] == "2024-05-01" and stored["Amount"] == 12.5
    calls = crm_sim.state.calls_per_api
    # What the SDK does before a record call: token, current user, org, field metadata.
    assert calls["token"] == 1 and calls["users"] >= 1 and calls["org"] >= 1
    assert calls["fields"] >= 1 and calls["upsert"] == 2 and calls["get"] == 1
    assert (tmp_path / "sdk_tokens.csv").exists()
