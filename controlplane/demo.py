"""``scripts/demo``: the whole system on this one machine.

Starts a broker (the ``mosquitto`` binary when it is installed, otherwise the embedded Python
broker, which speaks MQTT 3.1.1 only), the control plane, and a simulated fleet, each as its own
process; waits until the API lists the whole fleet online; prints the URLs; and stops everything in
order (fleet, control plane, broker) on Ctrl-C or after ``--duration`` seconds.

The fleet is started with ``python -m agent.simulator`` as a separate process: the control plane
never imports the agent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from controlplane.auth import local as accounts
from controlplane.auth.credentials import generate_password
from controlplane.broker import find_mosquitto
from controlplane.cli import serve_argv
from controlplane.errors import Conflict
from controlplane.identities import demo as secure_demo

REPO = Path(__file__).resolve().parents[1]


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` if it is free on ``host``, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            bound: int = s.getsockname()[1]
            return bound
    raise OSError("no free port")


class Stack:
    """The demo's processes, started in order and stopped in reverse."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{tail}")

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every process's log: what a timeout report needs to be understood."""
        parts = []
        for name, _ in self.procs:
            text = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if name != "broker" else signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def wait_for(what: str, check: Any, stack: Stack, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check()
        with contextlib.suppress(httpx.HTTPError):
            value = check()
            if value:
                return value
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}\n{stack.log_tails()}")


def online_devices(api: str, prefix: str, headers: dict[str, str] | None = None) -> int:
    devices = httpx.get(
        f"{api}/api/v1/devices", params={"state": "online"}, headers=headers, timeout=5
    ).json()
    items = devices["devices"] if isinstance(devices, dict) else devices
    return sum(1 for d in items if str(d["id"]).startswith(prefix))


def results_stored(api: str, headers: dict[str, str] | None = None) -> int:
    response = httpx.get(f"{api}/api/v1/results", params={"limit": 1}, headers=headers, timeout=5)
    body = response.json()
    return int(body.get("total", len(body.get("results", []))))


def run(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir.resolve()
    if workdir.exists() and not args.keep:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    broker_port = free_port(args.broker_port)
    broker_url = f"mqtt://127.0.0.1:{broker_port}"
    http_host, _, http_port = args.listen.rpartition(":")
    listen = f"{http_host}:{free_port(int(http_port), http_host)}"
    api = f"http://{listen}"
    mosquitto = None if args.embedded_broker else find_mosquitto()
    secure = None
    if args.secure:  # mutual TLS with a CA made for this run (controlplane/identities/demo.py)
        if mosquitto is None:
            print(
                "demo: error: --secure needs mosquitto (apt-get install mosquitto)", file=sys.stderr
            )
            return 2
        secure = secure_demo.setup(workdir, broker_port)
        broker_url = secure.url

    stack = Stack(workdir)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        broker_argv = [
            python,
            "-m",
            "controlplane.broker",
            "--port",
            str(broker_port),
            "--workdir",
            str(workdir / "broker"),
        ]
        if mosquitto is None:
            broker_argv.append("--embedded")
        stack.spawn(
            "broker", secure.broker_argv(mosquitto) if secure and mosquitto else broker_argv
        )
        kind = f"mosquitto ({mosquitto})" if mosquitto else "embedded amqtt broker (MQTT 3.1.1)"
        kind += ", mutual TLS, per-device ACL" if secure else ""
        print(f"broker:        {broker_url}  [{kind}]", flush=True)
        wait_for("the broker", lambda: _listening(broker_port), stack, 30)

        # amqtt speaks only MQTT 3.1.1 and never answers a v5 CONNECT that has properties: say so
        # instead of letting every client find out (a 5 s CONNACK timeout each, more on a busy box).
        protocol = "3.1.1" if mosquitto is None else "auto"
        stack.spawn(
            "controlplane",
            serve_argv(
                broker_url,
                listen,
                workdir / "controlplane",
                "--mqtt-protocol",
                protocol,
                *(secure.serve_flags() if secure else []),
            ),
        )
        wait_for(
            "the control plane",
            lambda: httpx.get(f"{api}/healthz", timeout=2).is_success,
            stack,
            60,
        )
        print(f"control plane: {api}", flush=True)
        password, token = make_admin(workdir / "controlplane")
        auth = {"Authorization": f"Bearer {token}"}
        print(f"console:       {api}/login  user admin, password {password}", flush=True)
        print(f"api token:     export EDGEFLEET_TOKEN={token}  (both shown once)", flush=True)
        release_key = workdir / "release.pub"  # the simulated devices trust this control plane
        release_key.write_text(
            httpx.get(f"{api}/api/v1/keys/release", timeout=5).json()["public_key"]
        )

        if secure:
            issued = secure.issue_fleet(api, args.devices, auth)
            print(f"certificates:  {issued} devices, in {secure.certs}", flush=True)
        stack.spawn(
            "fleet",
            [
                python,
                "-m",
                "agent.simulator",
                "--broker",
                broker_url,
                "--devices",
                str(args.devices),
                "--rate",
                str(args.rate),
                "--id-prefix",
                "demo",
                "--tag",
                "site=demo",
                "--telemetry-interval",
                "2",
                "--data-dir",
                str(workdir / "fleet"),
                "--release-key",
                str(release_key),
                "--mqtt-protocol",
                protocol,
                *(secure.fleet_flags() if secure else []),
            ],
        )
        started = time.monotonic()
        wait_for(
            f"{args.devices} devices online",
            lambda: online_devices(api, "demo-", auth) >= args.devices,
            stack,
            90,
        )
        wait_for("the first results", lambda: results_stored(api, auth) > 0, stack, 60)
        print(
            f"fleet:         {args.devices} simulated devices online after "
            f"{time.monotonic() - started:.1f}s\n",
            flush=True,
        )
        if args.rollout:
            rollout_id = start_rollout(python, api, token)
            print(
                f"rollout:       digits-edge 2.0.0 pushed and rolling out in 3 waves "
                f"(edgefleet rollout status {rollout_id} --server {api})\n",
                flush=True,
            )
        for label, path in [
            ("devices", "/api/v1/devices"),
            ("rollouts", "/api/v1/rollouts"),
            ("one device", "/api/v1/devices/demo-000"),
            ("results", "/api/v1/results?limit=20"),
            ("metrics", "/metrics"),
            ("health", "/healthz"),
        ]:
            print(f"  {label:<11} {api}{path}", flush=True)
        print(f"\nlogs in {workdir}; press Ctrl-C to stop.", flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stack.check()
            stop.wait(5)
            with contextlib.suppress(httpx.HTTPError):
                print(
                    f"  {online_devices(api, 'demo-', auth)} devices online, "
                    f"{results_stored(api, auth)} results stored",
                    flush=True,
                )
        return 0
    except RuntimeError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping: fleet, control plane, broker ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)


def make_admin(data_dir: Path) -> tuple[str, str]:
    """The demo's admin ``admin``, made through the data directory as an operator would make the
    first one: a generated password for the console and an API token for the CLI calls."""
    password = generate_password()
    try:
        accounts.create_user(data_dir, "admin", "admin", password)
    except Conflict:  # --keep: the admin of the last run
        accounts.set_password(data_dir, "admin", password)
    token, _ = accounts.create_token(data_dir, "admin", name="demo")
    return password, token


def start_rollout(python: str, api: str, token: str) -> str:
    """Push models/rollout/good.tflite as digits-edge 2.0.0 with the CLI and roll it out to the
    demo fleet (waves of 10, 50, 100 %, 15 s of bake each): what an operator does."""
    release = REPO / "models" / "rollout" / "good"
    steps = [
        ["models", "push", "digits-edge", "2.0.0", "--artifact", f"cpu={release}.tflite",
         "--manifest", f"{release}.json"],
        ["rollout", "start", "digits-edge:2.0.0", "--select", "site=demo", "--waves",
         "10%,50%,100%", "--bake", "15s", "--min-sample", "20"],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(
            [python, "-m", "controlplane", *step, "--server", api, "--json"],
            capture_output=True, text=True, cwd=REPO, check=False, stdin=subprocess.DEVNULL,
            env={**os.environ, "EDGEFLEET_TOKEN": token},
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"edgefleet {' '.join(step[:2])} failed: {done.stderr.strip()}")
    rollout_id: str = json.loads(done.stdout)["id"]
    return rollout_id


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=20, help="simulated devices (default 20)")
    p.add_argument("--rate", type=float, default=2.0, help="inferences per second per device")
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        help="control plane address (another port is taken if it is busy)",
    )
    p.add_argument("--broker-port", type=int, default=0, help="broker port (default: a free one)")
    p.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded Python broker even when mosquitto is installed",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--workdir", type=Path, default=REPO / ".demo", help="data and logs")
    p.add_argument("--keep", action="store_true", help="keep the data of the last run")
    p.add_argument(
        "--secure",
        action="store_true",
        help="mutual TLS: a CA for the run, the broker's generated mTLS config and ACL, a "
        "certificate per simulated device (needs mosquitto)",
    )
    p.add_argument(
        "--no-rollout",
        dest="rollout",
        action="store_false",
        help="do not push digits-edge 2.0.0 and roll it out to the demo fleet",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
