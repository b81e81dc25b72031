"""Backoff and the per-process concurrency limits for Zoho calls.

``backoff_delay()`` is pure (full jitter, exponential, capped). ``ProcessLimits`` holds one
semaphore for ``zoho.concurrency`` and one of 10 for writes of more than 10 records (Zoho's
sub-concurrency); ``process_limits()`` returns the single instance for the running loop so that
every client in the process shares it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import AsyncIterator, Callable

__all__ = ["SUB_CONCURRENCY", "ProcessLimits", "backoff_delay", "process_limits"]

SUB_CONCURRENCY = 10
SUB_CONCURRENCY_MIN_RECORDS = 11


def backoff_delay(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retry number ``attempt`` (0-based): uniform in [d/2, d], d = min(cap, base*2^n)."""
    ceiling = float(min(cap, base * (2.0 ** min(attempt, 30))))
    return ceiling / 2 + rand() * ceiling / 2


class ProcessLimits:
    def __init__(self, concurrency: int, sub_concurrency: int = SUB_CONCURRENCY) -> None:
        self.concurrency = concurrency
        self._all = asyncio.Semaphore(concurrency)
        self._heavy = asyncio.Semaphore(sub_concurrency)
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def slot(self, records: int = 0) -> AsyncIterator[None]:
        """Hold a call slot (and a sub-concurrency slot for writes of more than 10 records)."""
        async with contextlib.AsyncExitStack() as stack:
            if records >= SUB_CONCURRENCY_MIN_RECORDS:
                await stack.enter_async_context(self._heavy)
            await stack.enter_async_context(self._all)
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, ProcessLimits]] = (
    weakref.WeakKeyDictionary()
)


def process_limits(concurrency: int) -> ProcessLimits:
    """The process-wide limiter (per running loop) for ``concurrency``."""
    loop = asyncio.get_running_loop()
    per_loop = _BY_LOOP.setdefault(loop, {})
    limits = per_loop.get(concurrency)
    if limits is None:
        limits = per_loop[concurrency] = ProcessLimits(concurrency)
    return limits
