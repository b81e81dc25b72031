"""Capture throughput: changes/s from commit to Kafka ack, against pg_recvlogical.

    .venv/bin/python bench/capture_bench.py [--rows N] [--txn-rows M]

Writes N rows (in transactions of M rows) into a fresh table while two fresh slots wait,
then measures, on the same WAL:
- pg_recvlogical decoding it with pgoutput to /dev/null (the limit of logical decoding here);
- streamsync capture: decode, assemble, produce to Kafka and wait for every ack (acks=all).
Prints one JSON line per figure (design.md §5). Needs the dev stack (`dev/stack up`).

Fairness: both sides start from a fresh slot at the same LSN, decode the same WAL with pgoutput
proto_version=1 and the same publication, and both timings include connecting (pg_recvlogical:
process start to exit at the end LSN; capture: ``run()`` to the last ack, with the producer
start, about 0.1 s). pg_recvlogical runs first, so it reads the WAL from a colder cache. Other
processes share the machine: every line carries the 1-minute load average, and
``cpu_us_per_change`` (capture's own CPU time per change) is the figure least moved by them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamsync.capture import Capture, setup
from streamsync.events import format_lsn
from streamsync.kafka.topics import change_topic
from streamsync.ops.runtime import tune_gc
from streamsync.settings import load_settings

DSN = os.environ.get("STREAMSYNC_POSTGRES__DSN", "postgresql://postgres@127.0.0.1:54329/streamsync")
BOOTSTRAP = os.environ.get("STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
PG_RECVLOGICAL = shutil.which("pg_recvlogical") or "/usr/lib/postgresql/15/bin/pg_recvlogical"


def emit(metric: str, value: float, unit: str, **extra: object) -> None:
    line = {
        "bench": "capture",
        "metric": metric,
        "value": value,
        "unit": unit,
        **extra,
        "load1": round(os.getloadavg()[0], 2),
    }
    print(orjson.dumps(line).decode(), flush=True)


def recvlogical(name: str, end_lsn: int) -> float:
    cmd = [
        PG_RECVLOGICAL,
        "-d",
        DSN,
        "--slot",
        f"{name}_ref",
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={name}",
        "-E",
        format_lsn(end_lsn),
        "-f",
        "/dev/null",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


async def main(rows: int, txn_rows: int) -> None:
    tune_gc()  # as the CLI does for a long-running role (streamsync/ops/runtime.py)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    table = f"public.{name}"
    settings = load_settings(
        postgres={"dsn": DSN, "slot": name, "publication": name, "state_schema": f"{name}_s"},
        kafka={"bootstrap_servers": BOOTSTRAP, "topic_prefix": name, "partitions": 6},
        capture={"heartbeat_interval_s": 5.0},
        tables=[
            {"source": table, "module": "Orders", "external_id": {"column": "id", "field": "p"}}
        ],
    )
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, order_number text, amount numeric(12,2),"
            " status text, created timestamptz, notes text)"
        )
        await setup(settings, schema=False)
        await conn.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", f"{name}_ref"
        )
        started = time.perf_counter()
        for base in range(0, rows, txn_rows):
            await conn.execute(
                f"INSERT INTO {table} SELECT g, 'SO-' || g, (g % 10000) / 100.0, 'open',"
                " now(), 'note ' || g"
                f" FROM generate_series({base}, {min(base + txn_rows, rows) - 1}) g"
            )
        write_s = time.perf_counter() - started
        end_lsn = int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        emit("write_rows_per_s", round(rows / write_s), "1/s", rows=rows)

        ref_s = recvlogical(name, end_lsn)
        ref_rate = rows / ref_s
        emit("pg_recvlogical_changes_per_s", round(ref_rate), "1/s", rows=rows)

        capture = Capture(settings, until_idle=True)
        cpu_before = _cpu_s()
        started = time.perf_counter()
        await capture.run()
        cap_s = time.perf_counter() - started
        cpu_s = _cpu_s() - cpu_before
        assert capture.stats.events == rows, (capture.stats.events, rows)
        rate = rows / cap_s
        emit("changes_per_s", round(rate), "1/s", rows=rows, txn_rows=txn_rows)
        emit("ratio_vs_pg_recvlogical", round(rate / ref_rate, 3), "ratio")
        emit("cpu_us_per_change", round(cpu_s / rows * 1e6, 2), "us", cpu_s=round(cpu_s, 2))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        emit("peak_rss_mb", round(peak_mb, 1), "MB", topic=change_topic(name, table))
    finally:
        for slot in (name, f"{name}_ref"):
            await conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = $1 AND NOT active",
                slot,
            )
        await conn.execute(f'DROP PUBLICATION IF EXISTS "{name}"')
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        await _drop_topics(name)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drop_topics(prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--txn-rows", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.txn_rows))
