"""Deployment reports: built from the document entry, sent on the ``deployment`` channel, kept
(the latest per model, in ``state.json``) when the broker cannot take them, sent again at the
next connect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent.deploy.slots import ModelSlots
from agent.inference import ServedModel
from protocol.errors import MQTTError
from protocol.release import DeploymentReport, DesiredModel, ShadowStats, SmokeStats

log = logging.getLogger(__name__)

Publish = Callable[[DeploymentReport], Awaitable[None]]


def build_report(
    device_id: str,
    generation: int,
    entry: DesiredModel,
    state: str,
    served: ServedModel | None,
    *,
    detail: str | None = None,
    progress: float | None = None,
    smoke: SmokeStats | None = None,
    shadow: ShadowStats | None = None,
) -> DeploymentReport:
    """A report about ``entry``: its release's version, seq and artifact, or (for a return to
    the configured model) those of ``served``, the model serving it."""
    release = entry.release.release if entry.release else None
    artifact = release.artifacts.get(entry.target) if release and entry.target else None
    if release is not None:
        served = None
    return DeploymentReport.model_validate(
        {
            "device_id": device_id,
            "generation": generation,
            "model": entry.model,
            "rollout_id": entry.rollout_id,
            "version": release.version if release else (served.version if served else None),
            "seq": release.seq if release else None,
            "artifact_sha256": (
                artifact.sha256 if artifact else (served.artifact_sha256 if served else None)
            ),
            "state": state,
            "detail": detail,
            "progress": progress,
            "smoke": smoke,
            "shadow": shadow,
        }
    )


class Reporter:
    """Sends reports; remembers the latest per model and those the broker has not taken."""

    def __init__(
        self, device_id: str, publish: Publish, slots_for: Callable[[str], ModelSlots]
    ) -> None:
        self.device_id = device_id
        self.latest: dict[str, DeploymentReport] = {}
        self.unsent: dict[str, DeploymentReport] = {}
        self._publish = publish
        self._slots_for = slots_for

    async def send(self, report: DeploymentReport, *, persist: bool) -> None:
        """Publish (QoS 1); with ``persist`` also record it in the model's state.json (a state
        change, not download progress), marked unsent when the publish failed."""
        self.latest[report.model] = report
        try:
            await self._publish(report)
        except MQTTError as exc:
            log.info("%s: deployment report kept for later: %s", self.device_id, exc)
            self.unsent[report.model] = report
            sent = False
        else:
            self.unsent.pop(report.model, None)
            sent = True
        if persist and report.model != "*":
            slots = self._slots_for(report.model)
            slots.state.report = report.model_dump(mode="json")
            slots.state.unsent = not sent
            await asyncio.to_thread(slots.save)

    async def flush(self) -> None:
        """Send the reports the broker missed (at every reconnect), oldest model first."""
        for name, report in list(self.unsent.items()):
            try:
                await self._publish(report)
            except MQTTError as exc:
                log.info("%s: deployment report still not sent: %s", self.device_id, exc)
                return
            if self.unsent.get(name) is report:
                del self.unsent[name]
                slots = self._slots_for(name)
                if slots.state.unsent:
                    slots.state.unsent = False
                    await asyncio.to_thread(slots.save)
