"""What ingestion hands to the store, and the SQL rows it becomes (pure functions, no I/O).

An :class:`Incoming` is one decoded MQTT message with the device id from its topic and the time
the control plane received it. :func:`plan` turns a group of them into one :class:`Plan`: the
parameter rows of each SQL statement, in the order the writer thread must run them, so that a group
of any size costs one ``executemany`` per statement and one commit.

Device rows follow these rules (docs/controlplane.md says why):
- a birth (``Status(state="online")``) replaces what the device says about itself;
- an offline status (the MQTT will) changes only the state, keeping the last known description;
- telemetry and results never change the state; they only move ``last_seen`` (and create the row,
  online, for a device whose birth we missed);
- ``last_seen`` is the control plane's clock at receipt, never the device's, and only moves forward;
- the latest telemetry summary is the one with the latest ``sent_at`` (telemetry is QoS 0 and may
  arrive out of order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol.messages import InferenceResult, ResultBatch, Status, Telemetry

Message = Status | Telemetry | ResultBatch
Params = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One decoded message on its way to the store."""

    device_id: str  # from the topic (the broker's ACL vouches for it), equal to the payload's
    received_at: float  # unix seconds, the control plane's clock
    message: Message

    @property
    def weight(self) -> int:
        """Rows it writes, roughly: how much of a commit group it takes."""
        return len(self.message.results) if isinstance(self.message, ResultBatch) else 1


BIRTH = """
INSERT INTO devices (id, state, first_seen, last_seen, status_at, agent_version, hardware,
                     accelerators, models, tags, api_url, backend, fallback_reason)
VALUES (?, 'online', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
  state = 'online', last_seen = max(devices.last_seen, excluded.last_seen),
  status_at = excluded.status_at, agent_version = excluded.agent_version,
  hardware = excluded.hardware, accelerators = excluded.accelerators, models = excluded.models,
  tags = excluded.tags, api_url = excluded.api_url, backend = excluded.backend,
  fallback_reason = excluded.fallback_reason
"""

OFFLINE = """
INSERT INTO devices (id, state, first_seen, last_seen, status_at) VALUES (?, 'offline', ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET state = 'offline', status_at = excluded.status_at
"""

TELEMETRY = """
INSERT INTO telemetry (device_id, ts, received_at, inferences, errors, p50_ms, p95_ms, p99_ms,
                       outbox_depth, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_NEWER = "(devices.telemetry_at IS NULL OR excluded.telemetry_at >= devices.telemetry_at)"

DEVICE_TELEMETRY = f"""
INSERT INTO devices (id, state, first_seen, last_seen, telemetry, telemetry_at, backend,
                     fallback_reason)
VALUES (?, 'online', ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
  last_seen = max(devices.last_seen, excluded.last_seen),
  telemetry = iif({_NEWER}, excluded.telemetry, devices.telemetry),
  backend = iif({_NEWER} AND excluded.backend IS NOT NULL, excluded.backend, devices.backend),
  fallback_reason = iif({_NEWER} AND excluded.backend IS NOT NULL,
                        excluded.fallback_reason, devices.fallback_reason),
  telemetry_at = iif({_NEWER}, excluded.telemetry_at, devices.telemetry_at)
"""

RESULTS = """
INSERT OR IGNORE INTO results (device_id, result_id, created_at, received_at, model, model_version,
                               artifact_sha256, backend, latency_ms, top_label, top_score, body,
                               offload_decision, offload_reason, cloud_label, cloud_score, agree,
                               cloud_at, cloud_body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

CLOUD = """
UPDATE results SET cloud_label = ?, cloud_score = ?, agree = ?, cloud_at = ?, cloud_body = ?
WHERE device_id = ? AND result_id = ? AND cloud_body IS NULL
"""

SEEN = """
INSERT INTO devices (id, state, first_seen, last_seen) VALUES (?, 'online', ?, ?)
ON CONFLICT (id) DO UPDATE SET last_seen = max(devices.last_seen, excluded.last_seen)
"""


@dataclass
class Plan:
    """The parameter rows of each statement for one commit group."""

    births: list[Params] = field(default_factory=list)
    offlines: list[Params] = field(default_factory=list)
    telemetry: list[Params] = field(default_factory=list)
    device_telemetry: list[Params] = field(default_factory=list)
    results: list[Params] = field(default_factory=list)
    late_results: list[Params] = field(default_factory=list)
    cloud: list[Params] = field(default_factory=list)
    seen: list[Params] = field(default_factory=list)

    def statements(self) -> list[tuple[str, list[Params]]]:
        """(sql, rows) in execution order, leaving out statements without rows.

        Statuses run first so that a device first met in this group gets its reported state;
        later statements never change the state.
        """
        pairs = [
            (BIRTH, self.births),
            (OFFLINE, self.offlines),
            (TELEMETRY, self.telemetry),
            (DEVICE_TELEMETRY, self.device_telemetry),
            (RESULTS, self.results),
            (RESULTS, self.late_results),
            (CLOUD, self.cloud),
            (SEEN, self.seen),
        ]
        return [(sql, rows) for sql, rows in pairs if rows]


def plan(group: Iterable[Incoming]) -> Plan:
    """Turn a group of incoming messages into the rows of one commit."""
    out = Plan()
    for item in group:
        add(out, item)
    return out


def add(out: Plan, item: Incoming) -> None:
    """Add one message's rows to ``out``."""
    message, device, at = item.message, item.device_id, item.received_at
    if isinstance(message, Status):
        if message.state == "online":
            out.births.append(birth_row(device, at, message))
        else:
            out.offlines.append((device, at, at, at))
    elif isinstance(message, Telemetry):
        body = _json(message.model_dump(mode="json", exclude_none=True))
        latency = message.latency
        out.telemetry.append(
            (device, message.sent_at, at, message.inferences, message.errors, latency.p50_ms,
             latency.p95_ms, latency.p99_ms, message.outbox_depth, body)
        )  # fmt: skip
        out.device_telemetry.append(
            (device, at, at, body, message.sent_at, message.backend, message.fallback_reason)
        )
    else:
        for result in message.results:
            if is_late_answer(result):
                # The row usually exists already; inserting too covers a first copy that was
                # lost (evicted on the device), and the update fills in a row stored earlier.
                out.late_results.append(result_row(device, at, result))
                out.cloud.append(cloud_row(device, result))
            else:
                out.results.append(result_row(device, at, result))
        out.seen.append((device, at, at))


def birth_row(device_id: str, received_at: float, status: Status) -> Params:
    models = [m.model_dump(mode="json") for m in status.models]
    backend = status.models[0].backend if status.models else None
    fallback = next((m.fallback_reason for m in status.models if m.fallback_reason), None)
    return (
        device_id, received_at, received_at, received_at, status.agent_version,
        _json(status.hardware), _json([a.model_dump(mode="json") for a in status.accelerators]),
        _json(models), _json(status.tags), status.api_url, backend, fallback,
    )  # fmt: skip


def result_row(device_id: str, received_at: float, result: InferenceResult) -> Params:
    top_label, top_score = top_class(result)
    offload = result.offload
    cloud = _cloud_values(result)
    return (
        device_id, result.result_id, result.created_at, received_at, result.model,
        result.model_version, result.artifact_sha256, result.backend, result.latency_ms,
        top_label, top_score, result.model_dump_json(exclude_none=True),
        offload.decision if offload else None, offload.reason if offload else None, *cloud,
    )  # fmt: skip


def is_late_answer(result: InferenceResult) -> bool:
    """A deferred result sent again with the cloud's answer (see protocol.messages.Offload)."""
    offload = result.offload
    return offload is not None and offload.decision == "deferred" and offload.cloud is not None


def cloud_row(device_id: str, result: InferenceResult) -> Params:
    return (*_cloud_values(result), device_id, result.result_id)


def _cloud_values(result: InferenceResult) -> tuple[Any, ...]:
    """(cloud_label, cloud_score, agree, cloud_at, cloud_body) of a result; NULLs without one."""
    offload = result.offload
    if offload is None or offload.cloud is None:
        return (None, None, None, None, None)
    cloud = offload.cloud
    label: str | None = None
    score: float | None = None
    if cloud.classes:
        best = max(cloud.classes, key=lambda c: c.score)
        label = best.label if best.label is not None else str(best.index)
        score = best.score
    agree = None if offload.agree is None else int(offload.agree)
    return (label, score, agree, cloud.answered_at, cloud.model_dump_json(exclude_none=True))


def top_class(result: InferenceResult) -> tuple[str | None, float | None]:
    """The best class of a classification result: its label (or its index, when the model has no
    labels) and its score; (None, None) for a raw-tensor result."""
    if not result.classes:
        return None, None
    best = max(result.classes, key=lambda c: c.score)
    return (best.label if best.label is not None else str(best.index)), best.score


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
