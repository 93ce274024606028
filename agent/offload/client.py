"""The Open Inference Protocol REST client (KServe V2 / Triton) the agent offloads with.

One call is ``POST {endpoint}/v2/models/{model}[/versions/{v}]/infer`` with the result id as the
request ``id`` (the idempotency key: a retried request is the same request), JSON tensors by
default or the binary tensor extension (``Inference-Header-Content-Length``), and always an
explicit ``Content-Type``: servers disagree on what a body without one is. Replies are read by
their status code and that header alone, never by the server's ``Content-Type``.

Each call has a deadline split across its attempts, retries what :mod:`agent.offload.retry` says
with jittered backoff (honouring ``Retry-After``), and asks the endpoint's
:class:`~agent.offload.breaker.CircuitBreaker` before every attempt. The only module that imports
aiohttp's client; its exceptions become :mod:`agent.offload.errors`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import numpy as np

from agent.offload.breaker import CircuitBreaker
from agent.offload.errors import BreakerOpen, CloudRejected, CloudUnavailable
from agent.offload.retry import (
    DEFAULT_BACKOFF,
    MIN_ATTEMPT_S,
    Backoff,
    attempt_timeout,
    next_wait,
    parse_retry_after,
    retryable,
)
from protocol.tensors import DATATYPE_BY_NUMPY, NUMPY_BY_DATATYPE

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class CloudReply:
    outputs: dict[str, np.ndarray]
    model_name: str | None
    model_version: str | None
    latency_ms: float  # the successful attempt
    attempts: int


@dataclass(frozen=True)
class EncodedRequest:
    body: bytes
    headers: dict[str, str]


# --- bodies (pure) --------------------------------------------------------------------------


def encode_request(
    inputs: Mapping[str, np.ndarray], request_id: str, *, binary: bool
) -> EncodedRequest:
    """An infer request body with its headers (numeric tensors only)."""
    described: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for name, array in inputs.items():
        datatype = DATATYPE_BY_NUMPY.get(array.dtype.name)
        if datatype is None or datatype == "BYTES":
            raise CloudRejected(f"input {name!r} of type {array.dtype} cannot be offloaded")
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor["data"] = array.ravel().tolist()
        described.append(tensor)
    doc: dict[str, Any] = {"id": request_id, "inputs": described}
    if binary:
        doc["parameters"] = {"binary_data_output": True}
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not binary:
        return EncodedRequest(header, {"Content-Type": JSON_TYPE})
    return EncodedRequest(
        header + b"".join(buffers),
        {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))},
    )


def decode_response(
    body: bytes, header_length: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the JSON document, the outputs as arrays) of an infer reply; ValueError if malformed."""
    split = None
    if header_length is not None:
        split = int(header_length.strip())
        if not 0 <= split <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {split} does not fit a body of {len(body)} bytes")
    doc = json.loads(body if split is None else body[:split])
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise ValueError("the reply has no 'outputs' list")
    binary = memoryview(body)[split:] if split is not None else memoryview(b"")
    offset = 0
    outputs: dict[str, np.ndarray] = {}
    for spec in doc["outputs"]:
        name, datatype, shape = spec["name"], spec["datatype"], spec["shape"]
        if datatype not in NUMPY_BY_DATATYPE or datatype == "BYTES":
            raise ValueError(f"output {name!r} has datatype {datatype!r}, not a numeric one")
        dtype = np.dtype(NUMPY_BY_DATATYPE[datatype]).newbyteorder("<")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(spec["data"], dtype=dtype)
        else:
            if offset + size > len(binary):
                raise ValueError(f"output {name!r}: binary data runs past the end of the body")
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype)
            offset += size
        if array.size != math.prod(shape):
            raise ValueError(f"output {name!r}: shape {shape} but {array.size} values")
        outputs[name] = array.reshape(shape)
    return doc, outputs


def infer_url(endpoint: str, model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return endpoint.rstrip("/") + path + "/infer"


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])
    except (ValueError, UnicodeDecodeError):
        pass
    return body[:200].decode("utf-8", "replace")


# --- the client -----------------------------------------------------------------------------


class OIPClient:
    """Calls OIP servers; one circuit breaker per endpoint. Create and close it on the loop."""

    def __init__(
        self,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
        self._backoff = backoff
        self._rand = rand
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, endpoint: str, failures: int = 5, cooldown_s: float = 10.0) -> CircuitBreaker:
        """The endpoint's breaker (made with these settings the first time it is asked for)."""
        found = self.breakers.get(endpoint)
        if found is None:
            found = self.breakers[endpoint] = CircuitBreaker(failures, cooldown_s)
        return found

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), raise_for_status=False
            )
        return self._session

    async def infer(
        self,
        endpoint: str,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        request_id: str,
        timeout_s: float,
        version: str | None = None,
        binary: bool = False,
        max_attempts: int = 3,
    ) -> CloudReply:
        """One call within ``timeout_s``: a reply, CloudRejected, or CloudUnavailable."""
        deadline = self._clock() + timeout_s
        request = encode_request(inputs, request_id, binary=binary)
        url = infer_url(endpoint, model, version)
        breaker = self.breaker(endpoint)
        server_errors = 0
        last = "no attempt fitted in the deadline"
        timed_out = True
        for attempt in range(max_attempts):
            remaining = deadline - self._clock()
            if remaining < MIN_ATTEMPT_S:
                break
            if not breaker.allow(self._clock()):
                if attempt == 0:
                    raise BreakerOpen(f"{endpoint}: circuit breaker open after repeated failures")
                break  # this call's own failures opened it: report the last of them
            started = self._clock()
            status, retry_after, failure = await self._attempt(
                url, request, attempt_timeout(remaining, max_attempts - attempt), breaker
            )
            if isinstance(failure, CloudReply):
                latency = (self._clock() - started) * 1000.0
                return CloudReply(
                    failure.outputs, failure.model_name, failure.model_version, latency, attempt + 1
                )
            last, timed_out = failure
            if not retryable(status, server_errors):
                raise CloudRejected(f"{url}: {last}", status)
            if status == 500:
                server_errors += 1
            if attempt + 1 >= max_attempts:
                break
            wait = next_wait(
                attempt, deadline - self._clock(), self._rand(), retry_after, self._backoff
            )
            if wait is None:
                break
            await self._sleep(wait)
        raise CloudUnavailable(f"{url}: {last}", timed_out=timed_out)

    async def _attempt(
        self,
        url: str,
        request: EncodedRequest,
        timeout: float,
        breaker: CircuitBreaker,
    ) -> tuple[int | None, float | None, CloudReply | tuple[str, bool]]:
        """One try: (status, Retry-After, the reply or (what failed, whether it timed out))."""
        try:
            async with self._client().post(
                url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await response.read()
                status = response.status
                length = response.headers.get(HEADER_LENGTH)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except asyncio.CancelledError:
            breaker.release()
            raise
        except asyncio.TimeoutError:
            breaker.failure(self._clock())
            return None, None, (f"no answer within {timeout * 1000:.0f} ms", True)
        except aiohttp.ClientError as exc:
            breaker.failure(self._clock())
            return None, None, (f"connection failed: {exc}", False)
        if status != 200:
            if retryable(status, 0):
                breaker.failure(self._clock())
            else:
                breaker.success()  # the tier answered; the request was wrong
            return status, retry_after, (f"HTTP {status}: {_error_text(body)}", False)
        try:
            doc, outputs = decode_response(body, length)
        except (ValueError, KeyError, TypeError) as exc:
            breaker.success()
            return 422, None, (f"unreadable reply: {exc}", False)
        breaker.success()
        name = doc.get("model_name")
        version = doc.get("model_version")
        return (
            200,
            None,
            CloudReply(
                outputs,
                name if isinstance(name, str) else None,
                version if isinstance(version, str) else None,
                0.0,
                0,
            ),
        )
