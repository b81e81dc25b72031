"""`streamsync demo` end to end on a small table: the CRM ends equal to the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(pg_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMSYNC_POSTGRES__DSN": pg_dsn,
        "STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "COLUMNS": "120",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamsync",
            "demo",
            "--rows",
            "6000",
            "--writer-seconds",
            "6",
            "--bulk-job-seconds",
            "1",
            "--timeout",
            "150",
            "--log-file",
            str(tmp_path / "demo.log"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "final report" in out
    assert "in sync" in out
    # the initial load went through Bulk Write, the live changes through upserts
    bulk_line = next(line for line in out.splitlines() if "Bulk Write jobs" in line)
    assert any(ch.isdigit() and ch != "0" for ch in bulk_line.split("│")[2]), bulk_line
