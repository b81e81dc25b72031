"""The demo's legacy table: `public.orders`, a bulk generator and a live writer.

Generated values are deterministic for a seed and always valid for the default Orders module
(statuses from its picklist, e-mail addresses that validate), so every record the demo loads
can be compared one to one by `reconcile`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

__all__ = ["ORDERS_DDL", "LiveWriter", "WriterStats", "create_orders_table", "generate_orders"]

STATUSES = ("new", "paid", "shipped", "delivered", "cancelled", "refunded")
CURRENCIES = ("EUR", "USD", "GBP")

ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigint PRIMARY KEY,
    order_number text NOT NULL,
    customer_email text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    order_date date NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    notes text
)
"""
_COLUMNS = (
    "id",
    "order_number",
    "customer_email",
    "amount",
    "currency",
    "status",
    "order_date",
    "updated_at",
    "notes",
)


def _row(order_id: int, rng: random.Random, now: datetime) -> tuple[Any, ...]:
    return (
        order_id,
        f"ORD-{order_id:08d}",
        f"customer{rng.randrange(1, 50_000)}@example.com",
        Decimal(rng.randrange(100, 500_000)) / 100,
        rng.choice(CURRENCIES),
        rng.choice(STATUSES),
        date(2024, 1, 1) + timedelta(days=rng.randrange(0, 700)),
        now,
        None if rng.random() < 0.7 else f"gift wrap {rng.randrange(1000)}",
    )


def generate_orders(count: int, *, start_id: int = 1, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Rows for `COPY`: ids start_id .. start_id + count - 1."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for order_id in range(start_id, start_id + count):
        yield _row(order_id, rng, now)


async def create_orders_table(
    conn: asyncpg.Connection, table: str = "public.orders", *, rows: int = 0, replace: bool = False
) -> None:
    """Create the table (optionally dropping it first) and COPY ``rows`` generated orders in."""
    if replace:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.execute(ORDERS_DDL.format(table=table))
    if rows:
        schema, name = table.split(".")
        batch: list[tuple[Any, ...]] = []
        for row in generate_orders(rows):
            batch.append(row)
            if len(batch) == 20_000:
                await conn.copy_records_to_table(
                    name, schema_name=schema, records=batch, columns=_COLUMNS
                )
                batch = []
        if batch:
            await conn.copy_records_to_table(
                name, schema_name=schema, records=batch, columns=_COLUMNS
            )


@dataclass(slots=True)
class WriterStats:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    transactions: int = 0

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


class LiveWriter:
    """Changes orders at a steady rate, the way the order team would: mostly updates.

    Each transaction touches a few orders; some orders change several times in a row (so
    coalescing has something to do). ``stop()`` ends the loop after the current transaction.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "public.orders",
        rate_per_s: float = 200.0,
        first_new_id: int,
        max_id: int,
        seed: int = 11,
    ) -> None:
        self._dsn = dsn
        self._table = table
        self._rate = rate_per_s
        self._next_id = first_new_id
        self._max_id = max_id
        self._rng = random.Random(seed)
        self._stop = asyncio.Event()
        self.stats = WriterStats()

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> WriterStats:
        conn = await asyncpg.connect(self._dsn)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            while not self._stop.is_set():
                if duration_s is not None and loop.time() - started >= duration_s:
                    break
                per_tx = 5
                async with conn.transaction():
                    for _ in range(per_tx):
                        await self._one_change(conn)
                self.stats.transactions += 1
                elapsed = loop.time() - started
                ahead = self.stats.changes / self._rate - elapsed
                if ahead > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), timeout=ahead)
                    except TimeoutError:
                        pass
        finally:
            await conn.close()
        return self.stats

    async def _one_change(self, conn: asyncpg.Connection) -> None:
        roll = self._rng.random()
        now = datetime.now(UTC)
        if roll < 0.1:
            row = _row(self._next_id, self._rng, now)
            self._next_id += 1
            cols = ", ".join(_COLUMNS)
            marks = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
            await conn.execute(f"INSERT INTO {self._table} ({cols}) VALUES ({marks})", *row)
            self.stats.inserts += 1
        elif roll < 0.15:
            victim = self._rng.randrange(1, self._max_id)
            result = await conn.execute(f"DELETE FROM {self._table} WHERE id = $1", victim)
            self.stats.deletes += result.endswith(" 1")
        else:
            # hot keys: a fifth of the updates go to a small set of orders
            if self._rng.random() < 0.2:
                target = self._rng.randrange(1, 200)
            else:
                target = self._rng.randrange(1, self._max_id)
            result = await conn.execute(
                f"UPDATE {self._table} SET status = $2, amount = amount + 1, updated_at = $3 "
                "WHERE id = $1",
                target,
                self._rng.choice(STATUSES),
                now,
            )
            self.stats.updates += result.endswith(" 1")
