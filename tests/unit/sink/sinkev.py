from __future__ import annotations

from typing import Any

from streamsync.events import ChangeEvent, Position


def ev(
    key: int,
    lsn: int,
    op: str = "u",
    after: dict[str, Any] | None = None,
    unchanged: list[str] | None = None,
    seq: int = 0,
    table: str = "public.orders",
) -> ChangeEvent:
    if after is None and op != "d":
        after = {"id": key, "v": lsn}
    return ChangeEvent(
        op=op,  # type: ignore[arg-type]
        table=table,
        key=[key],
        after=None if op == "d" else after,
        pos=Position(lsn, seq),
        ts_ms=lsn,
        unchanged=unchanged or [],
    )
