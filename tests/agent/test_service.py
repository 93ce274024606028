"""The systemd unit: checked by the real `systemd-analyze verify`, written by install-service."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.main import main
from agent.service import (
    DEFAULT_EXEC,
    SYSTEM_UNIT_DIR,
    UNIT_NAME,
    agent_executable,
    install_problem,
    render_unit,
)

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "systemd" / UNIT_NAME


def service_section(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return dict(parser["Service"])


def test_committed_unit_is_what_install_service_writes() -> None:
    assert COMMITTED.read_text() == render_unit(), "regenerate deploy/systemd from render_unit()"


def test_unit_has_the_hardening_and_supervision_asked_for() -> None:
    service = service_section(render_unit())
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30"
    assert service["User"] == "edgefleet"
    assert service["StateDirectory"] == "edgefleet"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "NoNewPrivileges": "true",
        "PrivateTmp": "true",
    }.items():
        assert service[key] == value
    assert "plugdev" in service["SupplementaryGroups"].split()
    assert service["ExecStart"] == f"{DEFAULT_EXEC} --config /etc/edgefleet/agent.toml"


@pytest.mark.parametrize(
    ("exec_path", "config", "user"),
    [("/usr/bin/edgefleet agent", "/etc/a.toml", "edgefleet"), ("/bin/x", "/etc/a.toml", "")],
)
def test_render_refuses_values_that_would_break_the_unit(
    exec_path: str, config: str, user: str
) -> None:
    with pytest.raises(ValueError, match="no whitespace"):
        render_unit(Path(exec_path), Path(config), user)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    executable = agent_executable()
    assert executable is not None, "the edgefleet-agent script is installed in the venv"
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(executable, tmp_path / "agent.toml"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    # Unknown keys and bad values are only warnings (exit 0): any line naming the unit fails too.
    complaints = [line for line in done.stderr.splitlines() if UNIT_NAME in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    """The check above is a real one: a unit whose ExecStart is missing is refused."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / UNIT_NAME
    unit.write_text(render_unit(tmp_path / "missing-agent"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0


@pytest.mark.parametrize(
    ("euid", "unit_dir", "dry_run", "problem"),
    [
        (0, SYSTEM_UNIT_DIR, False, None),
        (1000, SYSTEM_UNIT_DIR, False, "needs root"),
        (1000, SYSTEM_UNIT_DIR, True, None),
        (1000, Path("/tmp/units"), False, None),
    ],
)
def test_install_problem(euid: int, unit_dir: Path, dry_run: bool, problem: str | None) -> None:
    found = install_problem(euid, unit_dir, dry_run)
    assert found == problem if problem is None else problem in (found or "")


def test_dry_run_prints_the_unit_with_the_installed_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    code = main(["install-service", "--dry-run", "--config", str(config), "--user", "edge"])
    out = capsys.readouterr().out
    assert code == 0
    service = service_section(out)
    assert service["ExecStart"] == f"{agent_executable()} --config {config}"
    assert Path(sys.executable).parent.samefile(Path(service["ExecStart"].split()[0]).parent)
    assert service["User"] == "edge"
    assert not list(tmp_path.iterdir()), "a dry run writes nothing"


def test_install_into_a_unit_dir_says_what_to_run_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["install-service", "--unit-dir", str(tmp_path), "--user", "nobody"])
    out = capsys.readouterr().out
    assert code == 0
    written = (tmp_path / UNIT_NAME).read_text()
    assert service_section(written)["User"] == "nobody"
    assert "systemctl daemon-reload && systemctl enable --now edgefleet-agent" in out
    assert "useradd" not in out  # nobody exists


def test_unwritable_unit_dir_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["install-service", "--unit-dir", str(blocker / "units")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("edgefleet-agent install-service: error: cannot write ")
    assert len(err.strip().splitlines()) == 1
