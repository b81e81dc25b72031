"""`streamsync run`: capture, sink and backfill-worker in one process, end to end.

The process runs as a real subprocess (`python -m streamsync run`, configured through
STREAMSYNC_* variables: a unique table, slot, publication, state schema, topic prefix and
consumer groups, a free ops port, the test's CRM simulator). Rows inserted into the table must
reach the simulator; /readyz and /metrics answer on the ops port; SIGTERM drains all three
roles and the process exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
import orjson

from streamsync.settings import load_settings
from streamsync.teardown import teardown
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.plugins.crm_sim import CrmSim

pytest_plugins = ["tests.plugins.crm_sim"]

ROOT = Path(__file__).resolve().parents[2]
ROWS = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_env(
    name: str, dsn: str, bootstrap: str, sim: CrmSim, port: int, work: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSYNC_")}
    tables = [
        {
            "source": f"public.{name}",
            "module": "Orders",
            "external_id": {"column": "id", "field": "parent_id"},
            "fields": {"order_number": "Name", "amount": "Amount"},
        }
    ]
    env.update(
        {
            "STREAMSYNC_POSTGRES__DSN": dsn,
            "STREAMSYNC_POSTGRES__SLOT": name,
            "STREAMSYNC_POSTGRES__PUBLICATION": name,
            "STREAMSYNC_POSTGRES__STATE_SCHEMA": f"{name}_state",
            "STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "STREAMSYNC_KAFKA__TOPIC_PREFIX": name,
            "STREAMSYNC_KAFKA__PARTITIONS": "3",
            "STREAMSYNC_CAPTURE__STATUS_INTERVAL_S": "0.2",
            "STREAMSYNC_ZOHO__ACCOUNTS_URL": sim.url,
            "STREAMSYNC_ZOHO__API_DOMAIN": sim.url,
            "STREAMSYNC_ZOHO__UPLOAD_URL": sim.url,
            "STREAMSYNC_ZOHO__BACKOFF_BASE_S": "0.01",
            "STREAMSYNC_ZOHO__BACKOFF_CAP_S": "0.2",
            "STREAMSYNC_SINK__GROUP_ID": f"{name}-sink",
            "STREAMSYNC_SINK__MAX_WAIT_S": "0.2",
            "STREAMSYNC_SINK__SHUTDOWN_TIMEOUT_S": "20",
            "STREAMSYNC_BACKFILL__GROUP_ID": f"{name}-backfill",
            "STREAMSYNC_BACKFILL__WORK_DIR": str(work),
            "STREAMSYNC_OPS__PORT": str(port),
            "STREAMSYNC_OPS__HOST": "127.0.0.1",
            "STREAMSYNC_OPS__LOG_FORMAT": "json",
            "STREAMSYNC_TABLES": orjson.dumps(tables).decode(),
        }
    )
    return env


async def cleanup(name: str, dsn: str, bootstrap: str) -> None:
    settings = load_settings(
        postgres={"dsn": dsn, "slot": name, "publication": name, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name},
        sink={"group_id": f"{name}-sink"},
        backfill={"group_id": f"{name}-backfill"},
        tables=[
            {
                "source": f"public.{name}",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
            }
        ],
    )
    await teardown(settings, force=True, drop_tables=True)


async def test_run_hosts_all_roles_and_drains_on_sigterm(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim, tmp_path: Path
) -> None:
    name = unique_name
    port = free_port()
    log = tmp_path / "run.log"
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(
        f"CREATE TABLE public.{name} (id int PRIMARY KEY, order_number text, amount numeric(10,2))"
    )
    proc: asyncio.subprocess.Process | None = None
    try:
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamsync",
                "run",
                cwd=ROOT,
                env=run_env(name, pg_dsn, kafka_bootstrap, crm_sim, port, tmp_path / "work"),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )

        def tail() -> str:
            return log.read_text(errors="replace")[-4000:]

        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def ready() -> dict[str, object] | None:
                assert proc is not None and proc.returncode is None, tail()
                async with http.get(f"{base}/readyz") as resp:
                    body: dict[str, object] = await resp.json()
                    return body if resp.status == 200 else None

            readiness = await wait_for(ready, timeout=90, interval=0.2, message=tail)
            checks = readiness["checks"]
            assert isinstance(checks, dict)
            assert {"replication_connected", "sink.partitions_assigned"} <= set(checks)

            before = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            await conn.executemany(
                f"INSERT INTO public.{name} VALUES ($1, $2, $3)",
                [(i, f"ORD-{i}", f"{i}.50") for i in range(1, ROWS + 1)],
            )
            await conn.execute(f"UPDATE public.{name} SET order_number = 'CHANGED' WHERE id = 1")

            def synced() -> bool:
                records = crm_sim.state.records["Orders"].values()
                crm = {r.get("parent_id"): r for r in records}
                return (
                    all(str(i) in crm for i in range(1, ROWS + 1))
                    and crm["1"].get("Name") == "CHANGED"
                )

            await wait_for(synced, timeout=90, interval=0.1, message=tail)

            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            for role in ("capture", "sink", "backfill-worker"):
                assert f'streamsync_role_up{{role="{role}"}} 1.0' in text, text[:2000]
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await proc.wait()
        assert code == 0, tail()
        # the slot is released, and its flush position moved past the changes that were synced
        slot = await conn.fetchrow(
            "SELECT active, confirmed_flush_lsn - '0/0'::pg_lsn AS flushed"
            " FROM pg_replication_slots WHERE slot_name = $1",
            name,
        )
        assert slot is not None and slot["active"] is False
        assert slot["flushed"] > before
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()
        await cleanup(name, pg_dsn, kafka_bootstrap)
