"""Errors the server answers with: always JSON, always naming the problem, never a traceback.

The body is OpenAI's error shape, `{"error": {"message": …, "type": …, "code": …}}`, so the OpenAI client shows the
message, and every 4xx is the client's to fix: a bad image, a body too large, an unknown model, a busy server.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
               405: "invalid_request_error", 422: "invalid_request_error", 503: "server_busy",
               500: "server_error"}  # fmt: skip


class ServeError(Exception):
    """An HTTP error with a JSON body: `status`, a machine-readable `code` and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "code": code}}


def error_response(err: ServeError) -> JSONResponse:
    return JSONResponse(error_body(err.status, err.code, err.message), status_code=err.status, headers=err.headers)


def error_bytes(status: int, code: str, message: str) -> bytes:
    # compact, as JSONResponse writes the other error bodies
    return json.dumps(error_body(status, code, message), ensure_ascii=False, separators=(",", ":")).encode()
