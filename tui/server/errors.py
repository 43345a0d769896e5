"""Every error in OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``: ours
(:class:`~tui.server.service.ApiError`), invalid bodies, the framework's own (no route, wrong
method) and bugs (a 500, logged with its traceback on the ``llmtui.server`` logger).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .service import ApiError

log = logging.getLogger("llmtui.server")


class _ErrorResponse(JSONResponse):
    """An error as ASCII JSON: a message quoting the client's text (lone surrogates included) always encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return _ErrorResponse(exc.body(), status_code=exc.status, headers=headers)


def unauthorized() -> ApiError:
    return ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>' with the key "
                    "llmtui serve was started with (--api-key)", code="invalid_api_key")


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this server's limit of {limit} bytes (llmtui serve "
                    "--max-body sets it)", code="request_too_large")


_TYPE_TAGS = {"str", "int", "float", "bool"}  # pydantic's names for the members of a union in an error's loc


def _param(loc: Sequence[Any]) -> str | None:
    """OpenAI's name for the field an error's ``loc`` points at: ``("body", "messages", 0, "content", "str")``
    is ``messages[0].content``."""
    out = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in part:
            break
        else:
            out += f".{part}" if out else part
    return out or None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _bad_request(request: Request, exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return ApiError(400, f"the request body is not valid JSON ({detail}{where})", code="invalid_json")
    if loc == ("body",):  # no JSON object at all
        content_type = request.headers.get("content-type", "")
        if not _is_json(content_type):
            return ApiError(400, "send the request body as a JSON object with 'Content-Type: application/json' "
                            f"(the Content-Type was {content_type or 'missing'!r})", code="invalid_content_type")
        return ApiError(400, "the request body must be a JSON object", code="invalid_value")
    param = _param(loc)
    msg = first.get("msg", "invalid request")
    return ApiError(400, f"{param}: {msg}" if param else msg, param=param, code="invalid_value")


def _http_error(request: Request, exc: HTTPException) -> ApiError:
    """The framework's own errors (no route, wrong method, an unreadable body) in OpenAI's words."""
    if exc.status_code == 404:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found")
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}"
                        + (f" (use {allowed})" if allowed else ""), code="method_not_allowed")
    kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
    return ApiError(exc.status_code, str(exc.detail), type=kind)



def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception a route (or the framework) raises in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_bad_request(request, exc))

    @app.exception_handler(HTTPException)
    async def _framework(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(_http_error(request, exc), exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc} (the server log has the "
                                       "traceback)", type="server_error"))
