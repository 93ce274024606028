"""The MQTT broker for the demo: the ``mosquitto`` binary when it is installed, else amqtt.

``scripts/demo`` runs ``python -m controlplane.broker --port P --workdir DIR [--embedded]``. With
Mosquitto the process *becomes* mosquitto (``exec``) with a generated 2.0-syntax config, so a
SIGTERM reaches the broker itself. Without it (or with ``--embedded``) an amqtt broker runs in this
process until SIGTERM or Ctrl-C. amqtt, the maintained pure-Python broker, speaks MQTT 3.1.1 only:
the agent and the control plane then fall back from v5 and say so in their logs.

Both listen on 127.0.0.1 only and allow anonymous clients: this is the demo's broker, not a
production one (provisioning/ writes those configs, with TLS and per-device ACLs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The path of the ``mosquitto`` binary (on PATH or in an sbin directory), or None."""
    for name in MOSQUITTO_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def mosquitto_config(
    port: int,
    *,
    host: str = "127.0.0.1",
    max_queued_messages: int = 100_000,
    max_inflight_messages: int = 100,
    persistence_dir: Path | None = None,
) -> str:
    """A Mosquitto 2.0 config for the demo and the tests.

    ``max_queued_messages`` is large because Mosquitto silently drops QoS 1 messages for a
    subscriber that falls further behind than that (the default, 1000, loses a burst). With
    ``persistence_dir`` the broker keeps sessions across its own restarts, as a production broker
    must: otherwise a restarted broker forgets the control plane's subscription. Mosquitto then
    runs as the current user (started as root it would switch to ``mosquitto``, which may not
    write ``persistence_dir``).
    """
    persistence = (
        [
            "persistence true",
            f"persistence_location {persistence_dir}/",
            f"user {getpass.getuser()}",
        ]
        if persistence_dir is not None
        else ["persistence false"]
    )
    return "\n".join(
        [
            f"listener {port} {host}",
            "allow_anonymous true",
            *persistence,
            f"max_queued_messages {max_queued_messages}",
            f"max_inflight_messages {max_inflight_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


def write_mosquitto_config(workdir: Path, port: int, **options: Any) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "mosquitto.conf"
    path.write_text(mosquitto_config(port, **options))
    return path


def start_mosquitto(
    workdir: Path, port: int, binary: str | None = None, **options: Any
) -> subprocess.Popen[bytes]:
    """Write the config into ``workdir`` and start mosquitto; its log goes to ``mosquitto.log``."""
    binary = binary or find_mosquitto()
    if binary is None:
        raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
    config = write_mosquitto_config(workdir, port, **options)
    with (workdir / "mosquitto.log").open("ab") as log_file:
        return subprocess.Popen(
            [binary, "-c", str(config)], stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL
        )


def amqtt_config(host: str, port: int) -> dict[str, Any]:
    """amqtt 0.12's config: one TCP listener, anonymous clients, no $SYS or packet-log plugins."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker:
    """An amqtt broker in this process's event loop (MQTT 3.1.1 only)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker  # the demo extra; never needed by the control plane

        self._broker = Broker(amqtt_config(self.host, self.port))
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()


async def run_embedded_broker(host: str, port: int) -> EmbeddedBroker:
    """Start an embedded broker and return it (call ``stop()`` when done)."""
    broker = EmbeddedBroker(host, port)
    await broker.start()
    return broker


async def _serve_embedded(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = await run_embedded_broker(host, port)
    print(f"embedded amqtt broker (MQTT 3.1.1) on {broker.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.broker", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--workdir", type=Path, default=Path("broker"), help="config and log (mosquitto)"
    )
    p.add_argument("--embedded", action="store_true", help="use amqtt even if mosquitto exists")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port must be between 1 and 65535, not {args.port}")
    binary = None if args.embedded else find_mosquitto()
    if binary is not None:
        config = write_mosquitto_config(
            args.workdir, args.port, host=args.host, persistence_dir=args.workdir.resolve()
        )
        sys.stdout.flush()
        os.execv(binary, [binary, "-c", str(config)])
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_embedded(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
