"""End to end commit-to-CRM latency at a steady change rate.

    .venv/bin/python bench/e2e_bench.py [--rate 500] [--seconds 20] [--keys 5000]

Postgres (dev stack) -> capture -> Kafka -> sink -> CRM simulator (its own process, zero
latency). A writer commits ``--rate`` row updates per second in small transactions; the sink
records, for every synced record, the time from the Postgres commit (the event's ``ts_ms``) to
its final Zoho outcome. Figures (design.md §5): latency_p50_ms, latency_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.sink_bench import BOOTSTRAP, DSN, cleanup, start_sim, stop_sim
from streamsync.capture import Capture, setup
from streamsync.demo.orders import create_orders_table
from streamsync.ops.runtime import tune_gc
from streamsync.settings import load_settings
from streamsync.sink import Sink


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    line = {"bench": "e2e", "metric": metric, "value": round(value, 1), "unit": unit, **extra}
    print(json.dumps(line), flush=True)


async def write_steadily(table: str, rate: int, seconds: float, keys: int) -> int:
    """``rate`` updates per second, committed 10 times a second."""
    rng = random.Random(3)
    conn = await asyncpg.connect(DSN)
    per_tick = max(1, rate // 10)
    done = 0
    try:
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            async with conn.transaction():
                for _ in range(per_tick):
                    await conn.execute(
                        f"UPDATE {table} SET amount = amount + 1, updated_at = now() WHERE id = $1",
                        rng.randrange(1, keys + 1),
                    )
            done += per_tick
            tick += 1
            await asyncio.sleep(max(0.0, start + tick / 10 - time.monotonic()))
    finally:
        await conn.close()
    return done


async def main() -> None:
    tune_gc()  # as the CLI does for a long-running role (streamsync/ops/runtime.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--keys", type=int, default=5000)
    args = parser.parse_args()

    name = f"bench_{uuid.uuid4().hex[:8]}"
    table = f"public.{name}"
    proc, url = await start_sim()
    conn = await asyncpg.connect(DSN)
    await create_orders_table(conn, table, rows=args.keys)
    await conn.close()
    settings = load_settings(
        postgres={"dsn": DSN, "slot": name, "publication": name, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": BOOTSTRAP, "topic_prefix": name, "partitions": 6},
        zoho={"accounts_url": url, "api_domain": url, "upload_url": url},
        sink={"group_id": f"{name}-sink"},
        backfill={"work_dir": f".local/bench/{name}"},
        tables=[
            {
                "source": table,
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
                "fields": {"order_number": "Name", "amount": "Amount", "status": "Status"},
            }
        ],
    )
    capture, sink = Capture(settings), Sink(settings)
    try:
        await setup(settings)
        tasks = [asyncio.create_task(capture.run()), asyncio.create_task(sink.run())]
        # warm up: the group join and the first token are not part of the steady state
        await write_steadily(table, args.rate, 3, args.keys)
        await asyncio.sleep(3)
        sink.stats.latencies_ms.clear()
        # steady state: sample what is synced during the window while the writer keeps going
        writer = asyncio.create_task(write_steadily(table, args.rate, args.seconds + 3, args.keys))
        await asyncio.sleep(args.seconds)
        sample = list(sink.stats.latencies_ms)
        written = await writer
        for role in (capture, sink):
            role.stop()
        await asyncio.gather(*tasks)
        lat = sorted(sample)
        if not lat:
            raise SystemExit("no record synced")
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        extra = {"rate": args.rate, "changes": written, "records": len(lat)}
        emit("latency_p50_ms", p50, "ms", **extra)
        emit("latency_p99_ms", p99, "ms", **extra)
    finally:
        await stop_sim(proc)
        conn = await asyncpg.connect(DSN)
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = $1 AND active_pid IS NOT NULL",
                name,
            )
            await conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = $1",
                name,
            )
            await conn.execute(f'DROP PUBLICATION IF EXISTS "{name}"')
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()
        await cleanup(name)


if __name__ == "__main__":
    asyncio.run(main())
