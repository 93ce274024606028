"""deploy/k8s/: every manifest parses, and what it names matches what our code and Triton use:
the CLI commands (parsed by our own parser), ports, probe paths, metric names and labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from controlplane.cli import build_parser
from controlplane.fleet.client import server_url
from controlplane.fleet.triton_export import export_triton
from controlplane.offload.batcher import BatchPolicy
from controlplane.offload.command import serve as offload_serve
from controlplane.offload.metrics import OffloadMetrics
from controlplane.offload.runtime import load, parse_model_arg
from controlplane.offload.server import build_state, create_app

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
PENDING = "nv_inference_pending_request_count"
# Triton's own names for the metrics our scaling uses (its docs, "Metrics"); our server names
# them alike, which the offload server's tests and test_offload_server_serves_what_k8s_probes check.
TRITON_METRICS = {PENDING, "nv_inference_queue_duration_us", "nv_inference_count"}
KINDS = {
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}


def _docs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


DOCS = list(_docs())


def kind(name: str, file: str | None = None) -> list[dict[str, Any]]:
    return [d for f, d in DOCS if d["kind"] == name and file in (None, f)]


def one(kind_: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in kind(kind_) if d["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in spec["initContainers" if init else "containers"] if c["name"] == name]
    return found


def ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    return value


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of a container's args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in args]


def env_of(c: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            values[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            values[item["name"]] = one("ConfigMap", ref["name"])["data"][ref["key"]]
    return values


def test_every_manifest_parses_with_a_known_kind() -> None:
    files = {f for f, _ in DOCS}
    assert files == {
        "triton.yaml", "triton-keda.yaml", "triton-hpa.yaml", "offload-server.yaml",
        "podmonitor.yaml",
    }  # fmt: skip
    for file, doc in DOCS:
        assert (doc["apiVersion"], doc["kind"]) in KINDS, (file, doc.get("kind"))
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), file
    assert {d["kind"] for d in (doc for f, doc in DOCS if f == "triton.yaml")} == {
        "ConfigMap", "Deployment", "Service"
    }  # fmt: skip
    assert [d["kind"] for f, d in DOCS if f == "triton-keda.yaml"] == ["ScaledObject"]
    assert [d["kind"] for f, d in DOCS if f == "triton-hpa.yaml"] == [
        "HorizontalPodAutoscaler", "ConfigMap"
    ]  # fmt: skip


@pytest.mark.parametrize("deployment", kind("Deployment"), ids=lambda d: d["metadata"]["name"])
def test_deployments_are_consistent(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    volumes = {v["name"] for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []) + pod["containers"]:
        names = [p["name"] for p in c.get("ports", [])]
        numbers = [p["containerPort"] for p in c.get("ports", [])]
        assert len(set(names)) == len(names) and len(set(numbers)) == len(numbers), c["name"]
        assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes, c["name"]
    (main,) = pod["containers"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in main:
            assert main[probe]["httpGet"]["port"] in ports(main), probe
    resources = main["resources"]
    if "nvidia.com/gpu" in resources["requests"]:  # extended resources: limit == request
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]


def test_triton_serves_the_repository_the_init_container_exports() -> None:
    triton = one("Deployment", "triton")
    server = container(triton, "triton")
    assert server["image"].startswith("nvcr.io/nvidia/tritonserver:")
    args = server["args"]
    assert ports(server) == {
        "http": int(flag(args, "--http-port")),
        "grpc": int(flag(args, "--grpc-port")),
        "metrics": int(flag(args, "--metrics-port")),
    }
    assert ports(server)["http"] == 8000
    repository = flag(args, "--model-repository")
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}

    init = container(triton, "model-repository", init=True)
    env = env_of(init)
    assert server_url(None, env).startswith("http")  # the CLI takes the control plane from here
    parsed = build_parser().parse_args(expand(init["args"], env))
    assert parsed.command == "models" and parsed.handler is export_triton
    assert str(parsed.out_dir) == repository
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    assert init_mounts[repository] == mounts[repository], "both see the same volume"
    assert parsed.model_name == env["MODEL_NAME"] and parsed.kind == "gpu"
    assert parsed.max_batch_size == 32

    grace = triton["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pause = int(server["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert grace > pause + int(flag(args, "--exit-timeout-secs"))


def test_the_offload_server_deployment_runs_our_command() -> None:
    deployment = one("Deployment", "edgefleet-offload")
    c = container(deployment, "offload")
    parsed = build_parser().parse_args(c["args"])
    assert parsed.command == "offload" and parsed.handler is offload_serve
    assert int(parsed.listen.rpartition(":")[2]) == ports(c)["http"]
    (model,) = parsed.model
    source = parse_model_arg(model)
    # The image's WORKDIR is /app and it copies models/ there (Dockerfile).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY models ./models" in dockerfile
    assert (ROOT / source.path.relative_to("/app")).is_file()
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > parsed.drain_grace


async def test_offload_server_serves_what_k8s_probes() -> None:
    """The probe paths and the scaling metric, with its model label, from the real server."""
    args = build_parser().parse_args(
        container(one("Deployment", "edgefleet-offload"), "offload")["args"]
    )
    (model,) = args.model
    source = parse_model_arg(model)
    source = source.__class__(source.name, source.version, ROOT / source.path.relative_to("/app"))
    state = build_state([load(source, threads=1)], BatchPolicy(max_batch=args.max_batch))
    app = create_app(state)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://offload") as client:
            for path in ("/v2/health/ready", "/v2/health/live"):
                assert (await client.get(path)).status_code == 200, path
            metrics = (await client.get("/metrics")).text
    assert f'{PENDING}{{model="{source.name}"' in metrics


@pytest.mark.parametrize("service", kind("Service"), ids=lambda d: d["metadata"]["name"])
def test_services_reach_their_pods(service: dict[str, Any]) -> None:
    selector = service["spec"]["selector"]
    (deployment,) = [
        d for d in kind("Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]  # fmt: skip
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports(main), port
        assert port["port"] == ports(main)[port["targetPort"]]


def _model_label(query: str) -> str:
    match = re.fullmatch(rf'sum\({PENDING}\{{model="([^"]+)"\}}\)', query)
    assert match, query
    return match.group(1)


def test_keda_scales_each_tier_on_its_queue() -> None:
    assert PENDING in {m.name for m in OffloadMetrics().all()} and PENDING in TRITON_METRICS
    models = {
        "triton": one("ConfigMap", "edgefleet-triton")["data"]["MODEL_NAME"],
        "edgefleet-offload": parse_model_arg(
            build_parser()
            .parse_args(container(one("Deployment", "edgefleet-offload"), "offload")["args"])
            .model[0]
        ).name,
    }
    scaled = kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == set(models)
    for s in scaled:
        target = s["spec"]["scaleTargetRef"]["name"]
        one("Deployment", target)
        assert s["spec"]["minReplicaCount"] >= 1
        assert s["spec"]["maxReplicaCount"] > s["spec"]["minReplicaCount"]
        (trigger,) = s["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["serverAddress"].startswith("http")
        assert _model_label(trigger["metadata"]["query"]) == models[target]
        assert float(trigger["metadata"]["threshold"]) > 0


def test_the_hpa_alternative_uses_the_metric_its_adapter_rule_exposes() -> None:
    (hpa,) = kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "triton")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == PENDING
    model = one("ConfigMap", "edgefleet-triton")["data"]["MODEL_NAME"]
    assert metric["pods"]["metric"]["selector"]["matchLabels"] == {"model": model}
    assert metric["pods"]["target"]["type"] == "AverageValue"
    adapter = yaml.safe_load(
        one("ConfigMap", "prometheus-adapter-edgefleet")["data"]["config.yaml"]
    )
    (rule,) = adapter["rules"]
    assert rule["seriesQuery"].startswith(PENDING + "{") and rule["name"]["as"] == PENDING
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


@pytest.mark.parametrize("monitor", kind("PodMonitor"), ids=lambda d: d["metadata"]["name"])
def test_pod_monitors_scrape_a_named_port(monitor: dict[str, Any]) -> None:
    selector = monitor["spec"]["selector"]["matchLabels"]
    (deployment,) = [
        d for d in kind("Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]  # fmt: skip
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert endpoint["path"] == "/metrics" == annotations["prometheus.io/path"]
        assert ports(main)[endpoint["port"]] == int(annotations["prometheus.io/port"])
