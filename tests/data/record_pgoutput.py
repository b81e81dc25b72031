"""Record pgoutput payloads for the decoder tests (run against the dev stack).

    .venv/bin/python tests/data/record_pgoutput.py > tests/data/pgoutput_session.jsonl

One JSON object per message: {"lsn": "...", "hex": "<payload>"}. The scenario covers insert,
update (with an unchanged TOAST column), delete, a multi-row transaction, an added and a dropped
column, truncate, a logical message, and the types of docs/CONTRACTS.md.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
import orjson

DSN = "postgresql://postgres@127.0.0.1:54329/streamsync"
SLOT = "record_pgoutput"

SCENARIO = [
    "CREATE TABLE rec_orders (id bigint PRIMARY KEY, amount numeric(12,2), paid boolean,"
    " created timestamptz, day date, doc jsonb, tags text[], blob bytea, uid uuid, big text)",
    "CREATE PUBLICATION record_pgoutput FOR TABLE rec_orders",
    "SELECT pg_create_logical_replication_slot('record_pgoutput', 'pgoutput')",
    "INSERT INTO rec_orders VALUES (1, 1234.50, true, '2024-05-06 07:08:09.123456+02',"
    " '2024-05-06', '{\"a\": [1, 2.5]}', ARRAY['x', 'y z', NULL], '\\xdeadbeef',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
    " (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i))",
    "UPDATE rec_orders SET paid = false WHERE id = 1",
    "BEGIN; INSERT INTO rec_orders (id) VALUES (2); INSERT INTO rec_orders (id) VALUES (3);"
    " UPDATE rec_orders SET id = 4 WHERE id = 3; COMMIT",
    "DELETE FROM rec_orders WHERE id = 2",
    "ALTER TABLE rec_orders ADD COLUMN extra int",
    "INSERT INTO rec_orders (id, extra) VALUES (5, 42)",
    "ALTER TABLE rec_orders DROP COLUMN blob",
    "UPDATE rec_orders SET extra = 43 WHERE id = 5",
    "SELECT pg_logical_emit_message(true, 'streamsync.heartbeat', 'hb')",
    "TRUNCATE rec_orders",
]


async def main() -> None:
    conn = await asyncpg.connect(DSN)
    try:
        for stmt in SCENARIO:
            await conn.execute(stmt)
        rows = await conn.fetch(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', 'record_pgoutput', 'messages', 'true')",
            SLOT,
        )
        for row in rows:
            sys.stdout.write(orjson.dumps({"lsn": row["lsn"], "hex": row["data"].hex()}).decode())
            sys.stdout.write("\n")
    finally:
        await conn.execute(f"SELECT pg_drop_replication_slot('{SLOT}')")
        await conn.execute("DROP PUBLICATION IF EXISTS record_pgoutput")
        await conn.execute("DROP TABLE IF EXISTS rec_orders")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
