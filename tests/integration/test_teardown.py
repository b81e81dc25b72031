"""`teardown` removes what `setup` created, and refuses to pull a slot from under a capture."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamsync.capture import Capture, setup
from streamsync.errors import CaptureError
from streamsync.settings import load_settings
from streamsync.teardown import teardown
from tests.helpers import wait_for


async def _topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
    finally:
        await admin.close()


async def test_teardown_drops_slot_publication_schema_and_topics(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str
) -> None:
    name = unique_name
    table = f"public.{name}"
    settings = load_settings(
        postgres={"dsn": pg_dsn, "slot": name, "publication": name, "state_schema": f"{name}_s"},
        kafka={"bootstrap_servers": kafka_bootstrap, "topic_prefix": name, "partitions": 1},
        tables=[
            {
                "source": table,
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
            }
        ],
    )
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        await setup(settings)
        assert len(await _topics(kafka_bootstrap, name)) == 3  # changes, control, dlq

        # a running capture holds the slot: teardown refuses without force
        capture = Capture(settings, heartbeat=False)
        running = asyncio.create_task(capture.run())
        try:
            await wait_for(
                lambda: conn.fetchval(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1", name
                ),
                timeout=20,
                message="the capture never took the slot",
            )
            with pytest.raises(CaptureError, match="in use"):
                await teardown(settings)
            report = await teardown(settings, force=True)
        finally:
            capture.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, timeout=20)

        assert report.slot_dropped and report.publication_dropped and report.schema_dropped
        assert len(report.topics_deleted) == 3
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", name
            )
            == 0
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_publication WHERE pubname = $1", name) == 0
        )
        assert await _topics(kafka_bootstrap, name) == []
        # idempotent, and the CLI says what it would do without --yes
        again = await teardown(settings)
        assert not again.slot_dropped and again.topics_deleted == []
        env = {
            **os.environ,
            "STREAMSYNC_POSTGRES__DSN": pg_dsn,
            "STREAMSYNC_POSTGRES__SLOT": name,
            "STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        }
        dry = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "streamsync", "teardown"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dry.returncode == 1 and f"slot '{name}'" in dry.stdout
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
