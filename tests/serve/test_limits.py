"""BodyLimit on its own: an ASGI app behind it, fed a body in chunks, never reads past the limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hikari.serve.limits import BodyLimit

MB = 2**20


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that reads the whole body, then answers with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(app: Any, chunks: int, *, chunk: int = MB, headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
         path: str = "/v1/cascade") -> tuple[int, dict[str, Any], int]:  # fmt: skip
    """(status, JSON body, chunks the server pulled) for a POST of `chunks` chunks."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": pulled < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    app = BodyLimit(echo_length, max_bytes=2 * MB)
    status, body, pulled = call(app, 64)  # 64 MB offered, no Content-Length
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert "limit is 2 MB" in body["error"]["message"]
    assert pulled == 3  # the third megabyte passed the limit; nothing after it was read


def test_bodies_within_the_limit_pass_whole() -> None:
    app = BodyLimit(echo_length, max_bytes=2 * MB)
    assert call(app, 2)[:2] == (200, {"size": 2 * MB})


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    app = BodyLimit(echo_length, max_bytes=2 * MB)
    status, body, pulled = call(app, 5, headers=[(b"content-length", str(5 * MB).encode())])
    assert (status, pulled) == (413, 0) and "5.0 MB" in body["error"]["message"]


def test_api_key_guards_the_api_but_not_info_or_health() -> None:
    app = BodyLimit(echo_length, max_bytes=MB, api_key="k")
    assert call(app, 1, chunk=10)[0] == 401
    assert call(app, 1, chunk=10, headers=[(b"authorization", b"Bearer wrong")])[0] == 401
    assert call(app, 1, chunk=10, headers=[(b"authorization", b"Bearer k")])[0] == 200
    assert call(app, 1, chunk=10, path="/v1/info")[0] == 200
    assert call(app, 1, chunk=10, path="/healthz")[0] == 200
