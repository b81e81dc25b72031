"""`streamsync sink --drain` (interval mode) as a subprocess against the real stack."""

from __future__ import annotations

import asyncio
import sys

from streamsync.capture import Capture
from tests.integration.test_sink_helpers import crm_view, differences, e2e_env, make_table_changes
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture


async def run_drain(env: dict[str, str], timeout_s: float = 180) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamsync",
        "sink",
        "--drain",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_drain_syncs_a_backlog_through_bulk_write_then_has_nothing_to_do(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        await make_table_changes(pg_dsn, env.table, 30_000, 12_000, delete_rate=0, txn_size=1000)
        await asyncio.wait_for(Capture(env.settings, until_idle=True).run(), timeout=120)
        from streamsync.kafka.admin import end_offsets

        ends = await end_offsets(env.settings.kafka, [env.topic])
        assert sum(ends.values()) == 30_000, ends

        code, out = await run_drain(env.subprocess_env())
        assert code == 0, out
        assert differences(await env.expected(), crm_view(crm_sim)) == [], out[-3000:]
        stats = crm_sim.state.stats()
        jobs = len(stats["bulk_jobs"])
        assert jobs == 1
        assert not crm_sim.state.records_per_call("upsert")
        # 500 per job, plus a few 1-credit calls (upload, job status, result download);
        # upserting the same records would cost ~1,150 (30,000 one call per change: 3,000)
        assert 500 * jobs <= stats["credits_used"] <= 500 * jobs + 10

        calls = len(crm_sim.state.calls)
        code, out = await run_drain(env.subprocess_env())
        assert code == 0, out
        assert len(crm_sim.state.calls) == calls  # no Zoho call at all


async def test_drain_exits_non_zero_when_zoho_is_down(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim
) -> None:
    async with e2e_env(unique_name, pg_dsn, kafka_bootstrap, crm_sim) as env:
        await make_table_changes(pg_dsn, env.table, 300, 100, delete_rate=0)
        await asyncio.wait_for(Capture(env.settings, until_idle=True).run(), timeout=60)
        crm_sim.configure(rate_500=1.0)
        sub_env = env.subprocess_env()
        sub_env["STREAMSYNC_ZOHO__MAX_RETRIES"] = "1"
        code, out = await run_drain(sub_env)
        assert code != 0
        assert "DRAIN_INCOMPLETE" in out or "drain left work undone" in out, out

        crm_sim.configure(rate_500=0.0)  # Zoho is back: the next run finishes the job
        code, out = await run_drain(env.subprocess_env())
        assert code == 0, out
        assert differences(await env.expected(), crm_view(crm_sim)) == []
