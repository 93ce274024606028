"""The data loop end to end with the real programs: a real agent keeps the inputs it answered and
uploads them to a real control plane (over a real broker for the results); an operator labels
them; ``edgefleet data export`` writes them with the right labels; ``edgefleet models evaluate``
finds the broken release worse than the good one on them, and ``rollout start --require-eval``
refuses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import (
    ROOT,
    AgentProcess,
    ControlPlane,
    cli_env,
    digit_pngs,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits-edge"
DIGITS = ROOT / "models" / "digits"
ROLLOUT = ROOT / "models" / "rollout"
COUNT = 40


def edgefleet(server: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", *argv, "--server", server],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=cli_env(server),
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def kept_results(cp: ControlPlane, device_id: str) -> list[dict[str, Any]]:
    results = cp.results(device_id)
    return results if len(results) == COUNT and all("sample_url" in r for r in results) else []


def test_kept_inputs_are_labelled_exported_and_judge_a_release(
    broker_url: str, tmp_path: Path, unique: str
) -> None:
    cp = ControlPlane(broker_url, tmp_path)
    cp.start()
    device_id = f"loop-{unique}"
    agent = AgentProcess(
        broker_url, device_id, tmp_path, "--samples-control-plane-url", cp.url,
        "--samples-share", "1",
    )  # fmt: skip
    try:
        for version, model, manifest in (
            ("1.0.0", DIGITS / "edge_fp32.tflite", DIGITS / "edge_fp32.json"),
            ("2.2.0-broken", ROLLOUT / "broken.tflite", ROLLOUT / "broken.json"),
        ):
            pushed = edgefleet(
                cp.url, "models", "push", MODEL, version, "--artifact", f"cpu={model}",
                "--manifest", str(manifest), "--labels", str(DIGITS / "labels.txt"),
            )  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
        agent.start()
        sent: dict[str, tuple[bytes, int]] = {}
        for png, label in digit_pngs(COUNT):
            answer = httpx.post(f"{agent.url}/v1/models/{MODEL}/image", content=png, timeout=10)
            assert answer.status_code == 200, answer.text
            sent[answer.json()["result_id"]] = (png, label)

        results = wait_until(
            "results with their inputs", lambda: kept_results(cp, device_id), 60, cp, agent
        )
        assert {r["result_id"] for r in results} == set(sent)
        for result in results:  # the operator labels every input with the truth
            url = f"{cp.url}/api/v1/results/{device_id}/{result['result_id']}/feedback"
            label = {"label": str(sent[result["result_id"]][1])}
            given = httpx.put(url, json=label, headers=cp.headers, timeout=10)
            assert given.status_code == 200, given.text
        sample = httpx.get(cp.url + results[0]["sample_url"], headers=cp.headers, timeout=10)
        assert sample.content == sent[results[0]["result_id"]][0]

        out = tmp_path / "export"
        exported = edgefleet(cp.url, "data", "export", "--model", MODEL, "--labelled", str(out))
        assert exported.returncode == 0, exported.stderr
        assert f"{COUNT} inputs" in exported.stderr  # progress on stderr
        with (out / "labels.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == COUNT
        for row in rows:
            png, label = sent[row["result_id"]]
            assert (row["label"], row["label_source"], row["device_id"]) == (
                str(label), "feedback", device_id,
            )  # fmt: skip
            assert row["path"] == f"images/{label}/{device_id}_{row['result_id']}.png"
            assert (out / row["path"]).read_bytes() == png
        meta = json.loads((out / "dataset.json").read_text())
        assert meta["count"] == COUNT and meta["labelled"] is True

        evaluated = edgefleet(
            cp.url, "models", "evaluate", f"{MODEL}:2.2.0-broken", "--against", f"{MODEL}:1.0.0",
            "--json",
        )  # fmt: skip
        assert evaluated.returncode == 0, evaluated.stderr
        report = json.loads(evaluated.stdout)
        assert report["samples"] == COUNT and report["dataset"]["digest"] == meta["digest"]
        assert report["against"]["accuracy"] > 0.9
        assert report["accuracy"] < report["against"]["accuracy"]
        shown = edgefleet(cp.url, "models", "evaluate", f"{MODEL}:1.0.0")  # the table, stored too
        assert shown.returncode == 0, shown.stderr
        assert "ACCURACY" in shown.stdout and "PRECISION" in shown.stdout

        refused = edgefleet(cp.url, "rollout", "start", f"{MODEL}:2.2.0-broken", "--require-eval")
        assert refused.returncode == 1
        assert "does worse than the incumbent" in refused.stderr and "HTTP 409" in refused.stderr
        stored = httpx.get(
            f"{cp.url}/api/v1/models/{MODEL}/releases/2.2.0-broken/evaluations",
            headers=cp.headers, timeout=10,
        ).json()  # fmt: skip
        assert stored["count"] == 1
    finally:
        agent.stop()
        cp.stop()
