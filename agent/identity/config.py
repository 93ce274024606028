"""The TLS settings: ``[tls]`` in the agent's TOML file. Only pydantic here (no I/O), so
:mod:`agent.config` can import it cheaply."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ca_file: Path | None = Field(
        None,
        description="The fleet CA certificate (PEM) that the mqtts:// broker's and the control "
        "plane's certificates are checked against; unset: the system's CAs.",
    )
    cert_file: Path | None = Field(
        None, description="This device's certificate (PEM), presented to an mqtts:// broker."
    )
    key_file: Path | None = Field(None, description="Its private key (PEM, mode 0600).")
    renew_url: str | None = Field(
        None,
        description="The control plane that renews the certificate (https://cp:8443); unset: "
        "no renewal.",
    )
    renew_at: float = Field(
        2 / 3, gt=0, lt=1, description="Renew once this share of the certificate's life is over."
    )

    @field_validator("renew_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]:
            raise ValueError(f"expected an https:// (or http://) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        if self.renew_url is not None and self.cert_file is None:
            raise ValueError("renew_url needs cert_file and key_file (the identity it renews)")
        return self
