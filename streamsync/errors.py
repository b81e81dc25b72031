"""The one exception tree of streamsync.

    StreamsyncError                 code, details, keys; retryable is a class attribute
    ├── ConfigError                 invalid or missing configuration (never retryable)
    ├── CaptureError                replication stream problems (slot busy, protocol errors)
    │   └── SlotInUseError          a second capture on the same slot
    ├── PublishError                Kafka refused or timed out (retryable)
    ├── ServiceUnavailable          Kafka or Postgres unreachable (retryable)
    ├── DecodeError                 an event or message that cannot be decoded (dead-lettered)
    ├── MappingError                a Postgres value that cannot become a Zoho value (per record)
    ├── CrmError                    anything from Zoho CRM
    │   ├── CrmUnavailable          5xx, timeouts, dropped connections (retryable)
    │   ├── CrmRateLimited          429 or credit budget exhausted (retryable, retry_after)
    │   ├── CrmAuthError            OAuth failures (INVALID_TOKEN is retried once by the client)
    │   ├── CrmRequestError         request-level rejections (INVALID_MODULE, OAUTH_SCOPE_MISMATCH, ...)
    │   ├── CrmRecordRejected       one record rejected (DUPLICATE_DATA, INVALID_DATA, ...)
    │   └── BulkJobFailed           a Bulk Write job ended FAILED
    └── InvariantError              a bug: a position moved backwards, an offset did not increase

Retry decisions read ``exc.retryable``; nothing checks lists of classes. ``str()`` of an error
never contains secrets or record payloads: only codes, keys and counters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class StreamsyncError(Exception):
    """Base class: carries a machine-readable code, details and the keys it affects."""

    retryable: bool = False
    default_code: str = "STREAMSYNC_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        keys: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details: dict[str, Any] = dict(details or {})
        self.keys: tuple[str, ...] = tuple(keys)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(StreamsyncError):
    default_code = "CONFIG_INVALID"


class CaptureError(StreamsyncError):
    default_code = "CAPTURE_ERROR"
    retryable = True


class SlotInUseError(CaptureError):
    default_code = "SLOT_IN_USE"
    retryable = False


class PublishError(StreamsyncError):
    default_code = "PUBLISH_FAILED"
    retryable = True


class DecodeError(StreamsyncError):
    default_code = "UNDECODABLE"


class MappingError(StreamsyncError):
    default_code = "UNMAPPABLE_VALUE"


class CrmError(StreamsyncError):
    default_code = "CRM_ERROR"


class CrmUnavailable(CrmError):
    default_code = "CRM_UNAVAILABLE"
    retryable = True


class CrmRateLimited(CrmError):
    """Zoho said 429 (it sends no Retry-After) or the daily credit budget is spent."""

    default_code = "TOO_MANY_REQUESTS"
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class CreditBudgetExhausted(CrmRateLimited):
    default_code = "CREDIT_BUDGET_EXHAUSTED"


class CrmAuthError(CrmError):
    default_code = "AUTHENTICATION_FAILURE"


class CrmRequestError(CrmError):
    default_code = "CRM_REQUEST_REJECTED"


class CrmRecordRejected(CrmError):
    default_code = "INVALID_DATA"


class BulkJobFailed(CrmError):
    default_code = "BULK_JOB_FAILED"
    retryable = True


class InvariantError(StreamsyncError):
    default_code = "INVARIANT_VIOLATED"


class ServiceUnavailable(StreamsyncError):
    """Kafka or Postgres cannot be reached (or went away): the process exits 75 and its
    supervisor starts it again; every role resumes from its durable position."""

    default_code = "SERVICE_UNAVAILABLE"
    retryable = True


# Zoho error codes that are worth retrying later (the record itself is fine).
_RETRYABLE_CRM_CODES = frozenset(
    {
        "TOO_MANY_REQUESTS",
        "INTERNAL_ERROR",
        "LIMIT_EXCEEDED",
        "RECORD_LOCKED",
        "CANNOT_PROCESS",
        "REQUEST_TIMEOUT",
    }
)
_AUTH_CODES = frozenset(
    {"INVALID_TOKEN", "AUTHENTICATION_FAILURE", "OAUTH_SCOPE_MISMATCH", "INVALID_OAUTHTOKEN"}
)


def crm_error_for_code(code: str, message: str, **kwargs: Any) -> CrmError:
    """Map a Zoho ``code`` string to an error class; unknown codes become CrmRequestError."""
    if code == "TOO_MANY_REQUESTS":
        return CrmRateLimited(message, code=code, **kwargs)
    if code in _RETRYABLE_CRM_CODES:
        return CrmUnavailable(message, code=code, **kwargs)
    if code in _AUTH_CODES:
        return CrmAuthError(message, code=code, **kwargs)
    return CrmRequestError(message, code=code, **kwargs)


def is_retryable_crm_code(code: str) -> bool:
    """True when a per-record Zoho code means 'try again later', not 'this record is bad'."""
    return code in _RETRYABLE_CRM_CODES
