"""The offload policy as a table: each row a case and the decision it must get."""

from __future__ import annotations

import pytest

from agent.offload.policy import Case, Decision, Policy, decide

P = Policy(min_confidence=0.9, max_input_bytes=1000, latency_budget_ms=50.0)
LOCAL = Decision(False, "local", None)
OFF = "offload"


@pytest.mark.parametrize(
    ("policy", "case", "expected"),
    [
        # confident, small, no backlog: local
        (P, Case(0.95, 256, 0, 5.0), LOCAL),
        (P, Case(0.9, 256, 0, 5.0), LOCAL),  # the threshold itself is confident enough
        (P, Case(0.89, 256, 0, 5.0), Decision(True, OFF, "low_confidence")),
        # raw outputs have no confidence: never low_confidence
        (P, Case(None, 256, 0, 5.0), LOCAL),
        # an input over the limit, even when confident
        (P, Case(0.99, 1001, 0, 5.0), Decision(True, OFF, "input_too_large")),
        (P, Case(0.99, 1000, 0, 5.0), LOCAL),
        # backlog: 11 queued x 5 ms = 55 ms > 50 ms budget; 10 x 5 = 50 is within
        (P, Case(0.99, 256, 11, 5.0), Decision(True, OFF, "backlog")),
        (P, Case(0.99, 256, 10, 5.0), LOCAL),
        # no latency measured yet: no backlog judgement
        (P, Case(0.99, 256, 1000, None), LOCAL),
        # precedence: size before backlog before confidence
        (P, Case(0.1, 5000, 100, 5.0), Decision(True, OFF, "input_too_large")),
        (P, Case(0.1, 10, 100, 5.0), Decision(True, OFF, "backlog")),
        # local_only wins over everything
        (
            Policy(0.9, 1000, 50.0, local_only=True),
            Case(0.1, 5000, 100, 5.0),
            Decision(False, "local_only", "policy"),
        ),
        # limits not set: only confidence counts
        (Policy(0.5), Case(0.6, 10**9, 10**6, 100.0), LOCAL),
        (Policy(0.5), Case(0.4, 10**9, 10**6, 100.0), Decision(True, OFF, "low_confidence")),
        # min_confidence 0: never for confidence
        (Policy(0.0), Case(0.0, 1, 0, 1.0), LOCAL),
    ],
)
def test_decide(policy: Policy, case: Case, expected: Decision) -> None:
    assert decide(policy, case) == expected
