"""The registry's REST routes (see docs/registry.md): artifacts, releases, the release key.

Artifacts are uploaded as a raw body (streamed to disk, hashed on the way) and served with
single ``Range`` requests, so a device resumes an interrupted download where it stopped. Range
parsing is a pure function (:func:`parse_range`). A push is checked against the files it names
before it is signed: format, tensors, labels, golden inputs (:mod:`controlplane.registry.releases`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from controlplane.api import Context, check_known
from controlplane.errors import BadRequest, NotFound, RangeNotSatisfiable, Refused, TooLarge
from controlplane.registry import releases as rel
from controlplane.registry.artifacts import (
    SHA256,
    ArtifactStore,
    Format,
    ModelIO,
    NotAModel,
    check_tflite,
    has_edgetpu_op,
    inspect_onnx,
    inspect_tflite,
)
from controlplane.registry.keys import ReleaseKey
from protocol.manifest import Target

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class NotConfigured(Refused):
    """An app built without the registry (503: nothing the client can fix)."""

    status = 503


# -- ranges (pure) ---------------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks of a file of ``size`` bytes.

    None: serve the whole file (no header, another unit, or several ranges, which RFC 9110 lets a
    server ignore). :class:`RangeNotSatisfiable` for a range that starts past the end or is empty.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header!r}: no bytes to send", size)
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # syntactically invalid: ignored, the whole file is sent
    if start >= size:
        raise RangeNotSatisfiable(
            f"range {header!r} starts at or past the end of the artifact ({size} bytes)", size
        )
    return start, end


# -- helpers ---------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _artifacts(ctx: Context) -> ArtifactStore:
    if ctx.artifacts is None:
        raise NotConfigured("the registry is not configured on this control plane")
    return ctx.artifacts


def _key(ctx: Context) -> ReleaseKey:
    if ctx.release_key is None:
        raise NotConfigured("the registry is not configured on this control plane (no release key)")
    return ctx.release_key


def _sha256(raw: str) -> str:
    if not SHA256.match(raw):
        raise BadRequest("sha256", f"expected 64 lower-case hex digits, got {raw!r}")
    return raw


def _name(raw: str) -> str:
    if not re.match(rel.NAME_PATTERN, raw):
        raise BadRequest("name", f"a model name is 1 to 64 of A-Z a-z 0-9 _ . -, got {raw!r}")
    return raw


def _version(raw: str) -> str:
    if not re.match(rel.VERSION_PATTERN, raw):
        raise BadRequest("version", f"a version is 1 to 64 of A-Z a-z 0-9 _ . + -, got {raw!r}")
    return raw


# -- artifacts -------------------------------------------------------------------------------------


async def put_artifact(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    store = _artifacts(ctx)
    limit = ctx.settings.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(
            f"the artifact ({declared} bytes) is larger than max_artifact_bytes ({limit} bytes)"
        )
    stored = await store.write(request.stream(), limit)
    created = await ctx.store.transact(
        rel.insert_artifact, stored.sha256, stored.size, stored.format, ctx.clock()
    )
    body = {"sha256": stored.sha256, "size": stored.size, "format": stored.format}
    return JSONResponse(body, status_code=201 if created else 200)


async def get_artifact(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    store = _artifacts(ctx)
    sha256 = _sha256(request.path_params["sha256"])
    size = await anyio.to_thread.run_sync(store.size, sha256)
    if size is None:
        raise NotFound(f"no artifact {sha256}")
    etag = f'"{sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable",  # the name is the content
    }
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # another version than the client has part of: send it whole
    span = parse_range(wanted, size)
    status = 200
    start, end = 0, size - 1
    if span is not None:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(
        _stream(store, sha256, start, end),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


async def _stream(store: ArtifactStore, sha256: str, start: int, end: int) -> AsyncIterator[bytes]:
    chunks = store.read(sha256, start, end)
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            yield chunk
    finally:
        chunks.close()


# -- releases --------------------------------------------------------------------------------------


async def push_release(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    store, key = _artifacts(ctx), _key(ctx)
    name = _name(request.path_params["name"])
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body", "not JSON: send a JSON object") from None
    push = rel.parse_push(body)
    known = await ctx.store.read(rel.query_artifacts, sorted(set(push.artifacts.values())))
    facts: dict[Target, rel.ArtifactFacts] = {}
    for target, sha256 in push.artifacts.items():
        if sha256 not in known:
            raise BadRequest(
                f"artifacts.{target}",
                f"no artifact {sha256} in the registry: upload it first (PUT /api/v1/artifacts)",
            )
        size, fmt = known[sha256]
        facts[target] = rel.ArtifactFacts(sha256, size, cast(Format, fmt), None)
    rel.check_formats(push.artifacts, {t: f.format for t, f in facts.items()})
    for target, fact in facts.items():
        path = store.path(fact.sha256)
        try:
            io = await anyio.to_thread.run_sync(_inspect, target, path)
        except NotAModel as exc:
            raise BadRequest(f"artifacts.{target}", f"artifact {fact.sha256[:12]}: {exc}") from None
        facts[target] = rel.ArtifactFacts(fact.sha256, fact.size, fact.format, io)
    release = rel.check_push(name, push, facts, ctx.clock())
    stored, created = await ctx.store.transact(rel.insert_release, release, key)
    view = await ctx.store.read(_release_view, stored, ctx.settings.public_url)
    return JSONResponse(view, status_code=201 if created else 200)


def _inspect(target: str, path: Path) -> ModelIO | None:
    if target == "onnx":
        return inspect_onnx(path)
    if target == "edgetpu":  # needs the Edge TPU delegate to load: check what we can
        check_tflite(path)
        if not has_edgetpu_op(path):
            raise NotAModel(
                "not compiled for the Edge TPU (no edgetpu-custom-op): run edgetpu_compiler on "
                "it, or push it as the cpu artifact"
            )
        return None
    return inspect_tflite(path)


def _release_view(conn: Any, stored: rel.StoredRelease, public_url: str) -> dict[str, Any]:
    artifacts = {
        target: {**a, "url": f"{public_url}/api/v1/artifacts/{a['sha256']}"}
        for target, a in stored.release["artifacts"].items()
    }
    return {
        **rel.summary(stored),
        "artifacts": artifacts,
        "running_on": rel.count_running(conn, stored.name, stored.version),
        "sealed": stored.sealed,
    }


async def list_models(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    models = await ctx.store.read(rel.query_models)
    return JSONResponse({"models": models, "count": len(models)})


async def get_model(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    name = _name(request.path_params["name"])
    found = await ctx.store.read(rel.query_releases, name)
    if not found:
        raise NotFound(f"no model {name!r} in the registry")
    items = [rel.summary(s) for s in found]
    return JSONResponse({"name": name, "releases": items, "count": len(items)})


async def get_release(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    name = _name(request.path_params["name"])
    version = _version(request.path_params["version"])

    def read(conn: Any) -> dict[str, Any] | None:
        stored = rel.query_release(conn, name, version)
        return None if stored is None else _release_view(conn, stored, ctx.settings.public_url)

    view = await ctx.store.read(read)
    if view is None:
        raise NotFound(f"no release {name} {version} in the registry")
    return JSONResponse(view)


async def release_key(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    key = _key(_ctx(request))
    return JSONResponse({"public_key": key.public_text, "key_id": key.key_id})


routes = [
    Route("/api/v1/artifacts", put_artifact, methods=["PUT"]),
    Route("/api/v1/artifacts/{sha256}", get_artifact, methods=["GET", "HEAD"]),
    Route("/api/v1/keys/release", release_key, methods=["GET"]),
    Route("/api/v1/models", list_models, methods=["GET"]),
    Route("/api/v1/models/{name}", get_model, methods=["GET"]),
    Route("/api/v1/models/{name}/releases", push_release, methods=["POST"]),
    Route("/api/v1/models/{name}/releases/{version}", get_release, methods=["GET"]),
]
