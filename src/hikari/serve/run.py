"""Running the app: the listening socket bound before any model loads (a port in use fails at once), and a
uvicorn server that, when told to stop, answers the requests still waiting with a JSON 503 and lets the batch that
is running finish."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType
from typing import Any

import uvicorn

# How long a stopping server waits for the running batch (an 8B caption batch on a GPU takes a few seconds).
GRACE_SECONDS = 30


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), ready for uvicorn to listen on. Raises OSError naming the
    address when it is taken or cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise OSError(f"cannot resolve host {host!r}: {err}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, worker: Any) -> None:
        super().__init__(config)
        self.worker = worker
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.worker is not None and self.loop is not None and not self.worker.closing:
            self.loop.call_soon_threadsafe(self.worker.shut)
        super().handle_exit(sig, frame)


def serve(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve `app` (from `create_app`) on `sock` until SIGINT/SIGTERM."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACE_SECONDS)
    _Server(config, getattr(app, "worker", None)).run(sockets=[sock])
