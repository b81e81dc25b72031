"""Bulk Write end to end, client ↔ simulator on loopback: CSV zip, upload, job, wait, results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from streamsync.errors import BulkJobFailed
from streamsync.settings import default_tables
from streamsync.zoho import ZohoClient, csv_columns, csv_row, write_bulk_zip
from streamsync.zoho.records import bulk_formats
from streamsync.zoho.requests import parse_bulk_job

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

ORDERS = default_tables()[0]


def order(i: int, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": i,
        "order_number": f"SO-{i}",
        "customer_email": f"c{i}@example.com",
        "amount": "10.25",
        "currency": "EUR",
        "status": "paid",
        "order_date": "2024-05-01",
        "updated_at": "2024-05-02T10:15:00+00:00",
        "notes": None,
    }
    base.update(extra)
    return base


async def _rows(rows: list[dict[str, Any]]) -> AsyncIterator[list[str]]:
    for r in rows:
        yield csv_row(ORDERS, r)


async def _bulk(client: ZohoClient, tmp_path: Path, rows: list[dict[str, Any]], **kw: Any) -> str:
    zip_path = tmp_path / "chunk.zip"
    n = await write_bulk_zip(_rows(rows), csv_columns(ORDERS), zip_path)
    assert n == len(rows)
    return await client.bulk_upsert(
        "Orders",
        zip_path,
        find_by="parent_id",
        columns=csv_columns(ORDERS),
        formats=bulk_formats(ORDERS),
        **kw,
    )


async def test_bulk_upsert_end_to_end_with_skipped_rows(crm_sim: CrmSim, tmp_path: Path) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        await client.upsert(
            "Orders",
            [{"Name": "old", "parent_id": "3", "Notes": "keep"}],
            duplicate_check_fields=["parent_id"],
        )
        rows = [order(i) for i in range(1, 6)]
        rows[1]["order_number"] = "POISON"  # row 1: INVALID_DATA on Name
        rows[3]["status"] = "lost"  # row 3: not in the picklist
        job_id = await _bulk(client, tmp_path, rows)
        job = await client.wait_bulk_job(job_id, poll_interval_s=0.02, timeout_s=10)
        assert job.status == "COMPLETED"
        assert (job.added, job.updated, job.skipped) == (2, 1, 2)
        results = await client.bulk_results(job, tmp_path)
    assert [r.status for r in results] == ["ADDED", "SKIPPED", "UPDATED", "SKIPPED", "ADDED"]
    assert results[1].errors == {"Name": "INVALID_DATA"}
    assert results[3].errors == {"Status": "INVALID_DATA"}
    assert results[2].values["parent_id"] == "3"
    store = crm_sim.state.records["Orders"]
    assert store[results[2].record_id or ""]["Notes"] == "keep"  # ignore_empty kept it
    assert store[results[0].record_id or ""]["Order_Date"] == "2024-05-01"
    assert store[results[0].record_id or ""]["Amount"] == 10.25
    assert crm_sim.state.stats()["credits_used"] >= 500


async def test_first_poll_waits_so_a_finished_job_costs_one_status_call(
    crm_sim: CrmSim, tmp_path: Path
) -> None:
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        job_id = await _bulk(client, tmp_path, [order(1), order(2)])
        before = crm_sim.state.stats()["calls"].get("bulk.status", 0)
        job = await client.wait_bulk_job(
            job_id, poll_interval_s=0.02, first_poll_after_s=1.0, timeout_s=10
        )
        assert job.status == "COMPLETED"
        assert crm_sim.state.stats()["calls"]["bulk.status"] - before == 1


async def test_failed_job_is_reported(crm_sim: CrmSim, tmp_path: Path) -> None:
    crm_sim.configure(fail_next_bulk_jobs=1)
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        job_id = await _bulk(client, tmp_path, [order(1)])
        job = await client.wait_bulk_job(job_id, poll_interval_s=0.02, timeout_s=10)
        assert job.status == "FAILED"
        with pytest.raises(BulkJobFailed):
            await client.bulk_results(job, tmp_path)
        again = await client.wait_bulk_job(
            await _bulk(client, tmp_path, [order(1)]), poll_interval_s=0.02, timeout_s=10
        )
        assert again.status == "COMPLETED"


async def test_lowercase_status_relative_url_and_inprogress_spelling(
    crm_sim: CrmSim, tmp_path: Path
) -> None:
    crm_sim.configure(
        result_status_case="lower",
        download_url_style="relative",
        in_progress_spelling="INPROGRESS",
        bulk_job_seconds=0.3,
    )
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        job_id = await _bulk(client, tmp_path, [order(1), order(2)])
        seen = set()
        while True:
            job = await client.bulk_job(job_id)
            seen.add(job.status)
            if job.done:
                break
            await asyncio.sleep(0.05)
        assert "IN PROGRESS" in seen or "ADDED" in seen
        assert job.download_url is not None and job.download_url.startswith("/")
        results = await client.bulk_results(job, tmp_path)
    assert [r.status for r in results] == ["ADDED", "ADDED"]


async def test_callback_wakes_the_waiter(crm_sim: CrmSim, tmp_path: Path) -> None:
    crm_sim.configure(bulk_job_seconds=0.2)
    done = asyncio.Event()
    payloads: list[Any] = []

    async def callback(request: web.Request) -> web.Response:
        payloads.append(await request.json())
        done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ZohoClient(crm_sim.zoho_settings()) as client:
            job_id = await _bulk(
                client, tmp_path, [order(1)], callback_url=f"http://127.0.0.1:{port}/cb"
            )
            # A long poll interval: only the callback can finish this wait in time.
            job = await client.wait_bulk_job(
                job_id, poll_interval_s=30, done_event=done, timeout_s=10
            )
            assert job.status == "COMPLETED"
        assert parse_bulk_job(payloads[0]).id == job_id
        assert crm_sim.state.jobs[job_id].callback_status == 200
    finally:
        await runner.cleanup()


async def test_upload_rules(crm_sim: CrmSim, tmp_path: Path) -> None:
    from streamsync.errors import CrmRequestError

    crm_sim.configure(max_bulk_rows=3)
    async with ZohoClient(crm_sim.zoho_settings()) as client:
        with pytest.raises(CrmRequestError) as info:
            await _bulk(client, tmp_path, [order(i) for i in range(4)])
        assert info.value.code == "LIMIT_EXCEEDED"
        bad = tmp_path / "bad.zip"
        bad.write_bytes(b"not a zip")
        with pytest.raises(CrmRequestError) as info:
            await client.bulk_upsert("Orders", bad, find_by="parent_id", columns=["parent_id"])
        assert info.value.code == "INVALID_FILE_FORMAT"
