"""sd_notify against a real AF_UNIX datagram socket, and the real agent process talking to it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.systemd import Notifier, socket_address, watchdog_interval
from tests.e2e.processes import AgentProcess, wait_until


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound where systemd's NOTIFY_SOCKET would be."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/systemd/notify", "\0/org/systemd/notify"),
        ("", None),
        ("vsock:2:1234", None),
    ],
)
def test_socket_address(value: str, address: str | None) -> None:
    assert socket_address(value) == address


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(env, pid=42) == interval


def test_ready_and_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("listening on 127.0.0.1:8500")
    assert receive(sock) == "READY=1\nSTATUS=listening on 127.0.0.1:8500"
    assert notifier.stopping()
    assert receive(sock) == "STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"edgefleet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive(sock) == "READY=1"


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000"})
    assert not notifier.enabled
    assert notifier.interval is None
    assert not notifier.ready()


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready()


async def test_watchdog_pings_from_the_event_loop(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
    task = asyncio.create_task(notifier.watchdog())
    loop = asyncio.get_running_loop()
    pings = [(await loop.sock_recv(sock, 4096)).decode() for _ in range(3)]
    task.cancel()
    assert pings == ["WATCHDOG=1"] * 3


async def test_watchdog_returns_when_not_asked_for(listener: tuple[socket.socket, str]) -> None:
    await asyncio.wait_for(Notifier({"NOTIFY_SOCKET": listener[1]}).watchdog(), timeout=30)


@pytest.mark.e2e
@pytest.mark.slow
def test_agent_process_notifies_ready_watchdog_and_stopping(
    listener: tuple[socket.socket, str],
    broker_url: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    agent = AgentProcess(broker_url, unique, tmp_path)
    agent.start()  # returns once /v2/health/ready answers
    try:
        first = receive(sock)
        assert first.startswith("READY=1\nSTATUS=listening on 127.0.0.1:"), agent.log()
        wait_until("a watchdog ping", lambda: receive(sock) == "WATCHDOG=1", 30, agent)
    finally:
        assert agent.stop() == 0, agent.log()
    seen = []
    sock.settimeout(0)
    try:
        while True:
            seen.append(receive(sock))
    except BlockingIOError:
        pass
    assert "STOPPING=1" in seen, agent.log()
