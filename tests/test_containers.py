"""Check docker-compose.yml and the Dockerfile for what can be checked without a Docker engine.

No engine runs on the development machines or in CI, so these tests read both files and check that
every service, command, port, volume and copied path they name really exists in this repository.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.main import build_parser as agent_parser
from agent.simulator import build_parser as simulator_parser
from controlplane.cli import build_parser as controlplane_parser

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def test_compose_runs_broker_controlplane_and_fleet(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"broker", "controlplane", "fleet", "offload"}
    broker = compose["services"]["broker"]
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", broker["image"]), "pin the broker image"
    assert "1883:1883" in broker["ports"]


def test_compose_mounts_existing_files_and_declared_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).is_file(), f"{name} mounts missing file {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_compose_services_depend_on_existing_services(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dep in service.get("depends_on", []):
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"


def _parse(parser: Any, argv: list[str]) -> Any:
    return parser.parse_args(argv)


def test_compose_commands_parse_with_the_real_clis(compose: dict[str, Any]) -> None:
    cp = compose["services"]["controlplane"]
    args = _parse(controlplane_parser(), cp["command"])
    assert args.command == "serve"
    listen_port = int(args.listen.rsplit(":", 1)[1])
    assert f"{listen_port}:{listen_port}" in cp["ports"]
    assert args.broker == "mqtt://broker:1883"

    fleet = compose["services"]["fleet"]["command"]
    assert fleet[0] == "simulate"
    sim = _parse(simulator_parser(), fleet[1:])
    assert sim.broker == "mqtt://broker:1883"
    for path in (sim.model, sim.images):
        assert str(path).startswith("/app/"), path
        assert (ROOT / str(path).removeprefix("/app/")).is_file(), f"{path} is not in the image"


def test_compose_offload_command_parses_and_serves_a_model_in_the_image(
    compose: dict[str, Any],
) -> None:
    offload = compose["services"]["offload"]
    args = _parse(controlplane_parser(), offload["command"])
    assert (args.command, args.action) == ("offload", "serve")
    port = int(args.listen.rsplit(":", 1)[1])
    assert f"{port}:{port}" in offload["ports"]
    for model in args.model:
        path = model.split("=", 1)[1]
        assert (ROOT / path.removeprefix("/app/")).is_file(), f"{path} is not in the image"


def test_dockerfile_base_is_pinned_and_copies_existing_paths(dockerfile: list[str]) -> None:
    froms = [line.split()[1] for line in dockerfile if line.startswith("FROM ")]
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms)
    for line in dockerfile:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_dockerfile_installs_real_extras_and_runs_the_cli(dockerfile: list[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    run = " ".join(line for line in dockerfile if line.startswith("RUN "))
    extras = re.search(r"\.\[([a-z,]+)\]", run)
    assert extras, "the image installs the project with extras"
    for extra in extras.group(1).split(","):
        assert extra in project["optional-dependencies"], extra
    entry = next(line for line in dockerfile if line.startswith("ENTRYPOINT"))
    assert '"edgefleet"' in entry and "edgefleet" in project["scripts"]
    cmd = next(line for line in dockerfile if line.startswith("CMD"))
    default = yaml.safe_load(cmd.removeprefix("CMD "))
    assert _parse(controlplane_parser(), default).command == "serve"


def test_agent_flags_named_in_the_docs_exist() -> None:
    args = agent_parser().parse_args(
        ["--device-id", "d", "--broker", "mqtt://h:1", "--listen", "127.0.0.1:1", "--data-dir", "x"]
    )
    assert args.device_id == "d"
