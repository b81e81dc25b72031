"""Nothing lost across a Kafka broker restart and a Postgres restart (design.md §4, invariant 1).

Capture and the sink run as `python -m streamsync` processes that are started again whenever
they exit, as Kubernetes does (restartPolicy: Always): a role that loses its broker or its
database may exit (capture does, by design: it resumes from the slot), but what was committed
in Postgres must still reach the CRM, once per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from tests.integration.test_e2e import crm_equals_table
from tests.integration.test_sink_helpers import crm_view, e2e_env, make_table_changes
from tests.plugins import crm_sim as _sim_plugin
from tests.plugins.crm_sim import CrmSim

crm_sim = _sim_plugin.crm_sim  # the fixture

STACK = Path(__file__).resolve().parents[2] / "dev" / "stack"


async def restart(service: str) -> None:
    """`dev/stack restart-<service>`: the service stopped and started again, its data kept."""
    proc = await asyncio.create_subprocess_exec(
        str(STACK),
        f"restart-{service}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()


class Supervised:
    """One role as a process, started again (after a second) whenever it exits."""

    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.role = role
        self.env = env
        self.log = log  # every run's stderr, for the failure message
        self.exits: list[int] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"supervise {self.role}")

    async def _run(self) -> None:
        while not self._stopping:
            with self.log.open("ab") as err:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "streamsync",
                    self.role,
                    env=self.env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=err,
                )
            code = await self._proc.wait()
            if self._stopping:
                return
            self.exits.append(code)
            await asyncio.sleep(1.0)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)


async def test_kafka_and_postgres_restarts_lose_nothing(
    pg_dsn: str, kafka_bootstrap: str, unique_name: str, crm_sim: CrmSim, tmp_path: Path
) -> None:
    crm_sim.configure(latency_ms=5)
    async with e2e_env(
        unique_name, pg_dsn, kafka_bootstrap, crm_sim, sink={"bulk_threshold": 10_000_000}
    ) as env:
        sub_env = env.subprocess_env()
        roles = [
            Supervised(role, sub_env, tmp_path / f"{role}.log") for role in ("capture", "sink")
        ]
        for role in roles:
            role.start()
        try:
            # changes in flight (published, windowed, sent) while the broker goes away
            await make_table_changes(pg_dsn, env.table, 3_000, 800, txn_size=50, seed=31)
            await restart("kafka")
            # changes committed while the roles reconnect or restart, then Postgres goes away
            await make_table_changes(pg_dsn, env.table, 3_000, 800, txn_size=50, seed=32)
            await restart("postgres")
            await make_table_changes(pg_dsn, env.table, 3_000, 800, txn_size=50, seed=33)
            await crm_equals_table(env, limit_s=180)
        finally:
            for role in roles:
                await role.stop()
        # a role that went down with its broker or database said so and asked to be restarted
        # (exit 75), it did not crash (exit 1: a bug)
        for role in roles:
            assert all(code == 75 for code in role.exits), (role.role, role.exits, role.tail())
        crm_view(crm_sim)  # asserts one CRM record per parent_id
        assert crm_sim.state.stats()["max_records_per_call"] <= 100
