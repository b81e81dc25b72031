"""kill -9 of the sink process at three random moments: the CRM still equals the table and no
key has two CRM records (replays are idempotent: upsert on the external id, record-map skips)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

from streamsync.capture import Capture
from tests.helpers import wait_for
from tests.integration.test_e2e import crm_equals_table, running
from tests.integration.test_sink_helpers import crm_view, e2e_env, make_table_changes
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture


async def start_sink(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamsync",
        "sink",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_kill_9_of_the_sink_at_three_random_moments(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    rng = random.Random()
    crm_sim.configure(latency_ms=5)  # calls overlap the kills
    async with e2e_env(
        unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink={"bulk_threshold": 10_000_000}
    ) as env:
        sub_env = env.subprocess_env()
        async with running(Capture(env.settings)):
            writer = asyncio.create_task(
                make_table_changes(pg_dsn, env.table, 12_000, 1_500, txn_size=50, seed=7)
            )
            proc = await start_sink(sub_env)
            try:
                for _ in range(3):
                    # a random moment: after a random number of further upsert calls, or
                    # (when coalescing leaves fewer calls than drawn) once the writer is done
                    target = len(crm_sim.state.calls) + rng.randrange(5, 40)
                    await wait_for(
                        lambda t=target: len(crm_sim.state.calls) >= t or writer.done(),
                        timeout=60,
                        message=lambda: f"{len(crm_sim.state.calls)} calls so far",
                    )
                    os.kill(proc.pid, signal.SIGKILL)
                    await proc.wait()
                    proc = await start_sink(sub_env)
                await writer
                await crm_equals_table(env, limit_s=90)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(proc.wait(), timeout=30)
            assert proc.returncode == 0  # a SIGTERM drains, commits and exits cleanly
        crm_view(crm_sim)  # asserts one record per parent_id
        assert crm_sim.state.stats()["max_records_per_call"] <= 100
