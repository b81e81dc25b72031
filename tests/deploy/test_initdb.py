"""docker-compose's init script creates exactly the table the demo and the default mapping use."""

from __future__ import annotations

from pathlib import Path

from streamsync.demo.orders import ORDERS_DDL
from streamsync.settings import default_tables

ROOT = Path(__file__).resolve().parents[2]


def test_initdb_matches_the_demo_table() -> None:
    sql = (ROOT / "deploy" / "initdb" / "01-orders.sql").read_text()
    assert ORDERS_DDL.format(table="public.orders").strip() + ";" in sql
    mapped = {c for t in default_tables() for c in [t.external_id.column, *t.fields]}
    assert all(f"    {column} " in sql for column in mapped)
