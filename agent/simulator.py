"""``edgefleet simulate``: a fleet of real agents in one process, for demos, tests and benchmarks.

Each simulated device is a real :class:`agent.daemon.Agent` with its own id, its own SQLite outbox
and its own MQTT connection; they share the loaded model (one interpreter), and each sends real
images from the digits test set through real inference at its own rate. Nothing here is faked but
the camera.

Deployments (``--release-key``): each device has its own models dict and its own slots under
``--data-dir/ID/models``; it downloads and verifies its own copy of an artifact, while the loaded
models are shared through one :class:`~agent.deploy.cache.ModelCache` keyed by release and
artifact SHA-256, so a thousand devices on the same release hold one interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.config import validate
from agent.daemon import Agent, load_models
from agent.deploy.cache import ModelCache
from agent.deploy.keys import key_from_flag
from agent.errors import AgentError
from protocol.errors import ProtocolError
from protocol.wakeup import wait_event

log = logging.getLogger("edgefleet.simulator")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "digits" / "edge_fp32.tflite"
DEFAULT_IMAGES = REPO / "models" / "digits" / "testset.npz"


@dataclass(frozen=True)
class Sample:
    png: bytes
    label: int


def load_samples(path: Path, upscale: int = 4) -> list[Sample]:
    """The test-set digits as PNG files (upscaled, so the agent's resize step does real work)."""
    with np.load(path) as data:
        images, labels = data["images"], data["labels"]
    samples = []
    for image, label in zip(images, labels, strict=True):
        buf = io.BytesIO()
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L")
        pil.resize((8 * upscale, 8 * upscale), Image.Resampling.NEAREST).save(buf, format="PNG")
        samples.append(Sample(buf.getvalue(), int(label)))
    return samples


@dataclass
class Tally:
    inferences: int = 0
    correct: int = 0
    errors: int = 0


def device_ids(prefix: str, count: int, first: int = 0, total: int | None = None) -> list[str]:
    """Ids ``first .. first+count-1`` of a fleet of ``total`` (default ``count``), zero-padded
    alike across the fleet so that they sort in order."""
    width = max(3, len(str((total if total is not None else first + count) - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(first, first + count)]


PER_PROCESS = 120
"""Devices one simulator process runs. paho-mqtt waits on its sockets with ``select()``, which
cannot watch a file descriptor numbered 1024 or more; each simulated device holds about six (its
MQTT socket and wake-up pair, its outbox database, WAL and shared memory), so past ~160 devices in
one process connections silently stall. Bigger fleets are split across worker processes."""


def worker_argvs(
    argv: Sequence[str], devices: int, per_process: int = PER_PROCESS
) -> list[list[str]]:
    """The command lines of the worker processes for a fleet of ``devices``: the same flags, each
    with its slice of the ids (argparse keeps the last of a repeated flag)."""
    out = []
    for first in range(0, devices, per_process):
        count = min(per_process, devices - first)
        out.append(
            [
                sys.executable, "-m", "agent.simulator", *argv,
                "--devices", str(count), "--first-index", str(first),
                "--fleet-size", str(devices), "--seed-offset", str(first),
            ]
        )  # fmt: skip
    return out


def run_workers(argvs: list[list[str]]) -> int:
    """Run the workers until they end, passing SIGINT and SIGTERM on; the worst exit status."""
    procs = [subprocess.Popen(a) for a in argvs]

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return max(proc.wait() for proc in procs)


async def drive(
    agent: Agent,
    model: str,
    samples: Sequence[Sample],
    rate: float,
    tally: Tally,
    rng: random.Random,
) -> None:
    """Send images at ``rate`` per second on average (exponential gaps, so devices do not march)."""
    await asyncio.sleep(rng.random() / rate)
    while True:
        sample = samples[rng.randrange(len(samples))]
        try:
            output = await agent.infer_image(model, sample.png)
        except AgentError as exc:
            tally.errors += 1
            log.warning("%s: inference failed: %s", agent.device_id, exc)
        else:
            tally.inferences += 1
            top = output.result.classes[0] if output.result.classes else None
            if top is not None and top.index == sample.label:
                tally.correct += 1
        await asyncio.sleep(rng.expovariate(rate))


STOP_TIMEOUT_S = 30.0
START_BATCH = 25
"""Devices that connect at once. A thousand MQTT connects from one process at the same moment
queue their CONNACKs behind each other past the connect timeout, and the devices that time out
retry and add to the storm (measured: 30,000 connects in two minutes, most devices never up)."""


async def start_in_batches(agents: Sequence[Agent], batch: int = START_BATCH) -> None:
    """Start the agents ``batch`` at a time, each batch once it is connected (or after 10 s; with
    no broker at all the rest start at once and connect when it comes)."""
    waiting = True
    for i in range(0, len(agents), batch):
        group = agents[i : i + batch]
        for agent in group:
            await agent.start()
        if waiting:
            outcomes = await asyncio.gather(
                *(a.client.wait_connected(10) for a in group), return_exceptions=True
            )
            waiting = any(o is None for o in outcomes)


def device_tls(args: argparse.Namespace, device_id: str) -> dict[str, Any]:
    """A device's ``[tls]`` settings: the CA, and its own certificate from ``--tls-cert-dir``."""
    tls: dict[str, Any] = {}
    if args.tls_ca_file is not None:
        tls["ca_file"] = str(args.tls_ca_file)
    if args.tls_cert_dir is not None:
        tls["cert_file"] = str(args.tls_cert_dir / f"{device_id}.pem")
        tls["key_file"] = str(args.tls_cert_dir / f"{device_id}.key")
    return {"tls": tls} if tls else {}


async def simulate(args: argparse.Namespace) -> Tally:
    base = {
        "broker": args.broker,
        "mqtt_protocol": args.mqtt_protocol,
        "data_dir": str(args.data_dir),
        "models": [{"path": str(args.model)}],
        "backends": args.backends.split(","),
        "tags": dict(t.split("=", 1) for t in args.tag or []),
        "uplink": {"telemetry_interval_s": args.telemetry_interval},
        "outbox": {"synchronous": args.synchronous},
    }
    ids = device_ids(args.id_prefix, args.devices, args.first_index, args.fleet_size)
    first = validate({**base, "device_id": ids[0], **device_tls(args, ids[0])}, "simulate")
    release_key = key_from_flag(args.release_key) if args.release_key else None
    models = load_models(first)
    model = next(iter(models))
    samples = load_samples(args.images)
    cache = ModelCache()
    for name, served in models.items():
        cache.adopt(f"cfg:{name}", served, refs=len(ids))
    agents = []
    for device_id in ids:
        settings = validate(
            {**base, "device_id": device_id, **device_tls(args, device_id)}, "simulate"
        )
        agents.append(
            Agent(
                settings,
                models,
                outbox_path=args.data_dir / device_id / "outbox.db",
                release_key=release_key,
                cache=cache,
                models_dir=args.data_dir / device_id / "models",
            )
        )
    for agent in agents:
        (args.data_dir / agent.device_id).mkdir(parents=True, exist_ok=True)
    await start_in_batches(agents)
    log.info(
        "simulating %d devices at %.2f inferences/s each against %s",
        len(agents),
        args.rate,
        args.broker,
    )
    print(f"simulating {len(agents)} devices ({ids[0]} .. {ids[-1]}) -> {args.broker}", flush=True)
    tally = Tally()
    rng = random.Random(args.seed + args.seed_offset)
    drivers = (
        [
            asyncio.create_task(
                drive(a, model, samples, args.rate, tally, random.Random(rng.random()))
            )
            for a in agents
        ]
        if args.rate > 0
        else []
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await wait_event(stop, args.duration)
    for task in drivers:
        task.cancel()
    await asyncio.gather(*drivers, return_exceptions=True)
    stops = [asyncio.ensure_future(a.stop()) for a in agents]
    _, stuck = await asyncio.wait(stops, timeout=STOP_TIMEOUT_S)
    if stuck:  # seen once at 1,000 devices with the broker gone: never leave a process behind
        log.error("%d devices did not stop within %ss; leaving them", len(stuck), STOP_TIMEOUT_S)
        for task in stuck:
            task.cancel()
    await cache.drain()
    cache.close_all()
    for served in models.values():
        served.close()
    elapsed = time.monotonic() - started
    accuracy = tally.correct / tally.inferences if tally.inferences else 0.0
    print(
        f"simulated {tally.inferences} inferences in {elapsed:.1f}s on {len(agents)} devices "
        f"(accuracy {accuracy:.3f}, errors {tally.errors})",
        flush=True,
    )
    return tally


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefleet simulate", description=__doc__.splitlines()[0])
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    p.add_argument("--devices", type=int, default=10, help="how many devices (default 10)")
    p.add_argument("--rate", type=float, default=1.0, help="inferences per second per device")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: forever)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model every device serves")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=".npz with images, labels")
    p.add_argument("--data-dir", type=Path, default=Path(".simulator"), help="outboxes go here")
    p.add_argument("--id-prefix", default="sim", help="device ids are PREFIX-000, PREFIX-001, ...")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag on every device")
    p.add_argument(
        "--release-key",
        metavar="TEXT|FILE",
        help="the control plane's release key (ed25519:...) or a file holding it; "
        "without it deployments are refused",
    )
    p.add_argument("--backends", default="litert,tflite-runtime", help="backend priority")
    p.add_argument("--mqtt-protocol", choices=["auto", "5", "3.1.1"], default="auto")
    p.add_argument(
        "--tls-ca-file", type=Path, metavar="PEM", help="fleet CA for an mqtts:// broker"
    )
    p.add_argument(
        "--tls-cert-dir",
        type=Path,
        metavar="DIR",
        help="each device's certificate and key, DIR/ID.pem and DIR/ID.key (mutual TLS)",
    )
    p.add_argument("--telemetry-interval", type=float, default=5.0, help="seconds")
    p.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="NORMAL",
        help="outbox durability (NORMAL: simulated devices need not survive power loss)",
    )
    p.add_argument("--seed", type=int, default=0)
    # set by the parent for its worker processes (see PER_PROCESS)
    p.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fleet-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed-offset", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.devices < 1 or args.rate < 0:
        print("edgefleet simulate: error: --devices must be >= 1 and --rate >= 0", file=sys.stderr)
        return 2
    for tag in args.tag or []:
        if "=" not in tag:
            print(f"edgefleet simulate: error: --tag {tag!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
    if args.devices > PER_PROCESS and args.fleet_size is None:
        return run_workers(worker_argvs(list(sys.argv[1:] if argv is None else argv), args.devices))
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(simulate(args))
    except (AgentError, ProtocolError, OSError, ValueError) as exc:
        print(f"edgefleet simulate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
