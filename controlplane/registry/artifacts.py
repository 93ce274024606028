"""The content-addressed artifact store, and what a model file is (sniffing and inspection).

A file lives at ``ROOT/ab/abcdef...`` (the first two hex digits of its SHA-256 name a directory so
that no directory grows huge). A write streams the bytes into a temporary file under ``ROOT/tmp``
(same file system), hashing as it goes, then fsyncs it and renames it into place: a reader sees a
whole file or none, the same bytes twice end as one file, and a crash leaves only a temporary file
that the next start removes. Nothing is held in memory whole.

Inspection is the one place in the control plane that loads models: LiteRT's interpreter for
``.tflite`` files, ONNX Runtime for ``.onnx`` ones. Both are blocking; callers run them in a thread.
Their exceptions are turned into :class:`NotAModel` here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from controlplane.errors import BadRequest, ControlPlaneError, TooLarge
from protocol.manifest import Quantization, TensorSpec
from protocol.tensors import DATATYPE_BY_NUMPY

Format = Literal["tflite", "onnx", "unknown"]
SHA256 = re.compile(r"^[0-9a-f]{64}$")
EDGETPU_MARKER = b"edgetpu-custom-op"
CHUNK = 256 * 1024


class NotAModel(ControlPlaneError):
    """A file that is not a model of the format it should be (the message says why)."""


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size: int
    format: Format


@dataclass(frozen=True)
class ModelIO:
    """A model file's tensors, as its runtime reports them (-1 for a dynamic dimension)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


# -- sniffing (pure) -------------------------------------------------------------------------------


def sniff(head: bytes) -> Format:
    """The format a file's first bytes suggest: ``TFL3`` at byte 4 is a TFLite flatbuffer; an
    ONNX ModelProto starts with field 1 (``ir_version``, a varint: byte 0x08). ``onnx`` is only a
    guess until ONNX Runtime has loaded the file (:func:`inspect_onnx`)."""
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:1] == b"\x08":
        return "onnx"
    return "unknown"


# -- the store -------------------------------------------------------------------------------------


class ArtifactStore:
    """Files by SHA-256 under ``root``. No I/O until the first call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"

    def path(self, sha256: str) -> Path:
        """Where the file of ``sha256`` lives (whether or not it exists)."""
        if not SHA256.match(sha256):
            raise ValueError(f"not a SHA-256 in lower-case hex: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        """The file's size, or None if there is no such file."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def clean(self) -> None:
        """Remove temporary files a crash left behind (call at start, before any write)."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def write(self, chunks: AsyncIterable[bytes], max_bytes: int) -> StoredArtifact:
        """Store the bytes of ``chunks``; :class:`TooLarge` past ``max_bytes`` and BadRequest for
        no bytes at all (nothing is kept then)."""
        await anyio.to_thread.run_sync(lambda: self._tmp.mkdir(parents=True, exist_ok=True))
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        size = 0
        head = b""
        fh = await anyio.to_thread.run_sync(tmp.open, "wb")
        try:
            try:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(
                            f"the artifact is larger than max_artifact_bytes ({max_bytes} bytes)"
                        )
                    if len(head) < 8:
                        head += chunk[: 8 - len(head)]
                    digest.update(chunk)
                    await anyio.to_thread.run_sync(fh.write, chunk)
                await anyio.to_thread.run_sync(_sync, fh)
            finally:
                await anyio.to_thread.run_sync(fh.close)
            if size == 0:
                raise BadRequest("body", "empty: PUT the artifact's bytes as the request body")
            sha256 = digest.hexdigest()
            await anyio.to_thread.run_sync(self._place, tmp, sha256)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return StoredArtifact(sha256, size, sniff(head))

    def _place(self, tmp: Path, sha256: str) -> None:
        final = self.path(sha256)
        if final.is_file():
            return  # the same bytes are already here (the name says so)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def read(self, sha256: str, start: int, end: int) -> Generator[bytes, None, None]:
        """Bytes ``start`` to ``end`` inclusive, in chunks (blocking: iterate in a thread)."""
        with self.path(sha256).open("rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    return  # the file is shorter than it was: the client sees a short body
                left -= len(chunk)
                yield chunk


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- inspection (blocking) -------------------------------------------------------------------------


def check_tflite(path: Path) -> None:
    """NotAModel unless the file is a TFLite flatbuffer (``TFL3`` at byte 4)."""
    with path.open("rb") as fh:
        if sniff(fh.read(8)) != "tflite":
            raise NotAModel("not a TFLite model (no TFL3 identifier at byte 4)")


def has_edgetpu_op(path: Path) -> bool:
    """Whether the file holds the Edge TPU compiler's custom op (scanned in chunks)."""
    keep = len(EDGETPU_MARKER) - 1
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if EDGETPU_MARKER in tail + chunk:
                return True
            tail = chunk[-keep:]
    return False


def inspect_tflite(path: Path) -> ModelIO:
    """The tensors LiteRT's interpreter reports for a ``.tflite`` file (NotAModel if it cannot)."""
    check_tflite(path)
    try:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
    except ImportError as exc:
        raise NotAModel(f"cannot inspect a .tflite file: {exc} (install ai-edge-litert)") from None
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with its own text
        raise NotAModel(f"LiteRT cannot load it: {_first_line(exc)}") from None
    return ModelIO([_tflite_spec(d) for d in inputs], [_tflite_spec(d) for d in outputs])


def _tflite_spec(detail: dict[str, Any]) -> TensorSpec:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    dtype = getattr(detail["dtype"], "__name__", str(detail["dtype"]))
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantization = Quantization(scale=scale, zero_point=zero_point) if scale else None
    return TensorSpec(
        name=detail["name"],
        shape=[int(d) if d > 0 else -1 for d in shape],
        datatype=DATATYPE_BY_NUMPY.get(dtype, "BYTES"),
        quantization=quantization,
    )


ONNX_TYPES = {
    "float": "FP32", "float16": "FP16", "double": "FP64", "bool": "BOOL", "string": "BYTES",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
}  # fmt: skip


def inspect_onnx(path: Path) -> ModelIO:
    """The tensors ONNX Runtime reports for a ``.onnx`` file (NotAModel if it cannot load it)."""
    try:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # its own errors come back as the exception
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs, outputs = session.get_inputs(), session.get_outputs()
    except ImportError as exc:
        raise NotAModel(f"cannot inspect an .onnx file: {exc} (install onnxruntime)") from None
    except Exception as exc:  # onnxruntime's exceptions derive from Exception only
        raise NotAModel(f"ONNX Runtime cannot load it: {_first_line(exc)}") from None
    return ModelIO([_onnx_spec(t) for t in inputs], [_onnx_spec(t) for t in outputs])


def _onnx_spec(arg: Any) -> TensorSpec:
    kind = str(arg.type).removeprefix("tensor(").removesuffix(")")
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    return TensorSpec(
        name=arg.name,
        shape=shape,
        datatype=ONNX_TYPES.get(kind, "BYTES"),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
