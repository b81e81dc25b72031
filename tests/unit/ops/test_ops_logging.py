from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from pydantic import SecretStr

from streamsync.ops.logging import RedactionFilter, configure_logging, log_context, secrets_of
from streamsync.settings import Settings, ZohoSettings

SECRET = "1000.abcdef0123456789.client-secret-value"
REFRESH = "1000.ffff.refresh-token-value"


@pytest.fixture
def settings() -> Settings:
    zoho = ZohoSettings(client_secret=SecretStr(SECRET), refresh_token=SecretStr(REFRESH))
    return Settings(zoho=zoho)


@pytest.fixture
def json_log(settings: Settings) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = configure_logging(settings, stream=stream)
    try:
        yield logging.getLogger("streamsync.test"), stream
    finally:
        logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_secrets_of_finds_every_secret(settings: Settings) -> None:
    assert set(secrets_of(settings)) >= {SECRET, REFRESH}


def test_json_lines_with_context_and_extra(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = json_log
    with log_context(role="sink", partition=3):
        log.info("flushed %d records", 100, extra={"batch": "b-1"})
    log.info("outside")
    first, second = lines(stream)
    assert first["msg"] == "flushed 100 records"
    assert first["level"] == "info"
    assert (first["role"], first["partition"], first["batch"]) == ("sink", 3, "b-1")
    assert "role" not in second


async def test_context_is_per_task(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = json_log

    async def work(backfill_id: str) -> None:
        with log_context(backfill_id=backfill_id):
            await asyncio.sleep(0)
            log.info("chunk")

    await asyncio.gather(work("a"), work("b"))
    assert sorted(str(r["backfill_id"]) for r in lines(stream)) == ["a", "b"]


def test_secrets_are_masked_everywhere(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = json_log
    log.info("secret in args %s", SECRET)
    log.info("header Authorization: Zoho-oauthtoken 1000.deadbeef.cafe sent")
    log.info("body refresh_token=%s&client_secret=other-secret&grant_type=x", "abc123xyz")
    log.info('json {"access_token": "1000.tok.en", "expires_in": 3600}')
    log.warning("extra", extra={"token": REFRESH})
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    for leaked in (
        SECRET,
        REFRESH,
        "1000.deadbeef.cafe",
        "abc123xyz",
        "other-secret",
        "1000.tok.en",
    ):
        assert leaked not in text
    records = lines(stream)
    assert records[1]["msg"] == "header Authorization: Zoho-oauthtoken *** sent"
    assert records[2]["msg"] == "body refresh_token=***&client_secret=***&grant_type=x"
    assert "RuntimeError: boom with ***" in str(records[-1]["exc"])
    assert "expires_in" in str(records[3]["msg"])


def test_redaction_of_dsn_password_and_console_format(settings: Settings) -> None:
    f = RedactionFilter()
    assert f.redact("postgresql://app:hunter22@db:5432/x") == "postgresql://app:***@db:5432/x"
    console = Settings(ops={"log_format": "console"}, zoho=settings.zoho)
    stream = io.StringIO()
    handler = configure_logging(console, stream=stream)
    try:
        with log_context(role="capture"):
            logging.getLogger("x").warning("using %s", SECRET)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out
    assert "role=capture" in out
