"""The data loop's REST routes (docs/data.md): kept inputs, feedback, data sets, evaluations.

Inputs arrive as a raw body, ``PUT`` by result id (a retry stores nothing twice), and are kept
sealed (AES-256-GCM) in files of their own under ``DATA_DIR/samples/sealed/``
(:class:`~controlplane.samples.vault.Vault`); ``GET`` opens them again. Parameter parsing is pure
and answers a bad value with 400 naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import Context, check_known, parse_device_id, parse_limit, parse_since
from controlplane.errors import BadRequest, NotFound, Refused, TooLarge
from controlplane.samples import queries
from controlplane.samples.keeper import Keeper
from controlplane.samples.labels import judge_evaluation
from controlplane.samples.vault import KeyRetired, Vault
from controlplane.store import decode_cursor, encode_cursor

RESULT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VERSION = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
REASON = re.compile(r"^[a-z_]{1,32}$")
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}$")
MAX_LABEL = 128


# -- parameters (pure) -----------------------------------------------------------------------------


def parse_result_id(raw: str) -> str:
    if not RESULT_ID.match(raw):
        raise BadRequest("result_id", f"expected 1 to 128 of A-Z a-z 0-9 _ . : -, got {raw!r}")
    return raw


def parse_name(raw: str | None, parameter: str, pattern: re.Pattern[str] = NAME) -> str:
    if raw is None:
        raise BadRequest(parameter, "required")
    if not pattern.match(raw):
        raise BadRequest(parameter, f"expected 1 to 64 of A-Z a-z 0-9 _ . - (+), got {raw!r}")
    return raw


def parse_reason(raw: str | None) -> str:
    if raw is None:
        raise BadRequest("reason", "required: why the device kept the input, e.g. low_confidence")
    if not REASON.match(raw):
        raise BadRequest("reason", f"expected 1 to 32 of a-z _, got {raw!r}")
    return raw


def parse_content_type(raw: str | None) -> str:
    if raw is None:
        return "application/octet-stream"
    kind = raw.split(";", 1)[0].strip().lower()
    if not CONTENT_TYPE.match(kind):
        raise BadRequest("Content-Type", f"expected a media type like image/png, got {raw!r}")
    return kind


def parse_time(raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise BadRequest("created_at", f"expected Unix seconds, got {raw!r}")
    return value


def parse_flag(raw: str | None, parameter: str) -> bool:
    if raw is None or raw in ("0", "false", "no"):
        return False
    if raw in ("", "1", "true", "yes"):
        return True
    raise BadRequest(parameter, f"expected true or false, got {raw!r}")


def parse_feedback(body: Any) -> tuple[str | None, bool | None]:
    """``{"label": "3"}`` or ``{"correct": true}`` (or both) -> (label, correct)."""
    if not isinstance(body, dict) or not body or set(body) - {"label", "correct"}:
        raise BadRequest("body", 'expected {"label": "..."} or {"correct": true}')
    label, correct = body.get("label"), body.get("correct")
    if correct is not None and not isinstance(correct, bool):
        raise BadRequest("correct", f"expected true or false, got {correct!r}")
    if label is not None:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
            raise BadRequest("label", f"expected a label of 1 to {MAX_LABEL} characters")
        if any(ord(c) < 32 for c in label):
            raise BadRequest("label", "control characters are not allowed in a label")
        return label.strip(), correct
    if correct is not True:
        raise BadRequest("label", "the device's answer was wrong: give the right label")
    return None, True


class _Figures(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    accuracy: float | None = Field(None, ge=0, le=1)


class _Dataset(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class Evaluation(BaseModel):
    """What ``POST .../evaluations`` takes: the report of ``python -m agent.evaluate`` with the
    data set it ran on. Other fields (per-class figures, latency) are kept as they are."""

    model_config = ConfigDict(extra="allow")

    dataset: _Dataset
    version: str
    samples: int = Field(ge=1)
    accuracy: float | None = Field(None, ge=0, le=1)
    against: _Figures | None = None
    agreement: float | None = Field(None, ge=0, le=1)


def parse_evaluation(body: Any, version: str) -> dict[str, Any]:
    try:
        parsed = Evaluation.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(where, str(first["msg"])) from None
    if parsed.version != version:
        raise BadRequest("version", f"the report is of version {parsed.version!r}, not {version!r}")
    return parsed.model_dump(mode="json")


# -- handlers --------------------------------------------------------------------------------------


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


class NotConfigured(Refused):
    """An app built without a keeper of kept inputs (503: nothing the client can fix)."""

    status = 503


class Busy(Refused):
    """503: try the same request again later."""

    status = 503


def keeper_of(ctx: Context) -> Keeper:
    if ctx.keeper is None:
        raise NotConfigured("kept inputs are not configured on this control plane")
    return ctx.keeper


async def read_body(request: Request, limit: int, too_large: str) -> bytes:
    """The request's body, refused past ``limit`` bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(too_large)
        chunks.append(chunk)
    if size == 0:
        raise BadRequest("body", "empty: PUT the input's bytes as the request body")
    return b"".join(chunks)


def _key(request: Request) -> tuple[str, str]:
    return (
        parse_device_id(request.path_params["device_id"]),
        parse_result_id(request.path_params["result_id"]),
    )


async def put_sample(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"model", "model_version", "reason", "created_at"})
    device_id, result_id = _key(request)
    now = ctx.clock()
    model = parse_name(q.get("model"), "model")
    version = parse_name(q.get("model_version"), "model_version", VERSION)
    reason = parse_reason(q.get("reason"))
    created_at = parse_time(q.get("created_at"), now)
    kind = parse_content_type(request.headers.get("content-type"))
    vault = keeper_of(ctx).vault
    limit = ctx.settings.max_sample_bytes
    data = await read_body(
        request, limit, f"the input is larger than max_sample_bytes ({limit} bytes)"
    )
    sha256 = hashlib.sha256(data).hexdigest()
    body = {"sha256": sha256, "size": len(data),
            "sample_url": queries.sample_path(device_id, result_id)}  # fmt: skip
    filed = await ctx.store.read(queries.query_sample, device_id, result_id)
    if filed is not None:  # a retry: nothing to seal (the transaction checks again)
        queries.check_same_input(filed["sha256"], sha256, device_id, result_id)
        return JSONResponse(body, status_code=200)
    created = await _file_sealed(ctx, vault, data, queries.NewSample(
        device_id, result_id, sha256, len(data), kind, model, version, reason, created_at, now,
    ))  # fmt: skip
    return JSONResponse(body, status_code=201 if created else 200)


async def _file_sealed(ctx: Context, vault: Vault, data: bytes, sample: queries.NewSample) -> bool:
    """Seal the input into a file, then file its row (the file goes again if the row is not
    written: a retry, a conflict, or the key retired meanwhile, which seals it again)."""
    for _ in range(3):
        sealed = await anyio.to_thread.run_sync(
            vault.write, sample.device_id, sample.result_id, data
        )
        row = dataclasses.replace(sample, blob=sealed.name, key_id=sealed.key_id)
        try:
            created = await ctx.store.transact(queries.insert_sample, row, vault.keys.holds)
        except KeyRetired:
            await anyio.to_thread.run_sync(vault.remove, [sealed.name])
            continue
        except Exception:  # a conflict, the store unavailable: no row names the file
            await anyio.to_thread.run_sync(vault.remove, [sealed.name])
            raise
        if not created:  # the same bytes were filed meanwhile
            await anyio.to_thread.run_sync(vault.remove, [sealed.name])
        return created
    raise Busy("the data key was rotated three times while this input was filed: try again")


async def get_sample(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    device_id, result_id = _key(request)
    vault = keeper_of(ctx).vault
    sample = await ctx.store.read(queries.query_sample, device_id, result_id)
    if sample is None:
        raise NotFound(f"no input of result {result_id} of device {device_id} is stored")
    if sample["blob"] is not None:
        data = await anyio.to_thread.run_sync(vault.read, device_id, result_id, sample["blob"])
    else:  # stored before encryption and not sealed yet (the keeper does it)
        data = await anyio.to_thread.run_sync(
            vault.read_legacy, device_id, result_id, sample["sha256"]
        )
    return Response(data, media_type=sample["content_type"], headers={
        "ETag": f'"{sample["sha256"]}"', "X-Edgefleet-Reason": sample["reason"],
    })  # fmt: skip


async def feedback(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    device_id, result_id = _key(request)
    if request.method == "GET":
        found = await ctx.store.read(queries.query_feedback, device_id, result_id)
        if found is None:
            raise NotFound(f"no feedback on result {result_id} of device {device_id}")
        return JSONResponse(found)
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("body", "not JSON") from None
    label, correct = parse_feedback(body)
    given = await ctx.store.transact(
        queries.put_feedback, device_id, result_id, label, correct, ctx.clock()
    )
    return JSONResponse({"device_id": device_id, "result_id": result_id, **given})


async def dataset(request: Request) -> Response:
    ctx, q = _ctx(request), request.query_params
    check_known(q.keys(), {"since", "labelled", "cursor", "limit"})
    model = parse_name(request.path_params["model"], "model")
    cursor = q.get("cursor")
    since = parse_since(q.get("since"))
    labelled = parse_flag(q.get("labelled"), "labelled")
    after = decode_cursor(cursor, "asc") if cursor is not None else 0
    limit = parse_limit(q.get("limit"), ctx.settings.results_page_max)
    items, last = await ctx.store.read(
        lambda conn: queries.dataset_page(
            conn, model, since=since, labelled=labelled, after=after, limit=limit
        )
    )
    next_cursor = encode_cursor(last, "asc") if last is not None else None
    return JSONResponse(
        {"model": model, "items": items, "count": len(items), "next_cursor": next_cursor}
    )


async def evaluations(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    name = parse_name(request.path_params["name"], "name")
    version = parse_name(request.path_params["version"], "version", VERSION)
    if request.method == "GET":
        found = await ctx.store.read(queries.query_evaluations, name, version)
        return JSONResponse({"name": name, "version": version, "evaluations": found,
                             "count": len(found)})  # fmt: skip
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise BadRequest("body", "not JSON") from None
    report = parse_evaluation(body, version)
    release = await ctx.store.read(
        lambda conn: conn.execute(
            "SELECT 1 FROM releases WHERE name = ? AND version = ?", [name, version]
        ).fetchone()
    )
    if release is None:
        raise NotFound(f"no release {name} {version} in the registry")
    stored = await ctx.store.transact(queries.insert_evaluation, name, version, report, ctx.clock())
    return JSONResponse(stored, status_code=201)


async def evaluation_refusal(ctx: Context, name: str, version: str) -> dict[str, Any] | None:
    """``rollout start --require-eval``: None when the release may roll out, else the 409 body
    (the error and the figures it was judged on)."""

    def read(conn: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        found = queries.query_evaluations(conn, name, version)
        latest = found[0] if found else None
        return latest, (queries.incumbent_figures(conn, name, latest) if latest else None)

    latest, incumbent = await ctx.store.read(read)
    verdict = judge_evaluation(f"{name}:{version}", latest, incumbent)
    if verdict.ok:
        return None
    figures = None
    if latest is not None:
        figures = {k: latest.get(k) for k in ("id", "accuracy", "samples", "dataset", "agreement")}
    return {"error": verdict.reason, "evaluation": figures, "incumbent": incumbent}


routes = [
    Route("/api/v1/samples/{device_id}/{result_id}", put_sample, methods=["PUT"]),
    Route("/api/v1/samples/{device_id}/{result_id}", get_sample, methods=["GET"]),
    Route("/api/v1/results/{device_id}/{result_id}/feedback", feedback, methods=["GET", "PUT"]),
    Route("/api/v1/datasets/{model}", dataset, methods=["GET"]),
    Route(
        "/api/v1/models/{name}/releases/{version}/evaluations",
        evaluations,
        methods=["GET", "POST"],
    ),
]
