"""The bundled Zoho CRM v8 simulator (aiohttp.web), for the demo, tests and benchmarks.

``create_app(SimConfig(...))`` → an Application whose state is ``app[SIM_STATE]``. Routes follow
docs/zoho-crm-v8.md: token endpoint, org/users/modules/fields metadata, record APIs, Bulk Write
(upload, jobs, result download, callback), plus test endpoints under ``/__sim``:
GET /__sim/stats, GET /__sim/records/{module}, POST /__sim/reset, POST /__sim/config,
POST /__sim/expire-tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import re
import time
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from streamsync.zoho.simulator.schema import coerce_csv, is_poison
from streamsync.zoho.simulator.state import USER, BulkJobState, SimConfig, SimState, _now_iso

__all__ = ["SIM_STATE", "create_app"]

log = logging.getLogger(__name__)

SIM_STATE: web.AppKey[SimState] = web.AppKey("sim_state", SimState)
_TASKS = web.AppKey[set[asyncio.Task[None]]]("sim_tasks")
_HEAVY = web.RequestKey("sim_heavy_write", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    return _json(
        {"code": code, "details": details or {}, "message": message, "status": "error"}, status
    )


def _state(request: web.Request) -> SimState:
    return request.app[SIM_STATE]


def _write_cost(n: int) -> int:
    return max(1, -(-n // 10))


# ------------------------------------------------------------------------ middleware ----
@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Concurrency limit, seeded faults and latency. Latency is the server's response time,
    counted from the request's arrival: the handler's own work is part of it, and the rest is
    spent after the handler ran, while the call still counts as in flight."""
    path = request.path
    if not path.startswith("/crm/") and not path.startswith("/oauth/"):
        return await handler(request)
    state = _state(request)
    cfg = state.config
    rng = state.rng
    loop = asyncio.get_running_loop()
    arrived = loop.time()
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        delay = cfg.latency_ms
        if cfg.latency_jitter_ms:
            delay += rng.random() * cfg.latency_jitter_ms
        if cfg.rate_slow and rng.random() < cfg.rate_slow:
            delay += cfg.slow_ms
            state.faults["slow"] += 1
        response: web.StreamResponse
        if path.startswith("/crm/") and state.in_flight > cfg.concurrency:
            state.faults["concurrency_429"] += 1
            response = _too_many("concurrency limit of the user for the app is exceeded")
        elif path.startswith("/crm/") and cfg.rate_429 and rng.random() < cfg.rate_429:
            state.faults["429"] += 1
            response = _too_many(
                "Number of API requests for the 24 hour period is exceeded or "
                "the concurrency limit of the user for the app is exceeded"
            )
        elif path.startswith("/crm/") and cfg.rate_500 and rng.random() < cfg.rate_500:
            state.faults["500"] += 1
            response = _error(500, "INTERNAL_ERROR", "Internal Server Error")
        elif path.startswith("/crm/") and cfg.rate_drop and rng.random() < cfg.rate_drop:
            state.faults["drop"] += 1
            if cfg.drop_after_processing:
                await handler(request)
            await _spend(delay, arrived, loop)
            return _drop(request)
        else:
            response = await handler(request)
        await _spend(delay, arrived, loop)
        if path.startswith("/crm/") and state.credits_used() * 2 >= cfg.daily_credit_budget:
            response.headers["X-API-CREDITS-REMAINING"] = str(state.credits_remaining())
        return response
    finally:
        state.in_flight -= 1
        if request.get(_HEAVY):
            state.heavy_in_flight -= 1


async def _spend(delay_ms: float, arrived: float, loop: asyncio.AbstractEventLoop) -> None:
    """Sleep what is left of ``delay_ms`` since the request arrived."""
    left = delay_ms / 1000 - (loop.time() - arrived)
    if left > 0:
        await asyncio.sleep(left)


def _drop(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        transport.abort()  # the client sees the connection drop without an answer
    return web.Response(status=500)


def _too_many(message: str) -> web.Response:
    return _error(429, "TOO_MANY_REQUESTS", message)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not path.startswith("/crm/") or "/bulk-write/" in path:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header:
        return _error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
    token = header.removeprefix("Zoho-oauthtoken ").strip()
    if not header.startswith("Zoho-oauthtoken ") or not _state(request).token_valid(
        token, time.time()
    ):
        _state(request).faults["invalid_token"] += 1
        return _error(401, "INVALID_TOKEN", "invalid oauth token")
    return await handler(request)


# ------------------------------------------------------------------------ oauth ----
async def token(request: web.Request) -> web.Response:
    state = _state(request)
    cfg = state.config
    params: dict[str, str] = dict(request.query)
    if request.can_read_body:
        form = await request.post()
        params.update({k: str(v) for k, v in form.items()})
    if params.get("grant_type") != "refresh_token":
        return _json({"error": "unsupported_grant_type"}, 400)
    if cfg.check_client and (
        params.get("client_id") != cfg.client_id or params.get("client_secret") != cfg.client_secret
    ):
        return _json({"error": "invalid_client"})
    if cfg.check_client and params.get("refresh_token") != cfg.refresh_token:
        return _json({"error": "invalid_code"})
    access = state.issue_token(time.time())
    state.log_call("token", None, 0, 200 if access else 400)
    if access is None:
        return _json(
            {
                "error_description": "You have made too many requests continuously. "
                "Please try again after some time.",
                "error": "Access Denied",
                "status": "failure",
            },
            400,
        )
    domain = cfg.public_url or str(request.url.origin())
    return _json(
        {
            "access_token": access,
            "api_domain": domain,
            "token_type": "Bearer",
            "expires_in": int(cfg.token_ttl_s) if cfg.token_ttl_s >= 1 else cfg.token_ttl_s,
            "scope": "ZohoCRM.modules.ALL ZohoCRM.bulk.ALL ZohoCRM.settings.ALL "
            "ZohoCRM.org.ALL ZohoCRM.users.READ ZohoFiles.files.ALL",
        }
    )


# ------------------------------------------------------------------------ metadata ----
def _charge_one(state: SimState, api: str, module: str | None = None) -> web.Response | None:
    if not state.charge(1):
        state.faults["credits_429"] += 1
        return _too_many("Number of API requests for the 24 hour period is exceeded")
    state.log_call(api, module, 0, 200)
    return None


async def org(request: web.Request) -> web.Response:
    state = _state(request)
    if (refused := _charge_one(state, "org")) is not None:
        return refused
    cfg = state.config
    return _json(
        {
            "org": [
                {
                    "id": "5725767000000021001",
                    "zgid": cfg.org_id,
                    "company_name": "streamsync simulator",
                    "primary_email": "sync@example.com",
                    "domain_name": f"org{cfg.org_id}",
                    "time_zone": "UTC",
                    "iso_code": "USD",
                    "currency": "US Dollar",
                    "currency_symbol": "$",
                    "country_code": "US",
                    "type": "production",
                    "primary_zuid": "736078909",
                    "alias": None,
                    "mc_status": False,
                    "gapps_enabled": False,
                }
            ]
        }
    )


async def users(request: web.Request) -> web.Response:
    state = _state(request)
    if (refused := _charge_one(state, "users")) is not None:
        return refused
    return _json(
        {
            "users": [
                {
                    "id": USER["id"],
                    "full_name": USER["name"],
                    "first_name": "Sync",
                    "last_name": "User",
                    "email": "sync@example.com",
                    "status": "active",
                    "zuid": "736078909",
                    "role": {"name": "CEO", "id": "5725767000000026005"},
                    "profile": {"name": "Administrator", "id": "5725767000000026011"},
                    "confirm": True,
                    "time_zone": "UTC",
                }
            ],
            "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False},
        }
    )


def _module_meta(state: SimState, name: str) -> dict[str, Any]:
    mod = state.config.modules[name]
    return {
        "api_name": name,
        "module_name": name,
        "plural_label": name,
        "singular_label": name,
        "id": mod.id,
        "api_supported": True,
        "generated_type": "custom",
        "creatable": True,
        "editable": True,
        "deletable": True,
        "viewable": True,
        "status": "visible",
    }


async def modules(request: web.Request) -> web.Response:
    state = _state(request)
    if (refused := _charge_one(state, "modules")) is not None:
        return refused
    name = request.match_info.get("module")
    if name is not None:
        if name not in state.config.modules:
            return _error(
                400,
                "INVALID_MODULE",
                "the module name given seems to be invalid",
                {"resource_path_index": 0},
            )
        return _json({"modules": [_module_meta(state, name)]})
    return _json({"modules": [_module_meta(state, m) for m in state.config.modules]})


async def fields_meta(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.query.get("module", "")
    if (refused := _charge_one(state, "fields", name)) is not None:
        return refused
    mod = state.config.modules.get(name)
    if mod is None:
        return _error(
            400,
            "INVALID_MODULE",
            "the module name given seems to be invalid",
            {"resource_path_index": 0},
        )
    out = []
    for n, f in enumerate(mod.fields):
        out.append(
            {
                "api_name": f.api_name,
                "field_label": f.api_name.replace("_", " "),
                "display_label": f.api_name.replace("_", " "),
                "data_type": f.data_type,
                "json_type": f.json_type,
                "id": str(5725767000000100001 + n),
                "system_mandatory": f.mandatory,
                "custom_field": f.api_name != "Name",
                "length": f.max_length or 255,
                "read_only": False,
                "visible": True,
                "unique": {"case_sensitive": False} if f.unique else {},
                "pick_list_values": [{"display_value": v, "actual_value": v} for v in f.picklist],
            }
        )
    return _json({"fields": out})


# ------------------------------------------------------------------------ records ----
def _module_or_error(state: SimState, name: str) -> web.Response | None:
    if name not in state.config.modules:
        return _error(
            400,
            "INVALID_MODULE",
            "the module name given seems to be invalid",
            {"resource_path_index": 0},
        )
    return None


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _record_item(result: Any, op: str) -> dict[str, Any]:
    if not result.ok:
        return {
            "code": result.code,
            "details": result.details,
            "message": result.message,
            "status": "error",
        }
    now = _now_iso()
    item: dict[str, Any] = {
        "code": "SUCCESS",
        "details": {
            "Modified_Time": now,
            "Modified_By": USER,
            "Created_Time": now,
            "id": result.id,
            "Created_By": USER,
        },
        "message": "record added" if result.action == "insert" else "record updated",
        "status": "success",
    }
    if op == "insert":
        item["details"]["$approval_state"] = "approved"
    if op == "upsert":
        item["duplicate_field"] = result.duplicate_field
        item["action"] = result.action
    return item


async def _write(request: web.Request, op: str) -> web.Response:
    state = _state(request)
    module = request.match_info["module"]
    if (bad := _module_or_error(state, module)) is not None:
        return bad
    body = await _body(request)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data:
        return _error(
            400,
            "INVALID_DATA",
            "body must hold a non-empty data array",
            {"expected_data_type": "jsonarray", "api_name": "data"},
        )
    if len(data) > 100:
        return _error(
            400, "LIMIT_EXCEEDED", "the number of records exceeds the limit of 100", {"limit": 100}
        )
    dcf = body.get("duplicate_check_fields") if op == "upsert" else None
    if dcf is not None:
        mod = state.config.modules[module]
        allowed = set(state._dup_fields(mod))
        bad_fields = [f for f in dcf if f not in allowed]
        if bad_fields:
            return _error(
                400,
                "INVALID_DATA",
                "invalid data",
                {"api_name": "duplicate_check_fields", "supported_values": sorted(allowed)},
            )
    heavy = len(data) > 10
    if heavy and state.heavy_in_flight >= state.config.sub_concurrency:
        state.faults["sub_concurrency_429"] += 1
        return _too_many("sub-concurrency limit exceeded")
    if not state.charge(_write_cost(len(data))):
        state.faults["credits_429"] += 1
        return _too_many("Number of API requests for the 24 hour period is exceeded")
    if heavy:  # released by the middleware once the answer (and its latency) is out
        state.heavy_in_flight += 1
        request[_HEAVY] = True
    items = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            items.append(
                {
                    "code": "INVALID_DATA",
                    "details": {"json_path": f"$.data[{i}]"},
                    "message": "invalid data",
                    "status": "error",
                }
            )
            continue
        if op == "update" and request.match_info.get("id"):
            rec = {**rec, "id": request.match_info["id"]}
        items.append(_record_item(state.write(module, rec, op, i, dcf), op))
    ok = [it for it in items if it["status"] == "success"]
    if len(ok) == len(items):
        status = 201 if op == "insert" else 200
        if op == "upsert" and all(it.get("action") == "insert" for it in ok):
            status = state.config.upsert_insert_status
    elif ok:
        status = 207
    else:
        status = 400
    state.log_call(op, module, len(data), status)
    return _json({"data": items}, status)


async def upsert(request: web.Request) -> web.Response:
    return await _write(request, "upsert")


async def insert_or_list(request: web.Request) -> web.Response:
    if request.method == "GET":
        return await list_records(request)
    if request.method == "PUT":
        return await _write(request, "update")
    if request.method == "DELETE":
        return await delete(request)
    return await _write(request, "insert")


async def delete(request: web.Request) -> web.Response:
    state = _state(request)
    module = request.match_info["module"]
    if (bad := _module_or_error(state, module)) is not None:
        return bad
    ids_param = request.match_info.get("id") or request.query.get("ids", "")
    ids = [i for i in ids_param.split(",") if i]
    if not ids:
        return _error(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param": "ids"},
        )
    if len(ids) > 100:
        return _error(400, "LIMIT_EXCEEDED", "the number of ids exceeds the limit of 100")
    if not state.charge(_write_cost(len(ids))):
        return _too_many("Number of API requests for the 24 hour period is exceeded")
    items = []
    for rid in ids:
        if state.delete(module, rid):
            items.append(
                {
                    "code": "SUCCESS",
                    "details": {"id": rid},
                    "message": "record deleted",
                    "status": "success",
                }
            )
        else:
            items.append(
                {
                    "code": "INVALID_DATA",
                    "details": {"id": rid},
                    "message": "record not deleted",
                    "status": "error",
                }
            )
    n_ok = sum(1 for it in items if it["status"] == "success")
    status = 200 if n_ok == len(items) else 207 if n_ok else 400
    state.log_call("delete", module, len(ids), status)
    return _json({"data": items}, status)


async def record_by_id(request: web.Request) -> web.Response:
    if request.method == "PUT":
        return await _write(request, "update")
    if request.method == "DELETE":
        return await delete(request)
    state = _state(request)
    module = request.match_info["module"]
    if (bad := _module_or_error(state, module)) is not None:
        return bad
    if (refused := _charge_one(state, "get", module)) is not None:
        return refused
    rec = state.records[module].get(request.match_info["id"])
    if rec is None:
        return web.Response(status=204)
    return _json({"data": [rec]})


def _page(request: web.Request) -> tuple[int, int]:
    try:
        per_page = max(1, min(200, int(request.query.get("per_page", "200"))))
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        per_page, page = 200, 1
    return page, per_page


async def list_records(request: web.Request) -> web.Response:
    state = _state(request)
    module = request.match_info["module"]
    if (bad := _module_or_error(state, module)) is not None:
        return bad
    fields = [f for f in request.query.get("fields", "").split(",") if f]
    if not fields:
        return _error(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param_name": "fields"},
        )
    if (refused := _charge_one(state, "list", module)) is not None:
        return refused
    page, per_page = _page(request)
    token = request.query.get("page_token")
    start = int(token) if token and token.isdigit() else (page - 1) * per_page
    all_recs = list(state.records[module].values())
    chunk = all_recs[start : start + per_page]
    if not chunk:
        return web.Response(status=204)
    data = [{"id": r["id"], **{f: r.get(f) for f in fields}} for r in chunk]
    more = start + per_page < len(all_recs)
    info = {
        "per_page": per_page,
        "count": len(data),
        "page": page,
        "more_records": more,
        "next_page_token": str(start + per_page) if more else None,
    }
    return _json({"data": data, "info": info})


_CRITERIA = re.compile(r"^\(\s*([A-Za-z0-9_$.]+)\s*:\s*(equals|starts_with)\s*:(.*)\)$", re.S)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


async def search(request: web.Request) -> web.Response:
    state = _state(request)
    module = request.match_info["module"]
    if (bad := _module_or_error(state, module)) is not None:
        return bad
    criteria = request.query.get("criteria")
    if not criteria:
        return _error(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param_name": "criteria"},
        )
    match = _CRITERIA.match(criteria.strip())
    if state.config.refuse_next_searches > 0:
        state.config.refuse_next_searches -= 1
        state.faults["search_refused"] += 1
        match = None
    if match is None:
        return _error(400, "INVALID_QUERY", "invalid query formed", {"criteria": criteria})
    if (refused := _charge_one(state, "search", module)) is not None:
        return refused
    field_name, operator, raw = match.group(1), match.group(2), _unescape(match.group(3))
    needle = raw.lower()
    hits = []
    for rec in state.records[module].values():
        value = rec.get(field_name)
        if value is None:
            continue
        text = str(value).lower()
        # Zoho's `equals` behaves like "contains" (zoho-crm-v8.md §3.6).
        if (operator == "equals" and needle in text) or (
            operator == "starts_with" and text.startswith(needle)
        ):
            hits.append(rec)
    page, per_page = _page(request)
    chunk = hits[(page - 1) * per_page : page * per_page]
    if not chunk:
        return web.Response(status=204)
    info = {
        "per_page": per_page,
        "count": len(chunk),
        "page": page,
        "more_records": page * per_page < len(hits),
    }
    return _json({"data": chunk, "info": info})


# ------------------------------------------------------------------------ bulk write ----
def _bad_headers() -> web.Response:
    return _json(
        {
            "ERROR_CODE": "INVALID_REQUEST",
            "ERROR_MESSAGE": "Bad Request",
            "x-error": "check if headers [feature, X-CRM-ORG] are present and valid",
        },
        400,
    )


async def upload(request: web.Request) -> web.Response:
    state = _state(request)
    if request.headers.get("feature") != "bulk-write" or (
        request.headers.get("X-CRM-ORG") != state.config.org_id
    ):
        state.log_call("bulk.upload", None, 0, 400)
        return _bad_headers()
    try:
        form = await request.post()
    except ValueError:
        form = None
    part = form.get("file") if form is not None else None
    if not isinstance(part, web.FileField):
        return _error(
            400, "INVALID_FILE_FORMAT", "invalid file format. only zip format is supported"
        )
    data = part.file.read()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1 or not names[0].lower().endswith(".csv"):
                return _error(
                    400,
                    "INVALID_FILE_FORMAT",
                    "the zip must hold exactly one CSV file for this module",
                )
            text = archive.read(names[0]).decode("utf-8-sig")
    except (zipfile.BadZipFile, UnicodeDecodeError):
        return _error(
            400, "INVALID_FILE_FORMAT", "invalid file format. only zip format is supported"
        )
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or not rows[0] or any(not h.strip() for h in rows[0]):
        return _error(400, "INVALID_FILE_FORMAT", "the first row must hold the field names")
    header = rows[0]
    if len(set(header)) != len(header):
        return _error(400, "INVALID_FILE_FORMAT", "duplicate column names in the header")
    body = [r for r in rows[1:] if r]
    if len(body) > state.config.max_bulk_rows:
        return _error(
            400,
            "LIMIT_EXCEEDED",
            f"more than {state.config.max_bulk_rows} records",
            {"limit": state.config.max_bulk_rows},
        )
    if (refused := _charge_one(state, "bulk.upload")) is not None:
        return refused
    file_id = state.new_id()
    state.uploads[file_id] = (header, body)
    return _json(
        {
            "status": "success",
            "code": "FILE_UPLOAD_SUCCESS",
            "message": "file uploaded.",
            "details": {"file_id": file_id, "created_time": _now_iso()},
        }
    )


async def create_job(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    if not isinstance(body, dict) or "operation" not in body:
        return _error(
            400,
            "MANDATORY_NOT_FOUND",
            "required key operation is not found in request body.",
            {"api_name": "operation"},
        )
    operation = body["operation"]
    if operation not in ("insert", "update", "upsert"):
        return _error(
            400,
            "INVALID_DATA",
            "invalid data",
            {"api_name": "operation", "supported_values": ["insert", "update", "upsert"]},
        )
    callback = body.get("callback")
    if callback is not None and (
        not isinstance(callback, dict) or callback.get("method") != "post"
    ):
        return _error(
            400,
            "INVALID_CALLBACK_METHOD",
            "invalid callback method",
            {"supported_callback_methods": ["post"]},
        )
    resources = body.get("resource")
    if not isinstance(resources, list) or len(resources) != 1 or not isinstance(resources[0], dict):
        return _error(
            400, "INVALID_DATA", "exactly one resource is supported", {"api_name": "resource"}
        )
    res = resources[0]
    module = (res.get("module") or {}).get("api_name")
    if module not in state.config.modules:
        return _error(
            400, "MODULE_NOT_AVAILABLE", "the module is not available", {"api_name": "module"}
        )
    upload_data = state.uploads.get(str(res.get("file_id")))
    if upload_data is None:
        return _error(400, "INVALID_FILE_ID", "improper file id", {"api_name": "file_id"})
    header, rows = upload_data
    mod = state.config.modules[module]
    mappings = res.get("field_mappings")
    if not mappings:
        mappings = [{"api_name": h, "index": i} for i, h in enumerate(header)]
    for m in mappings:
        if m.get("api_name") not in mod.by_name:
            return _error(
                400,
                "INVALID_FIELD",
                f"invalid mapping. invalid api_name {m.get('api_name')}",
                {"api_name": m.get("api_name")},
            )
        if not isinstance(m.get("index"), int) or not 0 <= m["index"] < len(header):
            return _error(
                400, "COLUMN_INDEX_NOT_FOUND", "column index not found", {"index": m.get("index")}
            )
    find_by = res.get("find_by")
    if operation in ("update", "upsert"):
        allowed = set(state._dup_fields(mod)) | {"id"}
        if find_by not in allowed:
            return _error(
                400,
                "INVALID_DATA",
                "invalid find_by",
                {"api_name": "find_by", "supported_values": sorted(allowed)},
            )
    if operation in ("insert", "upsert"):
        mapped = {m["api_name"] for m in mappings}
        missing = [f for f in mod.mandatory_fields if f not in mapped]
        if missing:
            return _error(
                400,
                "MANDATORY_FIELDS_NOT_MAPPED",
                "mandatory fields not mapped",
                {"api_names": missing},
            )
    if not state.charge(500):
        state.faults["credits_429"] += 1
        return _too_many("Number of API requests for the 24 hour period is exceeded")
    fail = state.config.fail_next_bulk_jobs > 0
    if fail:
        state.config.fail_next_bulk_jobs -= 1
    job = BulkJobState(
        id=state.new_id(),
        module=module,
        operation=operation,
        find_by=find_by,
        mappings=list(mappings),
        header=header,
        rows=rows,
        ignore_empty=bool(body.get("ignore_empty", False)),
        callback_url=(callback or {}).get("url"),
        fail=fail,
        created_time=_now_iso(),
    )
    state.jobs[job.id] = job
    state.log_call("bulk.create", module, len(rows), 201)
    origin = state.config.public_url or str(request.url.origin())
    task = asyncio.get_running_loop().create_task(_run_job(request.app, job, origin))
    request.app[_TASKS].add(task)
    task.add_done_callback(request.app[_TASKS].discard)
    return _json(
        {
            "status": "success",
            "code": "SUCCESS",
            "message": "success",
            "details": {"id": job.id, "created_by": USER},
        },
        201,
    )


async def _run_job(app: web.Application, job: BulkJobState, origin: str) -> None:
    state = app[SIM_STATE]
    await asyncio.sleep(state.config.bulk_job_seconds)
    job.status = "IN PROGRESS"
    await asyncio.sleep(state.config.bulk_job_seconds)
    if job.fail:
        job.status = "FAILED"
    else:
        _process_job(state, job)
        job.status = "COMPLETED"
    if job.callback_url:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    job.callback_url,
                    data=orjson.dumps(_job_details(state, job, origin)),
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp,
            ):
                job.callback_status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("simulator: callback for job %s failed: %s", job.id, type(exc).__name__)
            job.callback_status = -1


def _process_job(state: SimState, job: BulkJobState) -> None:
    mod = state.config.modules[job.module]
    status_case = str.lower if state.config.result_status_case == "lower" else str.upper
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    echo = sorted(job.mappings, key=lambda m: m["index"])[:3]
    writer.writerow([m["api_name"] for m in echo] + ["STATUS", "RECORD_ID", "ERRORS"])
    poison = state.config.poison_values
    for n, row in enumerate(job.rows):
        record: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for m in job.mappings:
            name = m["api_name"]
            cell = row[m["index"]] if m["index"] < len(row) else ""
            if cell == "":
                if not job.ignore_empty:
                    record[name] = None
                continue
            try:
                record[name] = (
                    cell
                    if is_poison(cell, poison)
                    else coerce_csv(mod.by_name[name], cell, m.get("format"))
                )
            except (ValueError, TypeError):
                errors.setdefault("INVALID_DATA", []).append(name)
        if errors:
            result_cells = ["SKIPPED", "", _errors_cell(errors)]
            job.skipped += 1
        else:
            key = "id" if job.find_by == "id" and "id" in record else None
            dcf = [job.find_by] if job.find_by and key is None else None
            res = state.write(job.module, record, job.operation, n, dcf)
            if res.ok:
                status = "ADDED" if res.action == "insert" else "UPDATED"
                if status == "ADDED":
                    job.added += 1
                else:
                    job.updated += 1
                result_cells = [status, res.id or "", ""]
            else:
                column = str(res.details.get("api_name", ""))
                result_cells = ["SKIPPED", "", f"{res.code}-{column}" if column else res.code]
                job.skipped += 1
        result_cells[0] = status_case(result_cells[0])
        writer.writerow(
            [row[m["index"]] if m["index"] < len(row) else "" for m in echo] + result_cells
        )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{job.module}-{job.id}.csv", out.getvalue())
    job.result_zip = buf.getvalue()


def _errors_cell(errors: dict[str, list[str]]) -> str:
    return ":".join(f"{code}-{','.join(cols)}" for code, cols in errors.items())


def _job_details(state: SimState, job: BulkJobState, origin: str) -> dict[str, Any]:
    cfg = state.config
    status = job.status
    if status == "IN PROGRESS":
        status = cfg.in_progress_spelling
    body: dict[str, Any] = {
        "status": status,
        "character_encoding": "UTF-8",
        "id": job.id,
        "operation": job.operation,
        "created_by": USER,
        "created_time": job.created_time,
        "resource": [
            {
                "status": status,
                "type": "data",
                "code": {"ADDED": "ADDED", "COMPLETED": "SUCCESS"}.get(job.status, job.status),
                "module": {"api_name": job.module, "id": cfg.modules[job.module].id},
                "field_mappings": [
                    {
                        "api_name": m["api_name"],
                        "index": m["index"],
                        "format": m.get("format"),
                        "find_by": None,
                        "module": None,
                        "parent_column_index": None,
                        "default_value": None,
                    }
                    for m in job.mappings
                ],
                "file": {
                    "status": status,
                    "name": f"{job.module}.csv",
                    "added_count": job.added,
                    "skipped_count": job.skipped,
                    "updated_count": job.updated,
                    "total_count": len(job.rows),
                },
            }
        ],
    }
    if job.callback_url:
        body["callback"] = {"url": job.callback_url, "method": "post"}
    if job.status == "COMPLETED":
        path = f"/v8/crm/{cfg.org_id}/bulk-write/{job.id}/{job.id}.zip"
        url = path if cfg.download_url_style == "relative" else origin + path
        body["result"] = {"download_url": url}
    return body


async def job_status(request: web.Request) -> web.Response:
    state = _state(request)
    job = state.jobs.get(request.match_info["job_id"])
    if job is None:
        return _error(
            404,
            "RESOURCE_NOT_FOUND",
            "the requested resource is not found",
            {"id": request.match_info["job_id"]},
        )
    if (refused := _charge_one(state, "bulk.status")) is not None:
        return refused
    origin = state.config.public_url or str(request.url.origin())
    return _json(
        {"data": [_job_details(state, job, origin)]}
        if request.query.get("wrap")
        else _job_details(state, job, origin)
    )


async def download(request: web.Request) -> web.Response:
    state = _state(request)
    job = state.jobs.get(request.match_info["job_id"])
    if job is None or job.result_zip is None:
        return _json({"info": "Forbidden", "x-info": "Link not valid"}, 403)
    state.log_call("bulk.download", job.module, 0, 200)
    # Zoho names the file; the official SDK reads the name from this header.
    return web.Response(
        body=job.result_zip,
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'},
    )


# ------------------------------------------------------------------------ test endpoints ----
async def sim_stats(request: web.Request) -> web.Response:
    state = _state(request)
    return _json({**state.stats(), "config": state.config.public()})


async def sim_records(request: web.Request) -> web.Response:
    state = _state(request)
    module = request.match_info["module"]
    if module not in state.records:
        return _error(404, "INVALID_MODULE", "unknown module")
    return _json({"data": list(state.records[module].values())})


async def sim_reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return _json({"status": "reset"})


async def sim_config(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _body(request)
    if not isinstance(body, dict):
        return _json({"error": "body must be a JSON object"}, 400)
    try:
        state.configure(**body)
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"config": state.config.public()})


async def sim_expire_tokens(request: web.Request) -> web.Response:
    return _json({"expired": _state(request).expire_tokens()})


async def _cleanup(app: web.Application) -> None:
    pending: set[asyncio.Task[None]] = app[_TASKS]
    tasks = list(pending)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def create_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp Application; its state is ``app[SIM_STATE]``."""
    config = config or SimConfig()
    app = web.Application(middlewares=[_faults, _auth], client_max_size=64 * 1024 * 1024)
    app[SIM_STATE] = SimState(config)
    app[_TASKS] = set()
    app.on_cleanup.append(_cleanup)
    r = app.router
    r.add_post("/oauth/v2/token", token)
    r.add_get("/crm/v8/org", org)
    r.add_get("/crm/v8/users", users)
    r.add_get("/crm/v8/settings/modules", modules)
    r.add_get("/crm/v8/settings/modules/{module}", modules)
    r.add_get("/crm/v8/settings/fields", fields_meta)
    r.add_post("/crm/v8/upload", upload)
    r.add_post("/crm/bulk/v8/write", create_job)
    r.add_get("/crm/bulk/v8/write/{job_id}", job_status)
    r.add_get("/v8/crm/{org}/bulk-write/{job_id}/{name}", download)
    r.add_post("/crm/v8/{module}/upsert", upsert)
    r.add_get("/crm/v8/{module}/search", search)
    r.add_route("*", "/crm/v8/{module}/{id}", record_by_id)
    r.add_route("*", "/crm/v8/{module}", insert_or_list)
    r.add_get("/__sim/stats", sim_stats)
    r.add_get("/__sim/records/{module}", sim_records)
    r.add_post("/__sim/reset", sim_reset)
    r.add_post("/__sim/config", sim_config)
    r.add_post("/__sim/expire-tokens", sim_expire_tokens)
    return app


async def serve(config: SimConfig, host: str = "127.0.0.1") -> tuple[web.AppRunner, str]:
    """Serve the simulator from the running loop on ``host`` (port 0: a free one).

    Returns the runner (``await runner.cleanup()`` stops it; its app is ``runner.app``) and the
    base URL. Used by the demo and the tests' ``crm_sim`` fixture.
    """
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, config.port).start()
    port = int(runner.addresses[0][1])
    return runner, f"http://{host}:{port}"
