"""The control plane's side of authentication: credentials to an :class:`Identity`, logins,
sessions, and writing audit records, all through the store.

One per app (``app.state.auth``), shared by the middleware and the auth routes. Every request
looks its token or session up (a read on a reader thread, well under a millisecond), so a
revocation, a disabled user or a logout takes effect on the very next request: nothing is cached
but the fact that an admin exists (it never stops being true: the last admin cannot be disabled).
Password checks (Argon2id, 64 MiB each) run on threads, at most :data:`MAX_HASHING` at a time, so
a burst of logins can neither block the event loop nor exhaust memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.audit import log as audit_log
from controlplane.auth import accounts
from controlplane.auth.credentials import (
    Passwords,
    digest,
    new_csrf_token,
    new_session_id,
    parse_token,
)
from controlplane.auth.identity import Identity, from_session, from_token, from_user
from controlplane.settings import Settings
from controlplane.store import Store

log = logging.getLogger(__name__)

MAX_HASHING = 2
TOUCH_EVERY_S = 60.0
"""A token's ``last_used_at`` is written at most this often (a write per request would cost)."""


@dataclass(frozen=True)
class NewSession:
    cookie: str  # the session id, for the cookie only (the store keeps its digest)
    csrf_token: str
    expires_at: float


class Authenticator:
    def __init__(
        self, settings: Settings, store: Store, clock: Callable[[], float],
        passwords: Passwords | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.clock = clock
        self.passwords = passwords or Passwords()
        self.trusted = audit_log.parse_networks(settings.trusted_proxies)
        self._bootstrapped = False
        self._hashing = asyncio.Semaphore(MAX_HASHING)

    @property
    def enabled(self) -> bool:
        return self.settings.auth

    async def bootstrapped(self) -> bool:
        """Whether an enabled admin exists (until then every operator route is refused)."""
        if not self._bootstrapped:
            self._bootstrapped = await self.store.read(accounts.has_admin)
        return self._bootstrapped

    # -- credentials ----------------------------------------------------------------------------

    async def by_token(self, token: str) -> Identity | str:
        parsed = parse_token(token)
        if parsed is None:
            return "invalid token (expected eft_...: create one with `edgefleet tokens create`)"
        token_id, secret = parsed
        now = self.clock()
        row = await self.store.read(accounts.token_row, token_id)
        found = from_token(row, secret, now)
        if isinstance(found, Identity) and row is not None:
            last = row["last_used_at"]
            if last is None or now - last >= TOUCH_EVERY_S:
                await self.store.transact(accounts.touch_token, token_id, now)
        return found

    async def by_session(self, cookie: str) -> Identity | str:
        id_digest = digest(cookie)
        row = await self.store.read(accounts.session_row, id_digest)
        return from_session(row, id_digest, self.clock())

    async def by_password(self, name: str, password: str) -> Identity | str:
        """The user's identity if ``password`` is theirs. Unknown users and wrong passwords get
        the same answer, after the same work."""
        row = await self.store.read(accounts.user_row, name)
        stored = row["password_hash"] if row is not None else None
        async with self._hashing:
            ok = await asyncio.to_thread(self.passwords.verify, stored, password)
        if row is None or not ok:
            return "wrong user name or password"
        if stored is not None and self.passwords.needs_rehash(stored):
            fresh = await self.hash_password(password)
            await self.store.transact(accounts.set_password_hash, row["id"], fresh)
        return from_user(row, "password")

    async def hash_password(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self.passwords.hash, password)

    # -- sessions -------------------------------------------------------------------------------

    async def open_session(self, user_id: int) -> NewSession:
        now = self.clock()
        session = NewSession(
            new_session_id(), new_csrf_token(), now + self.settings.session_lifetime_s
        )
        await self.store.transact(
            lambda conn: accounts.add_session(
                conn, id_digest=digest(session.cookie), user_id=user_id,
                csrf_token=session.csrf_token, now=now, expires_at=session.expires_at,
            )
        )  # fmt: skip
        return session

    async def close_session(self, id_digest: str) -> None:
        await self.store.transact(accounts.delete_session, id_digest)

    # -- the audit log ----------------------------------------------------------------------------

    async def record(self, record: audit_log.Record) -> None:
        """Append ``record``; a failure is logged loudly (the action has happened already)."""
        try:
            await self.store.transact(audit_log.append, record)
        except Exception:
            log.exception(
                "audit: could not record %s by %s (outcome %s)",
                record.action, record.actor or "anonymous", record.outcome,
            )  # fmt: skip
