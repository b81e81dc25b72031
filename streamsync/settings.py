"""Configuration: one frozen pydantic model per TOML section.

Sources, strongest first: explicit arguments, ``STREAMSYNC_<SECTION>__<KEY>`` environment
variables, the TOML file (``--config FILE`` or ``STREAMSYNC_CONFIG``), then the defaults.
The defaults are the *embedded default*: the local stack started by ``dev/stack`` and the
bundled Zoho CRM simulator. Secrets are ``SecretStr``; each may also be read from a file
(``<name>_file``, for Kubernetes Secret mounts). No other module reads the environment:
constructors take the section they need.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streamsync.errors import ConfigError

__all__ = [
    "DATA_CENTRES",
    "BackfillSettings",
    "CaptureSettings",
    "ExternalId",
    "FieldMapping",
    "KafkaSettings",
    "OpsSettings",
    "PostgresSettings",
    "Settings",
    "SinkSettings",
    "TableSettings",
    "ZohoSettings",
    "load_settings",
    "settings_env",
]

# Zoho data centres: accounts server and API domain (zoho-crm-v8.md §2).
DATA_CENTRES: dict[str, tuple[str, str]] = {
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
}
UPLOAD_HOSTS: dict[str, str] = {
    "us": "https://content.zohoapis.com",
    "eu": "https://content.zohoapis.eu",
    "in": "https://content.zohoapis.in",
    "au": "https://content.zohoapis.com.au",
    "jp": "https://content.zohoapis.jp",
    "cn": "https://content.zohoapis.com.cn",
    "ca": "https://content.zohoapis.ca",
    "sa": "https://content.zohoapis.sa",
}
SIMULATOR_URL = "http://127.0.0.1:8765"
MAX_UPSERT_RECORDS = 100
MAX_BULK_ROWS = 25_000
# Credits: an upsert costs 1 per 10 records, a bulk job 500: break-even at 5,000 records.
BULK_BREAK_EVEN_RECORDS = 5_000

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _read_secret_file(path: str | None) -> SecretStr | None:
    if not path:
        return None
    try:
        return SecretStr(Path(path).read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path!r}: {exc.strerror}") from None


class PostgresSettings(_Section):
    dsn: str = "postgresql://postgres@127.0.0.1:54329/streamsync"
    slot: str = "streamsync"
    publication: str = "streamsync"
    state_schema: str = "streamsync"
    password_file: str | None = None

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        if not re.match(r"^postgres(ql)?://[^/]*(/[^/?]*)?(\?.*)?$", value):
            raise ValueError(
                "must be a URL like postgresql://user@host:port/database "
                f"(got a value starting with {value[:12]!r})"
            )
        return value

    @field_validator("slot", "publication", "state_schema")
    @classmethod
    def _check_ident(cls, value: str) -> str:
        if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
            raise ValueError("must be a lower-case Postgres identifier (a-z, 0-9, _)")
        return value


class CaptureSettings(_Section):
    heartbeat_interval_s: float = Field(10.0, gt=0, le=3600)
    status_interval_s: float = Field(1.0, gt=0, le=60)
    on_truncate: Literal["log", "publish"] = "log"
    max_inflight_events: int = Field(50_000, ge=100)
    proto_version: int = Field(1, ge=1, le=2)  # pgoutput 1, or 2 (streams large transactions)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = "streamsync"
    partitions: int = Field(6, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=10)
    client_id: str = "streamsync"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,200}$", value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _secret_files(self) -> KafkaSettings:
        secret = _read_secret_file(self.sasl_password_file)
        if secret is not None:
            object.__setattr__(self, "sasl_password", secret)
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("security_protocol SASL_* needs sasl_mechanism")
        return self

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (security passed through)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                opts["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            ctx = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            opts["ssl_context"] = ctx
        return opts


class ZohoSettings(_Section):
    """Zoho CRM. With no ``dc`` and no URLs, the client talks to the bundled simulator."""

    dc: Literal["us", "eu", "in", "au", "jp", "cn", "ca", "sa"] | None = None
    accounts_url: str | None = None
    api_domain: str | None = None
    upload_url: str | None = None
    client_id: str = "streamsync-local"
    client_secret: SecretStr = SecretStr("streamsync-local-secret")
    refresh_token: SecretStr = SecretStr("streamsync-local-refresh")
    client_id_file: str | None = None
    client_secret_file: str | None = None
    refresh_token_file: str | None = None
    org_id: str | None = None
    concurrency: int = Field(10, ge=1, le=100)
    daily_credit_budget: int = Field(100_000, ge=1)
    request_timeout_s: float = Field(30.0, gt=0, le=600)
    max_retries: int = Field(8, ge=0, le=100)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _secret_files(self) -> ZohoSettings:
        for name in ("client_secret", "refresh_token"):
            secret = _read_secret_file(getattr(self, f"{name}_file"))
            if secret is not None:
                object.__setattr__(self, name, secret)
        client_id = _read_secret_file(self.client_id_file)
        if client_id is not None:
            object.__setattr__(self, "client_id", client_id.get_secret_value())
        for name in ("accounts_url", "api_domain", "upload_url"):
            value = getattr(self, name)
            if value is not None and not re.match(r"^https?://[^\s/]+", value):
                raise ValueError(f"{name} must be an http(s) URL")
        return self

    @property
    def resolved_accounts_url(self) -> str:
        if self.accounts_url:
            return self.accounts_url.rstrip("/")
        return DATA_CENTRES[self.dc][0] if self.dc else SIMULATOR_URL

    @property
    def resolved_api_domain(self) -> str:
        if self.api_domain:
            return self.api_domain.rstrip("/")
        return DATA_CENTRES[self.dc][1] if self.dc else SIMULATOR_URL

    @property
    def resolved_upload_url(self) -> str:
        """Base of the Bulk Write upload endpoint (``.../crm/v8/upload`` is appended)."""
        if self.upload_url:
            return self.upload_url.rstrip("/")
        if self.api_domain or not self.dc:
            return self.resolved_api_domain
        return UPLOAD_HOSTS[self.dc]


class SinkSettings(_Section):
    group_id: str = "streamsync-sink"
    max_records: int = Field(MAX_UPSERT_RECORDS, ge=1, le=MAX_UPSERT_RECORDS)
    max_wait_s: float = Field(5.0, gt=0, le=600)
    bulk_threshold: int = Field(BULK_BREAK_EVEN_RECORDS, ge=1)
    max_bulk_records: int = Field(MAX_BULK_ROWS, ge=1, le=MAX_BULK_ROWS)
    max_record_attempts: int = Field(5, ge=1, le=100)
    # a job's first status poll comes this long after its creation, later ones 1.5x apart (a
    # poll is a credit; a job of thousands of records takes Zoho seconds to minutes)
    bulk_poll_interval_s: float = Field(2.0, gt=0, le=600)
    shutdown_timeout_s: float = Field(25.0, gt=0)


class BackfillSettings(_Section):
    group_id: str = "streamsync-backfill"
    chunk_rows: int = Field(MAX_BULK_ROWS, ge=1, le=MAX_BULK_ROWS)
    max_parallel_jobs: int = Field(2, ge=1, le=20)
    poll_interval_s: float = Field(5.0, gt=0, le=600)
    callback_url: str | None = None
    work_dir: str = ".local/backfill"
    max_rounds: int = Field(3, ge=1, le=100)


class OpsSettings(_Section):
    port: int = Field(8080, ge=0, le=65535)
    host: str = "0.0.0.0"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"


class ExternalId(_Section):
    column: str
    field: str


class FieldMapping(_Section):
    field: str
    type: str | None = None
    format: str | None = None


class TableSettings(_Section):
    source: str
    module: str
    external_id: ExternalId
    fields: dict[str, FieldMapping] = Field(default_factory=dict)
    on_delete: str = "delete"
    sync_flag_column: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _require_external_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "external_id" not in data:
            source = data.get("source", "?")
            raise ValueError(
                f"table {source!r} has no external_id: add "
                'external_id = { column = "id", field = "parent_id" }'
            )
        return data

    @field_validator("fields", mode="before")
    @classmethod
    def _expand_fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({"field": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 2 or not all(_IDENT.match(p) for p in parts):
            raise ValueError("must be 'schema.table', e.g. 'public.orders'")
        return value

    @field_validator("on_delete")
    @classmethod
    def _check_on_delete(cls, value: str) -> str:
        if value not in ("delete", "ignore") and not _IDENT.match(value):
            raise ValueError("must be 'delete', 'ignore' or the API name of a field to mark")
        return value

    @property
    def schema_name(self) -> str:
        return self.source.split(".")[0]

    @property
    def table_name(self) -> str:
        return self.source.split(".")[1]


def default_tables() -> list[TableSettings]:
    """The embedded default: the demo's ``public.orders`` → module ``Orders``."""
    return [
        TableSettings.model_validate(
            {
                "source": "public.orders",
                "module": "Orders",
                "external_id": {"column": "id", "field": "parent_id"},
                "on_delete": "delete",
                "fields": {
                    "order_number": "Name",
                    "customer_email": "Customer_Email",
                    "amount": "Amount",
                    "currency": "Currency",
                    "status": "Status",
                    "order_date": {"field": "Order_Date", "format": "yyyy-MM-dd"},
                    "updated_at": "Legacy_Updated_At",
                    "notes": "Notes",
                },
            }
        )
    ]


class Settings(BaseSettings):
    """All of streamsync's configuration; see docs/configuration.md for every key."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMSYNC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    postgres: PostgresSettings = PostgresSettings()
    capture: CaptureSettings = CaptureSettings()
    kafka: KafkaSettings = KafkaSettings()
    zoho: ZohoSettings = ZohoSettings()
    sink: SinkSettings = SinkSettings()
    backfill: BackfillSettings = BackfillSettings()
    ops: OpsSettings = OpsSettings()
    tables: list[TableSettings] = Field(default_factory=default_tables)

    _toml_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _TOML_PATH.path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_TOML_PATH.path))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_tables(self) -> Settings:
        seen: set[str] = set()
        for table in self.tables:
            if table.source in seen:
                raise ValueError(f"table {table.source!r} is mapped twice")
            seen.add(table.source)
        return self

    def table(self, source: str) -> TableSettings:
        """The mapping for ``schema.table``; ConfigError names the known tables otherwise."""
        for table in self.tables:
            if table.source == source:
                return table
        known = ", ".join(t.source for t in self.tables) or "none"
        raise ConfigError(f"unknown table {source!r} (configured: {known})", code="UNKNOWN_TABLE")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict for logs and ``status``, secrets masked."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


class _TomlPath:
    path: Path | None = None


_TOML_PATH = _TomlPath()


def settings_env(settings: Settings) -> dict[str, str]:
    """``STREAMSYNC_*`` variables that reproduce ``settings`` in a child process (a role run
    as a subprocess by the tests and benchmarks). Secrets are written in clear; unset values
    are left out so the child's defaults and ``*_file`` secrets apply as they did here."""
    env: dict[str, str] = {}
    for section in type(settings).model_fields:
        if section == "tables":
            continue
        model = getattr(settings, section)
        for name in type(model).model_fields:
            value = getattr(model, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, dict | list):
                text = json.dumps(value)
            else:
                text = str(value)
            env[f"STREAMSYNC_{section.upper()}__{name.upper()}"] = text
    tables = [t.model_dump(mode="json", exclude_none=True) for t in settings.tables]
    env["STREAMSYNC_TABLES"] = json.dumps(tables)
    return env


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or ``$STREAMSYNC_CONFIG``), the environment and defaults.

    Raises:
        ConfigError: the file is missing or unreadable, or a value is invalid; the message
            names every offending key, never a secret value.
    """
    raw = path or os.environ.get("STREAMSYNC_CONFIG")
    toml_path = Path(raw) if raw else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file {str(toml_path)!r} does not exist", code="CONFIG_MISSING")
    _TOML_PATH.path = toml_path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read config file: {exc}", code="CONFIG_UNREADABLE") from None
    finally:
        _TOML_PATH.path = None
