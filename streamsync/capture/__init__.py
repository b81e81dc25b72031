"""Capture: PostgreSQL WAL (pgoutput) → change events on Kafka, at least once.

Public API: ``Capture`` (the role), ``setup`` (slot, publication, state schema, topics),
``slot_lag_bytes`` (for `streamsync status`). They are imported lazily so that the pure
modules of this package (pgoutput, assemble, acks) can be imported without any I/O library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamsync.capture.provision import SetupReport, setup
    from streamsync.capture.replication import slot_lag_bytes
    from streamsync.capture.role import Capture, CaptureStats

__all__ = ["Capture", "CaptureStats", "SetupReport", "setup", "slot_lag_bytes"]

_WHERE = {
    "Capture": "streamsync.capture.role",
    "CaptureStats": "streamsync.capture.role",
    "SetupReport": "streamsync.capture.provision",
    "setup": "streamsync.capture.provision",
    "slot_lag_bytes": "streamsync.capture.replication",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'streamsync.capture' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
