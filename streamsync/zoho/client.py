"""ZohoClient: the async shell around the pure build/judge functions, auth and limits.

Every call goes: credit check → process concurrency slot → token → transport → judge.
Retryable failures (429, 5xx, timeouts, dropped connections) back off with jitter up to
``zoho.max_retries`` and then raise (CrmRateLimited / CrmUnavailable); a 401 INVALID_TOKEN
refreshes the token once and retries at once; request-level errors raise with Zoho's code
and message; record errors come back as ``RecordFailure`` in input order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamsync.errors import BulkJobFailed, CrmError, CrmRequestError, CrmUnavailable
from streamsync.settings import DATA_CENTRES, UPLOAD_HOSTS, ZohoSettings
from streamsync.zoho import requests as rq
from streamsync.zoho.auth import Token, authorize, is_invalid_token
from streamsync.zoho.bulkfile import BulkRowResult, parse_bulk_result
from streamsync.zoho.credits import CreditLedger, bulk_cost, call_cost, write_cost
from streamsync.zoho.limits import ProcessLimits, backoff_delay, process_limits
from streamsync.zoho.requests import BulkJob, RecordOutcome
from streamsync.zoho.tokens import TokenManager
from streamsync.zoho.transport import AiohttpTransport, CrmRequest, CrmResponse, CrmTransport

__all__ = ["ZohoClient"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Coroutine[Any, Any, None]]
# The official SDK's upload hosts (zoho-crm-v8.md §2): CA and SA differ from content.zohoapis.*.
_UPLOAD_HOSTS = {**UPLOAD_HOSTS, "ca": "https://upload.zohocloud.ca", "sa": "https://files.zoho.sa"}
_API_SUFFIXES = sorted(
    ((api.split("://", 1)[1].removeprefix("www."), dc) for dc, (_, api) in DATA_CENTRES.items()),
    key=lambda item: -len(item[0]),
)


def _dc_of(api_domain: str) -> str | None:
    host = api_domain.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    for suffix, dc in _API_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return dc
    return None


class ZohoClient:
    """Zoho CRM v8 client. ``async with ZohoClient(settings.zoho) as client: ...``"""

    def __init__(
        self,
        settings: ZohoSettings,
        *,
        transport: CrmTransport | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        limits: ProcessLimits | None = None,
        ledger: CreditLedger | None = None,
    ) -> None:
        self.settings = settings
        self._transport: CrmTransport = transport or AiohttpTransport(
            timeout_s=settings.request_timeout_s, limit=max(settings.concurrency * 2, 10)
        )
        self._clock = clock
        self._rand = rand
        self._sleep = sleep
        self._limits = limits
        self.credits = ledger or CreditLedger(settings.daily_credit_budget, clock)
        self.tokens = TokenManager(settings, self._transport, clock=clock)
        self._org_id: str | None = settings.org_id
        self._closed = False

    # ------------------------------------------------------------------ lifecycle ----
    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("this ZohoClient is closed; create a new one")
        if self._limits is None:
            self._limits = process_limits(self.settings.concurrency)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._transport.close()

    async def __aenter__(self) -> ZohoClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ hosts ----
    def _token_domain(self) -> str | None:
        token = self.tokens.token
        return token.api_domain if token is not None else None

    @property
    def api_domain(self) -> str:
        """Explicit ``api_domain`` wins; else the token's ``api_domain``; else the DC's."""
        if self.settings.api_domain:
            return self.settings.resolved_api_domain
        return self._token_domain() or self.settings.resolved_api_domain

    @property
    def upload_base(self) -> str:
        """Explicit ``upload_url`` wins; else the upload host of the API domain's data centre
        (sandbox/developer hosts included); else (simulator, unknown host) the API domain."""
        if self.settings.upload_url:
            return self.settings.resolved_upload_url
        domain = self.api_domain
        dc = _dc_of(domain)
        return _UPLOAD_HOSTS[dc] if dc is not None else domain

    def _resolve(self, request: CrmRequest) -> CrmRequest:
        if request.base == "absolute":
            return request
        base = self.upload_base if request.base == "upload" else self.api_domain
        return replace(request, url=base + request.url, base="absolute")

    # ------------------------------------------------------------------ sending ----
    async def _send(
        self,
        request: CrmRequest,
        *,
        credits: int,
        records: int = 0,
        urgent: bool = False,
    ) -> CrmResponse:
        if self._closed:
            raise RuntimeError("this ZohoClient is closed")
        if self._limits is None:
            await self.start()
        assert self._limits is not None
        self.credits.check(credits, urgent=urgent)
        request = request.ready()
        refreshed = False
        attempt = 0
        while True:
            error: CrmError
            try:
                async with self._limits.slot(records):
                    token: Token = await self.tokens.get()
                    resp = await self._transport.send(authorize(self._resolve(request), token))
            except CrmError as exc:
                if not exc.retryable:
                    raise
                error = exc
            else:
                remaining = resp.header("X-API-CREDITS-REMAINING")
                if is_invalid_token(resp) and not refreshed:
                    refreshed = True
                    log.info("zoho %s: INVALID_TOKEN, refreshing once", request.api)
                    await self.tokens.invalidate(token)
                    continue
                found = rq.error_for(resp, request.api)
                if found is None:
                    self.credits.charge(credits)
                    self.credits.observe_remaining(remaining)  # Zoho's count wins
                    return resp
                if not found.retryable:
                    if resp.status < 500 and resp.status != 401:
                        self.credits.charge(call_cost())
                    self.credits.observe_remaining(remaining)
                    raise found
                error = found
            if attempt >= self.settings.max_retries:
                log.warning(
                    "zoho %s: giving up after %d attempts (%s)",
                    request.api,
                    attempt + 1,
                    error.code,
                )
                raise error
            delay = backoff_delay(
                attempt,
                base=self.settings.backoff_base_s,
                cap=self.settings.backoff_cap_s,
                rand=self._rand,
            )
            log.info("zoho %s: %s, retry %d in %.2fs", request.api, error.code, attempt + 1, delay)
            attempt += 1
            await self._sleep(delay)

    # ------------------------------------------------------------------ records ----
    async def upsert(
        self,
        module: str,
        records: Sequence[Mapping[str, Any]],
        duplicate_check_fields: Sequence[str] | None = None,
        *,
        urgent: bool = False,
        trigger: Sequence[str] = (),
    ) -> list[RecordOutcome]:
        """Upsert ≤100 records; one outcome per record, in input order."""
        if not records:
            return []
        request = rq.build_upsert(module, records, duplicate_check_fields, trigger)
        resp = await self._send(
            request, credits=write_cost(len(records)), records=len(records), urgent=urgent
        )
        return rq.judge_records(resp, len(records), "insert")

    async def insert(
        self, module: str, records: Sequence[Mapping[str, Any]], *, urgent: bool = False
    ) -> list[RecordOutcome]:
        if not records:
            return []
        resp = await self._send(
            rq.build_insert(module, records),
            credits=write_cost(len(records)),
            records=len(records),
            urgent=urgent,
        )
        return rq.judge_records(resp, len(records), "insert")

    async def update(
        self, module: str, records: Sequence[Mapping[str, Any]], *, urgent: bool = False
    ) -> list[RecordOutcome]:
        if not records:
            return []
        resp = await self._send(
            rq.build_update(module, records),
            credits=write_cost(len(records)),
            records=len(records),
            urgent=urgent,
        )
        return rq.judge_records(resp, len(records), "update")

    async def delete(
        self, module: str, ids: Sequence[str], *, urgent: bool = False
    ) -> list[RecordOutcome]:
        """Delete ≤100 records by id; one outcome per id, in input order."""
        if not ids:
            return []
        resp = await self._send(
            rq.build_delete(module, ids),
            credits=write_cost(len(ids)),
            records=len(ids),
            urgent=urgent,
        )
        return rq.judge_records(resp, len(ids), "delete")

    async def get_record(self, module: str, record_id: str) -> dict[str, Any] | None:
        try:
            resp = await self._send(rq.build_get(module, record_id), credits=call_cost())
        except CrmRequestError as exc:
            if exc.code in ("INVALID_DATA", "RESOURCE_NOT_FOUND", "HTTP_404"):
                return None
            raise
        if resp.status == 204:
            return None
        data = (resp.json() or {}).get("data") or []
        return dict(data[0]) if data else None

    async def search(self, module: str, field: str, value: str) -> list[dict[str, Any]]:
        """Zoho's ``equals`` search (contains-like!): every page of raw hits."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = await self._send(
                rq.build_search(module, field, value, page), credits=call_cost()
            )
            if resp.status == 204:
                return out
            body = resp.json() or {}
            out.extend(body.get("data") or [])
            if not (body.get("info") or {}).get("more_records"):
                return out
            page += 1

    async def search_exact(self, module: str, field: str, value: str) -> list[dict[str, Any]]:
        """Records whose ``field`` equals ``value`` exactly (re-checked on top of ``equals``)."""
        hits = await self.search(module, field, value)
        return [r for r in hits if r.get(field) is not None and str(r.get(field)) == value]

    async def iter_records(
        self, module: str, fields: Sequence[str]
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record of ``module`` (the given fields plus id), page by page."""
        page = 1
        token: str | None = None
        while True:
            resp = await self._send(rq.build_list(module, fields, page, token), credits=call_cost())
            if resp.status == 204:
                return
            body = resp.json() or {}
            for record in body.get("data") or []:
                yield record
            info = body.get("info") or {}
            if not info.get("more_records"):
                return
            token = info.get("next_page_token")
            page += 1

    # ------------------------------------------------------------------ bulk write ----
    async def org_id(self) -> str:
        """The org's zgid (for X-CRM-ORG): ``zoho.org_id``, else GET /crm/v8/org once."""
        if self._org_id is None:
            resp = await self._send(rq.build_org(), credits=call_cost())
            orgs = (resp.json() or {}).get("org") or []
            if not orgs:
                raise CrmRequestError("GET /org returned no org", code="UNEXPECTED_RESPONSE")
            self._org_id = str(orgs[0].get("zgid") or orgs[0].get("id"))
        return self._org_id

    async def bulk_upsert(
        self,
        module: str,
        zip_path: Path | str,
        *,
        find_by: str,
        columns: Sequence[str],
        callback_url: str | None = None,
        formats: Mapping[str, str] | None = None,
        urgent: bool = False,
    ) -> str:
        """Upload the zip and create an upsert job; returns the job id (500 credits)."""
        self.credits.check(bulk_cost() + 1, urgent=urgent)
        org = await self.org_id()
        resp = await self._send(
            rq.build_upload(Path(zip_path), org), credits=call_cost(), urgent=urgent
        )
        details = (resp.json() or {}).get("details") or {}
        file_id = details.get("file_id")
        if file_id is None:
            raise CrmRequestError("upload answered without a file_id", code="UNEXPECTED_RESPONSE")
        create = rq.build_create_bulk_job(
            module,
            str(file_id),
            find_by=find_by,
            columns=columns,
            formats=formats,
            callback_url=callback_url,
        )
        resp = await self._send(create, credits=bulk_cost(), urgent=urgent)
        job_id = ((resp.json() or {}).get("details") or {}).get("id")
        if job_id is None:
            raise CrmRequestError("create job answered without an id", code="UNEXPECTED_RESPONSE")
        return str(job_id)

    async def bulk_job(self, job_id: str) -> BulkJob:
        resp = await self._send(rq.build_bulk_job(job_id), credits=call_cost(), urgent=True)
        return rq.parse_bulk_job(resp.json())

    async def wait_bulk_job(
        self,
        job_id: str,
        *,
        poll_interval_s: float,
        done_event: asyncio.Event | None = None,
        timeout_s: float | None = None,
        max_interval_s: float = 60.0,
        first_poll_after_s: float = 0.0,
    ) -> BulkJob:
        """Poll (with growing intervals) until COMPLETED or FAILED; ``done_event`` (set by a
        callback handler) cuts a wait short. Raises CrmUnavailable(BULK_JOB_TIMEOUT) on timeout.

        ``first_poll_after_s`` spares the poll of a job just created (each poll is a credit).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = poll_interval_s
        wait = first_poll_after_s
        while True:
            if wait > 0:
                await self._wait_for_job(wait, done_event)
            job = await self.bulk_job(job_id)
            if job.done:
                return job
            wait = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CrmUnavailable(
                        f"bulk job {job_id} not done in time",
                        code="BULK_JOB_TIMEOUT",
                        details={"job_id": job_id},
                    )
                wait = min(wait, left)
            interval = min(max_interval_s, interval * 1.5)

    async def _wait_for_job(self, seconds: float, done_event: asyncio.Event | None) -> None:
        """Sleep ``seconds``, or less when a callback sets ``done_event`` (then cleared)."""
        if done_event is None:
            await self._sleep(seconds)
            return
        try:
            await asyncio.wait_for(done_event.wait(), timeout=seconds)
        except TimeoutError:
            return
        done_event.clear()

    async def bulk_results(self, job: BulkJob, work_dir: Path | str) -> list[BulkRowResult]:
        """Download and parse the result zip of a finished job. FAILED → BulkJobFailed."""
        if job.status == "FAILED":
            raise BulkJobFailed(f"bulk job {job.id} FAILED", details={"job_id": job.id})
        if not job.download_url:
            raise CrmRequestError(
                f"bulk job {job.id} has no download_url (status {job.status})", code="NO_RESULT"
            )
        dest = Path(work_dir) / f"{job.id}-result.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        await self._send(
            rq.build_download(job.download_url, dest), credits=call_cost(), urgent=True
        )
        return await asyncio.to_thread(parse_bulk_result, dest)
