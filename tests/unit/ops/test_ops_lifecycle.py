from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from streamsync.errors import (
    ConfigError,
    CrmUnavailable,
    InvariantError,
    SlotInUseError,
    StreamsyncError,
)
from streamsync.ops.health import HealthRegistry
from streamsync.ops.lifecycle import Deadline, Role, exit_code_for, run_cli, run_roles
from streamsync.settings import Settings

pytestmark = pytest.mark.timeout(30)


def settings() -> Settings:
    return Settings(ops={"host": "127.0.0.1", "port": 0})


class DummyRole:
    """Waits for stop(); optionally ignores it (to exercise the deadline)."""

    def __init__(self, name: str, *, obey: bool = True, fail: BaseException | None = None) -> None:
        self.name = name
        self.obey = obey
        self.fail = fail
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.stop_calls = 0
        self.cancelled = False
        self.finished = False

    async def run(self) -> None:
        self.started.set()
        if self.fail is not None:
            raise self.fail
        try:
            if self.obey:
                await self.stopped.wait()
            else:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True

    def stop(self) -> None:
        self.stop_calls += 1
        self.stopped.set()


async def started(*roles: DummyRole) -> None:
    async with asyncio.timeout(10):
        for role in roles:
            await role.started.wait()


def test_dummy_role_is_a_role() -> None:
    assert isinstance(DummyRole("x"), Role)


async def test_sigterm_stops_every_role_once() -> None:
    a, b = DummyRole("a"), DummyRole("b")
    ports: list[int] = []
    runner = asyncio.create_task(
        run_roles(
            [a, b],
            settings(),
            shutdown_timeout_s=10,
            health=HealthRegistry(),
            on_started=ports.append,
        )
    )
    await started(a, b)
    assert ports and ports[0] > 0
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(10):
        await runner
    assert time.monotonic() - t0 < 5
    assert (a.stop_calls, b.stop_calls) == (1, 1)
    assert a.finished and b.finished and not a.cancelled


async def test_role_ignoring_stop_is_cancelled_at_the_deadline() -> None:
    good, stuck = DummyRole("good"), DummyRole("stuck", obey=False)
    runner = asyncio.create_task(
        run_roles([good, stuck], settings(), shutdown_timeout_s=0.3, health=HealthRegistry())
    )
    await started(good, stuck)
    t0 = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)
    async with asyncio.timeout(10):
        await runner
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 5
    assert good.finished and stuck.cancelled


async def test_second_signal_cancels_at_once() -> None:
    stuck = DummyRole("stuck", obey=False)
    runner = asyncio.create_task(
        run_roles([stuck], settings(), shutdown_timeout_s=60, health=HealthRegistry())
    )
    await started(stuck)
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(10):
        await stuck.stopped.wait()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(10):
        await runner
    assert stuck.cancelled and stuck.stop_calls == 1


async def test_failing_role_cancels_the_others_and_raises_unwrapped() -> None:
    ok = DummyRole("ok")
    bad = DummyRole("bad", fail=SlotInUseError("slot is active for PID 42"))
    with pytest.raises(SlotInUseError):
        async with asyncio.timeout(10):
            await run_roles([ok, bad], settings(), health=HealthRegistry())
    assert ok.cancelled


async def test_signal_handlers_are_removed_afterwards() -> None:
    before = signal.getsignal(signal.SIGTERM)
    role = DummyRole("r")
    runner = asyncio.create_task(run_roles([role], settings(), health=HealthRegistry()))
    await started(role)
    role.stop()
    async with asyncio.timeout(10):
        await runner
    assert signal.getsignal(signal.SIGTERM) == before


def test_deadline_with_a_fake_clock() -> None:
    now = [10.0]
    deadline = Deadline(5, clock=lambda: now[0])
    assert deadline.remaining() == 5
    now[0] = 13.5
    assert deadline.remaining() == pytest.approx(1.5)
    assert not deadline.expired
    now[0] = 20
    assert deadline.remaining() == 0 and deadline.expired


async def test_deadline_wait_times_out() -> None:
    deadline = Deadline(0.05)
    assert await deadline.wait(asyncio.sleep(0, result=7)) == 7
    with pytest.raises(TimeoutError):
        await deadline.wait(asyncio.Event().wait())


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("bad"), 2),
        (SlotInUseError("busy"), 3),
        (InvariantError("lsn moved back"), 70),
        (CrmUnavailable("5xx"), 75),
        (StreamsyncError("other"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_run_cli_maps_errors_to_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    async def boom() -> None:
        raise ConfigError("config file 'x.toml' does not exist", code="CONFIG_MISSING")

    async def fine() -> int:
        return 5

    assert run_cli(fine) == 5
    with pytest.raises(SystemExit) as info:
        run_cli(boom)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "streamsync: CONFIG_MISSING: config file 'x.toml' does not exist\n"
    )


@pytest.mark.parametrize(
    ("error", "service"),
    [
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19092)]"), "Kafka"),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), "Postgres"),
        (ConnectionRefusedError(111, "Connection refused"), "Kafka or Postgres"),
    ],
)
def test_run_cli_reports_an_unreachable_service_in_one_line_and_exits_75(
    error: Exception, service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def outage() -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        run_cli(outage)
    assert info.value.code == 75
    err = capsys.readouterr().err
    assert err.startswith(f"streamsync: SERVICE_UNAVAILABLE: {service} unavailable (")
    assert err.count("\n") == 1  # one line, no traceback


def test_run_cli_keeps_the_traceback_of_a_bug() -> None:
    async def bug() -> None:
        raise KeyError("not an outage")

    with pytest.raises(KeyError):
        run_cli(bug)


def _raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904 - the implicit context is what is under test
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


def test_a_connection_lost_under_a_closing_transaction_is_an_outage() -> None:
    from streamsync.ops.lifecycle import service_unavailable

    # what asyncpg raises when Postgres goes away inside ``async with conn.transaction()``
    lost = _raised_while_handling(
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError(
            "cannot call Transaction.__aexit__(): the underlying connection is closed"
        ),
    )
    found = service_unavailable(lost)
    assert found is not None and "Postgres unavailable" in found.message
    assert service_unavailable(asyncpg.InterfaceError("connection is closed")) is not None
    # a bug raised while some handler dealt with a timeout stays a bug
    bug = _raised_while_handling(TimeoutError(), KeyError("not an outage"))
    assert service_unavailable(bug) is None
