"""Operator accounts over HTTP: ``/api/v1/me``, ``/api/v1/users``, ``/api/v1/tokens``
(docs/api.md).

The middleware has already checked the role each route needs (:mod:`controlplane.auth.policy`);
the handlers here add the checks that depend on *whose* account it is: anyone may change their
own password and create, list and revoke their own tokens; only an admin does so for others.
Bodies are JSON objects validated with unknown fields refused (400 naming the field). Passwords
and token secrets never appear in an answer (a new token's secret excepted, once) or a log line.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import check_known
from controlplane.auth import accounts
from controlplane.auth.authenticator import Authenticator
from controlplane.auth.credentials import check_password, new_token, token_digest
from controlplane.auth.identity import Identity
from controlplane.auth.roles import Role, ScopeError, token_scope
from controlplane.errors import BadRequest, Refused
from controlplane.store import Store

M = TypeVar("M", bound=BaseModel)
MAX_BODY = 16 * 1024


class Forbidden(Refused):
    status = 403


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: Role = "viewer"
    password: SecretStr | None = None  # None: an account that only uses tokens


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    disabled: bool | None = None


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: SecretStr


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    role: Role | None = None  # default: the most the token may have
    user: str | None = None  # default: the caller
    expires_in_s: float | None = Field(None, gt=0)


# -- helpers ---------------------------------------------------------------------------------------


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def _store(request: Request) -> Store:
    return _auth(request).store


def identity_of(request: Request) -> Identity:
    identity: Identity = request.state.identity
    return identity


def _is_admin(identity: Identity) -> bool:
    return identity.role == "admin"


async def _body(request: Request, model: type[M]) -> M:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadRequest("body", f"larger than {MAX_BODY} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("body", "not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "expected a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "body"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        raise BadRequest(field, message) from None


def _password(secret: SecretStr) -> str:
    try:
        return check_password(secret.get_secret_value())
    except ValueError as exc:
        raise BadRequest("password", str(exc)) from None


def _detail(request: Request, **detail: Any) -> None:
    """Add to this request's audit record (never a secret)."""
    request.state.audit_detail = {**getattr(request.state, "audit_detail", {}), **detail}


# -- me and users ----------------------------------------------------------------------------------


async def me(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    identity = identity_of(request)
    return JSONResponse(
        {
            "user": identity.user, "role": identity.role, "via": identity.via,
            "token_id": identity.token_id, "auth": _auth(request).enabled,
        }
    )  # fmt: skip


async def list_users(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    users = await _store(request).read(accounts.list_users)
    return JSONResponse({"users": users, "count": len(users)})


async def create_user(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    body = await _body(request, NewUser)
    accounts.check_user_name(body.name)
    _detail(request, user=body.name, role=body.role)
    auth = _auth(request)
    hashed = await auth.hash_password(_password(body.password)) if body.password else None
    created_by = identity_of(request).user
    user = await auth.store.transact(
        lambda conn: accounts.add_user(
            conn, body.name, body.role, hashed, now=auth.clock(), created_by=created_by
        )
    )
    return JSONResponse(user, status_code=201)


async def get_user(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    name = request.path_params["name"]
    row = await _store(request).read(accounts.get_user, name)
    return JSONResponse(accounts.user_view(row))


async def change_user(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    name = request.path_params["name"]
    body = await _body(request, UserChange)
    if body.role is None and body.disabled is None:
        raise BadRequest("body", "nothing to change: give role and/or disabled")
    _detail(request, **body.model_dump(exclude_none=True))
    auth = _auth(request)
    user = await auth.store.transact(
        lambda conn: accounts.change_user(
            conn, name, now=auth.clock(), role=body.role, disabled=body.disabled
        )
    )
    return JSONResponse(user)


async def set_password(request: Request) -> Response:
    """A user sets their own password; an admin sets anyone's. Ends the user's sessions."""
    check_known(request.query_params.keys(), ())
    name = request.path_params["name"]
    identity = identity_of(request)
    if identity.user != name and not _is_admin(identity):
        raise Forbidden(f"only {name!r} or an admin may set {name!r}'s password")
    body = await _body(request, NewPassword)
    auth = _auth(request)
    hashed = await auth.hash_password(_password(body.password))
    user = await auth.store.transact(
        lambda conn: accounts.change_user(conn, name, now=auth.clock(), password_hash=hashed)
    )
    return JSONResponse(user)


# -- tokens ----------------------------------------------------------------------------------------


async def create_token(request: Request) -> Response:
    """A token for the caller, or (an admin) for another user; its secret is answered once."""
    check_known(request.query_params.keys(), ())
    body = await _body(request, NewToken)
    identity = identity_of(request)
    owner = body.user or identity.user
    if owner is None:
        raise BadRequest("user", "name the token's owner (nobody is authenticated: auth is off)")
    auth = _auth(request)
    row = await auth.store.read(accounts.get_user, owner)
    if row["disabled"]:
        raise BadRequest("user", f"user {owner!r} is disabled")
    creator = identity.role or "viewer"
    try:
        role = token_scope(creator, row["role"], body.role, for_self=owner == identity.user)
    except ScopeError as exc:
        raise Forbidden(str(exc)) from None
    token_id, token = new_token()
    name = accounts.check_token_name(body.name or f"{owner}-{token_id[:4]}")
    now = auth.clock()
    expires_at = now + body.expires_in_s if body.expires_in_s is not None else None
    _detail(request, token_id=token_id, user=owner, role=role)
    view = await auth.store.transact(
        lambda conn: accounts.add_token(
            conn, token_id=token_id, secret_digest=token_digest(token), user_id=row["id"],
            name=name, role=role, now=now, created_by=identity.user, expires_at=expires_at,
        )
    )  # fmt: skip
    return JSONResponse({**view, "token": token}, status_code=201)


async def list_tokens(request: Request) -> Response:
    """The caller's tokens; an admin's ``?user=NAME`` or ``?all=true`` shows others'."""
    q = request.query_params
    check_known(q.keys(), {"user", "all"})
    identity = identity_of(request)
    everyone = q.get("all") == "true" or identity.user is None
    if q.get("all") not in (None, "true", "false"):
        raise BadRequest("all", "expected true or false")
    name = q.get("user") or identity.user
    if (everyone or name != identity.user) and not _is_admin(identity):
        raise Forbidden("only an admin lists other users' tokens")
    store = _store(request)
    if everyone and q.get("user") is None:
        tokens = await store.read(accounts.list_tokens, None)
    else:
        assert name is not None
        row = await store.read(accounts.get_user, name)
        tokens = await store.read(accounts.list_tokens, row["id"])
    return JSONResponse({"tokens": tokens, "count": len(tokens)})


async def revoke_token(request: Request) -> Response:
    check_known(request.query_params.keys(), ())
    token_id = request.path_params["id"]
    identity = identity_of(request)
    auth = _auth(request)
    row = await auth.store.read(accounts.get_token, token_id)
    if row["user"] != identity.user and not _is_admin(identity):
        raise Forbidden("only the token's owner or an admin may revoke it")
    _detail(request, user=row["user"])
    view = await auth.store.transact(accounts.revoke_token, token_id, auth.clock())
    return JSONResponse(view)


routes = [
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/users", list_users, methods=["GET"]),
    Route("/api/v1/users", create_user, methods=["POST"]),
    Route("/api/v1/users/{name}", get_user, methods=["GET"]),
    Route("/api/v1/users/{name}", change_user, methods=["PATCH"]),
    Route("/api/v1/users/{name}/password", set_password, methods=["PUT"]),
    Route("/api/v1/tokens", create_token, methods=["POST"]),
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens/{id}", revoke_token, methods=["DELETE"]),
]
