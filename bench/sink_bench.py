"""Sink throughput into the CRM simulator, and credits against the minimum.

    .venv/bin/python bench/sink_bench.py [--records 40000] [--latency-records 60000]

Needs the dev stack (Kafka, Postgres for the state schema). Change events are produced straight
to a fresh change topic, then one Sink runs until idle against an in-process simulator.
Throughput is measured on the simulator's call log (first to last upsert call), so the consumer
group join is not counted. Figures (one JSON line each, design.md §5):

- records_per_s (latency 0), records_per_s and ratio_vs_limit (100 ms, concurrency 10;
  the limit is concurrency x 100 records / latency = 10,000 records/s). 60,000 records make
  600 calls, so the first round (slots filling) and the last (slots emptying) are a small
  share of the run, as they are of a real backlog;
- sim_ceiling_records_per_s and ratio_vs_sim_ceiling, at each latency: what a bare client
  (the same ZohoClient, ``concurrency`` workers sending full upserts of pre-mapped records, no
  Kafka, window or record map) gets from the same simulator on this machine in the same run.
  The simulator spends its latency *after* handling the call and shares the machine's CPUs
  with the sink, Kafka and Postgres, so the limit above is not reachable by any client here;
  this line says how much of the gap is the sink's;
- credits: ratio_vs_minimum and ratio_vs_one_call_per_change for a stream of repeated
  changes (20,000 changes over 5,000 keys, the sink running while they arrive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from streamsync.events import ChangeEvent, Position, encode_change
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic
from streamsync.ops.runtime import tune_gc
from streamsync.settings import Settings, load_settings, settings_env
from streamsync.sink import Sink
from streamsync.sink.planner import cheapest_credits

DSN = os.environ.get("STREAMSYNC_POSTGRES__DSN", "postgresql://postgres@127.0.0.1:54329/streamsync")
BOOTSTRAP = os.environ.get("STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")


def emit(metric: str, value: float, unit: str, **extra: Any) -> None:
    print(
        json.dumps(
            {"bench": "sink", "metric": metric, "value": round(value, 3), "unit": unit, **extra}
        ),
        flush=True,
    )


async def start_sim(**options: Any) -> tuple[asyncio.subprocess.Process, str]:
    """The simulator in its own process (`streamsync crm-sim`), so it does not share the
    sink's CPU; returns the process and its URL once it answers."""
    import socket

    import aiohttp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--bulk-job-seconds", "0.05"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamsync",
        "crm-sim",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url + "/__sim/stats") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)


async def sim_stats(url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/__sim/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def stop_sim(proc: asyncio.subprocess.Process) -> None:
    proc.terminate()
    await proc.wait()


def settings_for(name: str, url: str, concurrency: int, **sink: Any) -> Settings:
    return load_settings(
        postgres={"dsn": DSN, "state_schema": f"{name}_state"},
        kafka={"bootstrap_servers": BOOTSTRAP, "topic_prefix": name, "partitions": 6},
        zoho={
            "accounts_url": url,
            "api_domain": url,
            "upload_url": url,
            "concurrency": concurrency,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.2,
        },
        sink={"group_id": f"{name}-sink", "max_wait_s": 0.5, "bulk_threshold": 10_000_000, **sink},
        backfill={"work_dir": f".local/bench/{name}"},
        tables=[
            {
                "source": "public.orders",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
                "fields": {"order_number": "Name", "amount": "Amount", "status": "Status"},
            }
        ],
    )


def event(key: int, seq: int) -> ChangeEvent:
    return ChangeEvent(
        op="u",
        table="public.orders",
        key=[key],
        after={
            "id": key,
            "order_number": f"ORD-{key}",
            "amount": f"{seq % 1000}.50",
            "status": "paid",
        },
        pos=Position(1_000 + seq, 0),
    )


async def produce(settings: Settings, events: list[ChangeEvent]) -> None:
    producer = create_producer(settings.kafka, linger_ms=20)
    await producer.start()
    try:
        topic = change_topic(settings.kafka.topic_prefix, "public.orders")
        futures = []
        for e in events:
            futures.append(await producer.send(topic, value=encode_change(e), key=e.key_bytes))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def cleanup(name: str) -> None:
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}_state" CASCADE')
    finally:
        await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(name + ".")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def run_measured(sink: Sink, records: int, first_call_s: float) -> float:
    """Run ``sink`` until idle; records/s from its first synced batch to the last record
    (the consumer-group join is not counted; the first call's duration is added back)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sink.run())
    t0 = t1 = None
    while not task.done():
        sent = sink.stats.records_sent
        if t0 is None and sent > 0:
            t0 = loop.time() - first_call_s
        if sent >= records and t1 is None:
            t1 = loop.time()
        await asyncio.sleep(0.01)
    await task
    assert t0 is not None and t1 is not None, sink.stats
    return records / (t1 - t0)


async def throughput(records: int, latency_ms: float, concurrency: int) -> float:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    proc, url = await start_sim(latency_ms=latency_ms)
    settings = settings_for(name, url, concurrency)
    try:
        await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
        await produce(settings, [event(k, k) for k in range(records)])
        sink = Sink(settings, until_idle=True)
        rate = await run_measured(sink, records, latency_ms / 1000)
        stats = await sim_stats(url)
        assert sum(stats["records_per_call"]["upsert"]) == records
        return rate
    finally:
        await stop_sim(proc)
        await cleanup(name)


async def sim_ceiling(records: int, latency_ms: float, concurrency: int) -> float:
    """records/s of a bare client into a fresh simulator (see the module docstring)."""
    from streamsync.zoho import ZohoClient
    from streamsync.zoho.records import record_mapper

    proc, url = await start_sim(latency_ms=latency_ms)
    settings = settings_for(f"bench_{uuid.uuid4().hex[:8]}", url, concurrency)
    table = settings.tables[0]
    mapper = record_mapper(table)
    batches = [
        [mapper(event(k, k).after or {}, ()) for k in range(start, min(records, start + 100))]
        for start in range(0, records, 100)
    ]
    dcf = [table.external_id.field]
    try:
        async with ZohoClient(settings.zoho) as client:
            await client.upsert(table.module, batches[0][:1], dcf)  # token, connection

            async def worker(mine: list[list[dict[str, Any]]]) -> None:
                for batch in mine:
                    await client.upsert(table.module, batch, dcf)

            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await asyncio.gather(*(worker(batches[i::concurrency]) for i in range(concurrency)))
            return records / (loop.time() - t0)
    finally:
        await stop_sim(proc)


async def credits(changes: int, keys: int) -> tuple[float, float, int]:
    import random

    name = f"bench_{uuid.uuid4().hex[:8]}"
    proc, url = await start_sim()
    settings = settings_for(name, url, 10)
    rng = random.Random(5)
    try:
        await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
        sink = Sink(settings, until_idle=True)
        task = asyncio.create_task(sink.run())
        stream = [event(rng.randrange(keys), i) for i in range(changes)]
        # arrive at ~5,000 changes/s while the sink runs
        for start in range(0, changes, 500):
            await produce(settings, stream[start : start + 500])
            await asyncio.sleep(0.1)
        await task  # until idle: everything synced and committed
        used = int((await sim_stats(url))["credits_used"])
        distinct = len({e.key[0] for e in stream})
        minimum = cheapest_credits(distinct, 5_000)
        return used / minimum, used / changes, used
    finally:
        await stop_sim(proc)
        await cleanup(name)


def sink_env(settings: Settings) -> dict[str, str]:
    """The environment of `python -m streamsync sink` with ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSYNC_")}
    env.update(settings_env(settings))
    env.update({"STREAMSYNC_OPS__PORT": "0", "STREAMSYNC_OPS__LOG_LEVEL": "WARNING"})
    return env


_PEAK_RSS_CHILD = (
    "import atexit, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('PEAK_RSS_KB', line.split()[1], file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "from streamsync.cli import main\n"
    "sys.argv = ['streamsync', 'sink', '--drain']\n"
    "main()\n"
)


async def drain_memory(changes: int) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of `streamsync sink --drain` over a backlog of ``changes``
    (distinct keys, so the credit planner sends them as Bulk Write jobs of 25,000)."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    proc, url = await start_sim()
    settings = settings_for(
        name, url, 10, bulk_threshold=5_000, bulk_poll_interval_s=0.2, max_wait_s=5.0
    )
    try:
        await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
        await produce(settings, [event(k, k) for k in range(changes)])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PEAK_RSS_CHILD,
            env=sink_env(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await child.communicate()
        seconds = loop.time() - t0
        text = err.decode()
        if child.returncode != 0:
            raise RuntimeError(f"sink --drain exited {child.returncode}: {text[-2000:]}")
        peak_kb = int(text.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
        stats = await sim_stats(url)
        synced = stats["module_sizes"].get("Orders", 0)
        if synced != changes:
            raise RuntimeError(f"{synced} records in the CRM, expected {changes}")
        return peak_kb / 1024, seconds
    finally:
        await stop_sim(proc)
        await cleanup(name)


async def main() -> None:
    tune_gc()  # as `streamsync sink` does (streamsync/ops/runtime.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--latency-records", type=int, default=60_000)
    parser.add_argument("--skip-credits", action="store_true", help="throughput figures only")
    args = parser.parse_args()

    rate = await throughput(args.records, 0.0, 10)
    emit("records_per_s", rate, "1/s", latency_ms=0, concurrency=10)
    ceiling = await sim_ceiling(args.records, 0.0, 10)
    emit("sim_ceiling_records_per_s", ceiling, "1/s", latency_ms=0, concurrency=10)
    emit("ratio_vs_sim_ceiling", rate / ceiling, "ratio", latency_ms=0, concurrency=10)
    rate = await throughput(args.latency_records, 100.0, 10)
    limit = 10 * 100 / 0.1
    emit("records_per_s", rate, "1/s", latency_ms=100, concurrency=10)
    emit("ratio_vs_limit", rate / limit, "ratio", latency_ms=100, concurrency=10, limit=limit)
    ceiling = await sim_ceiling(args.latency_records, 100.0, 10)
    emit("sim_ceiling_records_per_s", ceiling, "1/s", latency_ms=100, concurrency=10)
    emit("ratio_vs_sim_ceiling", rate / ceiling, "ratio", latency_ms=100, concurrency=10)
    if args.skip_credits:
        return
    for backlog in (50_000, 200_000):
        peak_mb, seconds = await drain_memory(backlog)
        emit("drain_peak_rss_mb", peak_mb, "MB", backlog=backlog, seconds=round(seconds, 1))
    vs_min, vs_one, used = await credits(20_000, 5_000)
    emit("credits_used", used, "credits", changes=20_000, keys=5_000)
    print(
        json.dumps(
            {
                "bench": "credits",
                "metric": "ratio_vs_minimum",
                "value": round(vs_min, 3),
                "unit": "ratio",
            }
        )
    )
    print(
        json.dumps(
            {
                "bench": "credits",
                "metric": "ratio_vs_one_call_per_change",
                "value": round(vs_one, 3),
                "unit": "ratio",
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
