"""Capture: PostgreSQL WAL (pgoutput) → change events on Kafka, at least once.

Public API: ``Capture`` (the role), ``setup`` (slot, publication, state schema, topics),
``slot_lag_bytes`` (for `streamsync status`).
"""

from streamsync.capture.replication import slot_lag_bytes
from streamsync.capture.role import Capture, CaptureStats
from streamsync.capture.setup import SetupReport, setup

__all__ = ["Capture", "CaptureStats", "SetupReport", "setup", "slot_lag_bytes"]
