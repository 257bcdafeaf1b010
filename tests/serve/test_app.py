"""`hikari serve`'s HTTP API on the tiny models, in process: every endpoint, the OpenAI client against the chat
endpoint, and every bad input answered with a 4xx JSON error that names the problem — after which the server
still serves."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hikari.config import ServeConfig
from hikari.data.labels import DISEASES, GROUPS
from hikari.serve.app import create_app
from hikari.serve.service import HikariService

from .conftest import noise, png_bytes

LIMITS = ServeConfig(max_upload_mb=2, max_pixels=4_000_000, max_new_tokens=64)


@pytest.fixture(scope="module")
def client(service: HikariService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    allowed = tmp_path_factory.mktemp("allowed")
    noise(80, 60).save(allowed / "lesion.png")
    app = create_app(service, LIMITS, allowed_folder=allowed)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.allowed = allowed  # type: ignore[attr-defined]
        yield c


def cascade(client: TestClient, image: bytes, name: str = "lesion.png", **fields: str) -> object:
    return client.post("/v1/cascade", files={"image": (name, image, "image/png")},
                       data={"max_new_tokens": "12", **fields})  # fmt: skip


def assert_error(response: object, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and all(w in body["error"]["message"] for w in words), body


def test_health_models_info_and_page(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    by_id = {m["id"]: m for m in models["data"]}
    assert set(by_id) == {"model", "vega", "antares"}  # the tiny base serves Stage 1 and 2, loaded once
    assert by_id["model"]["stages"] == ["stage1", "stage2"]
    assert by_id["vega"]["stages"] == ["stage3"] and by_id["vega"]["fingerprint"]["kind"] == "run"
    info = client.get("/v1/info").json()
    assert info["stage3"] == ["vega", "antares"] and info["references"] and info["probabilities"]
    page = client.get("/")
    assert page.status_code == 200 and "not a medical device" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_cascade_answers_with_group_diagnosis_probabilities_references_and_caption(
    client: TestClient, lesion_png: bytes
) -> None:
    response = cascade(client, lesion_png, stage3="vega,antares", text="red scaly plaque")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group"]["label"] in (*GROUPS, "Unknown")
    assert sum(body["group"]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    probabilities = body["diagnosis"]["probabilities"]
    assert list(probabilities) == list(DISEASES) and sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
    top = body["diagnosis"]["top"]
    assert len(top) == 5 and [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert len(body["references"]) == 3 and body["query_text_source"] == "user"
    for ref in body["references"]:
        assert ref["disease"] in DISEASES and ref["thumbnail_url"].endswith("/thumbnail")
        thumb = client.get(ref["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert set(body["captions"]) == {"vega", "antares"} and body["caption"] == body["captions"]["vega"]
    assert body["caption"].strip(), body["raw"]
    assert body["captions"]["vega"] != body["captions"]["antares"]  # two models, two captions
    assert {"stage1", "stage2", "retrieval", "stage3:vega", "stage3:antares"} <= set(body["timings_ms"])
    assert body["models"]["stage3:vega"]["adapter_sha256"]
    assert "not a medical device" in body["disclaimer"]


def test_cascade_without_references_and_every_image_mode(client: TestClient) -> None:
    base = noise(90, 70, seed=3)
    for image in (base.convert("CMYK"), base.convert("RGBA"), base.convert("P"), base.convert("L"),
                  Image.fromarray(np.asarray(base.convert("L"), dtype="uint16") * 257)):  # fmt: skip
        fmt = "JPEG" if image.mode == "CMYK" else "PNG"
        data = png_bytes(image) if fmt == "PNG" else _jpeg(image)
        response = cascade(client, data, name=f"x.{fmt.lower()}", k="0", probabilities="false")
        assert response.status_code == 200, (image.mode, response.text)
        body = response.json()
        assert body["references"] == [] and body["diagnosis"]["probabilities"] is None


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_bad_uploads_get_a_4xx_that_names_the_problem_and_the_server_keeps_serving(
    client: TestClient, lesion_png: bytes
) -> None:
    assert_error(cascade(client, lesion_png[: len(lesion_png) // 2], name="half.png"), 400, "corrupt_image",
                 "half.png", "cannot decode")  # fmt: skip
    assert_error(cascade(client, b"just some text\n" * 20, name="notes.txt"), 415, "not_an_image", "notes.txt")
    bomb = png_bytes(Image.new("1", (3000, 2000)))  # 6 MP of one colour: a few kB of PNG
    assert len(bomb) < 50_000
    assert_error(cascade(client, bomb, name="bomb.png"), 413, "too_many_pixels", "bomb.png", "6.0 megapixels")
    assert_error(cascade(client, b"\0" * (3 * 2**20), name="big.png"), 413, "request_too_large", "limit is 2 MB")
    assert_error(cascade(client, lesion_png, stage3="nope"), 404, "model_not_found", "'nope'", "vega")
    assert_error(cascade(client, lesion_png, k="many"), 400, "invalid_parameter", "k must be an integer")
    assert_error(cascade(client, lesion_png, max_new_tokens="100000"), 400, "invalid_parameter", "max_new_tokens")
    assert_error(client.post("/v1/cascade", files={"text": (None, "no image")}), 400, "missing_image", "'image'")
    assert_error(client.post("/v1/cascade", json={"image": "x"}), 415, "not_multipart", "multipart")
    assert_error(client.get("/v1/nothing"), 404, "not_found", "/v1/nothing")
    assert_error(client.get("/v1/references/../../etc/passwd/thumbnail"), 404, "not_found")
    assert_error(client.get("/v1/references/999999.png/thumbnail"), 404, "unknown_reference", "999999.png")
    assert cascade(client, lesion_png, k="0").status_code == 200  # still serving


def test_openai_client_chat_completion_and_stream(client: TestClient, lesion_png: bytes) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client)
    url = "data:image/png;base64," + base64.b64encode(lesion_png).decode()
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": "Describe this skin lesion."}]}]  # fmt: skip
    done = oai.chat.completions.create(model="vega", messages=messages, max_tokens=10)
    assert done.object == "chat.completion" and done.model == "vega"
    assert done.choices[0].finish_reason in ("stop", "length") and done.choices[0].message.role == "assistant"
    assert done.usage.completion_tokens <= 10 and done.usage.prompt_tokens > 0
    stream = oai.chat.completions.create(model="vega", messages=messages, max_tokens=10, stream=True)
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[-1].choices[0].finish_reason == done.choices[0].finish_reason
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == done.choices[0].message.content  # greedy: the same answer, streamed
    with pytest.raises(openai.NotFoundError, match="no model called 'gpt-4'"):
        oai.chat.completions.create(model="gpt-4", messages=messages)


def test_chat_parameters_are_checked_as_openai_types(client: TestClient) -> None:
    def chat(**fields: object) -> object:
        return client.post("/v1/chat/completions", json={"model": "vega", "messages": [
            {"role": "user", "content": "hi"}], **fields})  # fmt: skip

    assert_error(chat(max_tokens="8"), 400, "invalid_parameter", "max_tokens must be a whole number")
    assert_error(chat(max_tokens=8.5), 400, "invalid_parameter", "max_tokens")
    assert_error(chat(n=2), 400, "invalid_parameter", "n must be 1")
    assert_error(chat(stream="yes"), 400, "invalid_parameter", "stream must be true or false")
    missing = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert_error(missing, 400, "missing_parameter", "'model' is required", "vega")
    assert chat(max_tokens=3).status_code == 200
    plain = client.post("/v1/chat/completions", json={"model": "vega", "max_tokens": 3, "stream": True,
                                                       "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert '"usage"' not in plain.text  # as OpenAI: usage only when stream_options.include_usage
    counted = chat(max_tokens=3, stream=True, stream_options={"include_usage": True})
    assert '"usage"' in counted.text


def test_cascade_flags_are_checked(client: TestClient, lesion_png: bytes) -> None:
    assert_error(cascade(client, lesion_png, probabilities="maybe"), 400, "invalid_parameter", "probabilities")


def test_chat_reads_file_urls_only_under_the_allowed_folder(client: TestClient) -> None:
    def chat(url: str) -> object:
        return client.post("/v1/chat/completions", json={"model": "vega", "max_tokens": 4, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is shown?"}]}]})  # fmt: skip

    inside = client.allowed / "lesion.png"  # type: ignore[attr-defined]
    assert chat(f"file://{inside}").status_code == 200
    assert chat(f"file://localhost{inside}").status_code == 200
    spaced = inside.with_name("my pic.png")
    spaced.write_bytes(inside.read_bytes())
    assert chat(spaced.as_uri()).status_code == 200  # file:///…/my%20pic.png
    assert_error(chat(f"file://{inside.parent}/"), 400, "invalid_image_url", "a folder, not a picture")
    assert_error(chat("file://server/share/x.png"), 400, "invalid_image_url", "local absolute path")
    assert_error(chat(f"file://{inside.parent}/../../etc/passwd"), 403, "path_not_allowed", "outside the allowed")
    assert_error(chat("https://example.org/x.png"), 400, "invalid_image_url", "fetches nothing")
    assert_error(chat("data:image/png;base64,@@@"), 400, "invalid_image_url", "not valid base64")
    malformed = client.post("/v1/chat/completions", content=b'{"model": "vega", "messages": [',
                            headers={"content-type": "application/json"})  # fmt: skip
    assert_error(malformed, 400, "invalid_json", "not valid JSON")
    assert_error(client.post("/v1/chat/completions", json={"model": "vega", "messages": []}), 400,
                 "invalid_messages", "non-empty")  # fmt: skip
    assert_error(client.post("/v1/chat/completions", json={"model": "vega", "temperature": "hot", "messages": [
        {"role": "user", "content": "hi"}]}), 400, "invalid_parameter", "temperature")  # fmt: skip


def test_a_full_queue_answers_503_with_retry_after(service: HikariService, lesion_png: bytes) -> None:
    """queue_size 1, and the worker held: the second waiting request is refused at once, not queued."""
    app = create_app(service, ServeConfig(queue_size=1, max_batch=1))
    gate = threading.Event()
    original = service.cascade

    def slow(requests):  # type: ignore[no-untyped-def]
        gate.wait(30)
        return original(requests)

    service.cascade = slow  # type: ignore[method-assign]
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            results: list[int] = []
            threads = [threading.Thread(target=lambda: results.append(cascade(c, lesion_png, k="0").status_code))
                       for _ in range(3)]  # fmt: skip
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while len(results) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            gate.set()
            for t in threads:
                t.join(60)
        assert sorted(results) == [200, 200, 503], results
    finally:
        service.cascade = original  # type: ignore[method-assign]


def test_api_key_is_required_when_set(service: HikariService, lesion_png: bytes) -> None:
    with TestClient(create_app(service, LIMITS, api_key="s3cret"), raise_server_exceptions=False) as c:
        assert_error(c.get("/v1/models"), 401, "invalid_api_key", "Bearer")
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/v1/info").json()["api_key"] is True  # the page asks for the key
        assert c.get("/healthz").status_code == 200

