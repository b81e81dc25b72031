"""Fixture ``crm_sim``: the Zoho CRM simulator on a free loopback port of the test's loop.

    async def test_x(crm_sim):
        async with ZohoClient(crm_sim.zoho_settings()) as client: ...
        crm_sim.configure(rate_429=0.2)          # change faults at runtime
        crm_sim.state.records["Orders"]          # the record store (dict by id)
        crm_sim.state.stats()                    # calls, records per call, credits, bulk jobs

Options: ``@pytest.mark.crm_sim(bulk_job_seconds=0.05, ...)`` passes SimConfig fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from streamsync.settings import ZohoSettings
from streamsync.zoho.simulator import SIM_STATE, SimConfig, SimState, serve


class CrmSim:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def state(self) -> SimState:
        return self.app[SIM_STATE]

    @property
    def config(self) -> SimConfig:
        return self.state.config

    def configure(self, **faults: Any) -> None:
        """Change simulator settings (faults, bulk speed, variants) at runtime."""
        self.state.configure(**faults)

    def zoho_settings(self, **overrides: Any) -> ZohoSettings:
        """ZohoSettings pointing at this simulator (fast retries for tests)."""
        values: dict[str, Any] = {
            "accounts_url": self.url,
            "api_domain": self.url,
            "upload_url": self.url,
            "org_id": None,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.2,
            "max_retries": 20,
            "request_timeout_s": 10.0,
        }
        values.update(overrides)
        return ZohoSettings(**values)


async def start_crm_sim(config: SimConfig | None = None) -> tuple[web.AppRunner, CrmSim]:
    runner, url = await serve(config or SimConfig(bulk_job_seconds=0.05, port=0))
    return runner, CrmSim(runner.app, url)


@pytest.fixture
async def crm_sim(request: pytest.FixtureRequest) -> AsyncIterator[CrmSim]:
    marker = request.node.get_closest_marker("crm_sim")
    options: dict[str, Any] = {"bulk_job_seconds": 0.05, "port": 0}
    if marker is not None:
        options.update(marker.kwargs)
    runner, sim = await start_crm_sim(SimConfig(**options))
    try:
        yield sim
    finally:
        await runner.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "crm_sim(**options): SimConfig fields for the crm_sim fixture"
    )
