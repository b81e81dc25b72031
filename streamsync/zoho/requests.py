"""Build and judge Zoho calls (pure: no I/O).

``build_*()`` return a ``CrmRequest``; ``error_for()`` turns a non-success answer into the
streamsync error to raise or retry (``exc.retryable``); ``judge_records()`` reads a 200, 201,
202, 207 or 400-with-``data`` answer into one ``RecordSuccess | RecordFailure`` per input
record, in input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from streamsync.errors import (
    CrmAuthError,
    CrmError,
    CrmRateLimited,
    CrmRequestError,
    CrmUnavailable,
    crm_error_for_code,
    is_retryable_crm_code,
)
from streamsync.zoho.models import CrmRequest, CrmResponse

__all__ = [
    "MAX_RECORDS_PER_CALL",
    "BulkJob",
    "RecordFailure",
    "RecordOutcome",
    "RecordSuccess",
    "build_create_bulk_job",
    "build_delete",
    "build_get",
    "build_insert",
    "build_list",
    "build_org",
    "build_search",
    "build_update",
    "build_upload",
    "build_upsert",
    "error_for",
    "escape_criteria_value",
    "judge_records",
    "parse_bulk_job",
]

MAX_RECORDS_PER_CALL = 100
API = "/crm/v8"
BULK = "/crm/bulk/v8"
Action = Literal["insert", "update", "delete"]

# Codes that reject the whole request even when Zoho puts them inside data[].
_REQUEST_LEVEL_CODES = frozenset(
    {
        "INVALID_MODULE",
        "OAUTH_SCOPE_MISMATCH",
        "NO_PERMISSION",
        "INVALID_URL_PATTERN",
        "API_NOT_SUPPORTED",
        "AUTHENTICATION_FAILURE",
        "INVALID_REQUEST_METHOD",
    }
)


@dataclass(slots=True)  # one per record of every call: not frozen (hot path)
class RecordSuccess:
    index: int
    id: str
    action: Action


@dataclass(slots=True)
class RecordFailure:
    index: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False


RecordOutcome = RecordSuccess | RecordFailure


@dataclass(frozen=True, slots=True)
class BulkJob:
    id: str
    status: str  # ADDED, IN PROGRESS, COMPLETED, FAILED (INPROGRESS normalised to IN PROGRESS)
    operation: str | None = None
    download_url: str | None = None
    added: int = 0
    updated: int = 0
    skipped: int = 0
    total: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def done(self) -> bool:
        return self.status in ("COMPLETED", "FAILED")


def _check_count(n: int, what: str = "records") -> None:
    if n > MAX_RECORDS_PER_CALL:
        raise ValueError(f"at most {MAX_RECORDS_PER_CALL} {what} per call (got {n})")


def build_upsert(
    module: str,
    records: Sequence[Mapping[str, Any]],
    duplicate_check_fields: Sequence[str] | None = None,
    trigger: Sequence[str] = (),
) -> CrmRequest:
    _check_count(len(records))
    body: dict[str, Any] = {"data": list(records), "trigger": list(trigger)}
    if duplicate_check_fields:
        body["duplicate_check_fields"] = list(duplicate_check_fields)
    return CrmRequest("POST", f"{API}/{quote(module)}/upsert", json=body, api="upsert")


def build_insert(
    module: str, records: Sequence[Mapping[str, Any]], trigger: Sequence[str] = ()
) -> CrmRequest:
    _check_count(len(records))
    body = {"data": list(records), "trigger": list(trigger)}
    return CrmRequest("POST", f"{API}/{quote(module)}", json=body, api="insert")


def build_update(
    module: str, records: Sequence[Mapping[str, Any]], trigger: Sequence[str] = ()
) -> CrmRequest:
    _check_count(len(records))
    for rec in records:
        if not rec.get("id"):
            raise ValueError("every record of an update needs an 'id'")
    body = {"data": list(records), "trigger": list(trigger)}
    return CrmRequest("PUT", f"{API}/{quote(module)}", json=body, api="update")


def build_delete(module: str, ids: Sequence[str]) -> CrmRequest:
    _check_count(len(ids), "ids")
    if not ids:
        raise ValueError("delete needs at least one id")
    return CrmRequest(
        "DELETE",
        f"{API}/{quote(module)}",
        params={"ids": ",".join(ids), "wf_trigger": "false"},
        api="delete",
    )


def build_get(module: str, record_id: str) -> CrmRequest:
    return CrmRequest("GET", f"{API}/{quote(module)}/{quote(record_id)}", api="get")


def build_list(
    module: str,
    fields: Sequence[str],
    page: int = 1,
    page_token: str | None = None,
    per_page: int = 200,
) -> CrmRequest:
    params = {"fields": ",".join(fields), "per_page": str(per_page)}
    if page_token:
        params["page_token"] = page_token
    else:
        params["page"] = str(page)
    return CrmRequest("GET", f"{API}/{quote(module)}", params=params, api="list")


def escape_criteria_value(value: str) -> str:
    """Escape ``(``, ``)`` and ``,`` with a backslash; a trailing backslash is doubled."""
    out = value.replace("\\", "\\\\")
    for ch in "(),":
        out = out.replace(ch, "\\" + ch)
    return out


def build_search(module: str, field_name: str, value: str, page: int = 1) -> CrmRequest:
    criteria = f"({field_name}:equals:{escape_criteria_value(value)})"
    return CrmRequest(
        "GET",
        f"{API}/{quote(module)}/search",
        params={"criteria": criteria, "page": str(page), "per_page": "200"},
        api="search",
    )


def build_org() -> CrmRequest:
    return CrmRequest("GET", f"{API}/org", api="org")


def build_upload(zip_path: Any, org_id: str) -> CrmRequest:
    return CrmRequest(
        "POST",
        f"{API}/upload",
        base="upload",
        headers={"feature": "bulk-write", "X-CRM-ORG": org_id},
        file=zip_path,
        api="bulk.upload",
    )


def build_create_bulk_job(
    module: str,
    file_id: str,
    *,
    find_by: str,
    columns: Sequence[str],
    formats: Mapping[str, str] | None = None,
    callback_url: str | None = None,
    ignore_empty: bool = True,
    operation: str = "upsert",
) -> CrmRequest:
    mappings: list[dict[str, Any]] = []
    for index, name in enumerate(columns):
        mapping: dict[str, Any] = {"api_name": name, "index": index}
        if formats and formats.get(name):
            mapping["format"] = formats[name]
        mappings.append(mapping)
    resource: dict[str, Any] = {
        "type": "data",
        "module": {"api_name": module},
        "file_id": file_id,
        "field_mappings": mappings,
    }
    if operation in ("upsert", "update"):
        resource["find_by"] = find_by
    body: dict[str, Any] = {
        "operation": operation,
        "ignore_empty": ignore_empty,
        "resource": [resource],
    }
    if callback_url:
        body["callback"] = {"url": callback_url, "method": "post"}
    return CrmRequest("POST", f"{BULK}/write", json=body, api="bulk.create")


def build_bulk_job(job_id: str) -> CrmRequest:
    return CrmRequest("GET", f"{BULK}/write/{quote(job_id)}", api="bulk.status")


def build_download(url: str, dest: Any) -> CrmRequest:
    absolute = url.startswith(("http://", "https://"))
    return CrmRequest(
        "GET", url, base="absolute" if absolute else "api", download_to=dest, api="bulk.download"
    )


# ------------------------------------------------------------------------------- judging ----
def _body_dict(resp: CrmResponse) -> dict[str, Any]:
    body = resp.json()
    return body if isinstance(body, dict) else {}


def has_record_data(resp: CrmResponse) -> bool:
    return isinstance(_body_dict(resp).get("data"), list)


def error_for(resp: CrmResponse, api: str = "call") -> CrmError | None:
    """None for a success (or a 400 that carries per-record ``data``); else the error to raise."""
    status = resp.status
    if 200 <= status < 300 or status == 304:
        return None
    body = _body_dict(resp)
    if status == 400 and isinstance(body.get("data"), list):
        return None
    code = str(body.get("code") or body.get("ERROR_CODE") or body.get("error") or "")
    message = str(body.get("message") or body.get("ERROR_MESSAGE") or f"HTTP {status}")
    raw_details = body.get("details")
    details: dict[str, Any] = dict(raw_details) if isinstance(raw_details, dict) else {}
    details.setdefault("http_status", status)
    details.setdefault("api", api)
    if status == 429:
        return CrmRateLimited(message, code=code or "TOO_MANY_REQUESTS", details=details)
    if status >= 500 or status in (408,):
        return CrmUnavailable(message, code=code or "INTERNAL_ERROR", details=details)
    if status == 401:
        return CrmAuthError(message, code=code or "AUTHENTICATION_FAILURE", details=details)
    if not code:
        return CrmRequestError(message, code=f"HTTP_{status}", details=details)
    found = crm_error_for_code(code, message, details=details)
    if found.retryable:  # a 4xx is about this request: resending it unchanged cannot help
        return CrmRequestError(message, code=code, details=details)
    return found


def _action(item: Mapping[str, Any], default: Action) -> Action:
    action = item.get("action")
    if action in ("insert", "update", "delete"):
        return action  # type: ignore[no-any-return]
    message = str(item.get("message", "")).lower()
    if "added" in message or "inserted" in message:
        return "insert"
    if "updated" in message:
        return "update"
    if "deleted" in message:
        return "delete"
    return default


def judge_records(resp: CrmResponse, count: int, default_action: Action) -> list[RecordOutcome]:
    """One outcome per input record, in input order.

    Raises the request-level error when the answer carries no ``data`` array, or when every
    record failed with the same request-level code (e.g. INVALID_MODULE inside data[]).
    """
    err = error_for(resp)
    if err is not None:
        raise err
    body = _body_dict(resp)
    data = body.get("data")
    if not isinstance(data, list):
        raise CrmRequestError(
            f"HTTP {resp.status} without a data array",
            code="UNEXPECTED_RESPONSE",
            details={"http_status": resp.status},
        )
    outcomes: list[RecordOutcome] = []
    append = outcomes.append
    failed = 0
    available = len(data)
    for index in range(count):
        item = data[index] if index < available else None
        if type(item) is not dict:
            item = item if isinstance(item, dict) else None
        if item is None:
            failed += 1
            append(
                RecordFailure(index, "NO_RESULT", "no result for this record", {}, retryable=True)
            )
            continue
        raw_details = item.get("details")
        status = item.get("status")
        if (
            status == "success"
            or (status is not None and str(status).lower() == "success")
            or item.get("code") == "SUCCESS"
        ):
            zoho_id = raw_details.get("id", "") if isinstance(raw_details, dict) else ""
            action = item.get("action")
            if action != "insert" and action != "update" and action != "delete":
                action = _action(item, default_action)
            append(RecordSuccess(index, str(zoho_id), action))
        else:
            failed += 1
            details = dict(raw_details) if isinstance(raw_details, dict) else {}
            code = str(item.get("code") or "UNKNOWN")
            outcomes.append(
                RecordFailure(
                    index,
                    code,
                    str(item.get("message", "")),
                    details,
                    retryable=is_retryable_crm_code(code),
                )
            )
    if failed and failed == len(outcomes):
        failures = [o for o in outcomes if isinstance(o, RecordFailure)]
        codes = {f.code for f in failures}
        if len(codes) == 1 and (code := codes.pop()) in _REQUEST_LEVEL_CODES:
            raise crm_error_for_code(code, failures[0].message, details=failures[0].details)
    return outcomes


_STATUS_ALIASES = {"INPROGRESS": "IN PROGRESS", "IN_PROGRESS": "IN PROGRESS"}


def parse_bulk_job(body: Any) -> BulkJob:
    """A job-details body (status call or callback payload) → BulkJob."""
    if isinstance(body, dict) and isinstance(body.get("data"), list) and body["data"]:
        body = body["data"][0]
    if not isinstance(body, dict) or "id" not in body:
        raise CrmRequestError("bulk job details without an id", code="UNEXPECTED_RESPONSE")
    status = str(body.get("status", "")).upper().strip()
    status = _STATUS_ALIASES.get(status, status)
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    counts: dict[str, int] = {"added": 0, "updated": 0, "skipped": 0, "total": 0}
    for res in body.get("resource") or []:
        file = res.get("file") if isinstance(res, dict) else None
        if isinstance(file, dict):
            for key in counts:
                counts[key] += int(file.get(f"{key}_count") or 0)
    return BulkJob(
        id=str(body["id"]),
        status=status,
        operation=body.get("operation"),
        download_url=(result or {}).get("download_url"),
        raw=body,
        **counts,
    )
