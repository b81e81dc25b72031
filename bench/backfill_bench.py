"""Backfill read path: rows/s and peak RSS from Postgres (keyset, server-side cursor) into
CSV-in-zip chunk files, at two table sizes to show memory is flat in the table size.

    .venv/bin/python bench/backfill_bench.py [--rows 1000000] [--small 200000]

Prints one JSON line per figure (design.md §5): rows_per_s and peak_rss_mb for each size.
Each size runs in a fresh subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from streamsync.backfill.chunks import KeysetCursor
from streamsync.backfill.read import TableReader, describe_table, read_chunk, session_settings
from streamsync.ops.runtime import tune_gc
from streamsync.settings import default_tables

DSN = os.environ.get("STREAMSYNC_POSTGRES__DSN", "postgresql://postgres@127.0.0.1:54329/streamsync")
SCHEMA = "bench_backfill"


async def prepare(rows: int) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        table = f"{SCHEMA}.orders_{rows}"
        if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
            if await conn.fetchval(f"SELECT count(*) FROM {table}") == rows:
                return
            await conn.execute(f"DROP TABLE {table}")
        await conn.execute(
            f"""CREATE TABLE {table} (id bigint PRIMARY KEY, order_number text NOT NULL,
                customer_email text, amount numeric(12,2), currency text, status text,
                order_date date, updated_at timestamptz NOT NULL DEFAULT now(), notes text)"""
        )
        await conn.execute(
            f"""INSERT INTO {table} SELECT g, 'SO-' || g, 'c' || g || '@example.com',
                (g % 1000) + 0.25, 'EUR', 'new', date '2024-01-01' + (g % 300), now(),
                'note ' || g FROM generate_series(1, $1) g""",
            rows,
        )
        await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


async def measure(rows: int) -> dict[str, float]:
    table = default_tables()[0].model_copy(update={"source": f"{SCHEMA}.orders_{rows}"})
    conn = await asyncpg.connect(DSN, server_settings=session_settings())
    try:
        reader = TableReader(table, await describe_table(conn, table.source))
        _, end = await reader.extent(conn)
        cursor = KeysetCursor(None, end)
        total = 0
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            seq = 0
            while not cursor.exhausted:
                path = Path(tmp) / f"{seq}.zip"
                cf = await read_chunk(
                    conn, reader, path=path, lo=cursor.last, end=end, limit=25_000
                )
                if cf.rows_read == 0:
                    break
                total += cf.rows_read
                cursor.advance(cf.last_key)
                path.unlink()
                seq += 1
            elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": total,
        "seconds": elapsed,
        "rows_per_s": total / elapsed,
        "peak_rss_mb": peak_mb,
    }


def main() -> None:
    tune_gc()  # as the CLI does for a long-running role (streamsync/ops/runtime.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=200_000)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child))))
        return
    for size in (args.small, args.rows):
        asyncio.run(prepare(size))
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(size)],
            check=True,
            capture_output=True,
            text=True,
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for metric, unit in (("rows_per_s", "1/s"), ("peak_rss_mb", "MB")):
            print(
                json.dumps(
                    {
                        "bench": "backfill",
                        "metric": metric,
                        "value": round(res[metric], 1),
                        "unit": unit,
                        "rows": size,
                    }
                )
            )


if __name__ == "__main__":
    main()
