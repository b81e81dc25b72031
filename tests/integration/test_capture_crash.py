"""kill -9 mid-stream and restart: every committed change is in the topic (duplicates allowed).

Capture runs as a real subprocess (`python -m streamsync capture`) configured through
STREAMSYNC_* variables; SIGTERM afterwards must drain, flush the slot and exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.helpers import wait_for
from tests.integration.capture_support import CaptureEnv, capture_env, read_topic

ROOT = Path(__file__).resolve().parents[2]


def start_capture(
    env: CaptureEnv, log: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env.env(), **(extra or {})}
    full_env.pop("STREAMSYNC_CONFIG", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamsync", "capture"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def confirmed_flush(conn: asyncpg.Connection, slot: str) -> int:
    value = await conn.fetchval(
        "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
        slot,
    )
    return int(value)


async def test_kill_9_and_restart_loses_nothing(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    ddl = "CREATE TABLE {table} (id int PRIMARY KEY, v text)"
    log = tmp_path / "capture.log"
    rows_per_txn = 50
    async with capture_env(unique_name, pg_dsn, kafka_bootstrap, ddl) as env:
        conn = await asyncpg.connect(pg_dsn)
        first = start_capture(env, log)
        second: subprocess.Popen[bytes] | None = None
        try:
            start = await confirmed_flush(conn, env.name)
            writer_conn = await asyncpg.connect(pg_dsn)
            committed = 0
            killed = asyncio.Event()

            async def write() -> None:
                # keep committing until the capture was killed, then 50 more transactions
                nonlocal committed
                after_kill = 0
                while after_kill < 50:
                    base = committed * rows_per_txn
                    await writer_conn.execute(
                        f"INSERT INTO {env.table} SELECT g, 'v' || g"
                        f" FROM generate_series({base}, {base + rows_per_txn - 1}) g"
                    )
                    committed += 1
                    if killed.is_set():
                        after_kill += 1

            async def progressed() -> bool:
                return await confirmed_flush(conn, env.name) > start and committed >= 100

            writer = asyncio.create_task(write())
            # the capture has acked and flushed part of the stream while more is being written
            await wait_for(progressed, timeout=60, message=lambda: log.read_text()[-2000:])
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            killed.set()
            assert first.returncode == -signal.SIGKILL
            await writer
            await writer_conn.close()

            final_lsn = int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
            second = start_capture(env, log)
            expected = set(range(committed * rows_per_txn))

            async def all_keys() -> bool:
                records = await read_topic(kafka_bootstrap, env.topic)
                return {e.key[0] for _, e in records} >= expected

            await wait_for(all_keys, timeout=120, interval=1.0, message="changes missing")
            await wait_for(
                lambda: _ge(conn, env, final_lsn),
                timeout=30,
                message="slot not flushed",
            )
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, log.read_text()[-3000:]
            records = await read_topic(kafka_bootstrap, env.topic)
            keys = [e.key[0] for _, e in records]
            assert set(keys) == expected
            assert all(e.op == "c" for _, e in records)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            await conn.close()


async def _ge(conn: asyncpg.Connection, env: CaptureEnv, lsn: int) -> bool:
    return await confirmed_flush(conn, env.name) >= lsn
