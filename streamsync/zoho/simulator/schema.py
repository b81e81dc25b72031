"""The simulator's module schema and per-field validation (pure).

Default: module ``Orders`` with the unique text field ``parent_id`` and the fields of the
embedded default mapping (settings.default_tables()), plus a boolean ``Deleted``.

Poison values: any string field whose value is in ``SimConfig.poison_values`` (default
``POISON`` and ``poison@invalid.example``) or contains ``__poison__`` is always rejected with
INVALID_DATA, so tests can plant bad records.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "POISON_MARK",
    "FieldDef",
    "FieldError",
    "ModuleDef",
    "coerce_csv",
    "default_modules",
    "validate_value",
]

POISON_MARK = "__poison__"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DEFAULT_LENGTH = {"text": 255, "textarea": 32000, "email": 100, "picklist": 120, "bigint": 18}
STATUSES = ("new", "paid", "shipped", "delivered", "cancelled", "refunded")


@dataclass(frozen=True, slots=True)
class FieldDef:
    api_name: str
    data_type: str  # text textarea email picklist multiselectpicklist date datetime integer
    #                 bigint decimal currency double boolean
    mandatory: bool = False
    unique: bool = False
    length: int | None = None
    picklist: tuple[str, ...] = ()

    @property
    def max_length(self) -> int | None:
        return self.length or _DEFAULT_LENGTH.get(self.data_type)

    @property
    def json_type(self) -> str:
        return {
            "integer": "integer",
            "bigint": "string",
            "decimal": "double",
            "currency": "double",
            "double": "double",
            "boolean": "boolean",
            "multiselectpicklist": "jsonarray",
        }.get(self.data_type, "string")


@dataclass(frozen=True, slots=True)
class ModuleDef:
    api_name: str
    fields: tuple[FieldDef, ...]
    id: str = "5725767000000002181"
    by_name: dict[str, FieldDef] = field(default_factory=dict, compare=False)
    # derived once: every record written reads them
    unique_fields: tuple[str, ...] = field(init=False, compare=False, default=())
    mandatory_fields: tuple[str, ...] = field(init=False, compare=False, default=())

    def __post_init__(self) -> None:
        self.by_name.update({f.api_name: f for f in self.fields})
        unique = tuple(f.api_name for f in self.fields if f.unique)
        mandatory = tuple(f.api_name for f in self.fields if f.mandatory)
        object.__setattr__(self, "unique_fields", unique)
        object.__setattr__(self, "mandatory_fields", mandatory)


def default_modules() -> dict[str, ModuleDef]:
    orders = ModuleDef(
        "Orders",
        (
            FieldDef("Name", "text", mandatory=True, length=120),
            FieldDef("parent_id", "text", unique=True, length=100),
            FieldDef("Customer_Email", "email"),
            FieldDef("Amount", "currency"),
            FieldDef("Currency", "text", length=10),
            FieldDef("Status", "picklist", picklist=STATUSES),
            FieldDef("Order_Date", "date"),
            FieldDef("Legacy_Updated_At", "datetime"),
            FieldDef("Notes", "textarea"),
            FieldDef("Deleted", "boolean"),
        ),
    )
    return {orders.api_name: orders}


@dataclass(frozen=True, slots=True)
class FieldError(Exception):
    code: str
    message: str
    details: dict[str, Any]


def _invalid(f: FieldDef, path: str, **extra: Any) -> FieldError:
    return FieldError(
        "INVALID_DATA", "invalid data", {"api_name": f.api_name, "json_path": path, **extra}
    )


def is_poison(value: Any, poison: Collection[str]) -> bool:
    return isinstance(value, str) and (value in poison or POISON_MARK in value)


def validate_value(f: FieldDef, value: Any, path: str, poison: Collection[str]) -> Any:
    """A JSON value for field ``f`` → the stored value, or raise FieldError."""
    if value is None:
        return None
    if is_poison(value, poison):
        raise _invalid(f, path, expected_data_type=f.data_type, poison=True)
    t = f.data_type
    if t in ("text", "textarea", "email", "picklist"):
        if not isinstance(value, str):
            raise _invalid(f, path, expected_data_type="text")
        limit = f.max_length
        if limit is not None and len(value) > limit:
            raise _invalid(f, path, maximum_length=limit)
        if t == "email" and value and not _EMAIL.match(value):
            raise _invalid(f, path, regex=_EMAIL.pattern)
        if t == "picklist" and value and value not in f.picklist:
            raise _invalid(f, path, supported_values=list(f.picklist))
        return value
    if t == "multiselectpicklist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _invalid(f, path, expected_data_type="jsonarray")
        bad = [v for v in value if f.picklist and v not in f.picklist]
        if bad:
            raise _invalid(f, path, supported_values=list(f.picklist))
        return value
    if t == "integer":
        if isinstance(value, bool) or not isinstance(value, int) or len(str(abs(value))) > 9:
            raise _invalid(f, path, expected_data_type="integer")
        return value
    if t == "bigint":
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not re.fullmatch(r"-?\d{1,18}", text):
            raise _invalid(f, path, expected_data_type="bigint")
        return text
    if t in ("decimal", "currency", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise _invalid(f, path, expected_data_type="double")
        return value
    if t == "boolean":
        if not isinstance(value, bool):
            raise _invalid(f, path, expected_data_type="boolean")
        return value
    if t == "date":
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            raise _invalid(f, path, expected_data_type="date") from None
        return value
    if t == "datetime":
        try:
            if not isinstance(value, str):
                raise ValueError
            stamp = dt.datetime.fromisoformat(value)
            if stamp.tzinfo is None:
                raise ValueError
        except ValueError:
            raise _invalid(f, path, expected_data_type="datetime") from None
        return value
    return value


_JAVA = [("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S")]


def _strptime_format(java: str) -> str:
    out = java
    for a, b in _JAVA:
        out = out.replace(a, b)
    return out.replace("'", "")


def coerce_csv(f: FieldDef, cell: str, fmt: str | None) -> Any:
    """A Bulk Write CSV cell → the JSON value validate_value() expects (ValueError if not)."""
    t = f.data_type
    if t == "integer":
        return int(cell)
    if t in ("decimal", "currency", "double"):
        try:
            return float(Decimal(cell))
        except InvalidOperation:
            raise ValueError(cell) from None
    if t == "boolean":
        low = cell.strip().lower()
        if low not in ("true", "false"):
            raise ValueError(cell)
        return low == "true"
    if t == "multiselectpicklist":
        return [v for v in cell.split(";") if v]
    if t == "date":
        return dt.datetime.strptime(cell, _strptime_format(fmt or "MM/dd/yyyy")).date().isoformat()
    if t == "datetime":
        if fmt:
            stamp = dt.datetime.strptime(cell, _strptime_format(fmt))
        else:
            try:
                stamp = dt.datetime.fromisoformat(cell)
            except ValueError:
                stamp = dt.datetime.strptime(cell, "%m/%d/%Y %H:%M:%S")
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return stamp.isoformat()
    return cell
