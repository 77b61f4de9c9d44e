"""Settings for every entrypoint: flags override environment, environment overrides the config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from config import DEFAULT_ACL_POLICY
from core.sizes import MAX_PACKET_BYTES


class Settings(BaseSettings):
    """Everything an orderbus process needs to know; env vars are `ORDERBUS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="ORDERBUS_", extra="forbid")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    http_port: int = 8000
    mqtt_port: int = 1883
    mqtt_host: str | None = None  # the broker of a bridge or API run apart [default: the local `host`]
    ws_port: int = 8083
    tls_port: int | None = None  # MQTT over TLS (usually 8883); needs tls_certfile and tls_keyfile
    wss_port: int | None = None  # MQTT over secure WebSocket (usually 8084)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    demo: bool = False
    database_url: str | None = None
    jwt_key: SecretStr | None = None
    acl_policy: Path = DEFAULT_ACL_POLICY
    api_token_ttl_seconds: int = 8 * 3600
    mqtt_token_ttl_seconds: int = 15 * 60
    # ops (docs/ops.md)
    log_json: bool = False  # one JSON object per log line
    sys_interval_seconds: float = 10.0  # how often the broker publishes $SYS/broker/...; 0 turns it off
    ready_max_outbox_lag_seconds: float = 30.0  # /readyz fails when the oldest unpublished event is older
    metrics_port: int | None = None  # /metrics on its own port, for processes without the API
    # the outbox (docs/ops.md)
    mqtt_max_packet_bytes: int = Field(default=MAX_PACKET_BYTES, ge=1024)  # the broker's packet limit
    outbox_retention_days: float = Field(default=7.0, gt=0)  # published events older than this are pruned
    # devices (docs/devices.md)
    ticket_ack_seconds: float = 30.0  # a ticket not printed by then is `unacknowledged`
    scale_heartbeat_seconds: float = 10.0  # a scale repeats its latest stable reading this often
    scale_stale_missed: int = 3  # heartbeats missed before a scale is stale
    scale_dwell_seconds: float = 5.0  # a new lower count must hold this long before it becomes stock
    scale_tolerance: float = 0.25  # of a unit: readings further from a whole count are refused
    scale_restock_units: int = 5  # an upward jump of at least this many units is a restock, applied at once

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'orderbus.db'}"

    @property
    def local_host(self) -> str:
        """Where this machine reaches what listens on `host`."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def broker_host(self) -> str:
        """Where the bridge (and the API's readiness) finds the broker: `mqtt_host`, else the embedded one."""
        return self.mqtt_host or self.local_host

    @property
    def broker_configured(self) -> bool:
        """`mqtt_host` or `mqtt_port` was given (flag, environment or config file), not left to its default."""
        return bool({"mqtt_host", "mqtt_port"} & self.model_fields_set)

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


class ConfigFileError(ValueError):
    """The config file named by --config / ORDERBUS_CONFIG cannot be used."""


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build settings from a config file, the environment and the flags that were given (None = not given)."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigFileError(f"config file not found: {config_file}")
        os.environ["ORDERBUS_CONFIG"] = str(config_file)
    given = {name: value for name, value in flags.items() if value is not None}
    return Settings(**given)
