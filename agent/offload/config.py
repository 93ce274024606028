"""The offload settings of one model: ``[models.offload]`` in the agent's TOML file.

Only pydantic here (no I/O, no aiohttp), so :mod:`agent.config` can import it cheaply.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_MIN_CONFIDENCE = 0.998  # measured: docs/cascade.md


class OffloadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoint: str | None = Field(
        None,
        description="Base URL of an Open Inference Protocol server (ours, Triton, KServe, "
        "MLServer), e.g. http://gpu:8000. Required unless local_only.",
    )
    model: str | None = Field(
        None, description="The model's name on that server (default: the local model's name)."
    )
    version: str | None = Field(None, description="Its version there (default: the server's).")
    manifest: Path | None = Field(
        None,
        description="The cloud model's manifest, for labels and top-k; without it a single "
        "score vector is read as raw classes (index only).",
    )
    local_only: bool = Field(False, description="Never offload this model.")
    min_confidence: float = Field(
        DEFAULT_MIN_CONFIDENCE,
        ge=0.0,
        le=1.0,
        description="Offload when the local top score is under this.",
    )
    max_input_bytes: int | None = Field(
        None, gt=0, description="Offload an input larger than this (bytes of tensors)."
    )
    latency_budget_ms: float | None = Field(
        None,
        gt=0,
        description="Offload when the queued requests times the recent mean latency pass this.",
    )
    deadline_ms: float = Field(
        250.0,
        gt=0,
        description="Time an offload may take in the request path, when the caller gives none.",
    )
    drain_deadline_ms: float = Field(
        10_000.0, gt=0, description="Time one deferred case may take when it is retried later."
    )
    binary: bool = Field(False, description="Send tensors with the binary tensor extension.")
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per call, deadline allowing.")
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failed calls that open the endpoint's circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        10.0, gt=0, description="Seconds an open breaker waits before it lets one call probe."
    )
    deferred_max: int = Field(
        10_000, gt=0, description="Cases of this model kept waiting for the cloud; oldest go."
    )
    deferred_ttl_s: float = Field(
        86_400.0, gt=0, description="A case not answered by the cloud within this is dropped."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _needs_endpoint(self) -> OffloadConfig:
        if not self.local_only and self.endpoint is None:
            raise ValueError("endpoint is required unless local_only = true")
        return self
