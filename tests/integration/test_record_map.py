"""The record map moves only forward per key, in one statement per batch."""

from __future__ import annotations

import json

import asyncpg

from streamsync.store import record_map
from streamsync.store.record_map import Outcome, Row
from streamsync.store.schema import ensure_schema

T = "public.orders"


async def test_outcomes_move_forward_only(pg_dsn: str, unique_name: str) -> None:
    schema = f"{unique_name}_state"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await ensure_schema(conn, schema)
        await record_map.record_outcomes(
            conn,
            schema,
            [
                Outcome(T, "[1]", "z1", 10, 0, "ok"),
                Outcome(T, "[2]", "z2", 10, 1, "ok"),
                Outcome(T, "[3]", None, 10, 2, "failed", "INVALID_DATA"),
                # the same key twice in one call: the newest wins
                Outcome(T, "[4]", "old", 5, 0, "ok"),
                Outcome(T, "[4]", "new", 6, 0, "ok"),
            ],
        )
        await record_map.record_outcomes(
            conn,
            schema,
            [
                Outcome(T, "[1]", "stale", 9, 0, "ok"),  # older: ignored
                Outcome(T, "[2]", None, 11, 0, "deleted"),  # a delete clears the id
                Outcome(T, "[3]", None, 12, 0, "failed", "INVALID_DATA"),  # attempts add up
            ],
        )
        rows = await record_map.fetch(conn, schema, T, ["[1]", "[2]", "[3]", "[4]", "[5]"])
        assert rows == {
            "[1]": Row("z1", 10, 0, "ok", 0),
            "[2]": Row(None, 11, 0, "deleted", 0),
            "[3]": Row(None, 12, 0, "failed", 2),
            "[4]": Row("new", 6, 0, "ok", 0),
        }
        await record_map.record_outcomes(conn, schema, [Outcome(T, "[3]", "z3", 13, 0, "ok")])
        fixed = await record_map.fetch(conn, schema, T, ["[3]"])
        assert fixed["[3]"] == Row("z3", 13, 0, "ok", 0)  # a success resets attempts
        assert await record_map.counts(conn, schema) == {"ok": 3, "deleted": 1}
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def _max_rows_read(plan: dict[str, object]) -> int:
    """The most rows any node of an EXPLAIN ANALYZE plan produced (rows x loops)."""
    own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))  # type: ignore[call-overload]
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return max([own, *(_max_rows_read(c) for c in children)])


async def test_fetch_probes_keys_and_never_reads_the_table(pg_dsn: str, unique_name: str) -> None:
    """A batch lookup costs its own keys, however large the record map has grown since the
    last ANALYZE (the sink runs it for every batch: a table-wide read made it quadratic)."""
    schema = f"{unique_name}_state"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await ensure_schema(conn, schema)
        await record_map.record_outcomes(
            conn, schema, [Outcome(T, f"[{i}]", f"z{i}", 1, 0, "ok") for i in range(20_000)]
        )
        keys = [f"[{i}]" for i in range(5_000, 5_100)]
        explained = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + record_map.fetch_sql(schema), T, json.dumps(keys)
        )
        plan = json.loads(explained)[0]["Plan"]
        assert _max_rows_read(plan) <= len(keys), json.dumps(plan, indent=1)
        rows = await record_map.fetch(conn, schema, T, keys)
        assert sorted(rows) == sorted(keys)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
