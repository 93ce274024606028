"""``edgefleet-agent install-service``: write the agent's systemd unit.

The unit text is built here (not read from ``deploy/``, which a wheel does not ship), so the unit a
device installs and ``deploy/systemd/edgefleet-agent.service`` are the same text; a test keeps them
equal. ``ExecStart=`` names the ``edgefleet-agent`` that is installed, by its real path.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

UNIT_NAME = "edgefleet-agent.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/edgefleet/agent.toml")
DEFAULT_USER = "edgefleet"
DEFAULT_EXEC = Path("/usr/local/bin/edgefleet-agent")

_UNIT = """\
# The edgefleet agent: serves ML models on this device and uplinks the results (docs/devices.md).
# Written by `edgefleet-agent install-service`; re-run it rather than editing this file.
[Unit]
Description=edgefleet agent (on-device ML inference)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
ExecStart={exec_path} --config {config}
Restart=on-failure
RestartSec=5
# The agent pings every WatchdogSec/2 from its event loop: a stuck loop gets it restarted.
WatchdogSec=30
TimeoutStopSec=30
User={user}
Group={user}
# plugdev: the Coral USB Edge TPU (libedgetpu's udev rule); video: the Jetson GPU.
SupplementaryGroups=plugdev video
# Outbox and model slots live in /var/lib/edgefleet (the agent's default data_dir).
StateDirectory=edgefleet
StateDirectoryMode=0750
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
NoNewPrivileges=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictSUIDSGID=true
LockPersonality=true

[Install]
WantedBy=multi-user.target
"""


def render_unit(
    exec_path: Path = DEFAULT_EXEC, config: Path = DEFAULT_CONFIG, user: str = DEFAULT_USER
) -> str:
    """The unit file text for these paths and this user."""
    for name, value in (("executable", str(exec_path)), ("config", str(config)), ("user", user)):
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"the {name} {value!r} must be non-empty and contain no whitespace")
    return _UNIT.format(exec_path=exec_path, config=config, user=user)


def install_problem(euid: int, unit_dir: Path, dry_run: bool) -> str | None:
    """Why installing cannot start, or None. Only the system unit directory needs root."""
    if dry_run:
        return None
    if euid != 0 and unit_dir.resolve() == SYSTEM_UNIT_DIR:
        return f"writing to {SYSTEM_UNIT_DIR} needs root: run it with sudo, or pass --unit-dir"
    return None


def agent_executable() -> Path | None:
    """The installed ``edgefleet-agent``: beside this interpreter first (a venv), then on PATH."""
    beside = Path(sys.executable).parent / "edgefleet-agent"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("edgefleet-agent")
    return Path(found).resolve() if found else None


def next_steps(user: str, config: Path) -> list[str]:
    steps = []
    try:
        pwd.getpwnam(user)
    except KeyError:
        steps.append(f"useradd --system --no-create-home --shell /usr/sbin/nologin {user}")
    if not config.is_file():
        steps.append(f"create {config} (see docs/agent.md for its settings)")
    steps.append("systemctl daemon-reload && systemctl enable --now edgefleet-agent")
    return steps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgefleet-agent install-service",
        description="Write the systemd unit that runs this agent as a service (docs/devices.md).",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="agent TOML file")
    parser.add_argument("--user", default=DEFAULT_USER, help="the user the agent runs as")
    parser.add_argument(
        "--unit-dir", type=Path, default=SYSTEM_UNIT_DIR, help="where to write the unit"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    problem = install_problem(os.geteuid(), args.unit_dir, args.dry_run)
    exec_path = agent_executable()
    if problem is None and exec_path is None:
        problem = "cannot find the edgefleet-agent executable: install the package first"
    if problem is None:
        try:
            unit = render_unit(exec_path or DEFAULT_EXEC, args.config.absolute(), args.user)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"edgefleet-agent install-service: error: {problem}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(unit)
        return 0
    target = args.unit_dir / UNIT_NAME
    try:
        target.write_text(unit)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"edgefleet-agent install-service: error: cannot write {target}: {reason}",
            file=sys.stderr,
        )
        return 2
    print(f"wrote {target}; now run:")
    for step in next_steps(args.user, args.config):
        print(f"  {step}")
    return 0
