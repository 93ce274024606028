"""Tell systemd how the agent is doing: the sd_notify protocol, without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a datagram socket, ``@`` meaning Linux's
abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. The agent sends ``READY=1`` once
its API listens, ``WATCHDOG=1`` every half watchdog period from the event loop itself (so a stuck
loop stops the pings and systemd restarts the agent) and ``STOPPING=1`` on shutdown. Without
``$NOTIFY_SOCKET`` (a shell, a container) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("edgefleet.agent.systemd")


def socket_address(value: str) -> str | None:
    """The address to send to: a path, or an abstract name (``@name`` becomes ``\\0name``)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other families are not used on the devices we target


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when no watchdog is asked for.

    ``$WATCHDOG_PID``, when set, names the process systemd watches; a child must not ping for it.
    """
    watched = env.get("WATCHDOG_PID")
    if watched and watched != str(pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages; does nothing when systemd did not ask for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env, os.getpid()) if self.address else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send ``state`` (``KEY=value`` lines); True if it was sent. Failures are logged only."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping forever from the event loop (cancel to stop); returns at once without a watchdog."""
        if self.interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.interval)
