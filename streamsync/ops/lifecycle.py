"""Running roles: the Role protocol, the outer TaskGroup, signals and the shutdown Deadline.

``run_roles`` starts the ops server, runs every role's ``run()`` in one TaskGroup, and on the
first SIGTERM/SIGINT calls every role's ``stop()`` exactly once and starts one shared
:class:`Deadline` (``shutdown_timeout_s``). Roles that have not returned when it expires are
cancelled; a second signal cancels them at once. If a role fails, the group cancels the
others and the failure is re-raised (unwrapped from the ExceptionGroup when there is one).

Only the CLI installs signal handlers (this module, through ``run_roles``); roles never do.
``run_cli`` is the CLI's entry: ``asyncio.run`` on the default (non-uvloop) loop, mapping
StreamsyncError to an exit code and a one-line message on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from streamsync.errors import (
    ConfigError,
    CrmAuthError,
    InvariantError,
    ServiceUnavailable,
    SlotInUseError,
    StreamsyncError,
)
from streamsync.ops import metrics
from streamsync.ops.health import HEALTH, HealthRegistry
from streamsync.ops.runtime import tune_gc
from streamsync.ops.server import OpsServer
from streamsync.settings import Settings

__all__ = [
    "EXIT_CODES",
    "Deadline",
    "Role",
    "exit_code_for",
    "run_cli",
    "run_roles",
    "service_unavailable",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Exit codes (sysexits-style where one fits). Kubernetes restarts on any non-zero code.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2  # same as settings_or_exit
EXIT_SLOT_IN_USE = 3
EXIT_AUTH = 4
EXIT_INVARIANT = 70  # EX_SOFTWARE: a bug
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: a retryable infrastructure error outlived its retries
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[type[StreamsyncError], int] = {
    ConfigError: EXIT_CONFIG,
    SlotInUseError: EXIT_SLOT_IN_USE,
    CrmAuthError: EXIT_AUTH,
    InvariantError: EXIT_INVARIANT,
}


@runtime_checkable
class Role(Protocol):
    """A long-running unit: ``run()`` returns only on stop or failure; ``stop()`` is idempotent
    and only sets an event (the role drains within the deadline on its own)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Deadline:
    """One shutdown budget shared by every step of a drain.

    ``remaining()`` never goes below zero; ``timeout()`` is an ``asyncio.timeout`` ending at
    the deadline; ``wait(aw)`` awaits with what is left (TimeoutError when it runs out).
    """

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self.ends_at = clock() + timeout_s

    def remaining(self) -> float:
        return max(0.0, self.ends_at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self) -> asyncio.Timeout:
        return asyncio.timeout(self.remaining())

    async def wait(self, aw: Awaitable[T]) -> T:
        return await asyncio.wait_for(aw, timeout=self.remaining())

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s of {self.timeout_s}s)"


def _role_name(role: Role) -> str:
    return str(getattr(role, "name", type(role).__name__.lower()))


class _Shutdown:
    """Signal bookkeeping: first signal stops every role once, second cancels."""

    def __init__(self, roles: Sequence[Role], timeout_s: float) -> None:
        self.roles = roles
        self.timeout_s = timeout_s
        self.tasks: list[asyncio.Task[None]] = []
        self.deadline: Deadline | None = None
        self.signals = 0
        self._timer: asyncio.TimerHandle | None = None

    def on_signal(self, signum: int) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.info("%s received: stopping roles (deadline %.1fs)", name, self.timeout_s)
            self.request_stop()
        else:
            log.warning("%s received again: cancelling roles now", name)
            self.cancel_all()

    def request_stop(self) -> None:
        if self.deadline is not None:
            return
        self.deadline = Deadline(self.timeout_s)
        for role in self.roles:
            try:
                role.stop()
            except Exception:
                log.exception("stop() of role %s failed", _role_name(role))
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout_s, self._on_deadline)

    def _on_deadline(self) -> None:
        pending = [t.get_name() for t in self.tasks if not t.done()]
        if pending:
            log.warning("shutdown deadline passed: cancelling %s", ", ".join(pending))
            self.cancel_all()

    def cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@contextlib.contextmanager
def _signal_handlers(
    loop: asyncio.AbstractEventLoop, handler: Callable[[int], None]
) -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        loop.add_signal_handler(sig, handler, int(sig))
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
            prev = previous[sig]
            if prev is not None:
                signal.signal(sig, prev)


async def _run_role(role: Role) -> None:
    name = _role_name(role)
    metrics.ROLE_UP.labels(role=name).set(1)
    try:
        await role.run()
    finally:
        metrics.ROLE_UP.labels(role=name).set(0)


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The most telling exception of a group: a StreamsyncError if there is one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, StreamsyncError):
            return exc
    return leaves[0] if leaves else group


async def run_roles(
    roles: Sequence[Role],
    settings: Settings,
    *,
    shutdown_timeout_s: float | None = None,
    install_signals: bool = True,
    health: HealthRegistry = HEALTH,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Serve ops endpoints and run ``roles`` until they return, fail or are signalled.

    Args:
        roles: the roles to run together (``streamsync run`` passes all three).
        settings: the ops server binds ``settings.ops.host:port``.
        shutdown_timeout_s: the drain budget after the first signal; defaults to
            ``settings.sink.shutdown_timeout_s`` (keep it below terminationGracePeriodSeconds).
        install_signals: handle SIGTERM/SIGINT (the CLI); tests may drive ``stop()`` directly.
        on_started: called with the bound ops port once the server listens.

    Raises:
        The first role failure (a StreamsyncError in preference), unwrapped from the group.
        CancelledError if the caller cancels this coroutine.
    """
    timeout_s = (
        shutdown_timeout_s if shutdown_timeout_s is not None else settings.sink.shutdown_timeout_s
    )
    shutdown = _Shutdown(roles, timeout_s)
    tune_gc()  # long-running roles: see ops/runtime.py
    loop = asyncio.get_running_loop()
    signals = (
        _signal_handlers(loop, shutdown.on_signal) if install_signals else contextlib.nullcontext()
    )
    async with OpsServer(settings.ops, health=health) as server:
        if on_started is not None:
            on_started(server.port)
        log.info(
            "ops server on %s:%d; running %s",
            settings.ops.host,
            server.port,
            ", ".join(_role_name(r) for r in roles),
        )
        try:
            with signals:
                async with asyncio.TaskGroup() as group:
                    for role in roles:
                        shutdown.tasks.append(
                            group.create_task(_run_role(role), name=_role_name(role))
                        )
        except BaseExceptionGroup as eg:
            error = _first_error(eg)
            if isinstance(error, asyncio.CancelledError):
                raise error from None
            raise error from eg
        finally:
            shutdown.close()
    if shutdown.deadline is not None:
        log.info("roles stopped (%.1fs of the deadline left)", shutdown.deadline.remaining())


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, StreamsyncError):
        for cls in type(exc).__mro__:
            if cls in EXIT_CODES:
                return EXIT_CODES[cls]
        return EXIT_TEMPFAIL if exc.retryable else EXIT_ERROR
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def service_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """``exc`` as a ServiceUnavailable when it says Kafka or Postgres is out of reach.

    A broker or database restart is an outage, not a bug: the CLI reports it in one line and
    exits 75 (its supervisor restarts it) instead of printing a traceback. (The replication
    stream's psycopg2 errors are CaptureErrors already.)
    """
    # The loss may surface as a later error: asyncpg raises InterfaceError ("the underlying
    # connection is closed") from a transaction's exit, with the real loss as its context.
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        # a generic ConnectionError or TimeoutError counts only as the error itself: one in
        # the context may be an error some handler dealt with before a bug of its own
        found = _unavailable(seen, generic=seen is exc)
        if found is not None:
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def _unavailable(exc: BaseException, *, generic: bool) -> ServiceUnavailable | None:
    import asyncpg
    from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

    pg_gone = (
        asyncpg.CannotConnectNowError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.AdminShutdownError,
        asyncpg.ConnectionFailureError,
    )

    if isinstance(exc, (KafkaConnectionError, NodeNotReadyError, RequestTimedOutError)):
        service = "Kafka"
    elif isinstance(exc, pg_gone) or (
        isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)
    ):
        service = "Postgres"
    elif generic and isinstance(exc, (ConnectionError, TimeoutError)):
        service = "Kafka or Postgres"
    else:
        return None
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ServiceUnavailable(
        f"{service} unavailable ({type(exc).__name__}{': ' + detail if detail else ''})",
        details={"service": service, "error": type(exc).__name__},
    )


def run_cli(coro_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine on a fresh default event loop; exit cleanly on StreamsyncError.

    Prints ``streamsync: CODE: message`` (one line, no traceback, no secrets) and raises
    SystemExit with the code from :data:`EXIT_CODES` (retryable errors: 75, others: 1). Kafka or
    Postgres out of reach counts as a StreamsyncError (``service_unavailable``). Other
    unexpected exceptions propagate with their traceback (they are bugs).
    """
    asyncio.set_event_loop_policy(None)  # the default loop, whatever was installed before
    try:
        try:
            return asyncio.run(coro_factory())
        except Exception as exc:
            unavailable = service_unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
    except StreamsyncError as exc:
        print(f"streamsync: {exc}", file=sys.stderr)
        raise SystemExit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        print("streamsync: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
