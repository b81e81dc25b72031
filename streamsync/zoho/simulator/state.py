"""Simulator configuration and in-memory state: records, indexes, tokens, credits, jobs, stats.

``SimState.write()`` is the one write path (REST insert/update/upsert and Bulk Write rows):
validation, duplicate_check_fields matching, unique fields → DUPLICATE_DATA. Records live in a
dict per module indexed by id, plus one dict per duplicate-check field (value → id).
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from streamsync.zoho.simulator.schema import (
    FieldDef,
    FieldError,
    ModuleDef,
    default_modules,
    validate_value,
)

__all__ = ["BulkJobState", "SimConfig", "SimState", "WriteResult"]


@dataclass
class SimConfig:
    """Everything tunable. Fault fields can change at runtime (POST /__sim/config)."""

    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 0
    # auth
    client_id: str = "streamsync-local"
    client_secret: str = "streamsync-local-secret"
    refresh_token: str = "streamsync-local-refresh"
    check_client: bool = True
    token_ttl_s: float = 3600.0
    token_refresh_limit: int = 10
    token_refresh_window_s: float = 600.0
    public_url: str | None = None  # api_domain in token answers (default: the request's origin)
    # limits
    concurrency: int = 25
    sub_concurrency: int = 10
    daily_credit_budget: int = 10_000_000
    # faults (seeded)
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_drop: float = 0.0
    drop_after_processing: bool = False
    rate_slow: float = 0.0
    slow_ms: float = 2000.0
    poison_values: tuple[str, ...] = ("POISON", "poison@invalid.example")
    # the next N searches are refused with 400 INVALID_QUERY (a search Zoho will not run)
    refuse_next_searches: int = 0
    # bulk
    bulk_job_seconds: float = 1.0
    fail_next_bulk_jobs: int = 0
    max_bulk_rows: int = 25_000
    # documented variants (zoho-crm-v8.md marks them UNCONFIRMED)
    upsert_insert_status: int = 200  # 200 or 201 when an upsert only inserted
    in_progress_spelling: str = "IN PROGRESS"  # or "INPROGRESS"
    result_status_case: str = "upper"  # or "lower"
    download_url_style: str = "absolute"  # or "relative"
    org_id: str = "20071234"
    modules: dict[str, ModuleDef] = field(default_factory=default_modules)

    FAULT_FIELDS = (
        "latency_ms",
        "latency_jitter_ms",
        "rate_429",
        "rate_500",
        "rate_drop",
        "drop_after_processing",
        "rate_slow",
        "slow_ms",
        "bulk_job_seconds",
        "fail_next_bulk_jobs",
        "refuse_next_searches",
        "daily_credit_budget",
        "concurrency",
        "token_ttl_s",
        "upsert_insert_status",
        "in_progress_spelling",
        "result_status_case",
        "download_url_style",
        "poison_values",
        "token_refresh_limit",
    )

    def update(self, **changes: Any) -> None:
        known = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in known or key == "modules":
                raise ValueError(f"unknown simulator setting {key!r}")
            if key == "poison_values":
                value = tuple(value)
            setattr(self, key, value)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["modules"] = sorted(self.modules)
        for secret in ("client_secret", "refresh_token"):
            data[secret] = "***"
        return data


@dataclass
class WriteResult:
    ok: bool
    id: str | None = None
    action: str | None = None  # insert | update
    duplicate_field: str | None = None
    code: str = "SUCCESS"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BulkJobState:
    id: str
    module: str
    operation: str
    find_by: str | None
    mappings: list[dict[str, Any]]
    header: list[str]
    rows: list[list[str]]
    ignore_empty: bool
    callback_url: str | None
    fail: bool
    created_time: str
    status: str = "ADDED"
    added: int = 0
    updated: int = 0
    skipped: int = 0
    result_zip: bytes | None = None
    callback_status: int | None = None


@dataclass
class CallRecord:
    api: str
    module: str | None
    records: int
    status: int
    at: float


_ISO_CACHE: list[Any] = [None, ""]  # (whole second, its ISO text)


def _now_iso() -> str:
    """Now, to the second, as Zoho writes times. Cached per second: every record a call
    writes is stamped, and building the text each time was a fifth of the simulator's CPU."""
    second = int(time.time())
    if _ISO_CACHE[0] != second:
        _ISO_CACHE[0] = second
        _ISO_CACHE[1] = dt.datetime.fromtimestamp(second, dt.UTC).isoformat()
    return str(_ISO_CACHE[1])


USER = {"name": "Sync User", "id": "5725767000000411001"}


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.reset()

    def configure(self, **changes: Any) -> None:
        """Change settings at runtime; a new ``seed`` restarts the fault sequence."""
        self.config.update(**changes)
        if "seed" in changes:
            self.rng = random.Random(self.config.seed)

    def reset(self) -> None:
        self.rng = random.Random(self.config.seed)
        self._ids = itertools.count(5725767000000600001)
        self.records: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in self.config.modules}
        self.index: dict[str, dict[str, dict[str, str]]] = {
            m: {f: {} for f in self._dup_fields(mod)} for m, mod in self.config.modules.items()
        }
        self.tokens: dict[str, float] = {}
        self.refreshes: deque[float] = deque()
        self.tokens_issued = 0
        self.token_refusals = 0
        self.calls: deque[CallRecord] = deque(maxlen=200_000)
        self.calls_per_api: Counter[str] = Counter()
        self.records_per_api: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.credit_log: deque[tuple[float, int]] = deque()
        self.credits_total = 0
        self.in_flight = 0
        self.heavy_in_flight = 0
        self.max_in_flight = 0
        self.uploads: dict[str, tuple[list[str], list[list[str]]]] = {}
        self.jobs: dict[str, BulkJobState] = {}

    @staticmethod
    def _dup_fields(mod: ModuleDef) -> list[str]:
        names = ["Name"] if "Name" in mod.by_name else []
        return names + [f for f in mod.unique_fields if f not in names]

    def new_id(self) -> str:
        return str(next(self._ids))

    # ---------------------------------------------------------------- credits ----
    def credits_used(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        while self.credit_log and self.credit_log[0][0] <= now - 86400:
            _, c = self.credit_log.popleft()
            self.credits_total -= c
        return self.credits_total

    def charge(self, credits: int) -> bool:
        """Spend credits; False (nothing spent) when the daily budget would be crossed."""
        if self.credits_used() + credits > self.config.daily_credit_budget:
            return False
        self.credit_log.append((time.time(), credits))
        self.credits_total += credits
        return True

    def credits_remaining(self) -> int:
        return max(0, self.config.daily_credit_budget - self.credits_used())

    # ---------------------------------------------------------------- tokens ----
    def issue_token(self, now: float) -> str | None:
        window = self.config.token_refresh_window_s
        while self.refreshes and self.refreshes[0] <= now - window:
            self.refreshes.popleft()
        if len(self.refreshes) >= self.config.token_refresh_limit:
            self.token_refusals += 1
            return None
        self.refreshes.append(now)
        token = f"1000.{self.rng.getrandbits(128):032x}.{self.tokens_issued}"
        self.tokens[token] = now + self.config.token_ttl_s
        self.tokens_issued += 1
        return token

    def token_valid(self, token: str, now: float) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and now < expiry

    def expire_tokens(self) -> int:
        n = len(self.tokens)
        self.tokens.clear()
        return n

    # ---------------------------------------------------------------- stats ----
    def log_call(self, api: str, module: str | None, records: int, status: int) -> None:
        self.calls.append(CallRecord(api, module, records, status, time.time()))
        self.calls_per_api[api] += 1
        self.records_per_api[api] += records

    def records_per_call(self, api: str | None = None) -> list[int]:
        return [c.records for c in self.calls if api is None or c.api == api]

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls_per_api),
            "records": dict(self.records_per_api),
            "records_per_call": {
                api: self.records_per_call(api)
                for api in ("upsert", "insert", "update", "delete")
                if self.calls_per_api.get(api)
            },
            "max_records_per_call": max((c.records for c in self.calls), default=0),
            "credits_used": self.credits_used(),
            "credits_remaining": self.credits_remaining(),
            "tokens_issued": self.tokens_issued,
            "token_refusals": self.token_refusals,
            "faults": dict(self.faults),
            "max_in_flight": self.max_in_flight,
            "module_sizes": {m: len(r) for m, r in self.records.items()},
            "bulk_jobs": {
                j.id: {
                    "status": j.status,
                    "rows": len(j.rows),
                    "added": j.added,
                    "updated": j.updated,
                    "skipped": j.skipped,
                    "module": j.module,
                    "callback_status": j.callback_status,
                }
                for j in self.jobs.values()
            },
        }

    # ---------------------------------------------------------------- writes ----
    def _norm(self, value: Any) -> str:
        return str(value).lower()

    def find(self, module: str, field_name: str, value: Any) -> str | None:
        idx = self.index[module].get(field_name)
        if idx is not None:
            return idx.get(self._norm(value))
        for rid, rec in self.records[module].items():
            if rec.get(field_name) == value:
                return rid
        return None

    def write(
        self,
        module: str,
        record: Mapping[str, Any],
        op: str,
        i: int,
        duplicate_check_fields: Sequence[str] | None = None,
        path_prefix: str = "$.data",
    ) -> WriteResult:
        """Insert, update or upsert one record (validated); never raises for record errors."""
        mod = self.config.modules[module]
        store = self.records[module]
        poison = self.config.poison_values
        values: dict[str, Any] = {}
        try:
            for key, value in record.items():
                f = mod.by_name.get(key)
                if f is None:  # id, $-keys and unknown api names are not stored
                    continue
                values[key] = validate_value(f, value, f"{path_prefix}[{i}].{key}", poison)
        except FieldError as err:
            return WriteResult(False, code=err.code, message=err.message, details=err.details)

        target: str | None = None
        dup_field: str | None = None
        if record.get("id") and op in ("update", "upsert"):
            target = str(record["id"])
            if target not in store:
                return WriteResult(
                    False,
                    code="INVALID_DATA",
                    message="the id given seems to be invalid",
                    details={"id": target},
                )
        elif op == "update":
            return WriteResult(
                False,
                code="MANDATORY_NOT_FOUND",
                message="required field not found",
                details={"api_name": "id", "json_path": f"{path_prefix}[{i}].id"},
            )
        elif op == "upsert":
            dcf = list(duplicate_check_fields or [])
            if not dcf:
                dcf = self._dup_fields(mod)
            for name in dcf:
                if name in values and values[name] not in (None, ""):
                    found = self.find(module, name, values[name])
                    if found is not None:
                        target, dup_field = found, name
                        break

        if target is None:  # insert: mandatory fields
            for name in mod.mandatory_fields:
                if values.get(name) in (None, ""):
                    return WriteResult(
                        False,
                        code="MANDATORY_NOT_FOUND",
                        message="required field not found",
                        details={"api_name": name, "json_path": f"{path_prefix}[{i}].{name}"},
                    )
        else:
            for name in mod.mandatory_fields:
                if name in values and values[name] in (None, ""):
                    return WriteResult(
                        False,
                        code="MANDATORY_NOT_FOUND",
                        message="required field not found",
                        details={"api_name": name, "json_path": f"{path_prefix}[{i}].{name}"},
                    )
        # unique fields
        for name in mod.unique_fields:
            value = values.get(name)
            if value in (None, ""):
                continue
            other = self.index[module][name].get(self._norm(value))
            if other is not None and other != target:
                return WriteResult(
                    False,
                    code="DUPLICATE_DATA",
                    message="duplicate data",
                    details={
                        "api_name": name,
                        "json_path": f"{path_prefix}[{i}].{name}",
                        "duplicate_record": {
                            "id": other,
                            "module": {"api_name": module, "id": mod.id},
                            "Owner": {**USER, "zuid": "736078909"},
                        },
                        "more_records": False,
                    },
                )
        now = _now_iso()
        if target is None:
            rid = self.new_id()
            stored = {"id": rid, **values, "Created_Time": now, "Modified_Time": now}
            store[rid] = stored
            self._index(module, rid, {}, stored)
            return WriteResult(True, rid, "insert", None)
        old = store[target]
        new = {**old, **values, "Modified_Time": now}
        store[target] = new
        self._index(module, target, old, new)
        return WriteResult(True, target, "update", dup_field)

    def _index(self, module: str, rid: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        for name, idx in self.index[module].items():
            before, after = old.get(name), new.get(name)
            if before == after and old:
                continue
            if before not in (None, "") and idx.get(self._norm(before)) == rid:
                del idx[self._norm(before)]
            if after not in (None, ""):
                idx[self._norm(after)] = rid

    def delete(self, module: str, rid: str) -> bool:
        rec = self.records[module].pop(rid, None)
        if rec is None:
            return False
        self._index(module, rid, rec, {})
        return True

    def field(self, module: str, name: str) -> FieldDef | None:
        return self.config.modules[module].by_name.get(name)
