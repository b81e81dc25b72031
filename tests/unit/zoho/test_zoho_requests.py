"""Judging Zoho answers (200/201/202/207/400 bodies, request errors), backoff, retries."""

from __future__ import annotations

from typing import Any

import pytest

from streamsync.errors import CrmAuthError, CrmRateLimited, CrmRequestError, CrmUnavailable
from streamsync.settings import ZohoSettings
from streamsync.zoho import RecordFailure, RecordSuccess, ZohoClient
from streamsync.zoho.limits import backoff_delay
from streamsync.zoho.requests import (
    build_create_bulk_job,
    build_delete,
    build_search,
    build_upsert,
    error_for,
    escape_criteria_value,
    judge_records,
    parse_bulk_job,
)
from streamsync.zoho.transport import CrmRequest, CrmResponse, MockTransport, json_response

OK = {
    "code": "SUCCESS",
    "status": "success",
    "message": "record added",
    "action": "insert",
    "duplicate_field": None,
    "details": {"id": "11"},
}
UPDATED = {
    "code": "SUCCESS",
    "status": "success",
    "message": "record updated",
    "details": {"id": "12"},
}
BAD = {
    "code": "INVALID_DATA",
    "status": "error",
    "message": "invalid data",
    "details": {
        "api_name": "Amount",
        "json_path": "$.data[1].Amount",
        "expected_data_type": "double",
    },
}
LOCKED = {"code": "RECORD_LOCKED", "status": "error", "message": "locked", "details": {}}


@pytest.mark.parametrize("status", [200, 201, 202, 207, 400])
def test_every_status_with_data_is_read_per_record(status: int) -> None:
    out = judge_records(json_response(status, {"data": [OK, BAD, UPDATED, LOCKED]}), 4, "insert")
    assert out == [
        RecordSuccess(0, "11", "insert"),
        RecordFailure(1, "INVALID_DATA", "invalid data", BAD["details"], retryable=False),
        RecordSuccess(2, "12", "update"),
        RecordFailure(3, "RECORD_LOCKED", "locked", {}, retryable=True),
    ]


def test_missing_results_are_retryable_failures() -> None:
    out = judge_records(json_response(200, {"data": [OK]}), 2, "insert")
    assert isinstance(out[1], RecordFailure) and out[1].retryable and out[1].code == "NO_RESULT"


def test_request_level_code_inside_data_raises() -> None:
    body = {
        "data": [
            {
                "code": "INVALID_MODULE",
                "status": "error",
                "message": "the module name given seems to be invalid",
                "details": {},
            }
        ]
    }
    with pytest.raises(CrmRequestError) as info:
        judge_records(json_response(400, body), 1, "insert")
    assert info.value.code == "INVALID_MODULE"


@pytest.mark.parametrize(
    "status,body,cls,code",
    [
        (
            429,
            {"code": "TOO_MANY_REQUESTS", "message": "x", "status": "error"},
            CrmRateLimited,
            "TOO_MANY_REQUESTS",
        ),
        (429, None, CrmRateLimited, "TOO_MANY_REQUESTS"),
        (500, {"code": "INTERNAL_ERROR", "message": "x"}, CrmUnavailable, "INTERNAL_ERROR"),
        (503, None, CrmUnavailable, "INTERNAL_ERROR"),
        (
            401,
            {"code": "OAUTH_SCOPE_MISMATCH", "message": "Unauthorized"},
            CrmAuthError,
            "OAUTH_SCOPE_MISMATCH",
        ),
        (
            400,
            {"code": "INVALID_MODULE", "message": "bad module", "details": {}},
            CrmRequestError,
            "INVALID_MODULE",
        ),
        (400, {"code": "LIMIT_EXCEEDED", "message": "too many"}, CrmRequestError, "LIMIT_EXCEEDED"),
        (
            404,
            {"code": "INVALID_URL_PATTERN", "message": "x"},
            CrmRequestError,
            "INVALID_URL_PATTERN",
        ),
        (
            400,
            {"ERROR_CODE": "INVALID_REQUEST", "ERROR_MESSAGE": "Bad Request"},
            CrmRequestError,
            "INVALID_REQUEST",
        ),
    ],
)
def test_request_errors(status: int, body: Any, cls: type, code: str) -> None:
    resp = json_response(status, body) if body is not None else CrmResponse(status)
    err = error_for(resp)
    assert type(err) is cls
    assert err is not None and err.code == code
    assert err.retryable == (cls in (CrmRateLimited, CrmUnavailable))


def test_success_statuses_are_not_errors() -> None:
    for status in (200, 201, 202, 204, 207):
        assert error_for(CrmResponse(status)) is None


def test_builders() -> None:
    req = build_upsert("Orders", [{"parent_id": "1"}], ["parent_id"])
    assert req.json == {
        "data": [{"parent_id": "1"}],
        "trigger": [],
        "duplicate_check_fields": ["parent_id"],
    }
    with pytest.raises(ValueError):
        build_upsert("Orders", [{}] * 101)
    with pytest.raises(ValueError):
        build_delete("Orders", ["1"] * 101)
    assert build_delete("Orders", ["1", "2"]).params["ids"] == "1,2"
    assert escape_criteria_value("a(b),c\\") == "a\\(b\\)\\,c\\\\"
    assert (
        build_search("Orders", "parent_id", "x,y").params["criteria"] == "(parent_id:equals:x\\,y)"
    )
    job = build_create_bulk_job(
        "Orders",
        "77",
        find_by="parent_id",
        columns=["parent_id", "Order_Date"],
        formats={"Order_Date": "yyyy-MM-dd"},
        callback_url="http://cb",
    )
    assert job.json["resource"][0]["field_mappings"] == [
        {"api_name": "parent_id", "index": 0},
        {"api_name": "Order_Date", "index": 1, "format": "yyyy-MM-dd"},
    ]
    assert job.json["resource"][0]["find_by"] == "parent_id"
    assert job.json["callback"] == {"url": "http://cb", "method": "post"}
    assert job.json["ignore_empty"] is True and job.json["operation"] == "upsert"


@pytest.mark.parametrize("status", ["INPROGRESS", "IN PROGRESS", "in progress"])
def test_bulk_job_status_spellings(status: str) -> None:
    job = parse_bulk_job({"id": "5", "status": status})
    assert job.status == "IN PROGRESS" and not job.done


def test_bulk_job_counts_and_url() -> None:
    job = parse_bulk_job(
        {
            "data": [
                {
                    "id": "5",
                    "status": "COMPLETED",
                    "result": {"download_url": "/v8/x.zip"},
                    "resource": [
                        {
                            "file": {
                                "added_count": 2,
                                "updated_count": 1,
                                "skipped_count": 3,
                                "total_count": 6,
                            }
                        }
                    ],
                }
            ]
        }
    )
    assert (job.added, job.updated, job.skipped, job.total) == (2, 1, 3, 6)
    assert job.download_url == "/v8/x.zip" and job.done


def test_backoff_is_jittered_exponential_and_capped() -> None:
    lo = [backoff_delay(n, base=0.5, cap=30, rand=lambda: 0.0) for n in range(8)]
    hi = [backoff_delay(n, base=0.5, cap=30, rand=lambda: 1.0) for n in range(8)]
    assert hi == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert lo == [h / 2 for h in hi]
    assert backoff_delay(1000, base=0.5, cap=30, rand=lambda: 1.0) == 30


class Flaky:
    """Fails the first ``n`` CRM calls with ``status`` (or a dropped connection), then OK."""

    def __init__(self, n: int, status: int | None) -> None:
        self.n = n
        self.status = status
        self.calls = 0

    def __call__(self, request: CrmRequest) -> CrmResponse:
        if request.api == "token":
            return json_response(200, {"access_token": "t", "expires_in": 3600})
        self.calls += 1
        if self.calls <= self.n:
            if self.status is None:
                from streamsync.errors import CrmUnavailable

                raise CrmUnavailable("dropped", code="CONNECTION_DROPPED")
            return json_response(self.status, {"code": "X", "message": "x"})
        return json_response(200, {"data": [OK]})


@pytest.mark.parametrize("status", [429, 500, 502, None])
async def test_retries_with_backoff_then_succeeds(status: int | None) -> None:
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)

    app = Flaky(3, status)
    settings = ZohoSettings(dc="us", backoff_base_s=1, backoff_cap_s=3)
    async with ZohoClient(
        settings, transport=MockTransport(app), sleep=sleep, rand=lambda: 1.0
    ) as client:
        out = await client.upsert("Orders", [{"Name": "x"}])
    assert isinstance(out[0], RecordSuccess)
    assert sleeps == [1, 2, 3]
    assert client.credits.used_24h() == 1  # failed attempts are not charged


async def test_gives_up_after_max_retries() -> None:
    async def sleep(d: float) -> None:
        return None

    app = Flaky(100, 500)
    async with ZohoClient(
        ZohoSettings(dc="us", max_retries=3), transport=MockTransport(app), sleep=sleep
    ) as client:
        with pytest.raises(CrmUnavailable):
            await client.upsert("Orders", [{"Name": "x"}])
    assert app.calls == 4
