"""The credits ledger: what Zoho calls cost and how much of the daily budget is spent.

Costs (zoho-crm-v8.md §5): writes 1 credit per 10 records (rounded up), a Bulk Write job 500,
any other call 1. The window is a rolling 24 hours. Pure: the clock is passed in.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable

from streamsync.errors import CreditBudgetExhausted

__all__ = ["BULK_JOB_CREDITS", "WINDOW_S", "CreditLedger", "bulk_cost", "call_cost", "write_cost"]

log = logging.getLogger(__name__)

WINDOW_S = 24 * 3600.0
BULK_JOB_CREDITS = 500
WARN_FRACTION = 0.8


def write_cost(records: int) -> int:
    """Insert/update/upsert: 1 credit per 10 records, rounded up (at least 1)."""
    return max(1, math.ceil(records / 10))


def bulk_cost() -> int:
    return BULK_JOB_CREDITS


def call_cost() -> int:
    return 1


class CreditLedger:
    """Credits spent over the last 24 hours against ``budget``.

    ``check(n, urgent)`` refuses non-urgent work that would cross the budget with
    ``CreditBudgetExhausted`` (its ``retry_after`` says when enough credits age out); urgent work
    is only recorded. ``observe_remaining()`` takes Zoho's X-API-CREDITS-REMAINING header.
    """

    def __init__(self, budget: int, clock: Callable[[], float] = time.time) -> None:
        self.budget = budget
        self._clock = clock
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0
        self._warned = False
        self.server_remaining: int | None = None
        # Credits other processes spent in the window (from the shared journal in the state
        # schema), and this process's charges not yet written to it.
        self.others_used = 0
        self.journaled = False  # set by a CreditJournal; only then are charges kept for it
        self._unjournaled: list[tuple[float, int]] = []

    def _prune(self, now: float) -> None:
        cutoff = now - WINDOW_S
        while self._entries and self._entries[0][0] <= cutoff:
            _, credits = self._entries.popleft()
            self._used -= credits

    def used_24h(self) -> int:
        self._prune(self._clock())
        return self._used

    def total_used_24h(self) -> int:
        """This process's credits plus what the others reported to the shared journal."""
        return self.used_24h() + self.others_used

    def take_unjournaled(self) -> list[tuple[float, int]]:
        """The charges (epoch seconds, credits) not yet written to the shared journal."""
        out, self._unjournaled = self._unjournaled, []
        return out

    def return_unjournaled(self, charges: list[tuple[float, int]]) -> None:
        """Put back charges the journal could not take (written on the next round)."""
        self._unjournaled[:0] = charges

    def remaining(self) -> int:
        left = self.budget - self.total_used_24h()
        if self.server_remaining is not None:
            left = min(left, self.server_remaining)
        return max(0, left)

    def would_exceed(self, credits: int) -> bool:
        return credits > self.remaining()

    def warning(self) -> bool:
        """True once 80% of the budget is used."""
        return self.used_24h() >= WARN_FRACTION * self.budget

    def check(self, credits: int, *, urgent: bool = False) -> None:
        """Raise CreditBudgetExhausted if non-urgent work of ``credits`` would cross the budget."""
        if urgent or not self.would_exceed(credits):
            return
        raise CreditBudgetExhausted(
            f"daily credit budget reached ({self.total_used_24h()}/{self.budget} used)",
            retry_after=self.seconds_until_available(credits),
            details={"needed": credits, "used_24h": self.total_used_24h(), "budget": self.budget},
        )

    def seconds_until_available(self, credits: int) -> float:
        now = self._clock()
        self._prune(now)
        free = self.budget - self._used - self.others_used
        for t, spent in self._entries:
            if free >= credits:
                break
            free += spent
            if free >= credits:
                return max(1.0, t + WINDOW_S - now)
        return 60.0 if free < credits else 1.0

    def charge(self, credits: int) -> None:
        now = self._clock()
        self._prune(now)
        self._entries.append((now, credits))
        if self.journaled:
            self._unjournaled.append((now, credits))
        self._used += credits
        if self.server_remaining is not None:
            self.server_remaining = max(0, self.server_remaining - credits)
        if not self._warned and self._used >= WARN_FRACTION * self.budget:
            self._warned = True
            log.warning("zoho credits at %d/%d (80%% of the daily budget)", self._used, self.budget)
        elif self._warned and self._used < WARN_FRACTION * self.budget:
            self._warned = False

    def observe_remaining(self, header: str | None) -> None:
        """Record Zoho's X-API-CREDITS-REMAINING (present once half the day's credits are used)."""
        if header is None:
            return
        try:
            self.server_remaining = int(header.strip())
        except ValueError:
            return
