"""Integration tests: real PostgreSQL and Kafka from dev/stack.

Everything under this folder is marked ``integration`` and needs the stack (see tests/conftest.py:
skipped locally when it is down, a failure when CI=true).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def pg_conn(pg_dsn: str) -> AsyncIterator[object]:
    """A plain asyncpg connection to the dev database, closed after the test."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[object]:
    """A started aiokafka admin client, closed after the test."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()
