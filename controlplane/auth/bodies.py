"""Reading an ASGI request body ahead of the app, and handing it on unchanged.

The auth middleware reads a form post's body to find its CSRF token, and the device check reads
an upload's body to hash it against the signature; the route behind them must still receive the
same body. :func:`read_ahead` takes it (bounded), :func:`replay` gives it to the app once, then
passes on whatever else the client sends (a disconnect).
"""

from __future__ import annotations

from starlette.types import Message, Receive


async def read_ahead(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first gives the app ``body`` as one message, then the client's own."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
