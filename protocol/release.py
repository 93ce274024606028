"""Signed releases, the desired state a device converges to, and its deployment reports.

A **release** is one model version as the registry stores it: the manifest's tensors, pre- and
post-processing and labels, one artifact per target (content-addressed), golden inputs with their
expected outputs, and a ``seq`` that the registry assigns and that only grows per model name. The
control plane signs it with its Ed25519 release key when it is pushed.

The **desired state** is what the control plane publishes, retained, on a device's ``desired``
topic: for each model it manages there, the signed release to run (or ``None``: go back to the
model in the device's own configuration), which artifact to take and where to get it, whether to
run it in shadow first, and whether this is an explicit rollback. The whole document is signed
again, with the device id and a ``generation`` that grows with every document for that device, so
a device refuses a replayed older document and a document meant for another device.

Signatures cover the JSON objects *as received* (see :mod:`protocol.signing`), so a newer control
plane may add fields without breaking older devices: :func:`open_desired` verifies the raw objects
first and only then parses them with tolerant models.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import SCHEMA_VERSION
from protocol.errors import InvalidMessage
from protocol.manifest import (
    Artifact,
    ModelManifest,
    Postprocess,
    Preprocess,
    RawPostprocess,
    RawPreprocess,
    Target,
    TensorSpec,
)
from protocol.messages import WireMessage
from protocol.signing import Signature, SignatureError, sign, verify

DeployState = Literal[
    "queued", "downloading", "verifying", "shadow", "active", "failed", "timed_out", "rolled_back"
]
"""Per-device execution states. ``timed_out`` is set by the control plane, never by a device."""

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

TERMINAL_STATES: frozenset[str] = frozenset({"active", "failed", "timed_out", "rolled_back"})


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- releases --------------------------------------------------------------------------------------
class ReleaseArtifact(_Doc):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    format: Literal["tflite", "onnx"]


class GoldenCase(_Doc):
    """An input with the answer the release must give: the smoke test before it serves."""

    input: str = Field(description="The input file's bytes (an image), base64.")
    expected_index: int = Field(ge=0, description="The top class it must answer.")
    expected_scores: list[float] | None = Field(
        None, description="The classification scores (after post-processing) it should give."
    )
    tolerance: float = Field(
        0.15, ge=0, description="Largest allowed |score - expected| (int8 and accelerators differ)."
    )


class Release(_Doc):
    """The signed body of a release."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=1, description="Assigned by the registry; grows with every push of a name.")
    created_at: float
    description: str = ""
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    preprocess: Preprocess = Field(default_factory=RawPreprocess)
    postprocess: Postprocess = Field(default_factory=RawPostprocess)
    labels: list[str] = Field(default_factory=list)
    artifacts: dict[Target, ReleaseArtifact] = Field(min_length=1)
    golden: list[GoldenCase] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)

    def manifest(self, target: Target, path: str) -> ModelManifest:
        """The manifest the agent serves the ``target`` artifact (stored at ``path``) with."""
        artifact = self.artifacts[target]
        return ModelManifest(
            name=self.name,
            version=self.version,
            description=self.description,
            inputs=self.inputs,
            outputs=self.outputs,
            preprocess=self.preprocess,
            postprocess=self.postprocess,
            labels=self.labels,
            artifacts={target: Artifact(path=path, sha256=artifact.sha256, size=artifact.size)},
            metrics=self.metrics,
        )


class SignedRelease(_Doc):
    release: Release
    signature: Signature


def seal_release(key: Ed25519PrivateKey, release: Release) -> dict[str, Any]:
    """``{"release": ..., "signature": ...}`` as a JSON-able object (what the registry stores)."""
    body = release.model_dump(mode="json")
    return {"release": body, "signature": sign(key, body).model_dump(mode="json")}


def open_release(document: Any, key: Ed25519PublicKey) -> SignedRelease:
    """Verify a sealed release (the JSON object) and parse it, or raise SignatureError."""
    body, signature = _split(document, "release")
    verify(key, body, signature)
    return SignedRelease(release=_parse(Release, body, "release"), signature=signature)


# -- the desired state -----------------------------------------------------------------------------
class ShadowPolicy(_Doc):
    share: float = Field(0.2, gt=0, le=1, description="Share of live requests also run on it.")
    samples: int = Field(100, gt=0, description="Shadow inferences before it is swapped in.")


class DesiredModel(_Doc):
    model: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    release: SignedRelease | None = Field(
        None, description="None: serve the model from the device's own configuration again."
    )
    target: Target | None = None
    artifact_url: str | None = Field(None, description="GET (with Range) for the artifact.")
    fallback_artifact_url: str | None = Field(
        None,
        description="GET (with Range) for the release's cpu artifact, which an accelerator target "
        "keeps beside its own to fall back to when the accelerator is demoted.",
    )
    rollout_id: str | None = None
    rollback: bool = Field(False, description="An explicit move to an older release.")
    shadow: ShadowPolicy | None = None


class Desired(_Doc):
    """The signed body of a desired state."""

    schema_version: int = SCHEMA_VERSION
    device_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    generation: int = Field(ge=1, description="Grows with every document for this device.")
    issued_at: float
    models: list[DesiredModel] = Field(default_factory=list)


class SignedDesired(_Doc):
    """The payload on the ``desired`` topic (documentation; read it with :func:`open_desired`)."""

    desired: Desired
    signature: Signature


def seal_desired(key: Ed25519PrivateKey, desired: dict[str, Any]) -> bytes:
    """The payload for the ``desired`` topic. ``desired`` is the JSON object of a :class:`Desired`
    whose releases are the sealed objects as stored (so their signatures still hold)."""
    _parse(Desired, desired, "desired")  # refuse to sign what a device could not read
    signature = sign(key, desired).model_dump(mode="json")
    return json.dumps({"desired": desired, "signature": signature}, separators=(",", ":")).encode()


def open_desired(payload: bytes, key: Ed25519PublicKey) -> Desired:
    """Verify a desired-state payload and every release in it, then parse it.

    Raises :class:`SignatureError` for a bad signature anywhere and :class:`InvalidMessage` for a
    payload that is not a desired state.
    """
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"desired state: not JSON: {exc}") from None
    body, signature = _split(document, "desired")
    verify(key, body, signature)
    for entry in body.get("models") or []:
        if isinstance(entry, dict) and entry.get("release") is not None:
            release_body, release_signature = _split(entry["release"], "release")
            try:
                verify(key, release_body, release_signature)
            except SignatureError as exc:
                raise SignatureError(f"release of {entry.get('model')!r}: {exc}") from None
    return _parse(Desired, body, "desired")


# -- deployment reports (device -> control plane) --------------------------------------------------
class SmokeStats(_Doc):
    passed: int = Field(ge=0)
    total: int = Field(ge=0)
    candidate_ms: float | None = Field(
        None, description="Median latency of the new release on the golden inputs."
    )
    incumbent_ms: float | None = Field(
        None, description="Median latency of the one it replaces, timed in turns with it."
    )


class ShadowStats(_Doc):
    samples: int = Field(ge=0)
    agreement: float | None = Field(None, ge=0, le=1, description="Same top class, share.")
    candidate_p95_ms: float | None = None
    incumbent_p95_ms: float | None = None


class DeploymentReport(WireMessage):
    """A device's deployment state for one model, on its ``deployment`` topic (QoS 1)."""

    type: Literal["deployment"] = "deployment"
    generation: int = Field(ge=0, description="The desired state's generation this is about.")
    model: str
    rollout_id: str | None = None
    version: str | None = None
    seq: int | None = None
    artifact_sha256: str | None = None
    state: DeployState
    detail: str | None = Field(None, description="Why it failed, or what it is doing.")
    progress: float | None = Field(None, ge=0, le=1, description="Download progress.")
    smoke: SmokeStats | None = None
    shadow: ShadowStats | None = None


# -- helpers ---------------------------------------------------------------------------------------
def _split(document: Any, key: str) -> tuple[dict[str, Any], Signature]:
    if not isinstance(document, dict):
        raise InvalidMessage(f"signed {key}: expected a JSON object")
    body, raw_signature = document.get(key), document.get("signature")
    if not isinstance(body, dict):
        raise InvalidMessage(f"signed {key}: no {key!r} object")
    if not isinstance(raw_signature, dict):
        raise SignatureError(f"signed {key}: no signature")
    try:
        return body, Signature.model_validate(raw_signature)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"]
        raise SignatureError(f"signed {key}: bad signature object: {why}") from None


def _parse(kind: type[BaseModelT], body: dict[str, Any], what: str) -> BaseModelT:
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise InvalidMessage(f"invalid {what}: {where}: {first['msg']}") from None
