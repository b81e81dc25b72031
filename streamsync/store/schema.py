"""Creates the state schema idempotently.

Each store module owns the DDL of its tables (``DDL``: statements with ``{schema}`` in place
of the schema name); this module only runs them, in order, inside one transaction guarded by
an advisory lock so that concurrent `setup` runs do not race.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ensure_schema"]

_DDL_MODULES = (
    "streamsync.store.record_map",
    "streamsync.store.checkpoints",
    "streamsync.store.credits",
)
_LOCK_ID = 0x5752_5359  # "SYNC": arbitrary, fixed advisory-lock id


def _statements(schema: str) -> list[str]:
    out = [f'CREATE SCHEMA IF NOT EXISTS "{schema}"']
    for name in _DDL_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        out.extend(stmt.format(schema=schema) for stmt in module.DDL)
    return out


async def ensure_schema(conn: Any, schema: str) -> None:
    """Create the schema and every table in it (asyncpg connection)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        for stmt in _statements(schema):
            await conn.execute(stmt)
