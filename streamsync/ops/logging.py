"""Logging setup: JSON lines or a console view, context fields, and secret redaction.

- ``configure_logging(settings)`` installs one handler on the root logger: JSON lines
  (``ops.log_format = "json"``, one object per line with ``ts``, ``level``, ``logger``,
  ``msg`` and any context) or rich console output (``"console"``).
- Context: ``log_context(role="sink", partition=3)`` (a context manager) or ``bind(...)`` set
  context variables (``role``, ``partition``, ``batch``, ``backfill_id``) that are merged into
  every record logged in that task; ``extra={...}`` fields are kept too.
- Redaction: a handler-level filter masks every SecretStr value found in the settings, plus
  ``Authorization: Zoho-oauthtoken …``, ``refresh_token=…``, ``client_secret=…``,
  ``access_token=…`` and ``password=…`` patterns, in the message, its arguments, extra fields
  and the formatted traceback. Handler-level, so records from every library are covered.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from pydantic import BaseModel, SecretStr

from streamsync.settings import Settings

__all__ = [
    "CONTEXT_KEYS",
    "JsonFormatter",
    "RedactionFilter",
    "bind",
    "configure_logging",
    "log_context",
    "secrets_of",
]

MASK = "***"
CONTEXT_KEYS = ("role", "partition", "batch", "backfill_id")
_CONTEXT: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "streamsync_log_context", default=None
)

# Secret-bearing patterns: group 1 is kept, the rest of the match is masked.
_PATTERNS = (
    re.compile(r"(Zoho-oauthtoken\s+)[^\s\"',;]+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE),
    re.compile(
        r"((?:refresh_token|client_secret|access_token|password|sasl_password|code)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+",
        re.IGNORECASE,
    ),
    re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+(?=@)"),
)
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


# ------------------------------------------------------------------------- context ----
def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any] | None]:
    """Add fields to the current context (this task and tasks it creates from now on)."""
    return _CONTEXT.set({**current_context(), **fields})


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Fields merged into every record logged inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_context() -> Mapping[str, Any]:
    return _CONTEXT.get() or {}


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record (never overriding explicit extras)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_context().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# ----------------------------------------------------------------------- redaction ----
def secrets_of(model: BaseModel) -> list[str]:
    """Every non-empty SecretStr value in a settings model (recursively)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.append(secret)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(model)
    return found


class RedactionFilter(logging.Filter):
    """Masks known secret values and secret-bearing patterns in every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(repr(value) if not isinstance(value, bytes) else str(value))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, redacted
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # the redacted text is what gets printed
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, self._redact_value(value))
        return True


# ---------------------------------------------------------------------- formatting ----
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context and extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


class _ConsoleContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        ]
        return f"{text} [{' '.join(extras)}]" if extras else text


def configure_logging(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    extra_secrets: Iterable[str] = (),
) -> logging.Handler:
    """Install the root handler for ``settings.ops``; returns it (tests remove it)."""
    ops = settings.ops
    handler: logging.Handler
    if ops.log_format == "console" and stream is None:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(_ConsoleContextFormatter("%(message)s"))
    elif ops.log_format == "console":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            _ConsoleContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter([*secrets_of(settings), *extra_secrets]))

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_streamsync", False):
            root.removeHandler(old)
    setattr(handler, "_streamsync", True)  # noqa: B010
    root.addHandler(handler)
    root.setLevel(ops.log_level)
    for noisy in ("aiokafka", "kafka", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
