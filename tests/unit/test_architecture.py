"""Pure modules stay pure: importing them must not pull in asyncio or any I/O library."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PURE_MODULES = [
    "streamsync.events",
    "streamsync.kafka.topics",
    "streamsync.values",
    "streamsync.capture.pgoutput",
    "streamsync.capture.assemble",
    "streamsync.capture.acks",
    "streamsync.sink.window",
    "streamsync.sink.planner",
    "streamsync.sink.offsets",
    "streamsync.sink.stats",
    "streamsync.backfill.chunks",
    "streamsync.zoho.records",
    "streamsync.zoho.requests",
    "streamsync.zoho.auth",
    "streamsync.zoho.credits",
    "streamsync.sink.outcomes",
    "streamsync.backfill.rows",
    "streamsync.reconcile",
]
FORBIDDEN = ["asyncio", "aiokafka", "aiohttp", "psycopg", "psycopg2", "asyncpg"]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is listed as a pure module but does not exist")
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
