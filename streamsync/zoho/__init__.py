"""Zoho CRM v8: the only package that speaks HTTP to the CRM (see docs/zoho.md).

Names are imported lazily so that the pure modules (records, requests, auth, credits, models)
can be imported without pulling in asyncio or aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamsync.zoho.bulkfile import BulkRowResult, parse_bulk_result, write_bulk_zip
    from streamsync.zoho.client import ZohoClient
    from streamsync.zoho.credits import CreditLedger
    from streamsync.zoho.models import CrmRequest, CrmResponse
    from streamsync.zoho.records import csv_columns, csv_row, map_record
    from streamsync.zoho.requests import BulkJob, RecordFailure, RecordOutcome, RecordSuccess
    from streamsync.zoho.transport import AiohttpTransport, MockTransport

_EXPORTS = {
    "AiohttpTransport": "streamsync.zoho.transport",
    "BulkJob": "streamsync.zoho.requests",
    "BulkRowResult": "streamsync.zoho.bulkfile",
    "CreditLedger": "streamsync.zoho.credits",
    "CrmRequest": "streamsync.zoho.models",
    "CrmResponse": "streamsync.zoho.models",
    "MockTransport": "streamsync.zoho.transport",
    "RecordFailure": "streamsync.zoho.requests",
    "RecordOutcome": "streamsync.zoho.requests",
    "RecordSuccess": "streamsync.zoho.requests",
    "ZohoClient": "streamsync.zoho.client",
    "csv_columns": "streamsync.zoho.records",
    "csv_row": "streamsync.zoho.records",
    "map_record": "streamsync.zoho.records",
    "parse_bulk_result": "streamsync.zoho.bulkfile",
    "write_bulk_zip": "streamsync.zoho.bulkfile",
}

__all__ = [
    "AiohttpTransport",
    "BulkJob",
    "BulkRowResult",
    "CreditLedger",
    "CrmRequest",
    "CrmResponse",
    "MockTransport",
    "RecordFailure",
    "RecordOutcome",
    "RecordSuccess",
    "ZohoClient",
    "csv_columns",
    "csv_row",
    "map_record",
    "parse_bulk_result",
    "write_bulk_zip",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamsync.zoho' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
