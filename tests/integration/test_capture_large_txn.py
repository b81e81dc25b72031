"""A 200,000-row transaction passes through capture in bounded memory (RSS measured)."""

from __future__ import annotations

import signal
from pathlib import Path

import asyncpg
import psutil  # type: ignore[import-untyped]

from tests.helpers import wait_for
from tests.integration.capture_support import capture_env, read_topic
from tests.integration.test_capture_crash import confirmed_flush, start_capture

ROWS = 200_000
RSS_CAP_MB = 150  # ~60 MB at rest; the transaction's events alone would need > 300 MB


async def test_large_transaction_bounded_memory(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY, v text, amount numeric(12,2))"
    log = tmp_path / "capture.log"
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        env_vars = {"STREAMSYNC_CAPTURE__MAX_INFLIGHT_EVENTS": "10000"}
        proc = start_capture(env, log, extra=env_vars)
        try:
            await conn.execute(
                f"INSERT INTO {env.table} SELECT g, repeat('x', 200) || g, g / 100.0"
                f" FROM generate_series(1, {ROWS}) g"
            )
            end = int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
            process = psutil.Process(proc.pid)
            peak = 0

            async def done() -> bool:
                nonlocal peak
                peak = max(peak, process.memory_info().rss)
                assert proc.poll() is None, log.read_text()[-3000:]
                return await confirmed_flush(conn, env.name) >= end

            await wait_for(done, timeout=180, interval=0.05, message="large txn not flushed")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
            records = await read_topic(kafka_bootstrap, env.topic)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            await conn.close()
    assert len({e.key[0] for _, e in records}) == ROWS
    assert len({e.pos.lsn for _, e in records}) == 1  # one transaction, one commit LSN
    peak_mb = peak / 1024 / 1024
    assert 0 < peak_mb < RSS_CAP_MB, f"capture peaked at {peak_mb:.0f} MB"
