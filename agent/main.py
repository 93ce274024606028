"""``edgefleet-agent``: the device daemon's command line.

``edgefleet-agent [flags]`` serves the configured models on the local API and uplinks results;
``edgefleet-agent simulate ...`` runs a simulated fleet (see :mod:`agent.simulator`);
``edgefleet-agent install-service ...`` writes the systemd unit (see :mod:`agent.service`).
``edgefleet-agent enroll --server URL --token T`` gets the device's certificate (see
:mod:`agent.identity.enroll`).
``edgefleet-agent rotate-key [flags]`` rotates the key of the inputs kept on disk, with the agent
stopped (see :mod:`agent.custody`).
Errors in the configuration or the model are reported in one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from agent import __version__, logs
from agent.api import create_app
from agent.config import AgentSettings, add_flags, load_settings
from agent.daemon import Agent, load_models
from agent.deploy.keys import load_release_key
from agent.errors import AgentError
from agent.identity.files import check_identity
from agent.identity.renewal import Renewer
from agent.systemd import Notifier
from agent.telemetry import HostProbe
from protocol.errors import ProtocolError

log = logging.getLogger("edgefleet.agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet-agent",
        description="Serve ML models on this device and send the results to the control plane. "
        "Run `edgefleet-agent simulate --help` for the fleet simulator and "
        "`edgefleet-agent install-service --help` for the systemd unit and "
        "`edgefleet-agent rotate-key --help` to rotate the key of the kept inputs.",
    )
    parser.add_argument("--version", action="version", version=f"edgefleet-agent {__version__}")
    add_flags(parser)
    return parser


async def serve(settings: AgentSettings) -> None:
    """Run until SIGINT or SIGTERM, then stop serving, publish offline and flush the outbox.

    SIGUSR1 makes the log one level more verbose, SIGUSR2 one level less (see agent.logs).
    """
    if not settings.models:
        raise AgentError("no model to serve: pass --model PATH or add [[models]] to the config")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    release_key = load_release_key(settings.deploy)
    check_identity(settings)  # [tls] cert_file must name this device_id
    models = load_models(settings)
    agent = Agent(settings, models, probe=HostProbe(settings.data_dir), release_key=release_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, logs.step, -1, "SIGUSR1")  # more verbose
    loop.add_signal_handler(signal.SIGUSR2, logs.step, 1, "SIGUSR2")  # less verbose
    await agent.start()
    app = create_app(
        agent.models,
        record=agent.record,
        stats=agent.stats,
        max_body_bytes=settings.max_body_bytes,
        on_inferred=agent.observe,
        offload=agent.offload if agent.offloader is not None else None,
        sample=agent.sample if agent.sampler is not None else None,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = settings.listen_address
    notifier = Notifier()  # systemd (Type=notify, WatchdogSec=); a no-op elsewhere
    pinger: asyncio.Task[None] | None = None
    renewing: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("listening on http://%s:%s (device %s)", host, bound, settings.device_id)
        notifier.ready(f"listening on {host}:{bound}")
        pinger = asyncio.create_task(notifier.watchdog())
        if settings.tls.renew_url is not None:  # renews the certificate before it expires
            renewing = asyncio.create_task(Renewer(settings).run(), name="renewal")
        await stop.wait()
        log.info("stopping")
    except OSError as exc:
        raise AgentError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        notifier.stopping()
        if pinger is not None:
            pinger.cancel()
        if renewing is not None:
            renewing.cancel()
        await runner.cleanup()
        await agent.stop()
        for served in agent.models.values():
            served.close()
        await agent.cache.drain()
        agent.cache.close_all()


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from agent.simulator import main as simulate

        return simulate(args_list[1:])
    if args_list[:1] == ["enroll"]:
        from agent.identity.enroll import main as enroll

        return enroll(args_list[1:])
    if args_list[:1] == ["install-service"]:
        from agent.service import main as install_service

        return install_service(args_list[1:])
    if args_list[:1] == ["rotate-key"]:
        from agent.custody import main as rotate_key

        return rotate_key(args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        settings = load_settings(args)
    except (AgentError, ProtocolError) as exc:
        print(f"edgefleet-agent: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format, settings.device_id)
    try:
        asyncio.run(serve(settings))
    except (AgentError, ProtocolError, ValueError) as exc:
        print(f"edgefleet-agent: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
