"""Shared pytest fixtures.

- ``pg_dsn`` / ``kafka_bootstrap`` (session): the dev stack, from STREAMSYNC_POSTGRES__DSN /
  STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS (``dev/stack env``), defaults matching dev/stack.
- Tests under tests/integration are marked ``integration`` automatically. Before the first one
  runs, the stack's reachability is checked once: unreachable -> skipped locally, but a hard
  failure when CI=true (CI must never pass by skipping).
- ``unique_name`` (function): ``t_<8 hex>``, for per-test topic prefixes, slot, publication and
  schema names.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so tests can `from tests.helpers import wait_for`
    sys.path.insert(0, str(REPO_ROOT))

pytest_plugins = ["tests.plugins.crm_sim"]

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:54329/streamsync"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
INTEGRATION_DIR = REPO_ROOT / "tests" / "integration"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pg_dsn_from_env() -> str:
    return os.environ.get("STREAMSYNC_POSTGRES__DSN") or DEFAULT_PG_DSN


def kafka_bootstrap_from_env() -> str:
    return os.environ.get("STREAMSYNC_KAFKA__BOOTSTRAP_SERVERS") or DEFAULT_KAFKA_BOOTSTRAP


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if INTEGRATION_DIR in path.parents:
            item.add_marker(pytest.mark.integration)
            # Real Postgres, Kafka and subprocesses on two shared cores: one rerun absorbs a
            # timing accident; the rerun is reported (R in the progress, "rerun" in the
            # summary), so a flaky test stays visible. A real failure fails twice.
            item.add_marker(pytest.mark.flaky(reruns=1))


# ------------------------------------------------------------------ stack reachability ----
async def _check_postgres(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


async def _check_kafka(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def _check_stack(dsn: str, bootstrap: str) -> list[str]:
    problems: list[str] = []
    for name, check in (("postgres", _check_postgres(dsn)), ("kafka", _check_kafka(bootstrap))):
        try:
            await asyncio.wait_for(check, timeout=20)
        except Exception as exc:
            problems.append(f"{name} unreachable: {type(exc).__name__}: {exc}")
    return problems


_stack_problems: list[str] | None = None


def _stack_status() -> list[str]:
    global _stack_problems
    if _stack_problems is None:
        _stack_problems = asyncio.run(_check_stack(pg_dsn_from_env(), kafka_bootstrap_from_env()))
    return _stack_problems


def require_stack() -> None:
    """Skip (locally) or fail (CI=true) the current test when the dev stack is not reachable."""
    problems = _stack_status()
    if not problems:
        return
    hint = "dev stack not reachable (run `dev/stack up` or `make stack-up`): "
    reason = hint + "; ".join(problems)
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _integration_requires_stack(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is not None:
        require_stack()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    require_stack()
    return pg_dsn_from_env()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    require_stack()
    return kafka_bootstrap_from_env()


@pytest.fixture
def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"
