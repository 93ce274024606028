"""Every alert rule has its runbook section in docs/operations.md (the anchor its runbook_url
names, with what it means, what to check with which command, and how to fix it), and the rules
table there shows the defaults the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.alerts.rules import RULES
from controlplane.alerts.webhook import runbook_url
from tests.test_observability_files import anchors

ROOT = Path(__file__).resolve().parents[3]
RUNBOOK = ROOT / "docs" / "operations.md"


def section(rule: str) -> str:
    text = RUNBOOK.read_text()
    match = re.search(rf"^### {rule}\n(.*?)(?=^#{{2,3}} |\Z)", text, re.S | re.M)
    assert match, f"no '### {rule}' section in docs/operations.md"
    return match.group(1)


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_has_its_runbook_section(rule: str) -> None:
    path, _, anchor = runbook_url("docs/operations.md", rule).partition("#")
    assert (ROOT / path) == RUNBOOK
    assert anchor in anchors(RUNBOOK.read_text()), f"no section #{anchor} in {path}"
    body = section(rule)
    for part in ("**Means:**", "**Check:**", "**Fix:**"):
        assert part in body, f"{rule}: the runbook section has no {part}"
    assert "`edgefleet " in body, f"{rule}: name the command that shows it"


@pytest.mark.parametrize("rule", list(RULES))
def test_the_rules_table_shows_the_defaults(rule: str) -> None:
    d = RULES[rule].defaults
    row = next(
        (line for line in RUNBOOK.read_text().splitlines() if line.startswith(f"| [`{rule}`]")),
        None,
    )
    assert row is not None, f"no row for {rule} in the rules table"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == d.severity
    threshold = "none" if d.threshold is None else f"{d.threshold:g} ("
    assert cells[2].startswith(threshold), cells[2]
    assert cells[3] == f"{d.for_s:g}"
