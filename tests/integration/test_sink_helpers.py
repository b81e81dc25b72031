"""Shared helpers of the sink, drain and e2e integration tests (no tests here).

``SinkEnv``: a unique topic prefix, state schema and consumer group on the real stack, with the
simulator behind the Zoho settings; ``expected_crm`` folds a change stream into the records the
CRM must hold; ``crm_view`` reads the simulator's Orders by external id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from streamsync.events import ChangeEvent, encode_change
from streamsync.kafka.admin import ensure_topics, project_topics
from streamsync.kafka.producer import create_producer
from streamsync.kafka.topics import change_topic
from streamsync.settings import Settings, load_settings
from streamsync.store import record_map
from streamsync.teardown import teardown
from streamsync.zoho import map_record
from tests.helpers import cli_env
from tests.plugins.crm_sim import CrmSim

FIELDS = {
    "order_number": "Name",
    "customer_email": "Customer_Email",
    "amount": "Amount",
    "currency": "Currency",
    "status": "Status",
    "notes": "Notes",
}


def sink_settings(
    name: str,
    dsn: str,
    bootstrap: str,
    sim: CrmSim,
    *,
    table: str | None = None,
    partitions: int = 3,
    sink: dict[str, Any] | None = None,
    zoho: dict[str, Any] | None = None,
    table_extra: dict[str, Any] | None = None,
    postgres: dict[str, Any] | None = None,
) -> Settings:
    return load_settings(
        postgres={
            "dsn": dsn,
            "slot": name,
            "publication": name,
            "state_schema": f"{name}_state",
            **(postgres or {}),
        },
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": name, "partitions": partitions},
        zoho=sim.zoho_settings(**(zoho or {})).model_dump(),
        sink={
            "group_id": f"{name}-sink",
            "max_wait_s": 0.3,
            "shutdown_timeout_s": 10,
            **(sink or {}),
        },
        backfill={"work_dir": f".local/test/{name}"},
        capture={"heartbeat_interval_s": 0.5, "status_interval_s": 0.2},
        tables=[
            {
                "source": table or f"public.{name}",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
                "fields": FIELDS,
                **(table_extra or {}),
            }
        ],
    )


@dataclass
class SinkEnv:
    name: str
    settings: Settings
    dsn: str
    bootstrap: str
    sim: CrmSim

    @property
    def table(self) -> str:
        return self.settings.tables[0].source

    @property
    def topic(self) -> str:
        return change_topic(self.settings.kafka.topic_prefix, self.table)

    async def produce(self, events: Iterable[ChangeEvent | tuple[bytes, bytes]]) -> int:
        producer = create_producer(self.settings.kafka, linger_ms=20)
        await producer.start()
        n = 0
        try:
            futures = []
            for item in events:
                if isinstance(item, ChangeEvent):
                    key, value = item.key_bytes, encode_change(item)
                else:
                    key, value = item
                futures.append(await producer.send(self.topic, value=value, key=key))
                n += 1
                if len(futures) >= 5000:
                    for f in futures:
                        await f
                    futures = []
            for f in futures:
                await f
        finally:
            await producer.stop()
        return n


@contextlib.asynccontextmanager
async def sink_env(
    name: str, dsn: str, bootstrap: str, sim: CrmSim, **kwargs: Any
) -> AsyncIterator[SinkEnv]:
    settings = sink_settings(name, dsn, bootstrap, sim, **kwargs)
    await ensure_topics(settings.kafka, project_topics(settings.kafka, settings.tables))
    env = SinkEnv(name, settings, dsn, bootstrap, sim)
    try:
        yield env
    finally:
        await teardown(settings, force=True)


def expected_crm(
    settings: Settings, rows: dict[str, dict[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """Final table rows (key text -> row or None when deleted) -> Zoho records by parent_id."""
    table = settings.tables[0]
    out: dict[str, dict[str, Any]] = {}
    for row in rows.values():
        if row is None:
            continue
        record = map_record(table, row)
        out[record["parent_id"]] = record
    return out


def crm_view(sim: CrmSim) -> dict[str, dict[str, Any]]:
    """The simulator's Orders by parent_id; fails on two records with one parent_id."""
    out: dict[str, dict[str, Any]] = {}
    for rec in sim.state.records.get("Orders", {}).values():
        pid = str(rec.get("parent_id"))
        assert pid not in out, f"two CRM records for parent_id {pid}"
        out[pid] = rec
    return out


def differences(
    expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]
) -> list[str]:
    from streamsync.reconcile import normalise

    problems: list[str] = []
    for pid in sorted(set(expected) | set(actual)):
        exp, act = expected.get(pid), actual.get(pid)
        if exp is None:
            problems.append(f"{pid}: extra in CRM")
        elif act is None:
            problems.append(f"{pid}: missing in CRM")
        else:
            for f, v in exp.items():
                if normalise(v) != normalise(act.get(f)):
                    problems.append(f"{pid}.{f}: expected {v!r}, CRM has {act.get(f)!r}")
    return problems


# ------------------------------------------------------------------------ end to end ----
ORDERS_COLUMNS = "id, order_number, customer_email, amount::text AS amount, currency, status, notes"


@dataclass
class E2EEnv(SinkEnv):
    async def table_rows(self) -> dict[str, dict[str, Any] | None]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(f"SELECT {ORDERS_COLUMNS} FROM {self.table}")
        finally:
            await conn.close()
        return {f"[{r['id']}]": dict(r) for r in rows}

    async def expected(self) -> dict[str, dict[str, Any]]:
        return expected_crm(self.settings, await self.table_rows())

    def subprocess_env(self) -> dict[str, str]:
        """The environment of a ``python -m streamsync`` child against this env."""
        return cli_env(
            self.settings,
            STREAMSYNC_ZOHO__BACKOFF_BASE_S="0.01",
            STREAMSYNC_ZOHO__BACKOFF_CAP_S="0.2",
            STREAMSYNC_OPS__LOG_LEVEL="WARNING",
        )


@contextlib.asynccontextmanager
async def e2e_env(
    name: str, dsn: str, bootstrap: str, sim: CrmSim, *, initial_rows: int = 0, **kwargs: Any
) -> AsyncIterator[E2EEnv]:
    """A fresh orders table, slot, publication, state schema and topics; all dropped after."""
    from streamsync.capture import setup
    from streamsync.demo.orders import create_orders_table

    table = f"public.{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await create_orders_table(conn, table, rows=initial_rows)
    finally:
        await conn.close()
    settings = sink_settings(name, dsn, bootstrap, sim, table=table, **kwargs)
    env = E2EEnv(name, settings, dsn, bootstrap, sim)
    try:
        await setup(settings)
        yield env
    finally:
        await teardown(settings, force=True, drop_tables=True)


async def make_table_changes(
    dsn: str,
    table: str,
    changes: int,
    keys: int,
    *,
    seed: int = 11,
    delete_rate: float = 0.05,
    txn_size: int = 200,
    start_key: int = 1,
) -> int:
    """Apply ``changes`` row changes over ``keys`` keys (inserts, updates, deletes, re-inserts),
    ``txn_size`` per transaction. Returns the number of statements that changed a row."""
    import random
    from decimal import Decimal

    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    statuses = ("new", "paid", "shipped", "delivered", "cancelled", "refunded")
    try:
        present = {
            r["id"]
            for r in await conn.fetch(
                f"SELECT id FROM {table} WHERE id >= $1 AND id < $2", start_key, start_key + keys
            )
        }
        done = 0
        while done < changes:
            async with conn.transaction():
                for _ in range(min(txn_size, changes - done)):
                    key = start_key + rng.randrange(keys)
                    if key not in present:
                        await conn.execute(
                            f"INSERT INTO {table} (id, order_number, customer_email, amount,"
                            " currency, status, order_date, notes)"
                            " VALUES ($1, $2, $3, $4, 'EUR', 'new', current_date, $5)",
                            key,
                            f"ORD-{key:08d}",
                            f"c{key}@example.com",
                            Decimal(rng.randrange(100, 100_000)) / 100,
                            None if rng.random() < 0.5 else f"n{done}",
                        )
                        present.add(key)
                    elif rng.random() < delete_rate:
                        await conn.execute(f"DELETE FROM {table} WHERE id = $1", key)
                        present.discard(key)
                    else:
                        await conn.execute(
                            f"UPDATE {table} SET amount = $2, status = $3, notes = $4,"
                            " updated_at = now() WHERE id = $1",
                            key,
                            Decimal(rng.randrange(100, 100_000)) / 100,
                            rng.choice(statuses),
                            None if rng.random() < 0.5 else f"n{done}",
                        )
                    done += 1
        return done
    finally:
        await conn.close()


async def failed_keys(dsn: str, settings: Settings, table: str) -> dict[int, str]:
    """Keys the record map holds as ``failed`` (the seed's sync flag = false), with the code."""
    conn = await asyncpg.connect(dsn)
    try:
        failed = await record_map.failed_keys(conn, settings.postgres.state_schema, table)
    finally:
        await conn.close()
    return {int(k.strip("[]")): code for k, code in failed}


def poison_last_versions(
    events: list[ChangeEvent], final: dict[str, Any], pick: Callable[[list[int]], Iterable[int]]
) -> set[int]:
    """Make the last version of the keys ``pick`` chooses invalid for Zoho (``POISON`` in
    ``order_number``, a field it rejects); ``final`` no longer expects them in the CRM."""
    last: dict[int, int] = {}
    for i, e in enumerate(events):
        last[e.key[0]] = i
    poisoned = set(pick(sorted(last)))
    for k in poisoned:
        e = events[last[k]]
        after = {**(e.after or {}), "order_number": "POISON"}
        events[last[k]] = ChangeEvent(e.op, e.table, e.key, after, e.pos, unchanged=e.unchanged)
        final[f"[{k}]"] = None
    return poisoned
