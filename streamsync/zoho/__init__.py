"""Zoho CRM v8: the only package that speaks HTTP to the CRM (see docs/zoho.md)."""

from streamsync.zoho.bulkfile import BulkRowResult, parse_bulk_result, write_bulk_zip
from streamsync.zoho.client import ZohoClient
from streamsync.zoho.credits import CreditLedger
from streamsync.zoho.records import csv_columns, csv_row, map_record
from streamsync.zoho.requests import BulkJob, RecordFailure, RecordOutcome, RecordSuccess
from streamsync.zoho.transport import AiohttpTransport, CrmRequest, CrmResponse, MockTransport

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
