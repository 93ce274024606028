"""The control plane's settings: one pydantic model, built once by the CLI and passed down.

Sources, later ones winning: the defaults below, a TOML file (``--config``, flat ``key = value``
pairs named exactly as the fields), then command-line flags. Unknown keys are errors (a typo must
not become a silent default). Every field is documented in docs/controlplane.md, and a test checks
that it stays so.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6 on Jetson)
    import tomli as tomllib

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from controlplane.alerts.webhook import Webhook
from controlplane.errors import ConfigError
from protocol.mqtt import BrokerURL, TLSFiles
from protocol.topics import shared_filter

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

AUTH_DEFAULT = True


class Settings(BaseModel):
    """Everything ``edgefleet serve`` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: str = Field(description="MQTT broker URL, mqtt://host:port or mqtts://host:port")
    listen: str = Field("127.0.0.1:8080", description="HTTP address host:port of the API")
    data_dir: Path = Field(description="directory of the SQLite store (created if missing)")
    client_id: str = Field(
        "edgefleet-controlplane",
        min_length=1,
        max_length=64,
        description="MQTT client id; the broker keeps this id's persistent session",
    )
    shared_subscription_group: str | None = Field(
        None,
        description="subscribe to results and telemetry as $share/GROUP/... so replicas split them",
    )
    offline_after_s: float = Field(
        60.0, gt=0, description="a device silent for longer than this counts as offline"
    )
    results_page_max: int = Field(1000, ge=1, le=100_000, description="largest ?limit= accepted")
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version: auto (v5, falling back to 3.1.1 if refused), 5, 3.1.1"
    )
    session_expiry_s: int = Field(
        3600, ge=0, description="how long the broker keeps our session while we are away"
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite synchronous mode of the store (FULL: a commit survives power loss)",
    )
    log_level: LogLevel = Field("INFO", description="log level of the control plane's loggers")
    public_url: str = Field(
        "",
        validate_default=True,
        description="base URL devices download artifacts from (default: http://LISTEN)",
    )
    max_artifact_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="largest model artifact the registry accepts, bytes"
    )
    rollout_tick_s: float = Field(
        1.0, gt=0, description="seconds between two ticks of the rollout controller"
    )
    rollout_max_retries: int = Field(
        2, ge=0, description="times a device whose deployment failed is sent the release again"
    )
    max_sample_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="largest kept input a device may upload, bytes"
    )
    data_retention_days: float = Field(
        30.0, ge=0, description="kept inputs older than this are deleted (0: kept for ever)"
    )
    data_purge_interval_s: float = Field(
        3600.0, gt=0, description="seconds between two purges of the kept inputs past retention"
    )
    # -- device identities and TLS (docs/provisioning.md) --
    pki_dir: Path | None = Field(
        None, description="fleet CA directory (provision init --dir): enrollment and revocation"
    )
    device_cert_lifetime_s: float = Field(
        90 * 86400.0, gt=0, description="lifetime of the device certificates it issues, seconds"
    )
    broker_pid_file: Path | None = Field(
        None, description="the broker's pid file: SIGHUP after a revocation re-reads the CRL"
    )
    device_auth: Literal["optional", "required"] = Field(
        "optional",
        description="devices' signed HTTP requests: optional (unsigned ones pass) or required",
    )
    mqtt_ca_file: Path | None = Field(
        None, description="CA (PEM) that an mqtts:// broker's certificate is checked against"
    )
    mqtt_cert_file: Path | None = Field(
        None, description="client certificate (PEM) presented to an mqtts:// broker"
    )
    mqtt_key_file: Path | None = Field(None, description="the MQTT client certificate's key")
    tls_cert_file: Path | None = Field(
        None, description="certificate (PEM) for HTTPS; with tls_key_file the API is HTTPS only"
    )
    tls_key_file: Path | None = Field(None, description="the HTTPS certificate's private key")
    alerts_file: Path | None = Field(
        None, description="JSON or TOML file of alert rule overrides per selection of devices"
    )
    alerts_interval_s: float = Field(
        15.0, gt=0, description="seconds between two evaluations of the alert rules"
    )
    alert_webhooks: list[Webhook] = Field(
        default_factory=list,
        description='webhooks notified of alerts: [{"url": "https://...", "format": "slack"}]',
    )
    alert_runbook_url: str = Field(
        "docs/operations.md",
        min_length=1,
        description="base of the runbook links in notifications (each rule's section is #RULE)",
    )
    alert_max_attempts: int = Field(
        8, ge=1, description="attempts to deliver a notification before giving up"
    )
    # -- operators (docs/security.md) --
    auth: bool = Field(
        AUTH_DEFAULT,
        description="require a token or a console login on every operator route (off: no checks)",
    )
    session_lifetime_s: float = Field(
        8 * 3600.0, gt=0, description="how long a console login lasts, seconds"
    )
    trusted_proxies: tuple[str, ...] = Field(
        (), description="proxies (addresses or networks) whose X-Forwarded-For/-Proto is believed"
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        for cert, key in (("mqtt_cert_file", "mqtt_key_file"), ("tls_cert_file", "tls_key_file")):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"set both {cert} and {key}, or neither")
        return self

    @model_validator(mode="after")
    def _device_auth(self) -> Settings:
        if self.device_auth == "required" and (self.pki_dir is None or not self.auth):
            raise ValueError(
                "device_auth = required needs pki_dir (the CA and registry that signatures are "
                "checked against) and auth on (operators then read artifacts with a token)"
            )
        return self

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        BrokerURL.parse(value)  # raises ValueError naming the URL and the expected form
        return value

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("shared_subscription_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                shared_filter(value, "x")
            except ValueError:
                raise ValueError("a group name must be non-empty without / + #") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            listen = info.data.get("listen")
            return f"http://{listen}" if listen else value  # no listen: its own error is raised
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("alert_webhooks", mode="before")
    @classmethod
    def _webhooks_json(cls, value: Any) -> Any:
        if isinstance(value, str):  # a flag: --alert-webhooks '[{"url": ...}]'
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError(
                    'expected a JSON list like [{"url": "https://...", "format": "slack"}]'
                ) from None
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        if isinstance(value, str):  # a flag: --trusted-proxies 10.0.0.1,192.168.0.0/16
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            for item in value:
                try:
                    ipaddress.ip_network(str(item).strip(), strict=False)
                except ValueError:
                    raise ValueError(f"expected IP addresses or networks, got {item!r}") from None
            return tuple(str(v).strip() for v in value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def mqtt_tls(self) -> TLSFiles:
        """The files of an ``mqtts://`` connection to the broker (docs/provisioning.md)."""
        return TLSFiles(self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)

    @property
    def listen_address(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return parse_listen(self.listen)

    @property
    def store_path(self) -> Path:
        """The SQLite file inside ``data_dir``."""
        return self.data_dir / "controlplane.db"


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8080`` for IPv6) or raise ValueError saying what is expected."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:8080), got {value!r}")
    return host, int(port)


def load_settings(
    config: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build the settings from a TOML file (optional) with ``overrides`` (the flags) laid over it.

    Overrides whose value is None are ignored (a flag that was not given). Raises
    :class:`ConfigError` naming every bad key.
    """
    data: dict[str, Any] = read_toml(config) if config is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    source = str(config) if config is not None else "settings"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None


def _describe(error: Any) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(root)"
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        return f"unknown setting `{key}`{hint}"
    if error["type"] == "missing":
        flag = "--" + key.replace("_", "-")
        return f"missing setting `{key}`: pass {flag} or set it in the config file"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"invalid `{key}`: {message}"
