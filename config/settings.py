"""Settings for every entrypoint: flags override environment, environment overrides the config file."""

from __future__ import annotations

import json
import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from config import DEFAULT_ACL_POLICY
from core.endpoints import Endpoint, parse_endpoints
from core.sizes import MAX_PACKET_BYTES
from core.tls import client_context

# a TCP port (0: any free one, as the kernel picks)
Port = Annotated[int, Field(ge=0, le=65535)]
_ORIGIN = re.compile(r"https?://[^/\s]+")


class Settings(BaseSettings):
    """Everything an orderbus process needs to know; env vars are `ORDERBUS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="ORDERBUS_", extra="forbid")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    http_port: Port = 8000
    mqtt_port: Port = 1883
    # the broker of a bridge or API run apart [default: the local `host`]; a cluster's nodes as
    # host[:port][,host[:port]…] (a port left out is `mqtt_port`), tried in turn (core/endpoints.py)
    mqtt_host: str | None = None
    # TLS for the bus's own MQTT clients (relay, ingest, the API's broker probe): `mqtt_tls_ca` is the PEM file of the
    # CA that signed the broker's certificate; set, they connect over TLS and verify the broker's certificate and host
    # name against it. `mqtt_tls` alone: TLS verified against the system's CAs. Point `mqtt_host`/`mqtt_port` at the
    # broker's TLS listener (8883). Never a fallback to plain MQTT (core/tls.py)
    mqtt_tls: bool = False
    mqtt_tls_ca: Path | None = None
    ws_port: Port = 8083
    # nats://host:port[,host:port…]: the NATS cluster's client URLs. Set, no embedded broker runs: the bus's
    # MQTT clients use `mqtt_host`/`mqtt_port` (a cluster node's MQTT listener) and `orderbus up` runs the
    # auth-callout responder (docs/ops.md, "Running on NATS")
    broker_url: str | None = None
    # what browsers connect MQTT.js to, e.g. wss://bus.example.com/mqtt [default: ws://<page host>:ws_port/mqtt]
    public_ws_url: str | None = None
    tls_port: Port | None = None  # MQTT over TLS (usually 8883); needs tls_certfile and tls_keyfile
    wss_port: Port | None = None  # MQTT over secure WebSocket (usually 8084)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    demo: bool = False
    database_url: str | None = None
    jwt_key: SecretStr | None = None
    # a key rotation (docs/deploy.md): tokens signed with these still verify; new ones use `jwt_key`
    jwt_previous_keys: list[SecretStr] = Field(default_factory=list)
    acl_policy: Path = DEFAULT_ACL_POLICY
    api_token_ttl_seconds: int = 8 * 3600
    mqtt_token_ttl_seconds: int = 15 * 60
    # failed logins (api/login_limit.py): this many within the window → 429 with Retry-After
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=50, ge=1)  # higher: a restaurant's staff share one router
    login_failure_window_seconds: float = Field(default=900.0, gt=0)
    # browser origins allowed to call the API from another site, e.g. ["https://admin.example.com"]; in the
    # environment a comma-separated list or a JSON one. Empty: no CORS headers at all (the dashboard is same-origin)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # ops (docs/ops.md)
    log_json: bool = False  # one JSON object per log line
    sys_interval_seconds: float = 10.0  # how often the broker publishes $SYS/broker/...; 0 turns it off
    ready_max_outbox_lag_seconds: float = 30.0  # /readyz fails when the oldest unpublished event is older
    metrics_port: Port | None = None  # /metrics on its own port, for processes without the API
    # the outbox (docs/ops.md)
    mqtt_max_packet_bytes: int = Field(default=MAX_PACKET_BYTES, ge=1024)  # the broker's packet limit
    # bounds of a persistent session (docs/security.md); unset: the broker's own (broker/limits.py)
    mqtt_session_expiry_seconds: int | None = Field(default=None, gt=0)  # an unused persistent session is forgotten
    mqtt_max_offline_queue: int | None = Field(default=None, gt=0)  # messages kept for an offline persistent session
    outbox_retention_days: float = Field(default=7.0, gt=0)  # published events older than this are pruned
    notification_retention_days: float = Field(default=30.0, gt=0)  # read notifications are pruned this long after
    # devices (docs/devices.md)
    ticket_ack_seconds: float = 30.0  # a ticket not printed by then is `unacknowledged`
    scale_heartbeat_seconds: float = 10.0  # a scale repeats its latest stable reading this often
    scale_stale_missed: int = 3  # heartbeats missed before a scale is stale
    scale_dwell_seconds: float = 5.0  # a new lower count must hold this long before it becomes stock
    scale_tolerance: float = 0.25  # of a unit: readings further from a whole count are refused
    scale_restock_units: int = 5  # an upward jump of at least this many units is a restock, applied at once

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        """`https://a.example,https://b.example` or `["https://a.example"]` from the environment; each an
        origin as browsers send it (scheme://host[:port], no path) or `*`, else the start fails naming it."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if not isinstance(value, list):
            return value  # pydantic says what is wrong
        origins = [item.strip().rstrip("/") if isinstance(item, str) else item for item in value]
        origins = [origin for origin in origins if origin != ""]
        for origin in origins:
            if isinstance(origin, str) and origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: use scheme://host[:port], e.g. https://x.example")
        return origins

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'orderbus.db'}"

    @property
    def local_host(self) -> str:
        """Where this machine reaches what listens on `host`."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def broker_host(self) -> str:
        """Where the bridge (and the API's readiness) finds the broker: `mqtt_host` (its first endpoint), else the
        embedded one."""
        return self.mqtt_endpoints[0][0]

    @property
    def mqtt_endpoints(self) -> list[Endpoint]:
        """`mqtt_host` as [(host, port), …]; EndpointError (one line naming the flag) when it is not a list."""
        if self.mqtt_host is None:
            return [(self.local_host, self.mqtt_port)]
        return parse_endpoints(self.mqtt_host, self.mqtt_port, "--mqtt-host")

    def mqtt_tls_context(self) -> ssl.SSLContext | None:
        """The SSL context of the bus's MQTT clients, None for plain MQTT; TlsCaError (one line naming
        --mqtt-tls-ca and the file) when the CA bundle cannot be used."""
        if self.mqtt_tls_ca is None and not self.mqtt_tls:
            return None
        return client_context(self.mqtt_tls_ca, "--mqtt-tls-ca")

    @property
    def broker_configured(self) -> bool:
        """`mqtt_host` or `mqtt_port` was given (flag, environment or config file), not left to its default."""
        return bool({"mqtt_host", "mqtt_port"} & self.model_fields_set)

    @property
    def nats_urls(self) -> list[str]:
        """`broker_url` as the list nats-py takes, for a process that also speaks MQTT to the cluster;
        BrokerUrlError (one line naming the flag) when it is not one."""
        if self.broker_url is None:
            return []
        urls = parse_nats_urls(self.broker_url)
        if "mqtt_port" not in self.model_fields_set:
            raise BrokerUrlError(
                "--broker nats://… needs --mqtt-port (and --mqtt-host): a cluster node's MQTT listener"
            )
        return urls

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
        config_file = os.environ.get("ORDERBUS_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


class ConfigError(ValueError):
    """A setting that cannot be used; its message is one line that names where it came from (a flag, an
    environment variable or a file) and what is wrong, for the CLI's one error style (cli/errors.py)."""


class BrokerUrlError(ConfigError):
    """`broker_url` is not a list of NATS URLs, or lacks the MQTT listener that goes with it."""


class ConfigFileError(ConfigError):
    """The config file named by --config / ORDERBUS_CONFIG cannot be used."""


def parse_nats_urls(value: str) -> list[str]:
    """`nats://host:port[,host:port…]` as a list; BrokerUrlError (one line naming --broker) otherwise."""
    urls = [url.strip() for url in value.split(",") if url.strip()]
    hint = "use nats://host:port[,host:port…] (the cluster's NATS client URLs)"
    if not urls:
        raise BrokerUrlError(f"--broker {value!r} names no server; {hint}")
    for url in urls:
        scheme, _, rest = url.partition("://")
        host, _, port = rest.rpartition(":")
        if scheme != "nats" or not host or not port.isdigit():
            raise BrokerUrlError(f"--broker {url!r} is not a NATS URL; {hint}")
    return urls


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build settings from a config file, the environment and the flags that were given (None = not given).

    ConfigError, one line per problem, naming the flag, environment variable or file each bad value came from."""
    if config_file is not None:
        os.environ["ORDERBUS_CONFIG"] = str(config_file)
    config = os.environ.get("ORDERBUS_CONFIG")
    if config:
        _check_toml(Path(config))
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigError("\n".join(_problems(exc, given, config))) from None
    except SettingsError as exc:  # a list or table setting whose value in the environment is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1) if field else "?"
        raise ConfigError(f'{_where(name, None)}: {name}: not valid JSON (a list is written ["a", "b"])') from None
    data_dir = settings.data_dir
    existing = next((path for path in (data_dir, *data_dir.parents) if path.exists()), data_dir)
    if existing.exists() and not existing.is_dir():  # the data directory, or one it would be made in, is a file
        where = "--data-dir" if "data_dir" in given else _where("data_dir", config)
        inside = "" if existing == data_dir else f", {existing} is a file"
        raise ConfigError(f"{data_dir}: not a directory (the data directory, set by {where}{inside})")
    return settings


def _check_toml(path: Path) -> None:
    """The config file, read before pydantic-settings does: its errors name the file, line and column."""
    try:
        tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{path}: a directory, not a config file") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML: {exc}") from None


def _where(field: str, config: str | None) -> str:
    """Where a setting given by no flag came from: its environment variable when set, else the config file."""
    env = f"ORDERBUS_{field.upper()}"
    if env in os.environ or config is None:
        return env
    return config


def _problems(exc: ValidationError, given: dict[str, Any], config: str | None) -> list[str]:
    """One line per bad setting: `<--flag | ORDERBUS_X | file>: <setting>: <what is wrong>`."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        where = ("--broker" if field == "broker_url" else f"--{field.replace('_', '-')}") if field in given else None
        where = where or _where(field, config)
        what = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] != "extra_forbidden" and "input" in error and not field.startswith("jwt"):
            what += f" (got {error['input']!r})"
        lines.append(f"{where}: {field}: {what}")
    return lines
