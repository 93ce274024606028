"""``edgefleet``: settings from flags and TOML, clear errors, and ``serve`` as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from controlplane.cli import COMMANDS, build_parser, main
from controlplane.errors import ConfigError
from controlplane.settings import Settings, load_settings, parse_listen
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


# -- settings --------------------------------------------------------------------------------------


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "cp.toml"
    config.write_text(
        'broker = "mqtt://broker:1883"\nlisten = "0.0.0.0:9000"\ndata_dir = "/var/lib/cp"\n'
        "offline_after_s = 30\n"
    )
    settings = load_settings(config, {"listen": "127.0.0.1:9001", "client_id": None})
    assert settings.broker == "mqtt://broker:1883" and settings.listen == "127.0.0.1:9001"
    assert settings.data_dir == Path("/var/lib/cp") and settings.offline_after_s == 30
    assert settings.client_id == "edgefleet-controlplane", "a flag not given changes nothing"
    assert settings.listen_address == ("127.0.0.1", 9001)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"brokr": "mqtt://h:1"}, ["unknown setting `brokr`", "did you mean `broker`"]),
        ({}, ["missing setting `broker`", "--broker"]),
        ({"broker": "http://h:1"}, ["`broker`", "mqtt://host:port"]),
        ({"listen": "8080"}, ["`listen`", "host:port"]),
        ({"listen": "h:99999"}, ["`listen`"]),
        ({"offline_after_s": 0}, ["`offline_after_s`"]),
        ({"results_page_max": "many"}, ["`results_page_max`"]),
        ({"shared_subscription_group": "a/b"}, ["`shared_subscription_group`"]),
        ({"synchronous": "OFF"}, ["`synchronous`"]),
        ({"mqtt_protocol": "4"}, ["`mqtt_protocol`"]),
        ({"log_level": "chatty"}, ["`log_level`"]),
    ],
)
def test_bad_settings_name_the_key(data: dict[str, object], words: list[str]) -> None:
    full = {"broker": "mqtt://h:1", "data_dir": "d", **data} if data != {} else {"data_dir": "d"}
    if "brokr" in data:
        full.pop("broker")
    with pytest.raises(ConfigError) as info:
        load_settings(None, full)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("broker = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ["8080", ":8080", "host:", "host:http", "host:70000"]:
        with pytest.raises(ValueError, match="host:port"):
            parse_listen(bad)


@pytest.mark.parametrize("key", list(Settings.model_fields))
def test_every_setting_is_documented(key: str) -> None:
    assert f"| `{key}` |" in (DOCS / "controlplane.md").read_text(), f"document `{key}`"


def test_every_setting_has_a_flag() -> None:
    args = build_parser().parse_args(["serve", "--offline-after-s", "5", "--client-id", "x"])
    assert args.command == "serve" and args.offline_after_s == "5" and args.client_id == "x"
    for key in Settings.model_fields:
        assert hasattr(args, key)


# -- errors, in process ----------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def test_bad_flags_are_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = _run(capsys, "serve", "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in err
    code, err = _run(capsys, "launch")
    assert code == 2 and "invalid choice: 'launch'" in err
    code, err = _run(capsys)
    assert code == 2 and "serve" in err
    code, err = _run(capsys, "serve", "--data-dir", str(tmp_path))
    assert code == 1 and "missing setting `broker`" in err
    code, err = _run(capsys, "serve", "--broker", "mqtt://h:1", "--data-dir", str(tmp_path),
                     "--listen", "everywhere")  # fmt: skip
    assert code == 1 and "`listen`" in err


def test_a_busy_port_and_an_unusable_data_dir_are_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = _run(capsys, "serve", "--broker", "mqtt://127.0.0.1:1", "--data-dir",
                         str(tmp_path), "--listen", f"127.0.0.1:{port}")  # fmt: skip
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    (tmp_path / "file").write_text("")
    code, err = _run(capsys, "serve", "--broker", "mqtt://127.0.0.1:1", "--data-dir",
                     str(tmp_path / "file"), "--listen", f"127.0.0.1:{free_port()}")  # fmt: skip
    assert code == 1 and "cannot open the store" in err


def test_subcommands_come_from_the_registry() -> None:
    assert {"serve", "simulate"} <= set(COMMANDS)
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name in help_text


def test_the_control_plane_never_imports_the_agent() -> None:
    code = (
        "import sys, controlplane.cli, controlplane.app, controlplane.ingest;"
        "print(sorted(m for m in sys.modules if m == 'agent' or m.startswith('agent.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_simulate_hands_its_arguments_to_the_agent_simulator() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "controlplane", "simulate", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "edgefleet simulate" in out.stdout and "--devices" in out.stdout


# -- serve, as a real process ----------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_healthz_and_stops_cleanly(
    broker_url: str, tmp_path: Path, unique: str, stop: signal.Signals
) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "controlplane", "serve", "--broker", broker_url,
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
            "--client-id", f"cli-{unique}", "--session-expiry-s", "0"]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert health is not None and health.status_code == 200, log.read_text()
        assert health.json() == {"status": "ok", "store": "open", "mqtt": "connected"}
        proc.send_signal(stop)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert (tmp_path / "data" / "controlplane.db").is_file()
