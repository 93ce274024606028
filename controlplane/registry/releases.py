"""Releases: a push checked against its artifacts, numbered, signed and stored; and the queries.

A push (:class:`Push`) names one artifact per target by SHA-256 and carries a manifest (tensors,
pre/post-processing, labels, metrics), labels and golden inputs. :func:`check_push` and the
functions it calls are pure: they take what the artifact files were found to be
(:class:`ArtifactFacts`) and either return the release to sign or raise :class:`BadRequest`
naming the field at fault. :func:`insert_release` runs in the store's writer transaction: it
gives the release the next ``seq`` of its name, seals it with the release key and stores it;
pushing the same name and version again is a no-op when the content is the same and a
:class:`Conflict` when it is not (a signed release never changes).

The rollout code reads releases with :func:`query_release` and :func:`query_release_by_seq`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controlplane.errors import BadRequest, Conflict
from controlplane.registry.artifacts import Format, ModelIO
from controlplane.registry.keys import ReleaseKey
from protocol.manifest import (
    ClassificationPostprocess,
    ImagePreprocess,
    ModelManifest,
    Target,
    TensorSpec,
)
from protocol.release import GoldenCase, Release, ReleaseArtifact, seal_release

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
VERSION_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"
FORMAT_OF_TARGET: dict[str, Literal["tflite", "onnx"]] = {
    "cpu": "tflite",
    "edgetpu": "tflite",
    "onnx": "onnx",
}
IGNORED_MANIFEST_KEYS = ("artifacts", "golden", "name", "version", "schema_version")


# -- the request -----------------------------------------------------------------------------------


class GoldenInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(description="The input file's bytes, base64.")
    expected_label: str | None = None
    expected_index: int | None = Field(None, ge=0)
    expected_scores: list[float] | None = None
    tolerance: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _expected(self) -> GoldenInput:
        if self.expected_label is None and self.expected_index is None:
            raise ValueError("give expected_label or expected_index")
        return self


class Push(BaseModel):
    """The body of ``POST /api/v1/models/{name}/releases``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(pattern=VERSION_PATTERN)
    artifacts: dict[Target, str] = Field(min_length=1)
    manifest: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] | None = None
    golden: list[GoldenInput] = Field(default_factory=list)
    description: str | None = None


def parse_push(body: Any) -> Push:
    """The push in a JSON body, or BadRequest naming the first bad field."""
    try:
        return Push.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "string_pattern_mismatch" and where == "version":
            message = "1 to 64 characters from A-Z a-z 0-9 _ . + -"
        raise BadRequest(where, message) from None


@dataclass(frozen=True)
class ArtifactFacts:
    """What the registry knows of one pushed artifact after looking at its file."""

    sha256: str
    size: int
    format: Format
    io: ModelIO | None  # the runtime's view; None where it is not inspected (edgetpu)


# -- checks (pure) ---------------------------------------------------------------------------------


def check_formats(targets: Mapping[Target, str], formats: Mapping[Target, Format]) -> None:
    """Each target's artifact must be of the target's format (``formats``: by target)."""
    for target, sha256 in targets.items():
        want, got = FORMAT_OF_TARGET[target], formats[target]
        if got != want:
            what = "not a model file" if got == "unknown" else f"a {got} file"
            raise BadRequest(
                f"artifacts.{target}",
                f"artifact {sha256[:12]} is {what}; the {target} target needs a {want} model",
            )


def build_manifest(name: str, push: Push, fallback_io: ModelIO | None) -> ModelManifest:
    """The push's manifest with the name, version, labels and description of the push.

    Without ``inputs``/``outputs`` in the manifest, the tensors are taken from the artifact
    (``fallback_io``): a model can be pushed with no manifest at all.
    """
    raw = {k: v for k, v in push.manifest.items() if k not in IGNORED_MANIFEST_KEYS}
    raw.update(name=name, version=push.version)
    if push.labels is not None:
        raw["labels"] = push.labels
    if push.description is not None:
        raw["description"] = push.description
    if fallback_io is not None:
        for key, specs in (("inputs", fallback_io.inputs), ("outputs", fallback_io.outputs)):
            if not raw.get(key):
                raw[key] = [s.model_dump(mode="json") for s in specs]
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if "labels" in message:
            raise BadRequest("labels", message) from None
        raise BadRequest("manifest" + (f".{where}" if where else ""), message) from None


def check_tensors(target: str, io: ModelIO, manifest: ModelManifest) -> None:
    """The artifact's tensors must be the manifest's: same names in the same order, same rank,
    dtype and sizes (-1 on either side matches any size), and the same quantisation where both
    give one."""
    for side, expected, actual in (
        ("inputs", manifest.inputs, io.inputs), ("outputs", manifest.outputs, io.outputs)
    ):  # fmt: skip
        where = f"artifacts.{target}"
        names = [t.name for t in actual]
        if [t.name for t in expected] != names:
            raise BadRequest(
                where,
                f"the model's {side} are {names}, the manifest says {[t.name for t in expected]}",
            )
        for want, got in zip(expected, actual, strict=True):
            problem = tensor_mismatch(want, got)
            if problem:
                raise BadRequest(where, f"{side[:-1]} {want.name!r}: {problem}")


def tensor_mismatch(want: TensorSpec, got: TensorSpec) -> str | None:
    """Why the model's tensor ``got`` does not fit the manifest's ``want``, or None."""
    if want.datatype != got.datatype:
        return f"the model takes {got.datatype}, the manifest says {want.datatype}"
    shapes_fit = len(want.shape) == len(got.shape) and all(
        a == b or -1 in (a, b) for a, b in zip(want.shape, got.shape, strict=True)
    )
    if not shapes_fit:
        return f"the model's shape is {got.shape}, the manifest says {want.shape}"
    if want.quantization and got.quantization:
        w, g = want.quantization, got.quantization
        if w.zero_point != g.zero_point or abs(w.scale - g.scale) > 1e-6 * max(g.scale, 1e-12):
            return (
                f"the model is quantised with scale {g.scale:g} zero point {g.zero_point}, "
                f"the manifest says scale {w.scale:g} zero point {w.zero_point}"
            )
    return None


def classes(manifest: ModelManifest) -> int | None:
    """How many classes the classification output has (None: not classification, or dynamic)."""
    post = manifest.postprocess
    if not isinstance(post, ClassificationPostprocess):
        return None
    out = next((o for o in manifest.outputs if o.name == post.output), manifest.outputs[0])
    return out.shape[-1] if out.shape and out.shape[-1] > 0 else None


def build_golden(manifest: ModelManifest, golden: list[GoldenInput]) -> list[GoldenCase]:
    """Golden cases with the expected label turned into its index, each input checked."""
    labels, count = manifest.labels, classes(manifest)
    cases = []
    for i, g in enumerate(golden):
        where = f"golden[{i}]"
        data = _decode_input(g.input, f"{where}.input")
        if isinstance(manifest.preprocess, ImagePreprocess):
            _check_image(data, f"{where}.input")
        index = g.expected_index
        if g.expected_label is not None:
            if g.expected_label not in labels:
                known = ", ".join(labels[:20]) or "none: pass --labels"
                raise BadRequest(
                    f"{where}.expected_label",
                    f"{g.expected_label!r} is not one of the labels ({known})",
                )
            by_label = labels.index(g.expected_label)
            if index is not None and index != by_label:
                raise BadRequest(
                    f"{where}.expected_index",
                    f"{index} but expected_label {g.expected_label!r} is index {by_label}",
                )
            index = by_label
        assert index is not None  # GoldenInput requires a label or an index
        limit = count if count is not None else (len(labels) or None)
        if limit is not None and index >= limit:
            raise BadRequest(
                f"{where}.expected_index", f"{index} but the model has {limit} classes"
            )
        if g.expected_scores is not None and limit is not None and len(g.expected_scores) != limit:
            raise BadRequest(
                f"{where}.expected_scores",
                f"{len(g.expected_scores)} scores for a model of {limit} classes",
            )
        extra = {} if g.tolerance is None else {"tolerance": g.tolerance}
        cases.append(
            GoldenCase(
                input=base64.b64encode(data).decode(),
                expected_index=index,
                expected_scores=g.expected_scores,
                **extra,
            )
        )
    return cases


def _decode_input(text: str, where: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(where, "not base64 (the CLI reads files for you)") from None
    if not data:
        raise BadRequest(where, "empty input")
    return data


def _check_image(data: bytes, where: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadRequest(where, f"not an image the preprocessing can decode ({exc})") from None


def check_push(
    name: str, push: Push, facts: Mapping[Target, ArtifactFacts], created_at: float
) -> Release:
    """The release a push makes (``seq`` 1, to be numbered by :func:`insert_release`), or
    BadRequest. ``facts`` maps each target to its artifact's facts."""
    check_formats(push.artifacts, {t: f.format for t, f in facts.items()})
    inspected = [facts[t].io for t in ("cpu", "onnx") if t in facts and facts[t].io is not None]
    manifest = build_manifest(name, push, inspected[0] if inspected else None)
    for target, fact in facts.items():
        if fact.io is not None:
            check_tensors(target, fact.io, manifest)
    return Release(
        name=name,
        version=push.version,
        seq=1,
        created_at=created_at,
        description=manifest.description,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        preprocess=manifest.preprocess,
        postprocess=manifest.postprocess,
        labels=manifest.labels,
        artifacts={
            t: ReleaseArtifact(sha256=f.sha256, size=f.size, format=FORMAT_OF_TARGET[t])
            for t, f in facts.items()
        },
        golden=build_golden(manifest, push.golden),
        metrics=manifest.metrics,
    )


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two release bodies say the same thing (the registry's numbering and clock aside)."""
    skip = ("seq", "created_at")
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


# -- the store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRelease:
    name: str
    version: str
    seq: int
    created_at: float
    sealed: dict[str, Any]  # {"release": ..., "signature": ...} exactly as signed

    @property
    def release(self) -> dict[str, Any]:
        body: dict[str, Any] = self.sealed["release"]
        return body


def _stored(row: sqlite3.Row) -> StoredRelease:
    return StoredRelease(
        row["name"], row["version"], row["seq"], row["created_at"], json.loads(row["sealed"])
    )


def insert_artifact(
    conn: sqlite3.Connection, sha256: str, size: int, format: str, now: float
) -> bool:
    """Record a stored file; False if it was known already."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO artifacts (sha256, size, format, created_at) VALUES (?, ?, ?, ?)",
        [sha256, size, format, now],
    )
    return cursor.rowcount == 1


def query_artifacts(conn: sqlite3.Connection, hashes: list[str]) -> dict[str, tuple[int, str]]:
    """``{sha256: (size, format)}`` for the known ones among ``hashes``."""
    marks = ",".join("?" * len(hashes))
    rows = conn.execute(
        f"SELECT sha256, size, format FROM artifacts WHERE sha256 IN ({marks})", hashes
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def insert_release(
    conn: sqlite3.Connection, candidate: Release, key: ReleaseKey
) -> tuple[StoredRelease, bool]:
    """Number, seal and store ``candidate``; ``(stored, created)``. Conflict when the name and
    version exist with other content. Runs in one writer transaction (seq cannot race)."""
    name, version = candidate.name, candidate.version
    existing = query_release(conn, name, version)
    if existing is not None:
        if same_content(existing.release, candidate.model_dump(mode="json")):
            return existing, False
        raise Conflict(
            f"{name} {version} exists with other content (seq {existing.seq}); a release never "
            "changes: push it as a new version"
        )
    (latest,) = conn.execute("SELECT max(seq) FROM releases WHERE name = ?", [name]).fetchone()
    release = candidate.model_copy(update={"seq": (latest or 0) + 1})
    sealed = seal_release(key.private, release)
    conn.execute(
        "INSERT INTO releases (name, version, seq, created_at, sealed) VALUES (?, ?, ?, ?, ?)",
        [name, version, release.seq, release.created_at, json.dumps(sealed)],
    )
    return StoredRelease(name, version, release.seq, release.created_at, sealed), True


def query_release(conn: sqlite3.Connection, name: str, version: str) -> StoredRelease | None:
    row = conn.execute(
        "SELECT name, version, seq, created_at, sealed FROM releases WHERE name = ? "
        "AND version = ?",
        [name, version],
    ).fetchone()
    return None if row is None else _stored(row)


def query_release_by_seq(conn: sqlite3.Connection, name: str, seq: int) -> StoredRelease | None:
    row = conn.execute(
        "SELECT name, version, seq, created_at, sealed FROM releases WHERE name = ? AND seq = ?",
        [name, seq],
    ).fetchone()
    return None if row is None else _stored(row)


def query_releases(conn: sqlite3.Connection, name: str) -> list[StoredRelease]:
    """Every release of ``name``, newest (highest seq) first."""
    rows = conn.execute(
        "SELECT name, version, seq, created_at, sealed FROM releases WHERE name = ? "
        "ORDER BY seq DESC",
        [name],
    )
    return [_stored(r) for r in rows]


def query_models(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each model name with its latest release and how many releases it has."""
    rows = conn.execute(
        """
        SELECT r.name, r.version, r.seq, r.created_at, n.releases
        FROM releases r
        JOIN (SELECT name, max(seq) AS seq, count(*) AS releases FROM releases GROUP BY name) n
          ON n.name = r.name AND n.seq = r.seq
        ORDER BY r.name
        """
    )
    return [
        {
            "name": r[0], "latest_version": r[1], "latest_seq": r[2], "updated_at": r[3],
            "releases": r[4],
        }
        for r in rows
    ]  # fmt: skip


def count_running(conn: sqlite3.Connection, name: str, version: str) -> int:
    """Devices whose latest birth lists ``name`` at ``version`` among the models they serve."""
    (count,) = conn.execute(
        """
        SELECT count(DISTINCT d.id) FROM devices d, json_each(d.models) m
        WHERE json_extract(m.value, '$.name') = ? AND json_extract(m.value, '$.version') = ?
        """,
        [name, version],
    ).fetchone()
    return int(count)


def summary(stored: StoredRelease) -> dict[str, Any]:
    """One line of a model's release list."""
    body = stored.release
    return {
        "name": stored.name,
        "version": stored.version,
        "seq": stored.seq,
        "created_at": stored.created_at,
        "description": body.get("description", ""),
        "targets": sorted(body.get("artifacts", {})),
        "key_id": stored.sealed["signature"]["key_id"],
    }
