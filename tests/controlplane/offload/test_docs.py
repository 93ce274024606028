"""docs/offload.md cannot rot: every metric and every flag of ``offload serve`` is documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from controlplane.offload.command import configure
from controlplane.offload.metrics import OffloadMetrics

DOC = Path(__file__).resolve().parents[3] / "docs" / "offload.md"


def _serve_flags() -> list[str]:
    parser = argparse.ArgumentParser()
    configure(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    return [
        s for a in serve._actions for s in a.option_strings if s.startswith("--") and s != "--help"
    ]


@pytest.mark.parametrize("name", [m.name for m in OffloadMetrics().all()])
def test_every_metric_is_documented(name: str) -> None:
    assert f"| `{name}` |" in DOC.read_text(), f"document {name} in docs/offload.md"


@pytest.mark.parametrize("flag", _serve_flags())
def test_every_flag_is_documented(flag: str) -> None:
    assert f"| `{flag}` |" in DOC.read_text(), f"document {flag} in docs/offload.md"
