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

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

# a test-only dependency of the dev extras; never skipped (a missing SDK fails the import)
import zohocrmsdk  # noqa: E402, F401


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

    # one invalid record among valid ones: every record gets its own result, in order
    batch = []
    for i, name in enumerate(["SDK order 2", "POISON", "SDK order 4"], start=2):
        record = Record()
        record.add_key_value("Name", name)
        record.add_key_value("parent_id", f"SDK-{i}")
        batch.append(record)
    body = BodyWrapper()
    body.set_data(batch)
    body.set_duplicate_check_fields(["parent_id"])
    mixed = RecordOperations("Orders").upsert_records(body, HeaderMap())
    mixed_wrapper = mixed.get_object()
    assert isinstance(mixed_wrapper, ActionWrapper), mixed_wrapper
    per_record = [(type(r).__name__, r.get_code().get_value()) for r in mixed_wrapper.get_data()]
    got = RecordOperations("Orders").get_record(int(first[1]), ParameterMap(), HeaderMap())
    wrapper = got.get_object()
    assert isinstance(wrapper, ResponseWrapper), wrapper
    (record,) = wrapper.get_data()
    bulk = _sdk_bulk_write(tmp_path)
    return {
        "bulk": bulk,
        "mixed_status": mixed.get_status_code(),
        "per_record": per_record,
        "first": first,
        "second": second,
        "get_status": got.get_status_code(),
        "id": str(record.get_id()),
        "Name": record.get_key_value("Name"),
        "parent_id": record.get_key_value("parent_id"),
        "Notes": record.get_key_value("Notes"),
    }


def _sdk_bulk_write(tmp_path: Path) -> dict[str, Any]:
    """upload -> create job -> status (until COMPLETED) -> download, all through the SDK."""
    import io
    import time
    import zipfile

    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap
    from zohocrmsdk.src.com.zoho.crm.api.bulk_write import (
        BulkWriteOperations,
        BulkWriteResponse,
        FieldMapping,
        FileBodyWrapper,
        RequestWrapper,
        Resource,
        UploadFileHeader,
    )
    from zohocrmsdk.src.com.zoho.crm.api.modules import MinifiedModule
    from zohocrmsdk.src.com.zoho.crm.api.util import Choice, StreamWrapper

    path = tmp_path / "orders.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("orders.csv", "parent_id,Name\nBULK-1,Bulk one\nBULK-2,Bulk two\n")
    ops = BulkWriteOperations()
    upload_body = FileBodyWrapper()
    upload_body.set_file(StreamWrapper(file_path=str(path)))
    headers = HeaderMap()
    headers.add(UploadFileHeader.feature, "bulk-write")
    headers.add(UploadFileHeader.x_crm_org, "20071234")
    uploaded = ops.upload_file(upload_body, headers)
    upload_result = uploaded.get_object()
    file_id = str(upload_result.get_details()["file_id"])

    module = MinifiedModule()
    module.set_api_name("Orders")
    mappings = []
    for index, name in enumerate(["parent_id", "Name"]):
        mapping = FieldMapping()
        mapping.set_api_name(name)
        mapping.set_index(index)
        mappings.append(mapping)
    resource = Resource()
    resource.set_type(Choice("data"))
    resource.set_module(module)
    resource.set_file_id(file_id)
    resource.set_find_by("parent_id")
    resource.set_field_mappings(mappings)
    request = RequestWrapper()
    request.set_operation(Choice("upsert"))
    request.set_resource([resource])
    created = ops.create_bulk_write_job(request)
    job_id = created.get_object().get_details()["id"]

    deadline = time.monotonic() + 60
    while True:
        job = ops.get_bulk_write_job_details(str(job_id)).get_object()
        assert isinstance(job, BulkWriteResponse), job
        status = job.get_status()
        if status == "COMPLETED" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    result = job.get_result()
    download_url = result.get_download_url() if result is not None else None
    downloaded = ops.download_bulk_write_result(download_url).get_object()
    stream = downloaded.get_file().get_stream()
    data = b"".join(stream) if not isinstance(stream, bytes | bytearray) else bytes(stream)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        csv_text = zf.read(zf.namelist()[0]).decode()
    return {"file_id": file_id, "job_id": str(job_id), "status": status, "result_csv": csv_text}


async def test_official_sdk_initialises_and_upserts(crm_sim: CrmSim, tmp_path: Path) -> None:
    out = await asyncio.wait_for(asyncio.to_thread(_sdk_session, crm_sim.url, tmp_path), 120)
    first_status, first_id, first_message = out["first"]
    second_status, second_id, second_message = out["second"]
    assert first_status in (200, 201) and first_message == "record added"
    assert second_status == 200 and second_message == "record updated"
    assert first_id == second_id == out["id"]
    assert (out["Name"], out["parent_id"], out["Notes"]) == ("SDK order 1", "SDK-1", "two")
    assert out["get_status"] == 200
    # the invalid record is reported on its own, the others succeed (207 multi-status)
    assert out["mixed_status"] in (200, 207)
    assert [name for name, _ in out["per_record"]] == [
        "SuccessResponse",
        "APIException",
        "SuccessResponse",
    ]
    assert out["per_record"][1][1] == "INVALID_DATA"
    # Bulk Write through the SDK: upload, job, status, result file
    bulk = out["bulk"]
    assert bulk["status"] == "COMPLETED"
    assert "STATUS" in bulk["result_csv"].splitlines()[0].upper()
    assert bulk["result_csv"].count("\n") >= 3
    assert {r["parent_id"] for r in crm_sim.state.records["Orders"].values()} >= {
        "BULK-1",
        "BULK-2",
    }
    stored = crm_sim.state.records["Orders"][first_id]
    assert stored["Order_Date"] == "2024-05-01" and stored["Amount"] == 12.5
    calls = crm_sim.state.calls_per_api
    # What the SDK does before a record call: token, current user, org, field metadata.
    assert calls["token"] == 1 and calls["users"] >= 1 and calls["org"] >= 1
    assert calls["fields"] >= 1 and calls["upsert"] == 3 and calls["get"] == 1
    assert (tmp_path / "sdk_tokens.csv").exists()
