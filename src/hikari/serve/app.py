"""The HTTP app of `hikari serve`: the cascade API, an OpenAI-compatible chat API and the page, on FastAPI.

    POST /v1/cascade            multipart: image, [text], [k], [max_new_tokens], [stage3=vega,antares], [probabilities]
    POST /v1/chat/completions   OpenAI wire format (image_url data URIs, or file URLs under --allowed-folder);
                                greedy unless a temperature is given; stream=true → server-sent events
    GET  /v1/models             OpenAI model list (the served models and their fingerprints)
    GET  /v1/info               what the page needs: stage names, whether there are references, the diseases
    GET  /v1/references/{file}/thumbnail   a reference case's picture (only images of the loaded index)
    GET  /healthz               liveness, queue length
    GET  /                      the page

Every model call goes through one `BatchingWorker` (bounded queue, dynamic batching). Images are decoded with a
pixel limit checked from the header; bodies are limited while they stream (`BodyLimit`); every error is a 4xx JSON
body naming the problem (a bug is a 500 JSON body, logged with its traceback on the server, never sent).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hikari.config import ServeConfig
from hikari.data.images import ImageRejected, decode_image, load_rgb
from hikari.serve.errors import ServeError, error_response
from hikari.serve.limits import BodyLimit, BodyTooLarge, too_large_message
from hikari.serve.service import CascadeRequest, ChatRequest, HikariService
from hikari.serve.worker import BatchingWorker, QueueFull, ShuttingDown

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
TOP_DISEASES = 5
THUMBNAIL_SIDE = 256
IMAGE_STATUS = {"not_an_image": (415, "not_an_image"), "corrupt": (400, "corrupt_image"), "empty": (400, "empty_image"),
                "too_many_pixels": (413, "too_many_pixels")}  # fmt: skip


def create_app(service: HikariService, config: ServeConfig | None = None, *, allowed_folder: Path | None = None,
               api_key: str | None = None) -> Any:  # fmt: skip
    """The ASGI app (FastAPI wrapped in the body-size / API-key limit) serving `service` under `config` (the
    ServeConfig defaults when None)."""
    config = config or ServeConfig()
    worker = BatchingWorker(lambda key, payloads: _run(service, key, payloads), queue_size=config.queue_size,
                            max_batch=config.max_batch)  # fmt: skip
    allowed = allowed_folder.resolve() if allowed_folder is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = FastAPI(title="HIKARI", version="0.1.0", lifespan=lifespan,
                  description="Skin-lesion diagnosis and captioning cascade — a research model, not a medical device.")
    app.state.worker, app.state.service = worker, service

    # -- errors ----------------------------------------------------------------------------------------------------
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, err: ServeError) -> Response:
        return error_response(err)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, err: BodyTooLarge) -> Response:
        limit = int(config.max_upload_mb * 2**20)
        message = too_large_message(f"more than {config.max_upload_mb:g} MB", limit)
        # Connection: close makes uvicorn close the socket after the answer instead of reading the rest of the body
        return error_response(ServeError(413, "request_too_large", message, {"Connection": "close"}))

    @app.exception_handler(QueueFull)
    async def busy(request: Request, err: QueueFull) -> Response:
        return error_response(ServeError(503, "server_busy", str(err), {"Retry-After": str(err.retry_after)}))

    @app.exception_handler(ShuttingDown)
    async def stopping(request: Request, err: ShuttingDown) -> Response:
        return error_response(ServeError(503, "shutting_down", str(err), {"Connection": "close"}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ServeError(500, "internal_error", "internal error (details are in the server's log)"))

    @app.exception_handler(404)
    async def not_found(request: Request, err: Exception) -> Response:
        return error_response(ServeError(404, "not_found", f"no such endpoint: {request.method} {request.url.path}"))

    @app.exception_handler(405)
    async def not_allowed(request: Request, err: Exception) -> Response:
        return error_response(ServeError(405, "method_not_allowed", f"{request.method} is not allowed on "
                                         f"{request.url.path}"))  # fmt: skip

    # -- the page ------------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- health and description ------------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "queue": {"waiting": worker.waiting, "capacity": config.queue_size},
                "batches": worker.batches, "requests": worker.items}  # fmt: skip

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return {**service.info(), "limits": {"max_upload_mb": config.max_upload_mb, "max_pixels": config.max_pixels,
                                             "max_new_tokens": config.max_new_tokens},
                "api_key": api_key is not None}  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "hikari", "stages": list(m.stages),
             "fingerprint": m.fingerprint} for name, m in service.models.items()]}  # fmt: skip

    @app.get("/v1/references/{file_name}/thumbnail")
    async def thumbnail(file_name: str) -> Response:
        source = service.thumbnail_source(file_name)
        if source is None:
            raise ServeError(404, "unknown_reference", f"{file_name!r} is not a reference case of the loaded index")
        image = await run_in_threadpool(load_rgb, source, THUMBNAIL_SIDE)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # -- the cascade ---------------------------------------------------------------------------------------------
    @app.post("/v1/cascade")
    async def cascade(request: Request) -> dict[str, Any]:
        form = await _form(request)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ServeError(400, "missing_image", "send the picture as a multipart file field named 'image'")
        data = await upload.read()
        name = upload.filename or "image"
        image = await run_in_threadpool(_decode, data, name, config.max_pixels, service.image_max_size)
        stage3 = tuple(s for s in str(form.get("stage3") or "").replace(" ", "").split(",") if s) or (
            service.stage3[0],)
        unknown = [s for s in stage3 if s not in service.stage3]
        if unknown:
            raise ServeError(404, "model_not_found", f"no Stage 3 model called {unknown[0]!r}; served: "
                             f"{', '.join(service.stage3)}")  # fmt: skip
        default_k = service.info()["k_default"]
        k = _int(form.get("k"), "k", default_k, low=0, high=16)
        if k and service.references is None:
            raise ServeError(400, "no_references", "this server has no reference index (hikari serve --index); "
                             "send k=0")  # fmt: skip
        budget = _int(form.get("max_new_tokens"), "max_new_tokens", None, low=1, high=config.max_new_tokens)
        text = str(form.get("text") or "").strip() or None
        probabilities = _flag(form.get("probabilities"), "probabilities", True)
        job = CascadeRequest(image, name, text, k, stage3, budget, probabilities)
        result = await worker.submit(("cascade", k, stage3, budget, probabilities), job)
        return _cascade_json(result, service, image)

    # -- OpenAI-compatible chat ------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ServeError(400, "invalid_json", f"the request body is not valid JSON ({err})") from None
        if not isinstance(body, dict):
            raise ServeError(400, "invalid_request", "the request body must be a JSON object")
        model = body.get("model")
        if model is None:
            raise ServeError(400, "missing_parameter", "'model' is required: one of " + ", ".join(service.models))
        if model not in service.models:
            raise ServeError(404, "model_not_found", f"no model called {model!r}; served: "
                             f"{', '.join(service.models)} (GET /v1/models)")  # fmt: skip
        messages = await run_in_threadpool(_chat_messages, body.get("messages"), allowed, config.max_pixels,
                                           service.image_max_size)  # fmt: skip
        max_tokens = _json_int(body.get("max_tokens", body.get("max_completion_tokens")), "max_tokens",
                               min(256, config.max_new_tokens), low=1, high=config.max_new_tokens)  # fmt: skip
        temperature = _float(body.get("temperature"), "temperature", 0.0, low=0.0, high=2.0)
        if body.get("n", 1) != 1 or isinstance(body.get("n"), bool):
            raise ServeError(400, "invalid_parameter", f"n must be 1 (one answer per request), got {body['n']!r}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ServeError(400, "invalid_parameter", f"stream must be true or false, got {stream!r}")
        options = body.get("stream_options") or {}
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        job = ChatRequest(model, messages, max_tokens, temperature)
        answer = await worker.submit(("chat", model, max_tokens, temperature), job)
        finish, prompt_tokens, completion_tokens = answer.finish_reason, answer.prompt_tokens, answer.completion_tokens
        reasoning, content = _split_reasoning(answer.text)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
        if stream:
            return StreamingResponse(_sse(cid, created, model, content, reasoning, finish,
                                          usage if include_usage else None),
                                     media_type="text/event-stream")  # fmt: skip
        message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
        return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": model,
                             "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                          "logprobs": None}], "usage": usage})  # fmt: skip

    wrapped = BodyLimit(app, max_bytes=int(config.max_upload_mb * 2**20), api_key=api_key)
    wrapped.worker = worker  # type: ignore[attr-defined]  # for the server's shutdown (see `hikari.serve.run`)
    return wrapped


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------
def _run(service: HikariService, key: Any, payloads: list[Any]) -> list[Any]:
    return service.cascade(payloads) if key[0] == "cascade" else service.chat(payloads)


async def _form(request: Request) -> Any:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ServeError(415, "not_multipart", "send multipart/form-data with the picture in a field named 'image'")
    try:
        return await request.form(max_files=1, max_fields=16)
    except BodyTooLarge:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure of the client's body is the client's
        raise ServeError(400, "invalid_form", f"the multipart body cannot be parsed ({err})") from None


def _decode(data: bytes, name: str, max_pixels: int, max_size: int | None) -> Image.Image:
    try:
        return decode_image(data, max_pixels=max_pixels, max_size=max_size, name=name)
    except ImageRejected as err:
        status, code = IMAGE_STATUS[err.reason]
        raise ServeError(status, code, str(err)) from None


def _int(value: Any, name: str, fallback: int | None, *, low: int, high: int) -> Any:
    if value is None or value == "":
        return fallback
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ServeError(400, "invalid_parameter", f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ServeError(400, "invalid_parameter", f"{name} must be between {low} and {high}, got {number}")
    return number


def _json_int(value: Any, name: str, fallback: int, *, low: int, high: int) -> int:
    """An integer field of a JSON body: a JSON number without a fraction (not "8", not 8.5)."""
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ServeError(400, "invalid_parameter", f"{name} must be a whole number, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ServeError(400, "invalid_parameter", f"{name} must be between {low} and {high}, got {number}")
    return number


def _flag(value: Any, name: str, fallback: bool) -> bool:
    """A true/false form field."""
    if value is None or value == "":
        return fallback
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ServeError(400, "invalid_parameter", f"{name} must be true or false, got {value!r}")
    return text in ("true", "1", "yes")


def _float(value: Any, name: str, fallback: float, *, low: float, high: float) -> float:
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ServeError(400, "invalid_parameter", f"{name} must be a number between {low} and {high}, got {value!r}")
    return float(value)


def _image_from_url(url: str, allowed: Path | None, max_pixels: int, max_size: int | None, where: str) -> Image.Image:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ServeError(400, "invalid_image_url", f"{where}: a data URI must be base64 (data:image/png;base64,…)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(400, "invalid_image_url", f"{where}: the data URI is not valid base64") from None
        return _decode(data, where, max_pixels, max_size)
    if url.startswith("file:"):
        if allowed is None:
            raise ServeError(403, "file_urls_disabled", f"{where}: file URLs are off; start the server with "
                             "--allowed-folder DIR to read pictures under DIR")  # fmt: skip
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ServeError(400, "invalid_image_url", f"{where}: a file URL names a local absolute path "
                             "(file:///dir/picture.png)")  # fmt: skip
        path = Path(unquote(parts.path)).resolve()
        if not path.is_relative_to(allowed):
            raise ServeError(403, "path_not_allowed", f"{where}: the picture is outside the allowed folder {allowed}")
        if path.is_dir():
            raise ServeError(400, "invalid_image_url", f"{where}: {path} is a folder, not a picture")
        if not path.is_file():
            raise ServeError(404, "file_not_found", f"{where}: {path} does not exist")
        return _decode(path.read_bytes(), f"{where} ({path.name})", max_pixels, max_size)
    raise ServeError(400, "invalid_image_url", f"{where}: only data: URIs and file:// URLs under the allowed folder "
                     "are read (the server fetches nothing from the network)")  # fmt: skip


def _chat_messages(raw: Any, allowed: Path | None, max_pixels: int, max_size: int | None) -> list[dict[str, Any]]:
    """OpenAI chat messages → our chat format (text parts and decoded PIL images), validated part by part."""
    if not isinstance(raw, list) or not raw:
        raise ServeError(400, "invalid_messages", "'messages' must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise ServeError(400, "invalid_messages", f"{where}: an object with role system, user or assistant")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list):
            raise ServeError(400, "invalid_messages", f"{where}.content must be a string or a list of parts")
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ServeError(400, "invalid_messages", f"{where}.content[{j}].image_url needs a 'url'")
                image = _image_from_url(url, allowed, max_pixels, max_size, f"{where}.content[{j}]")
                parts.append({"type": "image", "image": image})
            else:
                raise ServeError(400, "invalid_messages", f"{where}.content[{j}]: a part of type 'text' or "
                                 f"'image_url', got {kind!r}")  # fmt: skip
        out.append({"role": message["role"], "content": parts})
    return out


def _cascade_json(result: Any, service: HikariService, image: Image.Image) -> dict[str, Any]:
    probs = result.disease_probabilities
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:TOP_DISEASES] if probs else []
    return {
        "group": {"label": result.group, "probabilities": result.group_probabilities},
        "diagnosis": {"label": result.diagnosis, "probabilities": probs,
                      "top": [{"disease": d, "probability": p} for d, p in top]},
        "references": [{"id": r["id"], "file_name": r["file_name"], "disease": r["label"], "score": r["score"],
                        "cos_image": r["cos_image"], "cos_text": r["cos_text"],
                        "thumbnail_url": f"/v1/references/{r['file_name']}/thumbnail"} for r in result.references],
        "query_text": result.query_text, "query_text_source": result.query_text_source,
        "caption": result.caption, "captions": result.captions, "raw": result.raw, "timings_ms": result.timings_ms,
        "image": {"filename": result.image, "width": image.width, "height": image.height},
        "models": {stage: {"name": name, **service.models[name].fingerprint} for stage, name in
                   (("stage1", service.stage1), ("stage2", service.stage2),
                    *((f"stage3:{n}", n) for n in result.captions))},
        "disclaimer": "Research model, not a medical device: not for diagnosis or treatment decisions.",
    }  # fmt: skip


def _split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of a Qwen3 Thinking generation, as vLLM's `--reasoning-parser qwen3` splits it: the text
    before `</think>` (the chat template opened `<think>` in the prompt) and the answer after it."""
    head, sep, tail = text.partition("</think>")
    if not sep:
        return None, text
    return head.replace("<think>", "").strip() or None, tail.lstrip()


async def _sse(cid: str, created: int, model: str, text: str, reasoning: str | None, finish: str,
               usage: dict[str, int] | None) -> AsyncIterator[bytes]:  # fmt: skip
    """The answer as OpenAI's stream of chat.completion.chunk events (role, content, finish, [DONE])."""
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def event(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n".encode()

    yield event({"role": "assistant", "content": ""})
    if reasoning:
        yield event({"reasoning_content": reasoning})
    for piece in _pieces(text):
        yield event({"content": piece})
    yield event({}, finish, **({"usage": usage} if usage is not None else {}))
    yield b"data: [DONE]\n\n"


def _pieces(text: str, size: int = 16) -> list[str]:
    """The answer in pieces of about `size` characters, cut after whitespace; joined they are exactly `text` (the
    transformers engine generates the whole answer before the first piece is sent)."""
    pieces, current = [], ""
    for token in re.findall(r"\S+\s*|\s+", text):
        current += token
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current or not pieces:
        pieces.append(current)
    return pieces
