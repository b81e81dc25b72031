"""Shared test helpers. No fixed sleeps: wait for a condition with a deadline instead."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from streamsync.settings import Settings, settings_env

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


async def wait_for(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - a deadline, not a cancellation scope
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Exceptions raised by the predicate count as "not yet" and are kept for the failure message.
    On the deadline raise AssertionError with ``message`` (a string or a callable producing one).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_value: Any = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            last_value = result
            if result:
                return result
        except AssertionError as exc:
            last_exc = exc
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            detail = f"; last value={last_value!r}"
            if last_exc is not None:
                detail += f"; last error={last_exc!r}"
            raise AssertionError(f"{text} (after {timeout:.1f}s{detail})") from last_exc
        await asyncio.sleep(interval)


def wait_for_sync(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.05,
    message: str = "condition not met",
) -> Any:
    """Blocking variant of :func:`wait_for` for synchronous tests (predicate must be sync)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"after {timeout:.1f}s; last error={last_exc!r}"
            raise AssertionError(f"{message} ({detail})") from last_exc
        time.sleep(interval)


REPO_ROOT = Path(__file__).resolve().parents[1]


async def streamsync_cli(
    env: dict[str, str],
    *args: str,
    timeout: float = 120.0,  # noqa: ASYNC109 - a deadline for the child process
) -> tuple[int, str, str]:
    """Run ``python -m streamsync <args>`` from the repository root; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamsync",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(settings: Settings, **override: str) -> dict[str, str]:
    """The environment of a ``python -m streamsync`` child that runs with ``settings``: this
    process's environment without its STREAMSYNC_* variables, the variables reproducing
    ``settings`` (ops server on a free port), then ``override``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSYNC_")}
    env.update(settings_env(settings))
    env["STREAMSYNC_OPS__PORT"] = "0"
    env.update(override)
    return env
