"""Request limits enforced before a request reaches a model: body size (while the body streams in), API key.

`BodyLimit` is plain ASGI middleware. A request whose Content-Length is over the limit is answered 413 before a
byte of its body is read; a request without one (chunked) is counted as it arrives and refused the moment it
passes the limit — the rest is never read, so a 10 GB upload costs the server nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from hikari.serve.errors import error_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes the limit (answered 413, with `Connection: close` so that
    the server stops reading the rest: by the app's handler, or by `BodyLimit` when the app let it through)."""


def too_large_message(size: str, max_bytes: int) -> str:
    return f"the request body is {size}; the limit is {max_bytes / 2**20:g} MB (hikari serve --max-upload-mb)"


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, before or while they stream in; check the API key."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, api_key: str | None = None) -> None:
        self.app, self.max_bytes, self.api_key = app, max_bytes, api_key

    def _too_large(self, size: str) -> bytes:
        return error_bytes(413, "request_too_large", too_large_message(size, self.max_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope["path"].startswith("/v1/") and scope["path"] != "/v1/info":
            given = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                await _send_json(send, 401, error_bytes(401, "invalid_api_key", "missing or wrong API key: send "
                                                        "'Authorization: Bearer <key>'"))  # fmt: skip
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_json(send, 413, self._too_large(f"{int(length) / 2**20:.1f} MB"))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, self._too_large(f"more than {self.max_bytes / 2**20:g} MB"))
