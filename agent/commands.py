"""The agent's side of remote commands: take a request, decide, run it, answer.

The agent subscribes to its own ``commands`` topic. For each request it checks, in this order:
that the reply would go to its own ``commands/reply`` topic (nothing else is allowed: under a
broker ACL a device is confined to its own prefix, and it must not be talked into publishing on
another of its channels); that the request has not expired (the broker's v5 message expiry, and
``expires_at`` against the agent's clock, because a 3.1.1 broker or a persistent session can
hand over a request long after its sender gave up); that it has not run already (QoS 1 may
deliver twice); that the command is one of the six (:data:`protocol.commands.COMMANDS`) with
valid arguments. Only then does the handler run. Every refusal is answered with an error reply,
and every reply is capped (:func:`protocol.commands.fit_reply`).

The decisions are pure functions of :mod:`protocol.commands`; this module is the I/O around them
and the six handlers (``diag`` lives in :mod:`agent.diagnostics`). Nothing here raises into the
MQTT callback: a request runs in a task of its own, at most :data:`MAX_CONCURRENT` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agent import logs
from agent.diagnostics import diagnose
from agent.errors import AgentError
from protocol.commands import (
    COMMANDS,
    CommandReply,
    CommandRequest,
    LogsArgs,
    ReloadModelArgs,
    RequestAddress,
    SetLogLevelArgs,
    expiry_problem,
    fit_reply,
    parse_args,
    reply_topic,
    reply_topic_problem,
    unknown_command,
)
from protocol.errors import InvalidMessage, ProtocolError
from protocol.messages import decode, encode
from protocol.mqtt import Message, MQTTClient, MQTTError
from protocol.topics import Channel, device_topic

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

MAX_CONCURRENT = 4
"""Requests that run at once; more wait their turn (a reload can take seconds)."""
REMEMBERED = 256
"""Request ids remembered to run each request once though QoS 1 may deliver it twice."""

Handler = Callable[[CommandRequest, BaseModel], Awaitable[dict[str, Any]]]


class CommandError(AgentError):
    """A command that cannot do what it was asked; the message becomes the reply's error."""


class CommandRunner:
    """Runs the remote commands of one device (see the module docstring)."""

    def __init__(
        self,
        device_id: str,
        client: MQTTClient,
        handlers: Mapping[str, Handler],
        *,
        ack_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.topic = device_topic(device_id, Channel.COMMANDS)
        self.started_at = clock()
        self._client = client
        self._handlers = dict(handlers)
        self._ack_timeout = ack_timeout
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = asyncio.Semaphore(MAX_CONCURRENT)
        self.ran_total = 0
        self.refused_total = 0

    async def start(self) -> None:
        """Subscribe to the device's commands topic (renewed after every reconnect)."""
        await self._client.subscribe(self.topic, qos=1)

    def receive(self, message: Message) -> None:
        """A message on the commands topic (from the MQTT callback): handle it in a task."""
        task = asyncio.create_task(self._handle(message, self._clock()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, message: Message, received_at: float) -> None:
        reply = await self.answer(message, received_at)
        if reply is None:
            return
        try:
            await self._client.publish(
                reply_topic(self.device_id),
                fit_reply(reply),
                qos=1,
                timeout=self._ack_timeout,
                correlation_data=message.correlation_data,
            )
        except MQTTError as exc:
            log.warning(
                "%s: could not answer %s request %s: %s",
                self.device_id, reply.command, reply.request_id, exc,
            )  # fmt: skip

    async def answer(self, message: Message, received_at: float) -> CommandReply | None:
        """The reply to a request (None: nothing to answer, e.g. a redelivery)."""
        try:
            address = decode(RequestAddress, message.payload)
        except InvalidMessage as exc:
            if message.correlation_data is None:
                log.warning("%s: dropped a message that is no request: %s", self.device_id, exc)
                return None
            address = RequestAddress()
            return self._refuse(address, message, received_at, f"refused: {exc}")
        for requested in (message.response_topic, address.reply_to):
            problem = reply_topic_problem(requested, self.device_id)
            if problem is not None:
                return self._refuse(address, message, received_at, problem)
        expired = expiry_problem(address.expires_at, received_at, message.message_expiry_s)
        if expired is not None:
            return self._refuse(address, message, received_at, expired)
        if address.request_id is not None:
            if address.request_id in self._seen:
                log.info("%s: request %s again: ran once already", self.device_id,
                         address.request_id)  # fmt: skip
                return None
            self._seen[address.request_id] = None
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        if address.command not in COMMANDS:
            return self._refuse(address, message, received_at, unknown_command(address.command))
        try:
            request = decode(CommandRequest, message.payload)
            if request.device_id != self.device_id:
                raise InvalidMessage(f"the request is for device {request.device_id!r}")
            args = parse_args(request.command, request.args)
        except InvalidMessage as exc:
            return self._refuse(address, message, received_at, f"refused: {exc}")
        return await self._run(request, args, message, received_at)

    async def _run(
        self, request: CommandRequest, args: BaseModel, message: Message, received_at: float
    ) -> CommandReply:
        handler = self._handlers.get(request.command)
        if handler is None:
            error = f"{request.command} is not available on this agent"
            return self._reply(request, message, received_at, ok=False, error=error)
        log.info(
            "%s: running %s from %s (request %s)",
            self.device_id, request.command, request.sender, request.request_id,
            extra={"command": request.command, "sender": request.sender,
                   "request_id": request.request_id},
        )  # fmt: skip
        async with self._running:
            try:
                result = await handler(request, args)
            except (AgentError, ProtocolError, ValueError) as exc:
                log.warning("%s: %s failed: %s", self.device_id, request.command, exc)
                return self._reply(request, message, received_at, ok=False, error=str(exc))
            except Exception as exc:
                log.exception("%s: %s failed", self.device_id, request.command)
                error = f"internal error: {type(exc).__name__}: {exc}"
                return self._reply(request, message, received_at, ok=False, error=error)
        self.ran_total += 1
        return self._reply(request, message, received_at, ok=True, result=result)

    def _refuse(
        self, address: RequestAddress, message: Message, received_at: float, why: str
    ) -> CommandReply:
        self.refused_total += 1
        log.warning("%s: %s request %s: %s", self.device_id, address.command or "a",
                    address.request_id, why)  # fmt: skip
        return self._reply(address, message, received_at, ok=False, error=why)

    def _reply(
        self,
        request: CommandRequest | RequestAddress,
        message: Message,
        received_at: float,
        *,
        ok: bool,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> CommandReply:
        correlation = request.correlation_id
        if correlation is None and message.correlation_data is not None:
            correlation = message.correlation_data.decode(errors="replace")
        command = request.command if isinstance(request.command, str) else None
        return CommandReply(
            device_id=self.device_id,
            request_id=request.request_id,
            correlation_id=correlation,
            command=command[:64] if command else None,
            ok=ok,
            error=error,
            result=result or {},
            received_at=received_at,
            agent_time=self._clock(),
        )


# --- the six handlers ----------------------------------------------------------------------


def agent_handlers(agent: Agent) -> dict[str, Handler]:
    """The handlers of :data:`protocol.commands.COMMANDS` for one agent."""
    started_at = time.time()
    logs.ring_buffer()  # keep lines from now on, even where logs.configure() was not called

    async def ping(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        return {"pong": True}

    async def diag(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        return await diagnose(agent, started_at)

    async def tail(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, LogsArgs)
        lines = logs.ring_buffer().tail(args.tail)
        return {"lines": lines, "count": len(lines), "log_level": logs.current_level()}

    async def resync(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        return await _resync(agent)

    async def reload_model(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, ReloadModelArgs)
        return await _reload(agent, args.model)

    async def set_log_level(request: CommandRequest, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, SetLogLevelArgs)
        previous = logs.set_level(args.level)
        shown = max(logging.getLevelName(previous), logging.getLevelName(args.level))
        logging.getLogger("edgefleet.agent").log(
            shown, "log level %s -> %s (set-log-level from %s)", previous, args.level,
            request.sender, extra={"previous_level": previous, "log_level": args.level},
        )  # fmt: skip
        return {"previous": previous, "level": args.level}

    return {
        "ping": ping,
        "diag": diag,
        "logs": tail,
        "resync": resync,
        "reload-model": reload_model,
        "set-log-level": set_log_level,
    }


async def _resync(agent: Agent) -> dict[str, Any]:
    """Publish the birth and telemetry now, get the retained desired document again (the deployer
    takes it as any other: the same generation changes nothing) and end the uplink's backoff."""
    client, done = agent.client, {}
    timeout = agent.settings.uplink.ack_timeout_s
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("birth", lambda: client.publish(
            device_topic(agent.device_id, Channel.STATUS), encode(agent.birth()), qos=1,
            retain=True, timeout=timeout)),
        ("telemetry", lambda: client.publish(
            device_topic(agent.device_id, Channel.TELEMETRY), encode(agent.telemetry()), qos=0)),
        ("desired", lambda: client.subscribe(device_topic(agent.device_id, Channel.DESIRED), 1)),
    ]  # fmt: skip
    for name, step in steps:
        try:
            await step()
            done[name] = "done"
        except MQTTError as exc:
            done[name] = f"failed: {exc}"
    agent.uplink.drain_now()
    box = agent.outbox.stats()
    return {**done, "uplink": "draining", "outbox_depth": box.depth}


async def _reload(agent: Agent, model: str | None) -> dict[str, Any]:
    names = [model] if model is not None else list(agent.models)
    reloaded: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for name in names:
        try:
            served = await agent.deployer.reload(name)
        except (AgentError, ProtocolError) as exc:
            failed[name] = str(exc)
            continue
        reloaded.append(
            {
                "name": name,
                "version": served.version,
                "backend": served.backend,
                "fallback_reason": served.fallback_reason,
                "artifact_sha256": served.artifact_sha256,
                "serving_from": agent.deployer.slot_of(name) or "configured file",
            }
        )
    if failed:
        done = f"reloaded {', '.join(r['name'] for r in reloaded)}; " if reloaded else ""
        problems = "; ".join(f"{name}: {why}" for name, why in failed.items())
        raise CommandError(f"{done}not reloaded: {problems}")
    return {"reloaded": reloaded}
