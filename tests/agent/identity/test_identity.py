"""The agent's identity: the [tls] settings, the enroll command's refusals, when to renew
(enrolling and renewing against a real control plane: tests/e2e/test_enrollment.py)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from agent.config import add_flags, load_settings, validate
from agent.errors import ConfigError
from agent.identity.enroll import main as enroll_main
from agent.identity.files import check_identity, mqtt_tls
from agent.identity.renewal import MAX_SLEEP_S, REFUSED_RETRY_S, retry_delay, seconds_until_due
from protocol.enrollment import build_csr, new_device_key
from provisioning.ca import FleetCA
from provisioning.files import cert_pem, write_atomic


def test_tls_flags_and_their_checks() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(
        ["--device-id", "cam-1", "--tls-cert-file", "/c.pem", "--tls-key-file", "/c.key",
         "--tls-ca-file", "/ca.pem", "--tls-renew-url", "https://cp:8443/"]
    )  # fmt: skip
    settings = load_settings(args)
    assert str(settings.tls.cert_file) == "/c.pem" and settings.tls.renew_url == "https://cp:8443"
    files = mqtt_tls(settings)
    assert (str(files.ca_file), str(files.key_file)) == ("/ca.pem", "/c.key")
    with pytest.raises(ConfigError, match="set both cert_file and key_file"):
        validate({"device_id": "cam-1", "tls": {"cert_file": "/c.pem"}})
    with pytest.raises(ConfigError, match="renew_url needs cert_file"):
        validate({"device_id": "cam-1", "tls": {"renew_url": "https://cp"}})
    with pytest.raises(ConfigError, match="expected an https"):
        validate({"device_id": "cam-1", "tls": {"renew_url": "ftp://cp"}})
    with pytest.raises(ConfigError, match="tls.renw_at: unknown key"):
        validate({"device_id": "cam-1", "tls": {"renw_at": 0.5}})


def test_a_certificate_of_another_device_is_refused_at_start(tmp_path: Path) -> None:
    ca = FleetCA.create(tmp_path / "ca")
    cert = ca.sign_csr(build_csr("cam-2", new_device_key()), "cam-2", dt.timedelta(days=1))
    write_atomic(tmp_path / "c.pem", cert_pem(cert))
    settings = validate(
        {"device_id": "cam-1", "tls": {"cert_file": str(tmp_path / "c.pem"), "key_file": "/k"}}
    )
    with pytest.raises(ConfigError, match="certificate of 'cam-2', but device_id is 'cam-1'"):
        check_identity(settings)


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["--server", "https://cp", "--device-id", "cam-1"], {}, "no token"),
        (["--server", "ftp://cp", "--token", "t", "--device-id", "cam-1"], {}, "expected an https"),
        (["--server", "https://cp", "--token", "t"], {}, "device_id: required"),
        (["--server", "https://cp", "--device-id", "a/b"], {"EDGEFLEET_ENROLL_TOKEN": "t"},
         "invalid device id"),
    ],
)  # fmt: skip
def test_enroll_refuses_with_one_line(
    argv: list[str], env: dict[str, str], words: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("EDGEFLEET_ENROLL_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert enroll_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgefleet-agent enroll: error:") and words in err, err


def test_enroll_will_not_replace_an_identity_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "identity").mkdir()
    (tmp_path / "identity" / "device.pem").write_text("x")
    argv = ["--server", "https://cp", "--token", "t", "--device-id", "cam-1",
            "--data-dir", str(tmp_path)]  # fmt: skip
    assert enroll_main(argv) == 2
    assert "this device is enrolled (pass --force" in capsys.readouterr().err


def test_enroll_says_when_the_control_plane_is_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--server", "http://127.0.0.1:9", "--token", "t", "--device-id", "cam-1",
            "--data-dir", str(tmp_path)]  # fmt: skip
    assert enroll_main(argv) == 2
    assert "cannot reach http://127.0.0.1:9/api/v1/enroll" in capsys.readouterr().err
    assert not (tmp_path / "identity" / "device.key").exists()  # nothing half-done


@pytest.mark.parametrize(
    ("not_before", "not_after", "share", "now", "wait"),
    [
        (0, 300, 2 / 3, 0, 200),
        (0, 300, 2 / 3, 199, 1),
        (0, 300, 2 / 3, 250, 0),  # overdue: now
        (0, 90 * 86400, 2 / 3, 0, MAX_SLEEP_S),  # far off: look again within the hour
    ],
)
def test_seconds_until_due(
    not_before: float, not_after: float, share: float, now: float, wait: float
) -> None:
    assert seconds_until_due(not_before, not_after, share, now) == pytest.approx(wait)


def test_retry_delay_backs_off_and_waits_long_after_a_refusal() -> None:
    assert retry_delay(1, refused=True, rand=0.0) == REFUSED_RETRY_S
    assert retry_delay(1, refused=False, rand=0.0) == 5.0
    assert retry_delay(2, refused=False, rand=1.0) == 20.0
    assert retry_delay(30, refused=False, rand=1.0) == MAX_SLEEP_S
