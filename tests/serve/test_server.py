"""`hikari serve` as a real process on a free localhost port: the default limits on the wire (a 60-MP bomb, a
25 MB upload, a body streamed without a length, a truncated PNG, a text file), then load — 200 requests, 8 at a
time — with every answer well-formed and the server's memory flat."""

from __future__ import annotations

import base64
import io
import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from hikari.serve.process import ServerProcess

from .conftest import ONE_THREAD, ROOT, noise, png_bytes, served_args

MB = 2**20
# The stated bound: after 200 requests the server's resident memory is within this of what it was after warm-up
# (one of each kind of request, several times). Measured growth on the tiny models: a few MiB.
RSS_BOUND_BYTES = 96 * MB


@pytest.fixture(scope="module")
def small_queue_server(tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:  # fmt: skip
    """The default upload and pixel limits; a short queue so that load can fill it."""
    proc = ServerProcess(served_args(tiny_model_dir, served_runs, rag_index_dir)
                         + ["--queue-size", "4", "--max-new-tokens", "32"],
                         log=tmp_path_factory.mktemp("serve") / "server.log", env=ONE_THREAD, cwd=ROOT)  # fmt: skip
    yield proc
    proc.stop()


def post_image(url: str, data: bytes, name: str, **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/cascade", files={"image": (name, data, "image/png")},
                      data={"max_new_tokens": "8", **fields}, timeout=120)  # fmt: skip


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_binds_to_localhost_and_refuses_bad_input_at_the_default_limits(
    small_queue_server: ServerProcess, lesion_png: bytes
) -> None:
    url = small_queue_server.url
    assert small_queue_server.listening_on() == "127.0.0.1"
    bomb = png_bytes(Image.new("1", (10_000, 6_000)))  # 60 MP of one colour: a few kB of PNG
    refused = {
        "truncated": post_image(url, lesion_png[: len(lesion_png) // 2], "half.png"),
        "bomb": post_image(url, bomb, "bomb.png"),
        "25 MB": post_image(url, b"\0" * (25 * MB), "big.png"),
        "text": post_image(url, b"a note, not a picture\n" * 50, "note.txt"),
        "model": post_image(url, lesion_png, "x.png", stage3="gpt-4"),
    }
    assert {k: (r.status_code, error_code(r)) for k, r in refused.items()} == {
        "truncated": (400, "corrupt_image"), "bomb": (413, "too_many_pixels"), "25 MB": (413, "request_too_large"),
        "text": (415, "not_an_image"), "model": (404, "model_not_found")}  # fmt: skip
    assert "60.0 megapixels" in refused["bomb"].json()["error"]["message"]
    assert "limit is 20 MB" in refused["25 MB"].json()["error"]["message"]
    ok = post_image(url, lesion_png, "lesion.png")
    assert ok.status_code == 200 and ok.json()["caption"].strip()


def test_a_body_streamed_without_a_length_is_refused_before_it_ends(small_queue_server: ServerProcess) -> None:
    """1 MB chunks without a Content-Length (Transfer-Encoding: chunked): the 413 arrives while the client is still
    sending, soon after the 20 MB limit (the kernel's socket buffers hold a few MB more than the server read), and
    the server then closes the connection instead of reading on."""
    sent = 0
    with socket.create_connection(("127.0.0.1", small_queue_server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/cascade HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")  # fmt: skip
        part = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="huge.png"\r\n'
                b"Content-Type: image/png\r\n\r\n")  # a well-formed start: the parser reads on into the file
        sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        chunk = b"%x\r\n" % MB + b"\0" * MB + b"\r\n"
        try:
            while sent < 64 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_response(sock)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # noqa: PT012 - the server hung up
            for _ in range(256):
                sock.sendall(chunk)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.partition("\r\n\r\n")[2])["error"]["code"] == "request_too_large"
    assert sent < 48, f"the client sent {sent} MB before the server answered"


def read_response(sock: socket.socket) -> str:
    """One HTTP/1.1 response (head + Content-Length body) off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    length = lengths[0]
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def test_a_port_in_use_fails_before_any_model_loads(small_queue_server: ServerProcess) -> None:
    started = time.monotonic()
    taken = str(small_queue_server.port)
    result = subprocess.run([sys.executable, "-m", "hikari", "serve", "--stage1", "/nowhere/a", "--stage2",
                             "/nowhere/b", "--stage3", "/nowhere/c", "--port", taken],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{small_queue_server.port}" in result.stderr
    assert "HIKARI on" not in result.stdout + result.stderr and time.monotonic() - started < 60


def test_stopping_answers_waiting_requests_with_json(
    tiny_model_dir: Path, served_runs: dict[str, Path], rag_index_dir: Path, lesion_png: bytes, tmp_path: Path
) -> None:
    """SIGINT with a batch running and requests waiting: the running batch is answered, the waiting ones get a
    JSON 503, and the server exits cleanly."""
    server = ServerProcess(served_args(tiny_model_dir, served_runs, rag_index_dir) + ["--max-batch", "1"],
                           log=tmp_path / "server.log", env=ONE_THREAD, cwd=ROOT)  # fmt: skip
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(post_image, server.url, lesion_png, "x.png", max_new_tokens="200", k="3")
                       for _ in range(6)]  # fmt: skip
            time.sleep(2.0)  # the first batch runs, the rest wait
            server.proc.send_signal(signal.SIGINT)
            answers = [f.result() for f in futures]
        assert server.proc.wait(timeout=60) in (0, 130)  # 130: the conventional exit of an interrupted program
    finally:
        server.stop()
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    assert set(statuses) <= {200, 503}
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "shutting_down"
    assert "Traceback" not in (tmp_path / "server.log").read_text()


# -- load ----------------------------------------------------------------------------------------------------------
def requests_mix(lesion_png: bytes) -> list[tuple[str, dict[str, Any]]]:
    """One of each kind: cascades (with and without references, side by side), a chat, planted bad uploads."""
    data_url = "data:image/png;base64," + base64.b64encode(lesion_png).decode()
    small = io.BytesIO()
    noise(120, 90, seed=7).convert("RGBA").save(small, format="PNG")
    chat = {"model": "vega", "max_tokens": 6, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": "Describe the lesion."}]}]}
    return [
        ("cascade", {"files": {"image": ("lesion.png", lesion_png, "image/png")}, "data": {"max_new_tokens": "6"}}),
        ("cascade", {"files": {"image": ("rgba.png", small.getvalue(), "image/png")},
                     "data": {"max_new_tokens": "6", "k": "0", "stage3": "vega,antares"}}),
        ("chat", {"json": chat}),
        ("bad", {"files": {"image": ("half.png", lesion_png[:200], "image/png")}}),
    ]  # fmt: skip


def send(client: httpx.Client, kind: str, request: dict[str, Any], busy: list[int] | None = None,
         patience: float = 600) -> tuple[str, httpx.Response]:  # fmt: skip
    """POST one request as a polite client does: a 503 is checked, counted in `busy`, and retried after its
    Retry-After (capped at 2 s) for up to `patience` seconds."""
    path = "/v1/chat/completions" if kind == "chat" else "/v1/cascade"
    deadline = time.monotonic() + patience
    while True:
        response = client.post(path, timeout=300, **request)
        if response.status_code != 503 or busy is None or time.monotonic() > deadline:
            break
        check(kind, response)
        busy.append(1)
        time.sleep(min(2.0, float(response.headers["Retry-After"])))
    return kind, response


def check(kind: str, response: httpx.Response) -> str:
    """'ok', 'busy' or 'refused' for a well-formed answer; an AssertionError for anything else."""
    status, body = response.status_code, response.json()
    if status == 503:
        assert body["error"]["code"] == "server_busy" and int(response.headers["Retry-After"]) >= 1
        return "busy"
    if kind == "bad":
        assert status == 400 and body["error"]["code"] == "corrupt_image", body
        return "refused"
    assert status == 200, (kind, status, body)
    if kind == "chat":
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    else:
        assert body["diagnosis"]["label"] and body["caption"] is not None and body["timings_ms"]["stage1"] > 0
    return "ok"


def test_load_200_requests_8_at_a_time(small_queue_server: ServerProcess, lesion_png: bytes) -> None:
    mix = requests_mix(lesion_png)
    with httpx.Client(base_url=small_queue_server.url, limits=httpx.Limits(max_connections=8)) as client:
        for kind, request in mix * 3:  # warm-up: every code path allocated once
            check(*send(client, kind, request))
        warm = small_queue_server.rss_bytes()
        busy: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda kr: send(client, *kr, busy), [mix[i % len(mix)] for i in range(200)]))
        outcomes = [check(kind, response) for kind, response in answers]
        after = small_queue_server.rss_bytes()
        assert client.get("/healthz").json()["status"] == "ok"
    # every request answered in the end: the 150 good ones served, the 50 planted bad uploads (only those) refused
    assert (outcomes.count("ok"), outcomes.count("refused")) == (150, 50), (outcomes, len(busy))
    assert after - warm <= RSS_BOUND_BYTES, f"RSS grew {(after - warm) / MB:.0f} MiB over 200 requests"
    print(f"503s along the way: {len(busy)}; RSS after warm-up {warm / MB:.0f} MiB, after {after / MB:.0f} MiB")
