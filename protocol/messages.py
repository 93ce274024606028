"""Wire messages: what travels on the MQTT topics of :mod:`protocol.topics`.

Every message carries ``schema_version``, its own ``message_id`` and the sender's
``device_id``. Readers are tolerant: unknown fields are ignored so that either side can be
upgraded first. Payloads are UTF-8 JSON; :func:`encode` and :func:`decode` are the only way
in and out.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import SCHEMA_VERSION
from protocol.errors import InvalidMessage
from protocol.tensors import Datatype

DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def new_id() -> str:
    """A fresh message or result id: a UUIDv7 (RFC 9562) in hex.

    Time-ordered ids keep the outbox's and the store's unique indexes appending at the right
    edge instead of splitting random pages (measured: ~1.5x the outbox's puts/s against UUID4).
    74 random bits per millisecond make collisions negligible.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
    value |= rand & (2**62 - 1)
    return uuid.UUID(int=value).hex


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WireMessage(_Wire):
    schema_version: int = SCHEMA_VERSION
    message_id: str = Field(default_factory=new_id)
    device_id: DeviceId
    sent_at: float = Field(default_factory=time.time, description="Unix time, seconds.")


# --- status (birth / will) ---------------------------------------------------------------


class Accelerator(_Wire):
    kind: str = Field(description="cpu, edgetpu, gpu")
    present: bool
    detail: str | None = None


class ModelInfo(_Wire):
    """A model the agent serves, and the artifact that produces its answers."""

    name: str
    version: str
    artifact_sha256: str
    backend: str = Field(description="The runtime backend in use, e.g. litert, edgetpu.")
    fallback_reason: str | None = Field(
        None, description="Why a preferred backend was skipped (the CPU fallback)."
    )
    seq: int | None = Field(
        None, description="The registry's release number, when a deployment installed it."
    )


class Status(WireMessage):
    """Birth message (retained) and, with ``state=offline``, the MQTT will."""

    type: Literal["status"] = "status"
    state: Literal["online", "offline"]
    agent_version: str | None = None
    hardware: dict[str, str | int | float | None] = Field(default_factory=dict)
    accelerators: list[Accelerator] = Field(default_factory=list)
    models: list[ModelInfo] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    api_url: str | None = None


# --- telemetry ---------------------------------------------------------------------------


class LatencySummary(_Wire):
    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None


class Telemetry(WireMessage):
    type: Literal["telemetry"] = "telemetry"
    interval_s: float
    inferences: int = Field(0, description="Inferences in this interval.")
    inferences_total: int = 0
    errors: int = Field(0, description="Failed requests in this interval.")
    errors_total: int = 0
    latency: LatencySummary = Field(default_factory=LatencySummary)
    backend: str | None = None
    fallback_reason: str | None = None
    outbox_depth: int = 0
    outbox_oldest_age_s: float | None = None
    outbox_evicted_total: int = 0
    results_sent_total: int = 0
    cpu_percent: float | None = None
    memory_rss_bytes: int | None = None
    memory_percent: float | None = None
    temperature_c: float | None = None
    throttled: bool | None = Field(
        None, description="The SoC reports thermal or power throttling now (None: cannot tell)."
    )
    disk_free_bytes: int | None = Field(None, description="Free bytes on the data dir's disk.")
    disk_used_percent: float | None = None
    demoted_backends: list[str] = Field(
        default_factory=list,
        description="Backends the accelerator supervisor has demoted after repeated failures.",
    )
    backend_restarts_total: int = Field(
        0, description="Inference worker restarts (crash or hang) since the agent started."
    )


# --- results -----------------------------------------------------------------------------


class ClassScore(_Wire):
    index: int
    label: str | None = None
    score: float


class TensorData(_Wire):
    """An output kept in full."""

    name: str
    shape: list[int]
    datatype: Datatype
    data: list[float] | list[int] | list[bool] | list[str]


class TensorDigest(_Wire):
    """An output too large to keep: its shape, type and a SHA-256 of its bytes."""

    name: str
    shape: list[int]
    datatype: Datatype
    sha256: str
    size_bytes: int


OFFLOAD_DECISIONS = ("local", "offloaded", "deferred", "local_only")
OFFLOAD_REASONS = ("low_confidence", "input_too_large", "backlog", "policy")
CLOUD_ERRORS = ("timeout", "breaker_open", "unavailable", "rejected", "no_time_left")
"""The values the agent sends today. The fields are plain strings on the wire, so that a newer
agent's new value never makes an older control plane drop a whole batch."""


class CloudAnswer(_Wire):
    """The cloud tier's answer for one case: which model gave it, what it said, how fast."""

    model: str = Field(description="The model's name on the offload endpoint.")
    model_version: str | None = None
    classes: list[ClassScore] | None = Field(None, description="Top-k, for classifiers.")
    outputs: list[TensorData | TensorDigest] | None = Field(
        None, description="Raw outputs, when the cloud model has no classification manifest."
    )
    latency_ms: float = Field(description="The successful call, as the agent timed it.")
    answered_at: float = Field(default_factory=time.time, description="Unix time, seconds.")


class Offload(_Wire):
    """What the offload policy decided for a result, and the cloud's answer when there is one.

    ``decision``: ``local`` (the policy kept it), ``local_only`` (the model may never offload),
    ``offloaded`` (the cloud answered within the deadline: ``cloud`` is set), ``deferred`` (the
    policy wanted the cloud but it was slow, down or its breaker open: the local answer stands,
    the case waits on the device, and the same result is sent again with ``cloud`` set once the
    cloud has answered). ``reason`` says why the cloud was wanted (``policy`` for local_only),
    ``cloud_error`` why it gave no answer in time. A result sent again with ``cloud`` set carries
    the late answer of a deferred case: the control plane stores it beside the first copy.
    """

    decision: str = Field(description="local, offloaded, deferred or local_only.")
    reason: str | None = Field(
        None, description="low_confidence, input_too_large, backlog; policy for local_only."
    )
    cloud_error: str | None = Field(
        None,
        description="Why the cloud gave no answer in the request path: timeout, breaker_open, "
        "unavailable, rejected (rejected cases are not retried: decision stays local).",
    )
    cloud: CloudAnswer | None = None
    agree: bool | None = Field(
        None, description="Whether edge and cloud give the same top class (None: not compared)."
    )


class InferenceResult(_Wire):
    result_id: str = Field(default_factory=new_id)
    created_at: float = Field(default_factory=time.time)
    model: str
    model_version: str
    artifact_sha256: str
    backend: str
    latency_ms: float
    request_id: str | None = None
    classes: list[ClassScore] | None = Field(None, description="Top-k, for classifiers.")
    outputs: list[TensorData | TensorDigest] | None = Field(
        None, description="Raw outputs, for models without post-processing."
    )
    offload: Offload | None = Field(
        None, description="The offload decision; absent for a model without an offload policy."
    )


class ResultBatch(WireMessage):
    type: Literal["results"] = "results"
    results: list[InferenceResult] = Field(min_length=1)


# --- encoding ----------------------------------------------------------------------------

M = TypeVar("M", bound=_Wire)


def encode(message: _Wire) -> bytes:
    """Serialise a message to compact UTF-8 JSON, leaving out unset optional fields."""
    return message.model_dump_json(exclude_none=True).encode()


def decode(kind: type[M], payload: bytes | str) -> M:
    """Parse a payload as ``kind`` or raise :class:`InvalidMessage` naming the problem."""
    try:
        return kind.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise InvalidMessage(f"invalid {kind.__name__} message: {where}: {first['msg']}") from None
