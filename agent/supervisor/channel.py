"""The worker's transport: small control messages on a Unix socket, tensors in shared memory.

Both ends of a worker use this module. A control message is a tuple of plain values encoded with
:mod:`marshal` (fast, and unlike pickle it runs no code when decoded) behind a 4-byte length, so a
request is one ``send`` and a reply one ``recv``: about 65 µs for the round trip on the benchmark
machine. The tensors themselves never go through the socket: they are written into an
:class:`Arena`, an anonymous shared memory file (``memfd_create`` on Linux, an unlinked temporary
file elsewhere) that both processes map. It has no name, so an agent killed with SIGKILL leaves
nothing behind in ``/dev/shm`` and no resource-tracker process is needed (which
``multiprocessing.shared_memory`` would start in both processes). A larger arena is handed over
as a file descriptor on the socket (``SCM_RIGHTS``) when a request does not fit.

An entry describing a tensor is ``(name, dtype, shape, where)``: ``where`` is the byte offset in
the arena, or the raw bytes inline (an output that did not fit), or a list of Python objects
(``BYTES`` tensors, which have no fixed size).
"""

from __future__ import annotations

import marshal
import mmap
import os
import socket
import struct
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

HEADER = struct.Struct("<I")
ALIGN = 64
"""Tensors start on 64-byte boundaries (cache lines; any dtype's alignment)."""
MAX_MESSAGE = 256 * 2**20
Entry = tuple[str, str, tuple[int, ...], Any]


class ChannelClosed(Exception):
    """The other end closed the socket (it exited, or it was killed)."""


def send(sock: socket.socket, message: tuple[Any, ...], fds: Sequence[int] = ()) -> None:
    """Send one message (and file descriptors with it). OSError when the peer is gone."""
    payload = marshal.dumps(message)
    data = HEADER.pack(len(payload)) + payload
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def recv(sock: socket.socket, timeout: float | None) -> tuple[tuple[Any, ...], list[int]]:
    """One message and the descriptors that came with it, waiting at most ``timeout`` seconds
    (None: forever). TimeoutError when none came in time; ChannelClosed at end of stream."""
    sock.settimeout(timeout)
    head, fds, _, _ = socket.recv_fds(sock, HEADER.size, 4)
    if not head:
        raise ChannelClosed("the worker closed the connection")
    head += _exactly(sock, HEADER.size - len(head))
    (length,) = HEADER.unpack(head)
    if length > MAX_MESSAGE:
        raise ChannelClosed(f"message of {length} bytes is over the limit")
    message = marshal.loads(_exactly(sock, length))
    if not isinstance(message, tuple) or not message:
        raise ChannelClosed("malformed message")
    return message, fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ChannelClosed("the worker closed the connection mid-message")
        got += n
    return bytes(buf)


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def arena_size(nbytes: int) -> int:
    """An arena size for ``nbytes``: whole pages, at least 64 KiB (pages are only allocated when
    touched, so a generous size costs nothing until used)."""
    return max(1 << 16, (nbytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE)


class Arena:
    """A shared memory region both processes map; tensors are laid out in it by offset."""

    def __init__(self, mm: mmap.mmap, size: int, fd: int | None) -> None:
        self.mm = mm
        self.size = size
        self.fd = fd
        """The descriptor to hand to the other process (the creator's side), until released."""

    @classmethod
    def create(cls, size: int) -> Arena:
        size = arena_size(size)
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("edgefleet-worker", os.MFD_CLOEXEC)
        else:  # not Linux: an unlinked temporary file serves the same purpose
            fd = os.dup(tempfile.TemporaryFile().fileno())
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            raise
        return cls(mm, size, fd)

    @classmethod
    def attach(cls, fd: int, size: int) -> Arena:
        """Map an arena the other process created (``fd`` is closed: the map keeps it alive)."""
        try:
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(mm, size, None)

    def release_fd(self) -> None:
        """Close the descriptor once the other process has its own."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.release_fd()
        try:
            self.mm.close()
        except BufferError:  # a view is still alive somewhere; the GC unmaps it later
            pass


def layout_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Arena bytes the numeric arrays of ``arrays`` take, aligned."""
    return sum(aligned(a.nbytes) for a in arrays.values() if a.dtype.kind not in "OSU")


def pack(
    arrays: Mapping[str, np.ndarray], arena: Arena, start: int, limit: int | None = None
) -> tuple[list[Entry], int]:
    """Write ``arrays`` into ``arena`` from ``start`` up to ``limit`` (default: its end); entries
    describing them and the end offset.

    Numeric arrays that do not fit go inline as bytes, and strings/objects always do."""
    entries: list[Entry] = []
    offset = start
    limit = arena.size if limit is None else min(limit, arena.size)
    for name, array in arrays.items():
        shape = tuple(int(d) for d in array.shape)
        if array.dtype.kind in "OSU":
            entries.append((name, "|O", shape, [_plain(v) for v in array.ravel().tolist()]))
            continue
        if offset + array.nbytes > limit:
            entries.append((name, array.dtype.str, shape, np.ascontiguousarray(array).tobytes()))
            continue
        view = np.ndarray(shape, array.dtype, buffer=arena.mm, offset=offset)
        np.copyto(view, array, casting="no")
        del view
        entries.append((name, array.dtype.str, shape, offset))
        offset += aligned(array.nbytes)
    return entries, offset


def unpack(entries: Sequence[Entry], arena: Arena, *, copy: bool) -> dict[str, np.ndarray]:
    """The arrays ``entries`` describe: copies (``copy``, the caller keeps them) or views into
    the arena (valid until the next message)."""
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape, where in entries:
        if isinstance(where, int):
            array = np.ndarray(shape, np.dtype(dtype), buffer=arena.mm, offset=where)
            arrays[name] = array.copy() if copy else array
        elif isinstance(where, bytes):
            arrays[name] = np.frombuffer(where, np.dtype(dtype)).reshape(shape).copy()
        else:
            array = np.empty(len(where), dtype=object)
            array[:] = where
            arrays[name] = array.reshape(shape)
    return arrays


def _plain(value: Any) -> Any:
    """A marshal-able element of an object tensor (bytes or str as they are, others as str)."""
    return value if isinstance(value, bytes | str | int | float | bool) else str(value)
