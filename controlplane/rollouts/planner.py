"""One tick of a rollout, as a pure function: what the store holds in, the actions out.

The controller loads a rollout, its deployments and the fleet's devices in one transaction, asks
:func:`plan_tick` what to do, and applies the answer in the same transaction. Nothing here reads
a clock, a database or the network, so each rule has a table-driven test:

- **reconcile**: a device whose birth lists the rollout's version for the model is ``active``
  (during a rollback: a birth without it is ``rolled_back``);
- **timeouts**: ``device_timeout_s`` after its (rollback) dispatch without a terminal state, a
  deployment is ``timed_out``;
- **membership**: a matching device without a deployment joins at :func:`newcomer_wave`;
- **dispatch**: pending deployments of waves up to the current one, failed ones first (while
  they have retries left), at most ``max_per_minute`` dispatches in any minute;
- **gates**: the current wave is judged by :func:`controlplane.rollouts.gates.evaluate`; pass
  moves to the next wave (or completes), halt pauses or rolls back (``on_halt``);
- **rolling back**: every dispatched device gets its previous entry back (``rollback: true``);
  once each is terminal again the rollout is ``rolled_back``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.rollouts.gates import Verdict, WaveMetrics, evaluate
from controlplane.rollouts.spec import Gate, selector_matches
from controlplane.rollouts.waves import assign_waves, choose_target, newcomer_wave, stable_hash
from protocol.release import TERMINAL_STATES

PENDING = "pending"  # in the rollout, not dispatched yet (the control plane's own state)
FAILURES = frozenset({"failed", "timed_out"})
IN_FLIGHT = frozenset({"queued", "downloading", "verifying", "shadow"})
ACTIVE_STATES = frozenset({"running", "paused", "halted", "rolling_back"})
FINAL_STATES = frozenset({"completed", "aborted", "rolled_back"})
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Rollout:
    id: str
    model: str
    version: str
    state: str
    waves: Sequence[float]
    selector: Mapping[str, str]
    gates: Sequence[Gate]
    targets: frozenset[str]  # the release's artifact targets
    bake_s: float = 0.0
    min_sample: int = 0
    on_halt: str = "rollback"
    device_timeout_s: float = 1800.0
    max_per_minute: int | None = None
    current_wave: int = 0
    wave_finished_at: float | None = None


@dataclass(frozen=True)
class Deployment:
    device_id: str
    wave: int
    state: str = PENDING
    kind: str = "cpu"
    attempts: int = 0
    dispatched_at: float | None = None
    rollback_at: float | None = None  # when its rollback was dispatched (None: not rolled back)


@dataclass(frozen=True)
class Device:
    id: str
    tags: Mapping[str, str]
    kind: str  # accelerator kind (waves.accelerator_kind)
    versions: Mapping[str, str] = field(default_factory=dict)  # model -> version (its birth)


@dataclass(frozen=True)
class Change:
    """A deployment's new state; ``expect`` is the state the plan was made from (a guard)."""

    device_id: str
    state: str
    expect: str
    detail: str | None = None


@dataclass(frozen=True)
class Dispatch:
    device_id: str
    target: str | None  # None: the release has no artifact this device can run
    kind: str
    retry: bool = False


@dataclass
class TickPlan:
    changes: list[Change] = field(default_factory=list)
    joins: list[Deployment] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)  # device ids to move back
    rollout: dict[str, Any] = field(default_factory=dict)  # columns of the rollout to change
    verdict: Verdict | None = None  # the current wave's evaluation, when one was made
    metrics: WaveMetrics | None = None

    @property
    def empty(self) -> bool:
        return not (self.changes or self.joins or self.dispatches or self.rollbacks or self.rollout)


@dataclass(frozen=True)
class Measured:
    """What :mod:`controlplane.rollouts.metrics` measured over the current wave."""

    samples: int
    values: Mapping[str, float | None]


def initial_members(
    rollout_id: str, devices: Sequence[Device], selector: Mapping[str, str], waves: Sequence[float]
) -> list[Deployment]:
    """The deployments of a new rollout: the matching devices, in waves stratified by kind."""
    kinds = {d.id: d.kind for d in devices if selector_matches(selector, d.tags)}
    assignment = assign_waves(kinds, rollout_id, waves)
    return [Deployment(i, assignment[i], kind=kinds[i]) for i in sorted(assignment)]


def final_failure(d: Deployment, max_retries: int) -> bool:
    """A failure that will not be retried any more."""
    return d.state in FAILURES and d.attempts > max_retries


def settled(d: Deployment, max_retries: int) -> bool:
    """Done for the wave's purposes: active, rolled back, or failed for good."""
    return d.state in ("active", "rolled_back") or final_failure(d, max_retries)


def plan_tick(
    rollout: Rollout,
    deployments: Sequence[Deployment],
    devices: Sequence[Device],
    measured: Measured | None,
    *,
    now: float,
    max_retries: int,
) -> TickPlan:
    """Decide one tick of ``rollout``. ``measured`` is None when the wave's metrics were not
    computed (the controller only measures a wave whose deployments are all terminal): then a
    finished wave is judged on the next tick."""
    plan = TickPlan()
    if rollout.state in FINAL_STATES:
        return plan
    by_device = {d.id: d for d in devices}
    current = {d.device_id: _reconcile(rollout, d, by_device.get(d.device_id), now, plan)
               for d in deployments}  # fmt: skip
    if rollout.state == "rolling_back":
        _roll_back(rollout, current, plan)
        return plan
    if rollout.state != "running":
        return plan  # paused or halted: reports and timeouts only
    for device in devices:
        if device.id not in current and selector_matches(rollout.selector, device.tags):
            joined = Deployment(device.id, newcomer_wave(rollout.current_wave), kind=device.kind)
            plan.joins.append(joined)
            current[device.id] = joined
    _dispatch(rollout, current, plan, now, max_retries)
    _judge(rollout, current, measured, plan, now, max_retries)
    return plan


def _reconcile(
    rollout: Rollout, d: Deployment, device: Device | None, now: float, plan: TickPlan
) -> Deployment:
    """Births and timeouts: the deployment as it stands after them."""
    running = device.versions.get(rollout.model) if device is not None else None
    new_state, detail = d.state, None
    if d.rollback_at is not None:
        if d.state not in TERMINAL_STATES:
            if running is not None and running != rollout.version:
                new_state, detail = "rolled_back", f"its birth shows {rollout.model} {running}"
            elif now - d.rollback_at >= rollout.device_timeout_s:
                new_state = "timed_out"
                detail = f"rollback not confirmed within {rollout.device_timeout_s:g}s"
    elif d.state != PENDING and d.state not in ("active", "rolled_back"):
        if running == rollout.version:
            new_state, detail = "active", f"its birth shows {rollout.model} {running}"
        elif (
            d.state in IN_FLIGHT and d.dispatched_at is not None
            and now - d.dispatched_at >= rollout.device_timeout_s
        ):  # fmt: skip
            new_state = "timed_out"
            detail = f"no answer within {rollout.device_timeout_s:g}s"
    if new_state == d.state:
        return d
    plan.changes.append(Change(d.device_id, new_state, d.state, detail))
    return Deployment(d.device_id, d.wave, new_state, d.kind, d.attempts, d.dispatched_at,
                      d.rollback_at)  # fmt: skip


def _dispatch(
    rollout: Rollout, current: dict[str, Deployment], plan: TickPlan, now: float, max_retries: int
) -> None:
    budget: float = float("inf")
    if rollout.max_per_minute:
        recent = sum(
            1 for d in current.values()
            if d.dispatched_at is not None and now - d.dispatched_at < RATE_WINDOW_S
        )  # fmt: skip
        budget = max(0, rollout.max_per_minute - recent)
    eligible = [d for d in current.values() if d.wave <= rollout.current_wave]
    retries = sorted(
        (d for d in eligible if d.state in FAILURES and d.attempts <= max_retries),
        key=lambda d: (d.wave, d.device_id),
    )
    fresh = sorted(
        (d for d in eligible if d.state == PENDING),
        key=lambda d: (d.wave, stable_hash(rollout.id, d.device_id), d.device_id),
    )
    for d in [*retries, *fresh]:
        if budget <= 0:
            break
        budget -= 1
        target = choose_target(d.kind, rollout.targets)
        plan.dispatches.append(Dispatch(d.device_id, target, d.kind, retry=d.state != PENDING))
        if target is None:  # no artifact fits: failed for good, and nothing sent to undo
            current[d.device_id] = Deployment(
                d.device_id, d.wave, "failed", d.kind, max_retries + 1, d.dispatched_at
            )
        else:
            current[d.device_id] = Deployment(
                d.device_id, d.wave, "queued", d.kind, d.attempts + 1, now
            )


def wave_metrics(
    wave: Sequence[Deployment], measured: Measured | None, max_retries: int
) -> WaveMetrics:
    failed = sum(1 for d in wave if final_failure(d, max_retries))
    finished = sum(1 for d in wave if settled(d, max_retries))
    if measured is None:
        return WaveMetrics(len(wave), finished, failed, 0, {})
    return WaveMetrics(len(wave), finished, failed, measured.samples, measured.values)


def _judge(
    rollout: Rollout,
    current: dict[str, Deployment],
    measured: Measured | None,
    plan: TickPlan,
    now: float,
    max_retries: int,
) -> None:
    wave = [d for d in current.values() if d.wave == rollout.current_wave]
    metrics = wave_metrics(wave, measured, max_retries)
    done = metrics.finished == metrics.devices
    finished_at = rollout.wave_finished_at if done else None
    if done and finished_at is None:
        finished_at = now
    if finished_at != rollout.wave_finished_at:
        plan.rollout["wave_finished_at"] = finished_at
    if done and measured is None:
        return  # judged on the next tick, with the wave's metrics
    verdict = evaluate(
        rollout.gates, metrics, finished_at=finished_at, bake_s=rollout.bake_s,
        min_sample=rollout.min_sample, now=now,
    )  # fmt: skip
    plan.verdict, plan.metrics = verdict, metrics
    if verdict.decision == "pass":
        if rollout.current_wave + 1 < len(rollout.waves):
            plan.rollout.update(
                current_wave=rollout.current_wave + 1, wave_started_at=now, wave_finished_at=None
            )
        else:
            plan.rollout["state"] = "completed"
    elif verdict.decision == "halt":
        plan.rollout["halt"] = {**verdict.as_dict(), "wave": rollout.current_wave, "at": now}
        plan.rollout["state"] = "rolling_back" if rollout.on_halt == "rollback" else "halted"


def _roll_back(rollout: Rollout, current: dict[str, Deployment], plan: TickPlan) -> None:
    waiting = False
    for d in sorted(current.values(), key=lambda d: d.device_id):
        if d.dispatched_at is None:
            continue  # never got the release: nothing to undo
        if d.rollback_at is None:
            plan.rollbacks.append(d.device_id)
            waiting = True
        elif d.state not in TERMINAL_STATES:
            waiting = True
    if not waiting:
        plan.rollout["state"] = "rolled_back"
