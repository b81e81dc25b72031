"""Table vs CRM comparison: which records are missing, extra or different. Pure.

The shell (`streamsync reconcile`) reads the table in key order and the CRM module through the
API, maps each row with the same mapping the sink uses, and feeds both sides here. Values are
compared after normalisation, because Zoho echoes numbers, dates and times in its own forms
(``10.5`` for ``"10.50"``, ``2024-01-02T03:04:05+00:00`` for ``...05Z``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Difference", "ReconcileReport", "diff_records", "normalise"]


def normalise(value: Any) -> Any:
    """A comparable form of a Zoho or mapped value (numbers as Decimal, times as UTC)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _decimal(str(value))
    if isinstance(value, str):
        dec = _decimal(value)
        if dec is not None:
            return dec
        if len(value) >= 19 and value[4] == "-" and value[10] == "T":
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return value
            if parsed.tzinfo is not None:
                return parsed.timestamp()
            return parsed.replace(microsecond=0).isoformat()
        return value
    if isinstance(value, list):
        return sorted(str(normalise(v)) for v in value)
    if isinstance(value, dict):
        # lookups and owners come back as {"id": ..., "name": ...}
        return normalise(value.get("id", value.get("name")))
    return value


def _decimal(text: str) -> Decimal | None:
    if not text or not (text[0].isdigit() or text[0] in "+-.") or text.count("-") > 1:
        return None
    if any(c.isalpha() and c not in "eE" for c in text):
        return None
    try:
        return Decimal(text).normalize()
    except InvalidOperation:
        return None


@dataclass(frozen=True, slots=True)
class Difference:
    key: str
    fields: dict[str, tuple[Any, Any]]  # field -> (expected, actual)


@dataclass(slots=True)
class ReconcileReport:
    table_rows: int = 0
    crm_records: int = 0
    missing: list[str] = field(default_factory=list)  # in the table, not in the CRM
    extra: list[str] = field(default_factory=list)  # in the CRM, not in the table
    duplicates: list[str] = field(default_factory=list)  # external id held by >1 CRM record
    different: list[Difference] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.extra or self.duplicates or self.different)

    def summary(self) -> dict[str, int]:
        return {
            "table_rows": self.table_rows,
            "crm_records": self.crm_records,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "duplicates": len(self.duplicates),
            "different": len(self.different),
        }


def diff_records(
    expected: Mapping[str, Mapping[str, Any]],
    actual: Iterable[tuple[str, Mapping[str, Any]]],
    fields: Iterable[str],
) -> ReconcileReport:
    """Compare mapped table rows (external id → Zoho fields) with CRM records.

    Args:
        expected: external id → the Zoho field values the mapping produces for the row.
        actual: (external id, CRM record) pairs, as read from the module.
        fields: the Zoho fields to compare (the mapping's fields).
    """
    report = ReconcileReport(table_rows=len(expected))
    names = list(fields)
    seen: set[str] = set()
    for ext_id, record in actual:
        report.crm_records += 1
        if ext_id in seen:
            report.duplicates.append(ext_id)
            continue
        seen.add(ext_id)
        want = expected.get(ext_id)
        if want is None:
            report.extra.append(ext_id)
            continue
        changed = {
            name: (want.get(name), record.get(name))
            for name in names
            if name in want and normalise(want.get(name)) != normalise(record.get(name))
        }
        if changed:
            report.different.append(Difference(ext_id, changed))
    report.missing = sorted(k for k in expected if k not in seen)
    return report
