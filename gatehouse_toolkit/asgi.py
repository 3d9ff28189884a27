"""Plain ASGI: a middleware that puts any ASGI app behind Gatehouse.

It serves the RFC 9728 document at the tool server's metadata path, verifies every other HTTP request's
token (and DPoP proof) offline, and hands the app the :class:`~gatehouse_toolkit.guard.Caller` in
``scope["gatehouse.caller"]`` (see :func:`caller`).  Per tool call the app asks the decision API with
``await guard.aauthorize(caller, capability=..., parameters=...)``; a :class:`~gatehouse_toolkit.Refused`
raised before the app starts its response is answered here with the right challenge.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio.to_thread

from gatehouse_toolkit.challenges import Challenge
from gatehouse_toolkit.guard import Caller, Refused, ToolServerGuard
from gatehouse_toolkit.metadata import metadata_path

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "gatehouse.caller"


def caller(scope: Scope) -> Caller:
    """The authenticated caller of this request (set by :class:`GatehouseMiddleware`)."""
    return scope[SCOPE_KEY]


async def _send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    raw.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


async def send_challenge(send: Send, challenge: Challenge) -> None:
    await _send_json(send, challenge.status, challenge.body(), challenge.headers)


def closing_on_shutdown(app: ASGIApp, *guards: Any) -> ASGIApp:
    """``app``, whose ASGI lifespan shutdown also closes the guards' connections to Gatehouse (anything
    with an async ``aclose()``: a :class:`ToolServerGuard`, a :class:`DecisionClient`)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                for guard in guards:
                    await guard.aclose()
            return message

        return await app(scope, receiving, send)

    return wrapped


class MetadataEndpoint:
    """Serves this tool server's RFC 9728 document in front of ``app`` and passes everything else through.

    For apps that authenticate on their own (the MCP SDK's) but whose metadata should come from the
    toolkit's settings (scopes, DPoP algorithms).
    """

    def __init__(self, app: ASGIApp, guard: ToolServerGuard):
        self.app = app
        self.guard = guard
        self.metadata_path = metadata_path(guard.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("root_path", "") + scope["path"] == self.metadata_path:
            if scope["method"] not in ("GET", "HEAD"):
                return await _send_json(send, 405, {"error": "method_not_allowed"}, {"Allow": "GET, HEAD"})
            return await _send_json(send, 200, self.guard.metadata(), {"Access-Control-Allow-Origin": "*"})
        return await self.app(scope, receive, send)


class GatehouseMiddleware:
    """Wraps ``app``; ``public_paths`` (exact paths) pass without a token (health checks and the like)."""

    def __init__(self, app: ASGIApp, guard: ToolServerGuard, *, public_paths: Iterable[str] = ()):
        self.app = app
        self.guard = guard
        self.metadata_path = metadata_path(guard.settings)
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            # Websockets are not covered by this middleware: refuse rather than pass unchecked.
            await send({"type": "websocket.close", "code": 1008})
            return None
        path = scope.get("root_path", "") + scope["path"]
        if path == self.metadata_path:
            if scope["method"] not in ("GET", "HEAD"):
                return await _send_json(send, 405, {"error": "method_not_allowed"}, {"Allow": "GET, HEAD"})
            return await _send_json(send, 200, self.guard.metadata(), {"Access-Control-Allow-Origin": "*"})
        if path in self.public_paths:
            return await self.app(scope, receive, send)

        authorization = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(authorization) > 1:
            return await send_challenge(send, self.guard.challenges.missing_token())
        dpop = [v.decode("latin-1") for k, v in scope["headers"] if k == b"dpop"]
        try:
            found = await anyio.to_thread.run_sync(
                lambda: self.guard.authenticate(
                    authorization=authorization[0].decode("latin-1") if authorization else None,
                    dpop=dpop,
                    method=scope["method"],
                    url=self.guard.settings.url_for(path),
                )
            )
        except Refused as refused:
            return await send_challenge(send, refused.challenge)

        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app({**scope, SCOPE_KEY: found}, receive, tracking_send)
        except Refused as refused:
            if started:
                raise
            await send_challenge(send, refused.challenge)
        return None
