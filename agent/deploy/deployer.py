"""The deployment state machine of one agent: desired documents in, swaps and reports out.

Per model of an accepted document: ``queued -> downloading -> verifying -> [shadow ->] active``,
or ``failed`` with the cause in ``detail`` (``rolled_back`` when the document was an explicit
rollback). Documents are checked as they arrive, one at a time, so a refusal never waits for a
deployment in progress; an accepted newer document cancels the work on the older one (a partial
download stays on disk and resumes). Nothing here raises into the MQTT callback or the event
loop: every failure becomes a ``failed`` report and the agent keeps serving what it served.

Crash safety comes from the order of the steps (see :mod:`.slots`): the slot is complete before
``state.json`` names it active, and ``state.json`` is written before the in-memory swap, so after
a SIGKILL the agent restarts on a complete slot and the retained document brings it back to where
it was (an equal generation is processed again, idempotently).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config import DeployConfig
from agent.deploy import DeployError
from agent.deploy.artifacts import check_slot, fetch, install, missing
from agent.deploy.cache import ModelCache
from agent.deploy.decisions import Installed, due_progress, judge_document, plan_model
from agent.deploy.document import peek
from agent.deploy.reports import Publish, Reporter, build_report
from agent.deploy.shadow import Shadow, ShadowInput
from agent.deploy.slots import ModelSlots, read_generation, slot_name, write_generation
from agent.deploy.smoke import SmokeOutcome, smoke_test
from agent.errors import AgentError
from agent.inference import InferenceOutput, ServedModel
from protocol.errors import ProtocolError
from protocol.manifest import ModelManifest
from protocol.release import (
    DeploymentReport,
    Desired,
    DesiredModel,
    Release,
    ShadowStats,
    open_desired,
)

log = logging.getLogger(__name__)

TEST_PAUSE_ENV = "EDGEFLEET_TEST_DEPLOY_PAUSE"
"""Test only: a step name at which the deployer stops for good, so that a test can SIGKILL the
agent exactly there: ``downloading`` (the first chunk is on disk), ``verifying`` (the slot is
complete, not yet loaded), ``swap`` (state.json names the new slot, the old model still serves).
Never set it on a device."""

STOP_TIMEOUT_S = 5.0
LoadRelease = Callable[[Path, ModelManifest, Path | None], ServedModel]
"""Load an artifact with its manifest and its CPU fallback artifact (None: none)."""


@dataclass(frozen=True)
class Serving:
    """The release a model runs (absent: the configured model)."""

    slot: str
    release: Release
    sha256: str


class Deployer:
    def __init__(
        self,
        *,
        device_id: str,
        root: Path,
        config: DeployConfig,
        key: Ed25519PublicKey | None,
        models: dict[str, ServedModel],
        cache: ModelCache,
        load_release: LoadRelease,
        configured: Mapping[str, Callable[[], ServedModel]],
        publish: Publish,
        on_swap: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.device_id = device_id
        self.root = root
        self.config = config
        self.key = key
        self.models = models
        self.shadows: dict[str, Shadow] = {}
        self._cache = cache
        self._load_release = load_release
        self._configured = configured
        self._reporter = Reporter(device_id, publish, self._slots_for)
        self._on_swap = on_swap
        self._slots: dict[str, ModelSlots] = {}
        self._serving: dict[str, Serving] = {}
        self._highest = 0
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._work: asyncio.Task[None] | None = None
        self._work_generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._reloads = 0

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the active slots (falling back as needed), then take documents."""
        await self.restore()
        self._loop_task = asyncio.create_task(self._take(), name=f"deploy-{self.device_id}")

    async def stop(self) -> None:
        """Stop taking documents and cancel the work in progress (a partial download stays)."""
        self._stopping = True
        tasks = {t for t in (self._loop_task, self._work, *self._tasks) if t is not None}
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: asyncio.wait_for before Python 3.12 can swallow a cancellation that
            # races with its result (a PUBACK arriving just then), and the task carries on.
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for shadow in list(self.shadows.values()):
            await shadow.close()

    def receive(self, payload: bytes) -> None:
        """A desired document arrived (called from the MQTT callback; never blocks). An empty
        payload clears the retained document: there is nothing to do."""
        if payload:
            self._inbox.put_nowait(payload)

    def observe(self, model: str, payload: ShadowInput, output: InferenceOutput) -> None:
        """A live request was answered: offer it to the model's shadow, if one runs."""
        shadow = self.shadows.get(model)
        if shadow is not None:
            shadow.offer(payload, output)

    def seq_of(self, model: str) -> int | None:
        serving = self._serving.get(model)
        return serving.release.seq if serving else None

    async def flush(self) -> None:
        """Send the reports the broker missed (at every reconnect)."""
        await self._reporter.flush()

    def slot_of(self, model: str) -> str | None:
        """The slot a model serves from (None: the configured file)."""
        serving = self._serving.get(model)
        return serving.slot if serving else None

    def slots(self, model: str) -> ModelSlots:
        """A model's slots on disk (read-only use: ``diag``)."""
        return self._slots_for(model)

    async def reload(self, name: str) -> ServedModel:
        """Load ``name`` again from where it serves now (its active slot, checked again, or the
        configured file) into a fresh interpreter and swap it in; the old one closes once idle.
        The backend is chosen again, so an accelerator plugged back in serves again. Raises
        DeployError (or ModelLoadError), the old model still serving, when it cannot."""
        if name not in self.models:
            serving_now = ", ".join(self.models) or "none"
            raise DeployError(f"no model named {name!r} (this agent serves: {serving_now})")
        if self._work is not None and not self._work.done():
            raise DeployError("a deployment is in progress: reload once it is over")
        self._reloads += 1
        fresh = f":reload-{self._reloads}"  # a key of its own: the cache must not hand back the old
        before, serving = self.models[name], self._serving.get(name)
        if serving is None:
            loader = self._configured.get(name)
            if loader is None:
                raise DeployError(f"model {name!r} has no configured file to reload from")
            served = await self._cache.acquire(f"cfg:{name}{fresh}", loader)
        else:
            served, serving = await self._load_slot(self._slots_for(name), serving.slot, fresh)
        if self.models.get(name) is not before:  # a deployment swapped it meanwhile: it wins
            self._cache.release(served)
            raise DeployError("a deployment swapped the model while it reloaded: not replaced")
        self._install(name, served, serving)
        if self._on_swap is not None:
            await self._on_swap()
        return served

    # --- start-up -----------------------------------------------------------------------------

    async def restore(self) -> None:
        self._highest = read_generation(self.root)
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and (path / "state.json").is_file():
                await self._restore_model(path.name)

    async def _restore_model(self, name: str) -> None:
        slots = self._slots_for(name)
        st = slots.state
        if st.unsent and st.report:
            self._reporter.unsent[name] = DeploymentReport.model_validate(st.report)
        problems = []
        for slot in (st.active, st.previous):
            if slot is None:
                break
            try:
                served, serving = await self._load_slot(slots, slot)
            except (AgentError, ProtocolError) as exc:
                problems.append(f"slot {slot} does not check out: {exc}")
                log.error("%s: model %s: %s", self.device_id, name, problems[-1])
                continue
            self._install(name, served, serving)
            if slot != st.active:
                st.active, st.previous = slot, None
            break
        else:
            if st.active is not None:  # both failed: back to the configured model
                st.active = st.previous = None
        if problems:
            detail = "; ".join(problems) + (
                f"; serving {st.active}" if st.active else "; serving the configured model"
            )
            log.warning("%s: model %s: %s", self.device_id, name, detail)
            report = DeploymentReport(
                device_id=self.device_id,
                generation=st.generation,
                model=name,
                state="failed",
                detail=detail,
                version=self.models[name].version if name in self.models else None,
                seq=self.seq_of(name),
            )
            st.report, st.unsent = report.model_dump(mode="json"), True
            self._reporter.unsent[name] = report
            await asyncio.to_thread(slots.save)

    # --- documents ----------------------------------------------------------------------------

    async def _take(self) -> None:
        while not self._stopping:
            payload = await self._inbox.get()
            try:
                await self._consider(payload)
            except Exception:  # never let one document stop the loop
                log.exception("%s: handling a desired document failed", self.device_id)

    async def _consider(self, payload: bytes) -> None:
        raw = peek(payload)
        names, generation = raw.names, raw.generation
        if self.key is None:
            await self._refuse(names, generation, "no release key configured")
            return
        try:
            desired = open_desired(payload, self.key)
        except ProtocolError as exc:
            await self._refuse(names, generation, f"refused the desired document: {exc}")
            return
        verdict = judge_document(
            desired.device_id,
            desired.generation,
            device_id=self.device_id,
            highest_generation=self._highest,
        )
        if verdict.kind == "refuse":
            await self._refuse(names, generation, f"refused the desired document: {verdict.reason}")
            return
        if verdict.kind == "replay" and self._work is not None and not self._work.done():
            for name in names:  # the same document again (a reconnect): say where we are
                if name in self._reporter.latest:
                    await self._reporter.send(self._reporter.latest[name], persist=False)
            return
        if verdict.kind == "accept":
            self._highest = desired.generation
            await asyncio.to_thread(write_generation, self.root, desired.generation)
        while self._work is not None and not self._work.done():
            self._work.cancel()  # again if a cancellation was swallowed (see stop())
            await asyncio.wait({self._work}, timeout=1.0)
        self._work_generation = desired.generation
        self._work = asyncio.create_task(self._converge_all(desired, raw.releases))

    async def _refuse(self, names: list[str], generation: int, detail: str) -> None:
        log.warning("%s: %s", self.device_id, detail)
        for name in names:
            report = DeploymentReport(
                device_id=self.device_id,
                generation=generation,
                model=name,
                state="failed",
                detail=detail,
            )
            await self._reporter.send(report, persist=False)

    async def _converge_all(self, desired: Desired, sealed: dict[str, Any]) -> None:
        for entry in desired.models:
            try:
                await self._converge(desired.generation, entry, sealed.get(entry.model))
            except asyncio.CancelledError:
                raise
            except (AgentError, ProtocolError) as exc:
                await self._report(desired.generation, entry, "failed", detail=str(exc))
            except Exception as exc:
                log.exception("%s: deployment of %s failed", self.device_id, entry.model)
                detail = f"internal error: {type(exc).__name__}: {exc}"
                await self._report(desired.generation, entry, "failed", detail=detail)

    # --- one model ----------------------------------------------------------------------------

    async def _converge(self, generation: int, entry: DesiredModel, sealed: Any) -> None:
        slots = self._slots_for(entry.model)
        st = slots.state
        if st.generation == generation and st.report and st.report.get("state") == "failed":
            await self._reporter.send(DeploymentReport.model_validate(st.report), persist=False)
            return
        st.generation = generation
        serving = self._serving.get(entry.model)
        active = Installed(serving.release.seq, serving.sha256) if serving else None
        plan = plan_model(
            entry,
            active=active,
            on_disk=frozenset(self._on_disk(slots)),
            configured=entry.model in self._configured,
        )
        done = "rolled_back" if entry.rollback else "active"
        if plan.kind == "refuse":
            await self._report(generation, entry, "failed", detail=plan.reason)
        elif plan.kind == "current":
            await self._report(generation, entry, done, detail="already serving it")
        elif plan.kind == "revert":
            served = await self._cache.acquire(f"cfg:{entry.model}", self._configured[entry.model])
            await self._swap(slots, None, served, None)
            await self._report(generation, entry, done, detail="back to the configured model")
        elif plan.kind == "swap":
            assert entry.release is not None and entry.target is not None
            release = entry.release.release
            slot = slot_name(release.seq, release.artifacts[entry.target].sha256)
            served, serving_new = await self._load_slot(slots, slot)
            await self._swap(slots, slot, served, serving_new)
            await self._report(generation, entry, done, detail="swapped from disk")
        else:
            await self._deploy(generation, entry, sealed)
        await asyncio.to_thread(slots.prune, self.config.keep_releases, set())

    async def _deploy(self, generation: int, entry: DesiredModel, sealed: Any) -> None:
        assert entry.release is not None and entry.target is not None
        release = entry.release.release
        artifact = release.artifacts[entry.target]
        slots = self._slots_for(entry.model)
        slot = slot_name(release.seq, artifact.sha256)
        if not isinstance(sealed, dict):
            raise DeployError("the document's release is not an object")
        await self._report(generation, entry, "queued")
        wanted = missing(
            slots, slot, release, entry.target, entry.artifact_url, entry.fallback_artifact_url
        )
        if wanted:  # the artifact (and its CPU fallback: agent/deploy/artifacts.py)
            await self._report(generation, entry, "downloading", progress=0.0)
            last: list[float | None] = [None]

            def progress(share: float) -> None:
                now = time.monotonic()
                if due_progress(last[0], now):
                    last[0] = now
                    self._spawn(
                        self._report(
                            generation,
                            entry,
                            "downloading",
                            progress=round(share, 4),
                            persist=False,
                        )
                    )

            async def verifying() -> None:
                await asyncio.gather(*self._tasks, return_exceptions=True)  # progress goes first
                await self._report(generation, entry, "verifying")

            await fetch(
                wanted,
                read_timeout=self.config.download_timeout_s,
                on_progress=progress,
                on_chunk=lambda: _pause_for_test("downloading"),
                verifying=verifying,
            )
            await asyncio.to_thread(install, slots, slot, wanted, sealed)
            await _pause_for_test("verifying")
        else:
            await self._report(generation, entry, "verifying")
        candidate, serving = await self._load_slot(slots, slot)
        try:
            incumbent = self.models.get(entry.model)
            smoke = await smoke_test(candidate, release, incumbent)
            if not smoke.passed:
                await self._report(
                    generation,
                    entry,
                    "failed",
                    detail="golden test failed: " + "; ".join(smoke.failures),
                    smoke=smoke.stats,
                )
                return
            shadow_stats = await self._shadow(generation, entry, candidate, smoke)
            await self._swap(slots, slot, candidate, serving)
        finally:
            if self.models.get(entry.model) is not candidate:
                self._cache.release(candidate)
        await self._report(
            generation,
            entry,
            "rolled_back" if entry.rollback else "active",
            smoke=smoke.stats,
            shadow=shadow_stats,
        )

    async def _shadow(
        self, generation: int, entry: DesiredModel, candidate: ServedModel, smoke: SmokeOutcome
    ) -> ShadowStats | None:
        policy = entry.shadow
        if policy is None:
            return None
        share = policy.share if "share" in policy.model_fields_set else self.config.shadow_share
        shadow = Shadow(candidate, share=share, samples=policy.samples)
        self.shadows[entry.model] = shadow
        try:
            await self._report(generation, entry, "shadow", smoke=smoke.stats)
            await shadow.done.wait()
            return shadow.stats()
        finally:
            self.shadows.pop(entry.model, None)
            await shadow.close()

    # --- slots and swaps ----------------------------------------------------------------------

    def _slots_for(self, name: str) -> ModelSlots:
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = ModelSlots(self.root, name)
            slots.load()
        return slots

    def _on_disk(self, slots: ModelSlots) -> list[Installed]:
        found = []
        for slot in slots.complete_slots():
            doc = slots.sealed_release(slot)
            try:
                body = doc["release"]
                seq = int(body["seq"])
                shas = [a["sha256"] for a in body["artifacts"].values()]
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            found += [Installed(seq, sha) for sha in shas if slot == slot_name(seq, sha)]
        return found

    async def _load_slot(
        self, slots: ModelSlots, slot: str, key_suffix: str = ""
    ) -> tuple[ServedModel, Serving]:
        """Load a complete slot, checking the release's signature and the artifacts' hashes; its
        CPU fallback artifact, when it holds one, goes to the loader with it."""
        files = await asyncio.to_thread(check_slot, slots, slot, self.key)
        release = files.release
        manifest = release.manifest(files.target, files.path.name)
        key = f"rel:{release.name}:{release.version}:{release.seq}:{files.sha256}"
        key += (":fallback" if files.fallback else "") + key_suffix
        served = await self._cache.acquire(
            key, lambda: self._load_release(files.path, manifest, files.fallback)
        )
        return served, Serving(slot, release, files.sha256)

    async def _swap(
        self, slots: ModelSlots, slot: str | None, served: ServedModel, serving: Serving | None
    ) -> None:
        """Commit a swap; a newer document cancelling us waits for the commit to finish, so the
        state on disk and the model serving never disagree."""
        commit = asyncio.ensure_future(self._commit(slots, slot, served, serving))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await commit
            raise

    async def _commit(
        self, slots: ModelSlots, slot: str | None, served: ServedModel, serving: Serving | None
    ) -> None:
        st = slots.state
        if st.active != slot:
            st.previous, st.active = st.active, slot
        await asyncio.to_thread(slots.save)
        await _pause_for_test("swap")
        self._install(slots.model, served, serving)
        if self._on_swap is not None:
            await self._on_swap()

    def _install(self, name: str, served: ServedModel, serving: Serving | None) -> None:
        old = self.models.get(name)
        self.models[name] = served  # requests look the model up per request: this is the swap
        if serving is None:
            self._serving.pop(name, None)
        else:
            self._serving[name] = serving
        if old is not None and old is not served:
            self._cache.release(old)
        log.info("%s: now serving %s %s", self.device_id, name, served.version)

    async def _report(
        self,
        generation: int,
        entry: DesiredModel,
        state: str,
        *,
        persist: bool = True,
        **fields: Any,
    ) -> None:
        report = build_report(
            self.device_id, generation, entry, state, self.models.get(entry.model), **fields
        )
        if state == "failed":
            log.warning(
                "%s: deployment of %s failed: %s", self.device_id, entry.model, report.detail
            )
        await self._reporter.send(report, persist=persist)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --- helpers ----------------------------------------------------------------------------------


async def _pause_for_test(step: str) -> None:
    if os.environ.get(TEST_PAUSE_ENV) == step:
        log.warning("test hook: paused at %s", step)
        await asyncio.Event().wait()
