"""Configuration: defaults, TOML + environment layering, secrets from files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.errors import ConfigError
from streamsync.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMSYNC_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamsync.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_default() -> None:
    s = load_settings()
    assert s.postgres.dsn == "postgresql://postgres@127.0.0.1:54329/streamsync"
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.kafka.topic_prefix == "streamsync"
    assert s.postgres.state_schema == "streamsync"
    assert s.zoho.resolved_api_domain == "http://127.0.0.1:8765"
    assert s.sink.max_records == 100
    assert s.sink.bulk_threshold == 5000
    assert s.backfill.chunk_rows == 25_000
    assert [t.source for t in s.tables] == ["public.orders"]
    orders = s.table("public.orders")
    assert orders.external_id.column == "id" and orders.external_id.field == "parent_id"
    assert orders.fields["order_date"].format == "yyyy-MM-dd"


def test_toml_then_environment_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
[sink]
max_records = 50
max_wait_s = 2.5
[kafka]
topic_prefix = "shop"
[[tables]]
source = "public.orders"
module = "Orders"
external_id = { column = "id", field = "parent_id" }
on_delete = "Deleted"
[tables.fields]
order_number = "Name"
order_date = { field = "Order_Date", format = "yyyy-MM-dd" }
""",
    )
    monkeypatch.setenv("STREAMSYNC_SINK__MAX_RECORDS", "20")
    s = load_settings(path)
    assert s.sink.max_records == 20  # environment beats the file
    assert s.sink.max_wait_s == 2.5  # the file beats the default
    assert s.kafka.topic_prefix == "shop"
    assert s.tables[0].on_delete == "Deleted"
    assert s.tables[0].fields["order_number"].field == "Name"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[sink]\nmax_wait_s = 7\n")
    monkeypatch.setenv("STREAMSYNC_CONFIG", str(path))
    assert load_settings().sink.max_wait_s == 7


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[sink]\nmax_recods = 5\n", "sink.max_recods: unknown key"),
        ("[nonsense]\na = 1\n", "nonsense: unknown key"),
        (
            "[sink]\nmax_records = 101\n",
            "sink.max_records: Input should be less than or equal to 100",
        ),
        ("[sink]\nmax_wait_s = 601\n", "sink.max_wait_s"),
        ("[backfill]\nchunk_rows = 25001\n", "backfill.chunk_rows"),
        ('[postgres]\ndsn = "mysql://x"\n', "postgres.dsn: must be a URL"),
        ('[zoho]\ndc = "mars"\n', "zoho.dc"),
        ('[zoho]\napi_domain = "ftp://x"\n', "api_domain must be an http(s) URL"),
        ('[kafka]\ntopic_prefix = "a b"\n', "kafka.topic_prefix"),
        (
            '[[tables]]\nsource = "public.orders"\nmodule = "Orders"\n',
            "has no external_id",
        ),
        (
            '[[tables]]\nsource = "orders"\nmodule = "Orders"\n'
            'external_id = { column = "id", field = "parent_id" }\n',
            "must be 'schema.table'",
        ),
        (
            '[[tables]]\nsource = "public.orders"\nmodule = "Orders"\n'
            'external_id = { column = "id", field = "parent_id" }\non_delete = "drop it"\n',
            "on_delete",
        ),
        (
            '[[tables]]\nsource = "public.orders"\nmodule = "O"\n'
            'external_id = { column = "id", field = "parent_id" }\n'
            '[[tables]]\nsource = "public.orders"\nmodule = "O"\n'
            'external_id = { column = "id", field = "parent_id" }\n',
            "mapped twice",
        ),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml))
    assert needle in info.value.message


def test_invalid_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSYNC_BACKFILL__CHUNK_ROWS", "30000")
    with pytest.raises(ConfigError, match="backfill.chunk_rows"):
        load_settings()


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, "[sink\n"))


def test_secrets_from_files_never_printed(tmp_path: Path) -> None:
    secret = tmp_path / "client_secret"
    secret.write_text("s3cr3t-value\n")
    token = tmp_path / "refresh"
    token.write_text("1000.refresh.token")
    path = write(
        tmp_path,
        f'[zoho]\ndc = "eu"\nclient_secret_file = "{secret}"\nrefresh_token_file = "{token}"\n',
    )
    s = load_settings(path)
    assert s.zoho.client_secret.get_secret_value() == "s3cr3t-value"
    assert s.zoho.refresh_token.get_secret_value() == "1000.refresh.token"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.redacted())
    assert s.zoho.resolved_accounts_url == "https://accounts.zoho.eu"
    assert s.zoho.resolved_api_domain == "https://www.zohoapis.eu"
    assert s.zoho.resolved_upload_url == "https://content.zohoapis.eu"


def test_unreadable_secret_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[zoho]\nclient_secret_file = "{tmp_path}/missing"\n')
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings(path)


@pytest.mark.parametrize(
    ("dc", "accounts", "api"),
    [
        ("us", "https://accounts.zoho.com", "https://www.zohoapis.com"),
        ("in", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        ("au", "https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
        ("jp", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        ("cn", "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
        ("ca", "https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        ("sa", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    ],
)
def test_data_centres(dc: str, accounts: str, api: str) -> None:
    s = load_settings(zoho={"dc": dc})
    assert (s.zoho.resolved_accounts_url, s.zoho.resolved_api_domain) == (accounts, api)


def test_explicit_urls_beat_the_data_centre() -> None:
    s = load_settings(zoho={"dc": "eu", "api_domain": "https://crm.example.test/"})
    assert s.zoho.resolved_api_domain == "https://crm.example.test"
    assert s.zoho.resolved_upload_url == "https://crm.example.test"
    assert s.zoho.resolved_accounts_url == "https://accounts.zoho.eu"


def test_unknown_table_lookup() -> None:
    with pytest.raises(ConfigError, match="unknown table 'public.nope'"):
        load_settings().table("public.nope")


def test_sasl_needs_mechanism() -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_settings(kafka={"security_protocol": "SASL_SSL"})


def test_unknown_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMSYNC_SINK__BOGUS", "1")
    with pytest.raises(ConfigError, match="sink.bogus: unknown key"):
        load_settings()


def test_settings_env_reproduces_the_settings_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamsync.settings import settings_env

    original = load_settings(
        postgres={"dsn": "postgresql://u@db:5432/x", "slot": "s1"},
        kafka={"bootstrap_servers": "k:9092", "partitions": 7, "sasl_password": "hush"},
        zoho={"client_secret": "sekrit", "concurrency": 3},
        sink={"max_wait_s": 0.25, "bulk_threshold": 1234},
        ops={"log_format": "console"},
        tables=[
            {
                "source": "public.things",
                "module": "Things",
                "external_id": {"column": "id", "field": "ext_id"},
                "fields": {"name": "Name", "day": {"field": "Day", "format": "yyyy-MM-dd"}},
                "on_delete": "Gone",
            }
        ],
    )
    env = settings_env(original)
    assert env["STREAMSYNC_ZOHO__CLIENT_SECRET"] == "sekrit"  # a child needs the real value
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings()
    assert child.model_dump(mode="json") == original.model_dump(mode="json")
    assert child.zoho.client_secret.get_secret_value() == "sekrit"
    assert child.kafka.sasl_password is not None
    assert child.kafka.sasl_password.get_secret_value() == "hush"
