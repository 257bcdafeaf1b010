"""`hikari serve` as a child process on a free localhost port — how the tests, the screenshot script and
benchmarks/serve.py start a real server (and how a notebook can):

    with ServerProcess(["--demo"]) as server:
        requests.post(f"{server.url}/v1/cascade", files=...)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """Start `python -m hikari serve --port <free> ARGS`, wait until /healthz answers, stop it on `stop()` / exit.

    Args:
        args: the serve options (models, limits, …) without --port.
        log: file for the server's output (appended); None sends it to this process's stderr.
        env: extra environment variables for the server (e.g. OMP_NUM_THREADS).
        cwd: the server's working directory (relative model paths resolve there).
        timeout: seconds to wait for the models to load.
    """

    def __init__(self, args: list[str], *, log: Path | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 180.0) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://{LOCALHOST}:{self.port}"
        self.log_path = log
        self._log: IO[bytes] | None = log.open("ab") if log is not None else None
        self.proc = subprocess.Popen([sys.executable, "-m", "hikari", "serve", "--port", str(self.port), *args],
                                     cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=self._log)  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log is not None else "(see stderr)"
                self._close_log()
                raise RuntimeError(f"hikari serve exited with {self.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hikari serve did not answer within {timeout:.0f} s")
            time.sleep(0.3)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {self.proc.pid}")

    def listening_on(self) -> str:
        """The address the server's socket is bound to (Linux /proc/net/tcp*: the LISTEN entry of our port)."""
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, port = fields[1].split(":")
                if fields[3] == "0A" and int(port, 16) == self.port:
                    raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
        raise RuntimeError(f"nothing listens on port {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        self.stop()
