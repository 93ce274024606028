"""Check the device images' Dockerfiles for what can be checked without a Docker engine.

No engine, Coral or Jetson is here (docs/devices.md says what was verified where), so these tests
read each file: pinned bases, copied paths that exist, pip extras that pyproject.toml defines, the
agent as the entry point with arguments it accepts, a non-root user and a health check.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from agent.main import build_parser
from agent.runtimes import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "deploy" / "devices"
IMAGES = ["cpu", "coral", "jetson"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [
        line
        for line in (DEVICES / f"{name}.Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def args_of(name: str, keyword: str) -> list[str]:
    return [rest for key, rest in instructions(name) if key == keyword]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def test_every_image_has_a_dockerfile() -> None:
    assert sorted(p.name for p in DEVICES.glob("*.Dockerfile")) == sorted(
        f"{name}.Dockerfile" for name in IMAGES
    )


@pytest.mark.parametrize("name", IMAGES)
def test_base_images_are_pinned(name: str) -> None:
    bases = args_of(name, "FROM")
    assert bases, "no FROM"
    for base in bases:
        image = base.split()[0]
        pinned = "@sha256:" in image or re.search(r":[\w.-]+$", image.split("/")[-1])
        assert pinned, f"{name}: pin {image} by tag or digest"
        assert not image.endswith(":latest"), f"{name}: {image} is not a pin"
        assert "$" not in image, f"{name}: {image} depends on a build argument"


@pytest.mark.parametrize("name", IMAGES)
def test_copied_paths_exist(name: str) -> None:
    for rest in args_of(name, "COPY"):
        *sources, _target = rest.split()
        for source in sources:
            assert not source.startswith("--"), f"{name}: COPY {rest} (no stages here)"
            assert (ROOT / source).exists(), f"{name} copies missing {source}"


@pytest.mark.parametrize("name", IMAGES)
def test_pip_extras_exist_in_pyproject(name: str, pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    extras = set(project["optional-dependencies"])
    runs = " ".join(args_of(name, "RUN"))
    installs = re.findall(r"'\.\[([\w,-]+)\]'", runs)
    assert installs, f"{name} does not pip install the project"
    for group in installs:
        for extra in group.split(","):
            assert extra in extras, f"{name} installs unknown extra [{extra}]"


@pytest.mark.parametrize("name", IMAGES)
def test_build_arguments_are_declared(name: str) -> None:
    declared = {rest.split("=")[0] for rest in args_of(name, "ARG")}
    text = " ".join(rest for _key, rest in instructions(name))
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used <= declared, f"{name} uses undeclared ARG {used - declared}"


@pytest.mark.parametrize("name", IMAGES)
def test_entry_point_is_the_agent_with_arguments_it_accepts(
    name: str, pyproject: dict[str, object]
) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    assert "edgefleet-agent" in project["scripts"]
    (entry,) = args_of(name, "ENTRYPOINT")
    assert exec_form(entry) == ["edgefleet-agent"]
    (cmd,) = args_of(name, "CMD")
    argv = exec_form(cmd)
    args = build_parser().parse_args(argv)  # exits (fails the test) on an unknown flag
    assert str(args.config) == "/etc/edgefleet/agent.toml"
    for backend in (args.backends or "").split(","):
        assert not backend or backend in BACKENDS, f"{name}: unknown backend {backend}"


@pytest.mark.parametrize("name", IMAGES)
def test_runs_as_a_non_root_user_created_in_the_image(name: str) -> None:
    users = args_of(name, "USER")
    assert users, f"{name} runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    runs = " ".join(args_of(name, "RUN"))
    assert re.search(rf"useradd [^&]*\b{user}\b", runs), f"{name} never creates {user}"


@pytest.mark.parametrize("name", IMAGES)
def test_health_check_asks_the_agent_if_it_is_ready(name: str) -> None:
    (check,) = args_of(name, "HEALTHCHECK")
    assert "/v2/health/ready" in check
    (cmd,) = args_of(name, "CMD")
    argv = exec_form(cmd)
    port = argv[argv.index("--listen") + 1].rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}/v2/health/ready" in check
    assert f"EXPOSE {port}" in [f"{k} {r}" for k, r in instructions(name)]
    probe = shlex.split(check.split(" CMD ", 1)[1]) if " CMD " in check else []
    assert probe, f"{name}: HEALTHCHECK needs a CMD"


def test_coral_image_installs_the_pinned_edge_tpu_runtime_from_googles_repository() -> None:
    runs = " ".join(args_of("coral", "RUN"))
    assert "packages.cloud.google.com/apt coral-edgetpu-stable" in runs
    assert "signed-by=" in runs
    assert '"libedgetpu1-std=${LIBEDGETPU_VERSION}"' in runs
    assert "pycoral" not in runs  # the PyPI package of that name is unrelated


def test_jetson_image_uses_l4t_and_onnxruntime_gpu() -> None:
    (base,) = args_of("jetson", "FROM")
    assert base.startswith("nvcr.io/nvidia/l4t-")
    runs = " ".join(args_of("jetson", "RUN"))
    assert '"onnxruntime-gpu==${ORT_VERSION}"' in runs
    assert "[onnx]" not in runs  # would pull the CPU-only onnxruntime over the GPU wheel
