"""Two processes share the org's daily credit budget through the journal in the state schema."""

from __future__ import annotations

import asyncpg
import pytest

from streamsync.errors import CreditBudgetExhausted
from streamsync.store.credits import CreditJournal, credits_24h, process_id
from streamsync.store.schema import ensure_schema
from streamsync.zoho.credits import CreditLedger


async def test_budget_holds_across_processes(pg_dsn: str, unique_name: str) -> None:
    schema = f"{unique_name}_state"
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await ensure_schema(conn, schema)
        sink_ledger, backfill_ledger = CreditLedger(1000), CreditLedger(1000)
        sink = CreditJournal(pool, schema, sink_ledger, process_id("sink"))
        backfill = CreditJournal(pool, schema, backfill_ledger, process_id("backfill-worker"))

        backfill_ledger.charge(500)  # a bulk job
        backfill_ledger.charge(1)
        await backfill.sync()
        sink_ledger.charge(10)
        await sink.sync()
        assert sink_ledger.others_used == 501
        sink_ledger.check(489)
        with pytest.raises(CreditBudgetExhausted):
            sink_ledger.check(490)  # 10 own + 501 others + 490 > 1000
        await backfill.sync()
        assert backfill_ledger.others_used == 10
        async with pool.acquire() as conn:
            assert await credits_24h(conn, schema) == 511
        # nothing is written twice
        await sink.sync()
        await backfill.sync()
        async with pool.acquire() as conn:
            assert await credits_24h(conn, schema) == 511
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
