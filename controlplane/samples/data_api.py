"""The routes that protect kept inputs (docs/data.md, docs/api.md): what a selection holds,
deletion on demand by device and time range, and the keyring (its keys and their rotation).

A deletion with no selection would delete every kept input: it is refused unless ``all=true``
says so (:func:`~controlplane.samples.selection.parse_selection`). Keys are shown by id and
time only; their bytes never leave the control plane's data directory. Who may call each route
is in ``controlplane/auth/policy.py`` (deletion and keys: admin); the audit log records each
deletion and rotation with the detail these handlers add.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import Context, check_known
from controlplane.samples import selection as sel
from controlplane.samples.api import keeper_of


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def data(request: Request) -> Response:
    """``GET``: what the selection holds; ``DELETE``: delete it."""
    ctx = _ctx(request)
    check_known(request.query_params.keys(), sel.PARAMETERS)
    selection = sel.parse_selection(request.query_params)
    keeper = keeper_of(ctx)
    if request.method == "GET":
        count, size = await ctx.store.read(sel.count_selected, selection)
        return JSONResponse({"selection": selection.describe(), "inputs": count, "bytes": size})
    removed = await keeper.delete(selection)
    # The audit record (who, when, from where: controlplane/auth/middleware.py) gets what went.
    request.state.audit_detail = {**selection.describe(), "deleted": removed.count,
                                  "bytes": removed.bytes}  # fmt: skip
    return JSONResponse(
        {"selection": selection.describe(), "deleted": removed.count, "bytes": removed.bytes}
    )


async def keys(request: Request) -> Response:
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    return JSONResponse(await keeper_of(ctx).status())


async def rotate(request: Request) -> Response:
    """A new current key; the inputs are sealed again under it in the background and the old
    keys retired when nothing is sealed under them (``GET .../keys`` shows the progress)."""
    ctx = _ctx(request)
    check_known(request.query_params.keys(), ())
    keeper = keeper_of(ctx)
    key = await keeper.rotate()
    request.state.audit_detail = {"key_id": key.id}  # the key's id, never the key
    status = await keeper.status()
    return JSONResponse(
        {"key_id": key.id, "created_at": key.created_at, "pending": status["pending"]},
        status_code=202,
    )


routes = [
    Route("/api/v1/data", data, methods=["GET", "DELETE"]),
    Route("/api/v1/data/keys", keys, methods=["GET"]),
    Route("/api/v1/data/keys/rotate", rotate, methods=["POST"]),
]
