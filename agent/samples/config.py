"""The sampling settings: ``[samples]`` in the agent's TOML file, and a model's own overrides
(``[models.samples]``). Only pydantic here (no I/O), so :mod:`agent.config` can import it cheaply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SamplesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    control_plane_url: str | None = Field(
        None,
        description="Base URL of the control plane the kept inputs are uploaded to, e.g. "
        "http://cp:8080. Unset: no input is kept.",
    )
    share: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of all requests whose input is kept."
    )
    low_confidence: float = Field(
        0.6,
        ge=0.0,
        le=1.0,
        description="Keep every input whose local top score is under this (a hard case).",
    )
    max_rows: int = Field(10_000, gt=0, description="Inputs waiting for upload at most.")
    max_bytes: int = Field(
        256 * 2**20, gt=0, description="Bytes of inputs waiting for upload at most."
    )
    retention_days: float = Field(
        30.0,
        ge=0,
        description="Kept inputs on the device (waiting for upload, or deferred offload cases) "
        "older than this are deleted. 0: kept until uploaded or dropped by the bounds.",
    )
    key_rotation_days: float = Field(
        0.0,
        ge=0,
        description="Rotate the key that seals kept inputs on the device when it is older than "
        "this (the old inputs are sealed again, the old key retired). 0: only by "
        "`edgefleet-agent rotate-key`.",
    )

    @field_validator("control_plane_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


class ModelSamples(BaseModel):
    """One model's own sampling policy; what it leaves out comes from ``[samples]``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    share: float | None = Field(
        None, ge=0.0, le=1.0, description="Share of this model's requests kept."
    )
    low_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="Keep this model's inputs scored under this."
    )
