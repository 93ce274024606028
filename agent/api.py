"""The agent's local inference API: an aiohttp app that speaks the Open Inference Protocol.

Routes (``{v}`` routes answer only for the version being served):

    GET  /v2                                     server metadata
    GET  /v2/health/live, /v2/health/ready       liveness; readiness (503 until a model is loaded)
    GET  /v2/models/{name}[/versions/{v}]        model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready  model readiness
    POST /v2/models/{name}[/versions/{v}]/infer  inference: JSON tensors or binary tensors
    POST /v1/models/{name}/image                 an image body in, the post-processed result out

Bodies are encoded and decoded by :mod:`agent.oip`. A result is answered only after ``record``
has kept it (the outbox), so a client never sees a result that was not stored. Errors are JSON
``{"error": ...}`` naming the problem; the statuses are decided by :func:`error_status`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from aiohttp import web

from agent import __version__, oip
from agent.errors import (
    AgentError,
    BackendUnavailable,
    InputError,
    OutboxError,
    PayloadTooLarge,
    RuntimeBackendError,
    UnknownModel,
)
from agent.inference import InferenceOutput, ServedModel
from agent.telemetry import InferenceStats
from protocol.messages import InferenceResult

log = logging.getLogger(__name__)

SERVER_NAME = "edgefleet-agent"
RETRY_AFTER_S = 1
"""What a 503 tells the client to wait: a backend glitch or a stuck disk is the agent's problem,
not the request's, and the same request may well succeed a moment later."""

Record = Callable[[InferenceResult], Awaitable[None]]
Offload = Callable[
    [InferenceResult, Mapping[str, np.ndarray], int, float | None], Awaitable[InferenceResult]
]
"""(result, input tensors, requests queued for the model, seconds left or None) -> the result
with its offload decision (:meth:`agent.offload.offloader.Offloader.process`)."""
DEADLINE_HEADER = "X-Deadline-Ms"
"""A caller's deadline for the whole request, in milliseconds: an offload must fit in what is
left of it after the local inference (else the model's ``deadline_ms`` applies)."""
Inferred = Callable[[str, Any, InferenceOutput], None]
"""Told of each answered request (model, its input: image bytes or tensors, the output): the
deployer's shadow evaluation. It must return at once."""
Sample = Callable[[InferenceResult, Any], None]
"""Told of each kept result with its input (image bytes or tensors): the data loop's sampling
(:meth:`agent.daemon.Agent.sample`). It must return at once and never raise."""
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_status(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, telemetry error kind) for an exception a handler raised."""
    if isinstance(exc, InputError):
        return 400, "bad_input"
    if isinstance(exc, UnknownModel):
        return 404, "unknown_model"
    if isinstance(exc, PayloadTooLarge):
        return 413, "too_large"
    if isinstance(exc, RuntimeBackendError):
        return 503, "backend"
    if isinstance(exc, OutboxError):
        return 503, "outbox"
    return 500, "internal"


def parse_deadline(value: str | None) -> float | None:
    """Milliseconds from the deadline header, or InputError naming it."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    if not math.isfinite(ms) or ms <= 0:
        raise InputError(
            f"{DEADLINE_HEADER} must be a positive number of milliseconds, got {value!r}"
        )
    return ms


def json_response(
    doc: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(doc).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=oip.error_body(message),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class _Handlers:
    """The route handlers, over the models and the callbacks the app was created with."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        record: Record,
        stats: InferenceStats,
        max_body_bytes: int,
        on_recorded: Callable[[], None] | None,
        on_inferred: Inferred | None = None,
        offload: Offload | None = None,
        sample: Sample | None = None,
    ) -> None:
        self.offload = offload
        self.sample = sample
        self.models = models
        self.record = record
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.on_recorded = on_recorded
        self.on_inferred = on_inferred

    # --- health and metadata ----------------------------------------------------------------

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response(oip.server_metadata(SERVER_NAME, __version__))

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        if not self.models:
            return json_response({"ready": False, "error": "no model is loaded yet"}, status=503)
        return json_response({"ready": True})

    async def model_metadata(self, request: web.Request) -> web.Response:
        return json_response(self._served(request).metadata())

    async def model_ready(self, request: web.Request) -> web.Response:
        served = self._served(request)
        return json_response({"name": served.name, "version": served.version, "ready": True})

    # --- inference --------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        deadline_ms = parse_deadline(request.headers.get(DEADLINE_HEADER))
        served = self._served(request)
        body = await self._body(request)
        length = oip.parse_header_length(request.headers.get(oip.HEADER_LENGTH), len(body))
        decoded = oip.decode_infer_request(body, length)
        output = await served.infer(decoded.inputs, request_id=decoded.id)
        result = await self._offload(served, output, started, deadline_ms)
        encoded = oip.encode_infer_response(
            model_name=served.name,
            model_version=served.version,
            outputs=oip.select_outputs(decoded, output.outputs),
            request_id=decoded.id,
            parameters=_parameters(result),
        )
        await self._keep(served.name, result, decoded.inputs)
        if self.on_inferred is not None:
            self.on_inferred(served.name, decoded.inputs, output)
        return web.Response(
            body=encoded.body,
            content_type=encoded.content_type,
            headers=(
                None
                if encoded.header_length is None
                else {oip.HEADER_LENGTH: str(encoded.header_length)}
            ),
        )

    async def image(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        deadline_ms = parse_deadline(request.headers.get(DEADLINE_HEADER))
        served = self._served(request)
        body = await self._body(request)
        if not body:
            raise InputError("the body is empty: POST the bytes of a JPEG or PNG image")
        output = await served.infer_image(body, request_id=request.headers.get("X-Request-Id"))
        result = await self._offload(served, output, started, deadline_ms)
        await self._keep(served.name, result, body)
        if self.on_inferred is not None:
            self.on_inferred(served.name, body, output)
        return web.Response(
            body=result.model_dump_json(exclude_none=True).encode(),
            content_type="application/json",
        )

    async def _offload(
        self,
        served: ServedModel,
        output: InferenceOutput,
        started: float,
        deadline_ms: float | None,
    ) -> InferenceResult:
        """The result with its offload decision, within what is left of the caller's deadline."""
        if self.offload is None:
            return output.result
        left = None
        if deadline_ms is not None:
            left = deadline_ms / 1000.0 - (time.perf_counter() - started)
        return await self.offload(output.result, output.inputs, served.pending, left)

    async def _keep(self, model: str, result: InferenceResult, payload: Any) -> None:
        """Store the result (OutboxError propagates: answered 503), wake the uplink, count it,
        and offer its input (``payload``) to the sampling."""
        await self.record(result)
        if self.sample is not None:
            self.sample(result, payload)
        if self.on_recorded is not None:
            self.on_recorded()
        self.stats.observe(model, result.latency_ms)

    # --- request parts ----------------------------------------------------------------------

    def _served(self, request: web.Request) -> ServedModel:
        name = request.match_info["name"]
        served = self.models.get(name)
        if served is None:
            known = ", ".join(repr(n) for n in self.models) or "none"
            raise UnknownModel(f"unknown model {name!r} (this agent serves: {known})")
        version = request.match_info.get("version")
        if version is not None and version != served.version:
            raise UnknownModel(
                f"model {name!r} has no version {version!r} (serving version {served.version!r})"
            )
        return served

    async def _body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise PayloadTooLarge(self._too_large(length))
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
            raise PayloadTooLarge(self._too_large(None)) from None

    def _too_large(self, length: int | None) -> str:
        size = f"of {length} bytes " if length is not None else ""
        return f"request body {size}is over the limit of {self.max_body_bytes} bytes"

    # --- errors -----------------------------------------------------------------------------

    @web.middleware
    async def errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Every error as JSON ``{"error": ...}``: ours by :func:`error_status`, aiohttp's as is."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, _http_message(request, exc), _allow(exc))
        except Exception as exc:
            status, kind = error_status(exc)
            self.stats.error(kind)
            if status == 500:
                log.exception("unexpected error on %s %s", request.method, request.path)
                message = f"internal error ({type(exc).__name__}); see the agent's log"
                return error_response(500, message)
            if status == 503:
                log.warning("%s %s: %s", request.method, request.path, exc)
                headers = {"Retry-After": str(retry_after(exc))}
                return error_response(status, _message(exc, status), headers)
            log.debug("%s %s: %d %s", request.method, request.path, status, exc)
            return error_response(status, str(exc))


def retry_after(exc: Exception) -> int:
    """Seconds a 503 asks the client to wait: when the supervisor expects a worker back, else
    :data:`RETRY_AFTER_S`."""
    if isinstance(exc, BackendUnavailable):
        return max(1, math.ceil(exc.retry_after_s))
    return RETRY_AFTER_S


def _parameters(result: InferenceResult) -> dict[str, Any]:
    """The OIP response's parameters: the result id, and the offload decision with the cloud's
    top class when it answered in time."""
    parameters: dict[str, Any] = {"result_id": result.result_id}
    offload = result.offload
    if offload is not None:
        parameters["offload"] = offload.decision
        if offload.cloud is not None and offload.cloud.classes:
            best = offload.cloud.classes[0]
            parameters["cloud_index"] = best.index
            parameters["cloud_score"] = best.score
            if best.label is not None:
                parameters["cloud_label"] = best.label
    return parameters


def _message(exc: Exception, status: int) -> str:
    if isinstance(exc, OutboxError):
        return f"the result could not be stored, so it was not kept: {exc}"
    if isinstance(exc, AgentError) and status == 503:
        return f"the model failed to run: {exc}"
    return str(exc)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    if isinstance(exc, web.HTTPNotFound):
        return f"no such endpoint: {request.path}"
    return exc.reason


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def create_app(
    models: Mapping[str, ServedModel],
    *,
    record: Record,
    stats: InferenceStats,
    max_body_bytes: int = 16 * 2**20,
    on_recorded: Callable[[], None] | None = None,
    on_inferred: Inferred | None = None,
    offload: Offload | None = None,
    sample: Sample | None = None,
) -> web.Application:
    """The local API over ``models`` (looked up per request, so the mapping may change).

    ``record`` keeps a result durably and returns once it is kept (raising OutboxError when it
    cannot); ``on_recorded`` is called after each (to wake the uplink); ``on_inferred`` after each
    answer (shadow evaluation); ``stats`` counts inferences and errors. Bodies over
    ``max_body_bytes`` are refused with 413. ``offload``, when given, decides each result's
    offload before it is kept (docs/agent.md, "Offload"). ``sample``, when given, is offered each
    kept result with its input (docs/data.md).
    """
    h = _Handlers(models, record, stats, max_body_bytes, on_recorded, on_inferred, offload, sample)
    app = web.Application(client_max_size=max_body_bytes, middlewares=[h.errors])
    app.router.add_get("/v2", h.server_metadata)
    app.router.add_get("/v2/health/live", h.live)
    app.router.add_get("/v2/health/ready", h.ready)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(base, h.model_metadata)
        app.router.add_get(base + "/ready", h.model_ready)
        app.router.add_post(base + "/infer", h.infer)
    app.router.add_post("/v1/models/{name}/image", h.image)
    return app
