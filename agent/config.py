"""The agent's settings: one strict TOML file, every key overridable by a command-line flag.

Unknown keys are errors (a typo must not silently fall back to a default). Flags are derived
from the model itself, so a new setting is a flag the moment it exists: a top-level key ``listen``
is ``--listen``, a key ``max_rows`` in the ``[outbox]`` table is ``--outbox-max-rows``. Lists take
comma-separated values (``--backends edgetpu,litert``), tables of strings take repeated
``key=value`` (``--tag site=lab``). ``--model PATH`` (repeatable) replaces the ``[[models]]`` list.
See docs/agent.md for every setting.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6 on Jetson)
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import ConfigError
from agent.identity.config import TLSConfig
from agent.offload.config import OffloadConfig
from agent.samples.config import ModelSamples, SamplesConfig
from agent.supervisor.config import SupervisorConfig
from protocol.topics import validate_device_id


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: Path = Field(description="A .tflite or .onnx file.")
    manifest: Path | None = Field(
        None, description="Its manifest; default: the .json beside the model, if there is one."
    )
    backends: list[str] | None = Field(
        None, description="Backend priority for this model (default: the agent's `backends`)."
    )
    fallback_path: Path | None = Field(
        None,
        description="The CPU build of a model compiled for the Edge TPU: the backends other than "
        "the accelerator open it instead of `path` (docs/agent.md, Supervised accelerator).",
    )
    offload: OffloadConfig | None = Field(
        None, description="Offload to a cloud tier ([models.offload]; see docs/agent.md)."
    )
    samples: ModelSamples | None = Field(
        None, description="This model's own input sampling ([models.samples]; docs/data.md)."
    )


class OutboxConfig(_Section):
    max_rows: int = Field(1_000_000, gt=0, description="Results kept at most; the oldest go first.")
    max_bytes: int = Field(512 * 2**20, gt=0, description="Payload bytes kept at most.")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="FULL: an answered result survives power loss. NORMAL: survives a crash only.",
    )


class UplinkConfig(_Section):
    batch_size: int = Field(200, gt=0, le=5000, description="Results per MQTT message.")
    ack_timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for a PUBACK.")
    telemetry_interval_s: float = Field(
        10.0, gt=0, description="Seconds between telemetry messages."
    )
    linger_s: float = Field(
        0.05, ge=0, le=10, description="Seconds a part-filled batch waits for more results."
    )


class DeployConfig(_Section):
    public_key: str | None = Field(
        None, description="The control plane's release key, `ed25519:...` (trust anchor)."
    )
    public_key_file: Path | None = Field(
        None, description="A file holding the release key text, instead of `public_key`."
    )
    shadow_share: float = Field(
        0.2, gt=0, le=1, description="Share of live requests run in shadow (unless the doc says)."
    )
    download_timeout_s: float = Field(
        60.0, gt=0, description="Seconds an artifact download may go without receiving a byte."
    )
    keep_releases: int = Field(
        2, ge=2, le=16, description="Releases kept on disk per model (the active and previous)."
    )


class AgentSettings(_Section):
    device_id: str = Field(description="This device's id: 1-64 of A-Z a-z 0-9 _ . -")
    broker: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port"
    )
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT v5, falling back to 3.1.1 when the broker refuses v5."
    )
    mqtt_session_expiry_s: int = Field(
        0,
        ge=0,
        description="Seconds the broker keeps this device's session (and the commands sent to "
        "it) while it is offline; 0: a clean session at every connect.",
    )
    listen: str = Field("127.0.0.1:8500", description="host:port of the local inference API.")
    data_dir: Path = Field(Path("/var/lib/edgefleet"), description="Outbox and model state.")
    models: list[ModelConfig] = Field(default_factory=list, description="The models to serve.")
    backends: list[str] = Field(
        default_factory=lambda: ["edgetpu", "litert", "tflite-runtime", "onnxruntime"],
        description="Runtime backends in priority order; the first that loads a model serves it.",
    )
    threads: int = Field(1, gt=0, le=64, description="Interpreter threads per model.")
    max_body_bytes: int = Field(16 * 2**20, gt=0, description="Largest request body accepted.")
    max_output_values: int = Field(
        4096,
        ge=0,
        description="Raw outputs up to this many values are kept in full, else digested.",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Reported in the birth message.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level at start; SIGUSR1/SIGUSR2 change it while running."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one object per line on stdout; text: plain lines on stderr."
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return validate_device_id(value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


# --- flags derived from the model -----------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "outbox": OutboxConfig,
    "uplink": UplinkConfig,
    "deploy": DeployConfig,
    "samples": SamplesConfig,
    "tls": TLSConfig,
    "supervisor": SupervisorConfig,
}
_SPECIAL = {"models", "outbox", "uplink", "deploy", "samples", "supervisor", "tls"}


def _flag_targets() -> dict[str, tuple[str, ...]]:
    """Map each flag's argparse dest to the key path it overrides."""
    targets: dict[str, tuple[str, ...]] = {}
    for name in AgentSettings.model_fields:
        if name not in _SPECIAL:
            targets[name] = (name,)
    for section, model in _SECTIONS.items():
        for name in model.model_fields:
            targets[f"{section}_{name}"] = (section, name)
    return targets


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--model`` and one flag per setting to ``parser``."""
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--model",
        action="append",
        type=Path,
        metavar="PATH",
        help="serve this model (repeatable; replaces [[models]] of the config)",
    )
    parser.add_argument(
        "--tag", action="append", metavar="KEY=VALUE", help="a device tag (repeatable)"
    )
    for dest, path in _flag_targets().items():
        if dest == "tags":
            continue
        field = (
            AgentSettings.model_fields[path[0]]
            if len(path) == 1
            else _SECTIONS[path[0]].model_fields[path[1]]
        )
        parser.add_argument(
            "--" + dest.replace("_", "-"),
            dest=dest,
            default=None,
            metavar="VALUE",
            help=field.description or f"set {'.'.join(path)}",
        )


def load_settings(args: argparse.Namespace) -> AgentSettings:
    """Build the settings from ``--config`` (if any) with the flags laid over it."""
    data: dict[str, Any] = {}
    source = "flags"
    if args.config is not None:
        data = read_toml(args.config)
        source = str(args.config)
    for dest, path in _flag_targets().items():
        value = getattr(args, dest, None)
        if value is None or dest == "tags":
            continue
        if _is_list(path):
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        target = data
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    if args.tag:
        data["tags"] = {**data.get("tags", {}), **_parse_pairs(args.tag, "--tag")}
    if args.model:
        data["models"] = [{"path": str(p)} for p in args.model]
    return validate(data, source)


def _is_list(path: tuple[str, ...]) -> bool:
    return path == ("backends",)


def _parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
            return data
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None


def validate(data: dict[str, Any], source: str = "config") -> AgentSettings:
    """Validate settings, turning pydantic's errors into one ConfigError naming each bad key."""
    try:
        return AgentSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None


def _describe(error: Any) -> str:
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc) or "(root)"
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{key}: unknown key{suggestion}"
    if error["type"] == "missing":
        return f"{key}: required (set it in the config file or with --{key.replace('_', '-')})"
    return f"{key}: {error['msg']}"


def _known_keys(parent: tuple[str, ...]) -> list[str]:
    if not parent:
        return list(AgentSettings.model_fields)
    if parent[0] in _SECTIONS and len(parent) == 1:
        return list(_SECTIONS[parent[0]].model_fields)
    if parent[0] == "models" and parent[-1] == "samples":
        return list(ModelSamples.model_fields)
    if parent[0] == "models" and parent[-1] == "offload":
        return list(OffloadConfig.model_fields)
    if parent[0] == "models":
        return list(ModelConfig.model_fields)
    return []
