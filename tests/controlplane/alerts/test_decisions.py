"""Fire, keep, resolve: the engine's decisions as a table."""

from __future__ import annotations

import pytest

from controlplane.alerts.decisions import (
    NOT_EVALUATED,
    Decisions,
    Evaluation,
    Fire,
    Keep,
    OpenAlert,
    Pend,
    Resolve,
    decide,
)
from controlplane.alerts.rules import Check, Params

NOW = 5000.0
KEY = ("thermal", "cam-1")
P0 = Params("warning", 0.0, 80.0)  # fires at once
P60 = Params("warning", 60.0, 80.0)  # after a minute
HOT = Check(True, 85.0, "85 °C")
COOL = Check(False, 60.0, "60 °C")
STALE = Check(None, None, "offline")
OPEN = OpenAlert(7, "warning", 85.0, "85 °C")


def ev(check: Check, params: Params = P0) -> Evaluation:
    return Evaluation("thermal", "cam-1", check, params)


CASES = [
    # (id, open alerts, pending, evaluations, expected decisions)
    ("fire-at-once", {}, {}, [ev(HOT)],
     Decisions(fire=[Fire("thermal", "cam-1", "warning", 85.0, "85 °C", 80.0, NOW)])),
    ("pend-first", {}, {}, [ev(HOT, P60)],
     Decisions(pend=[Pend("thermal", "cam-1", 85.0, "85 °C")])),
    ("pending-not-yet", {}, {KEY: NOW - 59}, [ev(HOT, P60)], Decisions()),
    ("pending-long-enough", {}, {KEY: NOW - 60}, [ev(HOT, P60)],
     Decisions(fire=[Fire("thermal", "cam-1", "warning", 85.0, "85 °C", 80.0, NOW - 60)],
               unpend=[KEY])),
    ("pending-clears", {}, {KEY: NOW - 30}, [ev(COOL, P60)], Decisions(unpend=[KEY])),
    ("pending-stale", {}, {KEY: NOW - 30}, [ev(STALE, P60)], Decisions(unpend=[KEY])),
    ("open-same", {KEY: OPEN}, {}, [ev(HOT)], Decisions()),
    ("open-new-value", {KEY: OPEN}, {}, [ev(Check(True, 90.0, "90 °C"))],
     Decisions(keep=[Keep(7, "warning", 90.0, "90 °C")])),
    ("open-new-severity", {KEY: OPEN}, {}, [ev(HOT, Params("critical", 0.0, 80.0))],
     Decisions(keep=[Keep(7, "critical", 85.0, "85 °C")])),
    ("open-resolves", {KEY: OPEN}, {}, [ev(COOL)], Decisions(resolve=[Resolve(7, "60 °C")])),
    ("open-stale-stays", {KEY: OPEN}, {}, [ev(STALE)], Decisions()),
    ("open-not-evaluated", {KEY: OPEN}, {}, [], Decisions(resolve=[Resolve(7, NOT_EVALUATED)])),
    ("pending-not-evaluated", {}, {KEY: NOW}, [], Decisions(unpend=[KEY])),
    ("quiet", {}, {}, [ev(COOL)], Decisions()),
    ("stale-nothing", {}, {}, [ev(STALE)], Decisions()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("open_alerts", "pending", "evaluations", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    open_alerts: dict[tuple[str, str], OpenAlert], pending: dict[tuple[str, str], float],
    evaluations: list[Evaluation], expected: Decisions,
) -> None:  # fmt: skip
    assert decide(open_alerts, pending, evaluations, NOW) == expected


def test_other_devices_and_rules_are_independent() -> None:
    evaluations = [
        Evaluation("thermal", "cam-1", HOT, P0),
        Evaluation("thermal", "cam-2", COOL, P0),
        Evaluation("disk_full", "cam-1", COOL, P0),
    ]
    out = decide({("thermal", "cam-2"): OPEN}, {}, evaluations, NOW)
    assert [(f.rule, f.device_id) for f in out.fire] == [("thermal", "cam-1")]
    assert out.resolve == [Resolve(7, "60 °C")]
    assert not out.empty and Decisions().empty
