"""Outcomes: every record's status is read; only retryable ones are resent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamsync.sink.outcomes import (
    Done,
    Judged,
    bisect_refused,
    judge_bulk_rows,
    judge_deletes,
    judge_marks,
    judge_upserts,
)
from streamsync.sink.window import Window
from tests.unit.sink.sinkev import ev


@dataclass
class Ok:
    index: int
    id: str
    action: str = "insert"


@dataclass
class Fail:
    index: int
    code: str
    message: str = "m"
    details: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False


@dataclass
class Row:
    row: int
    status: str
    record_id: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


def _entries(n: int):  # type: ignore[no-untyped-def]
    w = Window(max_keys=1000, max_wait_s=5)
    for k in range(n):
        w.add(ev(k, 1), ("t", 0), k, now=0)
    (batch,) = w.flush()
    return batch.entries


def test_upserts_split_into_done_retry_dead() -> None:
    entries = _entries(5)
    results = [
        Ok(0, "z0"),
        Fail(1, "INVALID_DATA", details={"api_name": "Amount"}),
        Fail(2, "RECORD_LOCKED", retryable=True),
        Ok(3, "z3", "update"),
        # index 4 missing
    ]
    j = judge_upserts(entries, results, attempt=1, max_attempts=3)
    assert [(d.entry.key, d.zoho_id, d.action) for d in j.done] == [
        ([0], "z0", "insert"),
        ([3], "z3", "update"),
    ]
    assert [(d.entry.key, d.code, d.details, d.attempts) for d in j.dead] == [
        ([1], "INVALID_DATA", {"api_name": "Amount"}, 1)
    ]
    assert [(r.entry.key, r.code) for r in j.retry] == [([2], "RECORD_LOCKED"), ([4], "NO_RESULT")]


def test_retryable_record_errors_are_dead_lettered_after_max_attempts() -> None:
    entries = _entries(1)
    j = judge_upserts(
        entries, [Fail(0, "RECORD_LOCKED", retryable=True)], attempt=3, max_attempts=3
    )
    assert j.retry == [] and [(d.code, d.attempts) for d in j.dead] == [("RECORD_LOCKED", 3)]


def test_deletes_treat_unknown_ids_as_gone() -> None:
    entries = _entries(4)
    pairs = [(e, f"z{i}") for i, e in enumerate(entries)]
    results = [
        Ok(0, "z0", "delete"),
        Fail(1, "INVALID_DATA"),
        Fail(2, "INTERNAL_ERROR", retryable=True),
        Fail(3, "NO_PERMISSION"),
    ]
    j = judge_deletes(pairs, results, attempt=1, max_attempts=5)
    assert [(d.entry.key, d.zoho_id, d.action) for d in j.done] == [
        ([0], "z0", "delete"),
        ([1], "z1", "delete"),
    ]
    assert [r.entry.key for r in j.retry] == [[2]]
    assert [d.code for d in j.dead] == ["NO_PERMISSION"]


def test_marks_a_refused_id_is_done_a_refused_field_is_not() -> None:
    entries = _entries(5)
    pairs = [(e, f"z{i}") for i, e in enumerate(entries)]
    results = [
        Ok(0, "z0", "update"),
        Fail(1, "INVALID_DATA", details={"id": "z1"}),  # the record is gone from Zoho
        Fail(2, "INVALID_DATA", details={"api_name": "Deleted", "json_path": "$.data[2]"}),
        Fail(3, "TOO_MANY_REQUESTS", retryable=True),
    ]  # 4: no result at all
    j = judge_marks(pairs, results, attempt=1, max_attempts=5)
    assert [(d.entry.key, d.zoho_id, d.action) for d in j.done] == [
        ([0], "z0", "mark"),
        ([1], "z1", "mark"),
    ]
    assert [(d.entry.key, d.code) for d in j.dead] == [([2], "INVALID_DATA")]
    assert [r.entry.key for r in j.retry] == [[3], [4]]


def test_bulk_rows() -> None:
    entries = _entries(4)
    rows = [
        Row(0, "ADDED", "z0"),
        Row(1, "UPDATED", "z1"),
        Row(2, "SKIPPED", errors={"Amount": "INVALID_DATA"}),
    ]
    j = judge_bulk_rows(entries, rows, attempt=1)
    assert [(d.entry.key, d.zoho_id, d.action) for d in j.done] == [
        ([0], "z0", "insert"),
        ([1], "z1", "update"),
    ]
    assert [(d.entry.key, d.code, d.details) for d in j.dead] == [
        ([2], "INVALID_DATA", {"errors": {"Amount": "INVALID_DATA"}})
    ]
    assert [r.entry.key for r in j.retry] == [[3]]


async def test_bisect_refused_isolates_the_one_record_behind_a_whole_call_refusal() -> None:
    """Halves are resent until the refusal narrows to one record: that record is dead with
    Zoho's code, every other record gets its own verdict, and no record is sent twice once
    its half was accepted."""
    entries = _entries(10)
    culprit = entries[6]
    sent: list[list[str]] = []

    async def send(part: list[tuple[Any, Any]], attempt: int) -> Judged:
        sent.append([e.key_text for e, _ in part])
        if any(e is culprit for e, _ in part):
            return await bisect_refused(part, refusal, attempt, send)
        return Judged(done=[Done(e, f"z{i}", "insert") for i, (e, _) in enumerate(part)])

    refusal = Fail(0, "INVALID_DATA", "refused", {"api_name": "Email"})
    out = await bisect_refused([(e, None) for e in entries], refusal, 2, send)

    assert [d.entry for d in out.dead] == [culprit]
    assert out.dead[0].code == "INVALID_DATA" and out.dead[0].attempts == 2
    assert out.dead[0].details == {"api_name": "Email"}
    assert {id(d.entry) for d in out.done} == {id(e) for e in entries if e is not culprit}
    # halving: 10 -> 5 (ok) + 5 -> 2 + 3 (ok) -> 1 (ok) + 1 (dead): 6 calls, not one per record
    assert len(sent) == 6
    accepted = [k for part in sent for k in part if culprit.key_text not in part]
    assert len(accepted) == len(set(accepted)) == 9
