"""Per-record results from Zoho -> Done / Retry / DeadLetter.

Zoho answers 200/207 with one status per record (sink-notes §6.1): every record is read, and
only the ``Retry`` ones are sent again. Record errors (INVALID_DATA, MANDATORY_NOT_FOUND, ...)
are dead-lettered at once; retryable per-record codes are retried up to ``max_attempts`` and
then dead-lettered with the attempt count. Whole-call failures (429, 5xx, timeouts) are not
judged here: they raise from the client and the shell backs off without committing.

Results are duck-typed on the documented ``streamsync.zoho`` types: a success has ``index``,
``id`` and ``action``; a failure has ``index``, ``code``, ``message``, ``details``, ``retryable``.
Pure: no I/O (``bisect_refused`` sends through the caller's ``send``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamsync.sink.window import Entry

__all__ = [
    "Dead",
    "Done",
    "Judged",
    "Retry",
    "bisect_refused",
    "judge_bulk_rows",
    "judge_deletes",
    "judge_marks",
    "judge_upserts",
]


@dataclass(slots=True)  # per-record results: not frozen (a frozen __init__ costs 3-5x)
class Done:
    entry: Entry
    zoho_id: str | None
    action: str  # insert | update | delete | mark | stale | ignored


@dataclass(slots=True)
class Retry:
    entry: Entry
    code: str
    message: str


@dataclass(slots=True)
class Dead:
    entry: Entry
    code: str
    message: str
    details: dict[str, Any]
    attempts: int

    @classmethod
    def of(cls, entry: Entry, error: Any, attempts: int) -> Dead:
        """The dead letter for ``error``: anything with Zoho's ``code``, ``message`` and
        ``details`` (a record result, a ``CrmError``, a ``MappingError``)."""
        return cls(entry, str(error.code), str(error.message), dict(error.details or {}), attempts)


@dataclass(slots=True)
class Judged:
    done: list[Done] = field(default_factory=list)
    retry: list[Retry] = field(default_factory=list)
    dead: list[Dead] = field(default_factory=list)

    def extend(self, other: Judged) -> None:
        self.done.extend(other.done)
        self.retry.extend(other.retry)
        self.dead.extend(other.dead)


def _is_failure(result: Any) -> bool:
    return hasattr(result, "code") and hasattr(result, "retryable")


def _judge_failure(out: Judged, entry: Entry, result: Any, attempt: int, max_attempts: int) -> None:
    """A rejected record: retry while Zoho says it may pass later, else dead-letter it."""
    if result.retryable and attempt < max_attempts:
        out.retry.append(Retry(entry, str(result.code), str(result.message)))
    else:
        out.dead.append(Dead.of(entry, result, attempt))


def judge_upserts(
    entries: Sequence[Entry], results: Sequence[Any], attempt: int, max_attempts: int
) -> Judged:
    """Judge one upsert call's results (in input order, matched by ``index``)."""
    out = Judged()
    by_index = {int(r.index): r for r in results}
    for i, entry in enumerate(entries):
        result = by_index.get(i)
        if result is None:
            out.retry.append(Retry(entry, "NO_RESULT", "Zoho returned no status for the record"))
        elif _is_failure(result):
            _judge_failure(out, entry, result, attempt, max_attempts)
        else:
            out.done.append(Done(entry, str(result.id), str(getattr(result, "action", "update"))))
    return out


def judge_deletes(
    pairs: Sequence[tuple[Entry, str]], results: Sequence[Any], attempt: int, max_attempts: int
) -> Judged:
    """Judge one delete call. An id Zoho no longer knows (INVALID_DATA) is already deleted."""
    return _judge_by_id(pairs, results, attempt, max_attempts, "delete", _gone_for_delete)


def judge_marks(
    pairs: Sequence[tuple[Entry, str]], results: Sequence[Any], attempt: int, max_attempts: int
) -> Judged:
    """Judge one Update Records call that set the ``on_delete`` mark field by Zoho id.

    A record Zoho no longer holds (its id is refused) has nothing left to mark: done. Any
    other refusal (the field itself, say) is the record's failure.
    """
    return _judge_by_id(pairs, results, attempt, max_attempts, "mark", _refuses_the_id)


def _judge_by_id(
    pairs: Sequence[tuple[Entry, str]],
    results: Sequence[Any],
    attempt: int,
    max_attempts: int,
    action: str,
    gone: Callable[[Any], bool],
) -> Judged:
    """A call on Zoho ids: success, or a refusal saying the record is ``gone``, is done."""
    out = Judged()
    by_index = {int(r.index): r for r in results}
    for i, (entry, zoho_id) in enumerate(pairs):
        result = by_index.get(i)
        if result is None:
            out.retry.append(Retry(entry, "NO_RESULT", "Zoho returned no status for the id"))
        elif not _is_failure(result) or gone(result):
            out.done.append(Done(entry, zoho_id, action))
        else:
            _judge_failure(out, entry, result, attempt, max_attempts)
    return out


def _gone_for_delete(result: Any) -> bool:
    return str(result.code) in ("INVALID_DATA", "RECORD_NOT_FOUND")


def _refuses_the_id(result: Any) -> bool:
    details = dict(result.details or {})
    if result.code == "RECORD_NOT_FOUND":
        return True
    return result.code == "INVALID_DATA" and (
        details.get("api_name") == "id" or ("id" in details and "api_name" not in details)
    )


def judge_bulk_rows(entries: Sequence[Entry], rows: Sequence[Any], attempt: int) -> Judged:
    """Judge a Bulk Write result: ``row`` is the 0-based data row of ``entries``.

    ADDED / UPDATED -> done; SKIPPED -> dead letter with the first column error code
    (``errors`` maps column -> Zoho code); a row missing from the result is retried.
    """
    out = Judged()
    by_row: Mapping[int, Any] = {int(r.row): r for r in rows}
    for i, entry in enumerate(entries):
        row = by_row.get(i)
        if row is None:
            out.retry.append(Retry(entry, "NO_RESULT", "the Bulk Write result lacks the row"))
            continue
        status = str(row.status).upper()
        if status in ("ADDED", "UPDATED"):
            action = "insert" if status == "ADDED" else "update"
            out.done.append(Done(entry, str(row.record_id) if row.record_id else None, action))
        else:
            errors = dict(getattr(row, "errors", None) or {})
            code = next(iter(errors.values()), "SKIPPED") if errors else "SKIPPED"
            out.dead.append(
                Dead(
                    entry,
                    str(code),
                    f"Bulk Write skipped the row ({status})",
                    {"errors": errors},
                    attempt,
                )
            )
    return out


async def bisect_refused(
    part: list[tuple[Entry, Any]],
    error: Any,
    attempt: int,
    send: Callable[[list[tuple[Entry, Any]], int], Awaitable[Judged]],
) -> Judged:
    """A call Zoho refused as a whole: send each half again, down to the one record that
    fails, which is dead-lettered with Zoho's code (the others go through)."""
    if len(part) == 1:
        entry = part[0][0]
        return Judged(dead=[Dead.of(entry, error, attempt)])
    mid = len(part) // 2
    out = Judged()
    for half in (part[:mid], part[mid:]):
        out.extend(await send(half, attempt))
    return out
