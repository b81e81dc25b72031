"""The shared credits journal: what every streamsync process spent on Zoho, in the state schema.

Zoho's daily credit budget is per organisation, while each process keeps its own ledger
(`zoho.credits.CreditLedger`). Every few seconds each process appends its new charges here and
reads what the *other* processes spent in the last 24 hours, so the budget holds across sink
replicas, the backfill worker and restarts; `streamsync status` reads the total from here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from streamsync.zoho.credits import CreditLedger

__all__ = ["DDL", "CreditJournal", "credits_24h", "process_id"]

log = logging.getLogger(__name__)

DDL = [
    """CREATE TABLE IF NOT EXISTS "{schema}".credit_log (
        at timestamptz NOT NULL,
        process text NOT NULL,
        credits integer NOT NULL
    )""",
    'CREATE INDEX IF NOT EXISTS credit_log_at ON "{schema}".credit_log (at)',
]


def process_id(role: str) -> str:
    """A name unique to this process: role, host, pid and a random suffix."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def credits_24h(conn: Any, schema: str) -> int:
    """Credits every process reported in the last 24 hours."""
    value = await conn.fetchval(
        f'SELECT coalesce(sum(credits), 0) FROM "{schema}".credit_log '
        "WHERE at > now() - interval '24 hours'"
    )
    return int(value or 0)


class CreditJournal:
    """Keeps one process's ledger in step with the shared journal (``run()`` until stopped)."""

    def __init__(
        self, pool: Any, schema: str, ledger: CreditLedger, process: str, interval_s: float = 5.0
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._ledger = ledger
        self._process = process
        self._interval_s = interval_s
        self._stop = asyncio.Event()
        ledger.journaled = True

    def stop(self) -> None:
        self._stop.set()

    async def sync(self) -> None:
        """Write this process's new charges; read the others' total for the window."""
        charges = self._ledger.take_unjournaled()
        try:
            async with self._pool.acquire() as conn:
                if charges:
                    await conn.executemany(
                        f'INSERT INTO "{self._schema}".credit_log (at, process, credits) '
                        "VALUES (to_timestamp($1), $2, $3)",
                        [(at, self._process, credits) for at, credits in charges],
                    )
                others = await conn.fetchval(
                    f'SELECT coalesce(sum(credits), 0) FROM "{self._schema}".credit_log '
                    "WHERE at > now() - interval '24 hours' AND process <> $1",
                    self._process,
                )
                await conn.execute(
                    f'DELETE FROM "{self._schema}".credit_log '
                    "WHERE at < now() - interval '48 hours'"
                )
        except BaseException:
            # not written: keep them for the next round (nothing is lost, only late)
            self._ledger.return_unjournaled(charges)
            raise
        self._ledger.others_used = int(others or 0)

    async def run(self) -> None:
        """Sync every ``interval_s`` until ``stop()``, then once more; a failed round is retried."""
        while not self._stop.is_set():
            try:
                await self.sync()
            except Exception as exc:  # the journal is advisory: never fail the role for it
                log.warning("credit journal sync failed: %s", exc)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass
        try:
            await self.sync()
        except Exception as exc:
            log.warning("final credit journal sync failed: %s", exc)
