"""The worker transport (agent/supervisor/channel.py): framing on a real socket pair, tensors
through a real shared memory arena, descriptors passed with SCM_RIGHTS."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest

from agent.supervisor import channel


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_messages_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sent = ("i", [("x", "<f4", (1, 2), 0)], 64, None, b"raw", 1.5)
    channel.send(a, sent)
    channel.send(a, ("q",))
    assert channel.recv(b, 5) == (sent, [])
    assert channel.recv(b, 5) == (("q",), [])


def test_recv_times_out_and_sees_the_end_of_the_stream(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    with pytest.raises(TimeoutError):
        channel.recv(b, 0.05)
    a.close()
    with pytest.raises(channel.ChannelClosed):
        channel.recv(b, 5)


def test_a_truncated_message_is_a_closed_channel(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(channel.HEADER.pack(100) + b"only part")
    a.close()
    with pytest.raises(channel.ChannelClosed, match="mid-message"):
        channel.recv(b, 5)


def test_an_arena_descriptor_travels_with_its_message(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    arena = channel.Arena.create(1000)
    assert arena.size >= 1 << 16 and arena.fd is not None
    arena.mm[:5] = b"hello"
    channel.send(a, ("a", arena.size), fds=[arena.fd])
    arena.release_fd()
    message, fds = channel.recv(b, 5)
    assert message == ("a", arena.size) and len(fds) == 1
    theirs = channel.Arena.attach(fds[0], message[1])
    assert theirs.mm[:5] == b"hello"
    theirs.mm[5:8] = b"!!!"  # shared both ways
    assert arena.mm[:8] == b"hello!!!"
    theirs.close()
    arena.close()


def test_pack_and_unpack_tensors_through_the_arena() -> None:
    arena = channel.Arena.create(1 << 16)
    rng = np.random.default_rng(0)
    arrays = {
        "image": rng.random((1, 8, 8, 1), dtype=np.float32),
        "ids": np.arange(7, dtype=np.int64).reshape(1, 7),
        "quantised": rng.integers(-128, 127, (3, 5), dtype=np.int8),
        "text": np.array([b"ab", b"", b"xyz"], dtype=object),
    }
    entries, end = channel.pack(arrays, arena, 0)
    assert [e[3] for e in entries[:3]] == [0, 256, 320]  # 64-byte aligned offsets
    assert entries[3][3] == [b"ab", b"", b"xyz"]  # objects inline
    assert end == channel.aligned(256 + 56) + 64
    back = channel.unpack(entries, arena, copy=True)
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
    views = channel.unpack(entries[:1], arena, copy=False)
    arena.mm[:4] = b"\0\0\0\0"  # a view sees the arena change; the copy does not
    assert views["image"].flat[0] == 0.0 and back["image"].flat[0] == arrays["image"].flat[0]
    del views
    arena.close()


def test_an_array_that_does_not_fit_goes_inline() -> None:
    arena = channel.Arena.create(1 << 16)
    big = np.arange(20_000, dtype=np.float32)  # 80 KB > 64 KiB
    small = np.ones(4, np.float32)
    entries, end = channel.pack({"big": big, "small": small}, arena, 0)
    assert isinstance(entries[0][3], bytes) and entries[1][3] == 0
    assert end == 64
    back = channel.unpack(entries, arena, copy=True)
    np.testing.assert_array_equal(back["big"], big)
    np.testing.assert_array_equal(back["small"], small)
    assert channel.layout_bytes({"big": big, "small": small}) == channel.aligned(80_000) + 64
    arena.close()
