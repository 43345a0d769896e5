"""The OpenAI-compatible HTTP API (FastAPI) on top of :class:`~tui.server.service.Service`.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(both streaming as server-sent events or not), ``GET /health`` and the OpenAPI
schema at ``GET /openapi.json``. Every error, the framework's own included, uses
OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``.

The input is untrusted: :class:`_Guard` checks the API key and the body size
before anything reads the body, and every text field is checked for text that
cannot be tokenized. A 500 is a bug or an engine failure: it is logged with its
traceback on the ``llmtui.server`` logger.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine.settings import MAX_TOKENS, SEED_MAX
from .service import TOP_LOGPROBS_MAX, Accepted, ApiError, Done, GenRequest, Service, TokenOut

log = logging.getLogger("llmtui.server")


# -- request bodies -----------------------------------------------------------------------------------


class _Sampling(BaseModel):
    # Python's json reads the NaN / Infinity literals; no sampler parameter means anything with them
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-1, le=SEED_MAX)  # llama.cpp's seeds are 32-bit (-1: random)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1, description="llmtui generates one choice per request")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    # llmtui extensions
    preset: str | None = None
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ApiError(400, f"llmtui serves text models: content part type {part.get('type')!r} is not "
                               "supported", param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS)
    logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)
    echo: bool = False


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response (for the OpenAPI schema; :meth:`ApiError.body` builds it)."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {"default": {"model": ErrorBody,
                                                         "description": "An error, in OpenAI's shape"}}


# -- configuration ----------------------------------------------------------------------------------


MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body larger than this is refused (413) before it is read
OPEN_PATHS = frozenset({"/health", "/openapi.json"})  # served without the API key: nothing private in them


@dataclass(slots=True)
class ServerConfig:
    catalog: Any  # PresetCatalog
    default_preset: Callable[[], Any] | None = None  # the Preset a request without `preset` uses
    seed: int = 42
    max_tokens: int = 256  # chat default when the client sets none
    api_key: str | None = None
    loaded: Callable[[], Any] = lambda: None  # the loaded ModelEntry (or None while loading)
    models: Callable[[], Sequence[Any]] = tuple  # every discovered ModelEntry
    max_body_bytes: int = MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {self.max_body_bytes}")


class _ErrorResponse(JSONResponse):
    """An error as ASCII JSON: a message quoting the client's text (lone surrogates included) always encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return _ErrorResponse(exc.body(), status_code=exc.status, headers=headers)


def _unauthorized() -> ApiError:
    return ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>' with the key "
                    "llmtui serve was started with (--api-key)", code="invalid_api_key")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than this server's limit of {limit} bytes (llmtui serve "
                    "--max-body sets it)", code="request_too_large")


def _valid_text(text: str, param: str) -> str:
    """``text`` if it is valid Unicode: JSON's ``"\\ud800"`` escape reads as a lone surrogate, which has no
    UTF-8 form, so no tokenizer (nor the response) could take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{param} is not valid Unicode text: it holds a lone surrogate {text[exc.start]!r} "
                       f"at character {exc.start} (a \\uD800-\\uDFFF escape must be half of a pair)",
                       param=param, code="invalid_value") from None
    return text


class _BodyTooLarge(Exception):
    pass


class _Guard:
    """Pure ASGI middleware that judges a request before anything reads its body.

    Without the API key (when one is set) a request gets its 401 at once; a body
    larger than ``max_body_bytes`` gets a 413, at once when its Content-Length
    says so, else (chunked) as soon as the bytes received pass the limit. The
    unread rest of a refused body is discarded by uvicorn, never buffered.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.config.api_key
        if key and scope["path"] not in OPEN_PATHS and not _has_key(scope, key):
            await _error(_unauthorized(), {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _error(_too_large(limit))(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def receive_limited() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:  # answer here: the app may turn any error while reading into its own 400
                        refused = True
                        await _error(_too_large(limit))(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out; whatever the app answers to the interrupted read is dropped
            started = True
            await send(message)

        try:
            await self.app(scope, receive_limited, send_unless_refused)
        except _BodyTooLarge:
            if not refused:
                raise


def _has_key(scope: Scope, key: str) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            given = given.strip()
            return scheme.lower() == b"bearer" and bool(given) and hmac.compare_digest(given, key.encode())
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses such a request before the app sees it
    return None


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


def _openapi(app: FastAPI, config: ServerConfig) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI schema as the server behaves: invalid requests are 400s in OpenAI's shape (not
    FastAPI's 422s), and the routes that need the bearer key (when one is set) say so."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            if config.api_key:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    if config.api_key and path not in OPEN_PATHS:
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _model_id(entry: Any) -> str:
    return entry.name


# -- the app ---------------------------------------------------------------------------------------------


def create_app(service: Service, config: ServerConfig) -> FastAPI:
    app = FastAPI(title="llmtui", version="1", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.service = service
    app.state.config = config
    app.openapi = _openapi(app, config)  # type: ignore[method-assign]
    app.add_middleware(_Guard, config=config)  # API key and body size: before any body is read

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(_bad_request(request, exc))

    @app.exception_handler(HTTPException)
    async def _framework(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(_http_error(request, exc), exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(ApiError(500, f"internal error: {type(exc).__name__}: {exc} (the server log has the "
                               "traceback)", type="server_error"))

    @app.get("/health", responses=_ERRORS)
    async def health() -> dict[str, Any]:
        loaded = config.loaded()
        return {"status": "ok" if loaded is not None else "loading", "model": loaded.name if loaded else None,
                "busy": service.busy, "queue_length": service.queue_length, "served": service.served}

    @app.get("/v1/models", responses=_ERRORS)
    async def models() -> dict[str, Any]:
        loaded = config.loaded()
        data = []
        for e in config.models():
            if not e.usable:
                continue
            try:
                created = int(os.path.getmtime(e.path))
            except OSError:
                created = 0
            data.append({"id": _model_id(e), "object": "model", "created": created, "owned_by": "local",
                         "arch": e.arch, "quant": e.quant, "size": e.size, "n_ctx_train": e.n_ctx_train,
                         "loaded": loaded is not None and Path(e.path) == Path(loaded.path)})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None, responses=_ERRORS)
    async def chat(body: ChatRequest, request: Request) -> Any:
        messages = tuple({"role": "system" if m.role == "developer" else m.role,
                          "content": _valid_text(m.text(), f"messages[{i}].content")}
                         for i, m in enumerate(body.messages))
        k = body.top_logprobs if body.logprobs else None
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if body.logprobs and k is None:
            k = 0
        max_tokens = body.max_completion_tokens or body.max_tokens or config.max_tokens
        req = _gen_request(config, body, "chat", max_tokens=max_tokens, messages=messages, top_logprobs=k)
        return await _respond(service, req, body, chat=True, label=f"chat · {len(messages)} message(s)",
                              request=request)

    @app.post("/v1/completions", response_model=None, responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(400, "llmtui completes one prompt per request", param="prompt")
            prompt = prompt[0]
        _valid_text(prompt, "prompt")
        if body.echo:
            raise ApiError(400, "echo is not supported", param="echo")
        req = _gen_request(config, body, "completion", max_tokens=body.max_tokens or 16, prompt=prompt,
                           top_logprobs=body.logprobs)
        return await _respond(service, req, body, chat=False, label="completion", request=request)

    return app


def _gen_request(config: ServerConfig, body: _Sampling, kind: str, **kw: Any) -> GenRequest:
    from ..sampling.presets import PresetError

    _valid_text(body.model, "model")
    if body.preset is not None:
        _valid_text(body.preset, "preset")
    loaded = config.loaded()
    if loaded is None:
        raise ApiError(503, "no model is loaded yet; try again in a moment", type="server_error",
                       code="model_loading")
    known = [e for e in config.models() if e.usable]
    if body.model != _model_id(loaded) and body.model != Path(loaded.path).stem:
        if any(_model_id(e) == body.model for e in known):
            raise ApiError(400, f"model {body.model!r} is not the loaded one: this server runs {loaded.name!r} "
                           "(one model at a time; switch models in the dashboard or restart with --model)",
                           param="model", code="model_not_loaded")
        raise ApiError(404, f"The model {body.model!r} does not exist (this server runs {loaded.name!r}; "
                       "GET /v1/models lists the local models)", param="model", code="model_not_found")
    try:
        if body.preset:
            preset = config.catalog.get(body.preset)
        elif config.default_preset is not None:
            preset = config.default_preset()  # the server's (the dashboard's current one, edits included)
        else:
            preset = config.catalog.get("balanced")
    except Exception as exc:  # KeyError / PresetError: an unknown preset name
        raise ApiError(400, f"unknown preset {body.preset!r}: {exc}", param="preset") from None
    overrides = (("temperature", "temp", "t"), ("top_p", "top_p", "p"), ("top_k", "top_k", "k"),
                 ("min_p", "min_p", "p"), ("frequency_penalty", "penalties", "frequency"),
                 ("presence_penalty", "penalties", "presence"), ("repeat_penalty", "penalties", "repeat"))
    try:
        for field, sampler, param in overrides:
            value = getattr(body, field)
            if value is not None:
                preset = preset.with_param(sampler, param, value)
    except PresetError as exc:
        raise ApiError(400, str(exc), param=field) from None
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > 4:
        raise ApiError(400, "at most 4 stop sequences", param="stop")
    for text in stop:
        _valid_text(text, "stop")
    seed = body.seed if body.seed is not None else config.seed
    return GenRequest(kind=kind, model=loaded.name, preset=preset, seed=seed, stop=stop, **kw)


# -- responses -------------------------------------------------------------------------------------------


def _token_str(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def _chat_logprobs(tokens: Sequence[TokenOut]) -> dict[str, Any]:
    return {"content": [
        {"token": _token_str(t.piece), "logprob": t.logprob, "bytes": list(t.piece),
         "top_logprobs": [{"token": _token_str(p), "logprob": lp, "bytes": list(p)} for _, p, lp in t.top]}
        for t in tokens
    ], "refusal": None}


def _completion_logprobs(tokens: Sequence[TokenOut], offset: int = 0) -> dict[str, Any]:
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t.delta)
    return {"tokens": [_token_str(t.piece) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{_token_str(p): lp for _, p, lp in t.top} for t in tokens], "text_offset": offsets}


def _usage(done: Done) -> dict[str, Any]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens}, "timings": done.timings}


class _Stream:
    """A job's events, moved from the worker thread onto the event loop.

    The event loop is woken at most once per batch of events, and for a
    non-streaming request not for tokens at all (only for the first event,
    the end and errors): on 2 cores every wake-up is CPU taken from llama.cpp.
    """

    def __init__(self, *, wake_on_tokens: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: deque[object] = deque()
        self.ready = asyncio.Event()
        self.wake_on_tokens = wake_on_tokens
        self._scheduled = False
        self._lock = threading.Lock()

    def sink(self, item: object) -> None:  # worker thread
        self.items.append(item)
        if isinstance(item, TokenOut) and not self.wake_on_tokens:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is gone (server shutting down)
            pass

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
        self.ready.set()

    async def get(self) -> object:
        while not self.items:
            self.ready.clear()
            if self.items:
                break
            await self.ready.wait()
        item = self.items.popleft()
        if isinstance(item, ApiError):
            raise item
        return item


class _ClientGone(Exception):
    pass


async def _next(stream: _Stream, request: Request | None) -> object:
    """The job's next event; while waiting (queued, or a whole non-streaming answer), notice a client
    that went away."""
    while True:
        try:
            return await asyncio.wait_for(stream.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if request is not None and await request.is_disconnected():
                raise _ClientGone from None


async def _respond(service: Service, req: GenRequest, body: _Sampling, *, chat: bool, label: str,
                   request: Request | None = None) -> Any:
    stream = _Stream(wake_on_tokens=body.stream)
    job = service.submit(req, stream.sink, label)
    try:
        accepted = await _next(stream, request)  # a context overflow is a 400 before any byte is sent
    except _ClientGone:
        job.cancel.set()  # it left while queued: the worker skips it
        return Response(status_code=499)
    except BaseException:
        job.cancel.set()
        raise
    assert isinstance(accepted, Accepted)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_sse(stream, job, req, rid, created, chat, include_usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    tokens: list[TokenOut] = []
    try:
        while True:
            item = await _next(stream, request)
            if isinstance(item, TokenOut):
                tokens.append(item)
            elif isinstance(item, Done):
                break
    except _ClientGone:
        job.cancel.set()  # nobody to answer: the engine stops before the next token
        return Response(status_code=499)
    except BaseException:
        job.cancel.set()
        raise
    done = item
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": done.text},
                                  "finish_reason": done.finish_reason,
                                  "logprobs": _chat_logprobs(tokens) if req.top_logprobs is not None else None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason,
                  "logprobs": _completion_logprobs(tokens, len(req.prompt)) if req.top_logprobs is not None
                  else None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice],
            "usage": _usage(done), "system_fingerprint": f"llmtui-{req.preset.name}-seed{req.seed}"}


def _sse_line(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(stream: _Stream, job: Any, req: GenRequest, rid: str, created: int, chat: bool,
               include_usage: bool) -> AsyncIterator[str]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": rid, "object": obj, "created": created, "model": req.model,
            "system_fingerprint": f"llmtui-{req.preset.name}-seed{req.seed}"}
    want_lp = req.top_logprobs is not None

    def chunk(delta: str | None, finish: str | None, tokens: Sequence[TokenOut] = (), role: bool = False,
              offset: int = 0) -> str:
        if chat:
            d: dict[str, Any] = {}
            if role:
                d["role"] = "assistant"
            if delta is not None:
                d["content"] = delta
            choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish,
                                      "logprobs": _chat_logprobs(tokens) if want_lp and tokens else None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish,
                      "logprobs": _completion_logprobs(tokens, offset) if want_lp and tokens else None}
        return _sse_line({**base, "choices": [choice]})

    offset = 0 if chat else len(req.prompt)  # OpenAI's text_offset counts from the prompt's start
    try:
        if chat:
            yield chunk("", None, role=True)
        while True:
            try:
                item = await stream.get()
            except ApiError as exc:  # after the stream started: report it in-band, as OpenAI does
                yield _sse_line(exc.body())
                break
            if isinstance(item, TokenOut):
                if item.delta or want_lp:
                    yield chunk(item.delta, None, (item,), offset=offset)
                    offset += len(item.delta)
            elif isinstance(item, Done):
                if item.tail:
                    yield chunk(item.tail, None)
                yield chunk(None if chat else "", item.finish_reason)
                if include_usage:
                    yield _sse_line({**base, "choices": [], "usage": _usage(item)})
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()  # the client went away (or we are done): free the engine before the next token


# -- running it ---------------------------------------------------------------------------------------


class ServerThread:
    """uvicorn in a background thread (the dashboard, the tests); ``port=0`` picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
        import uvicorn

        self.host = host
        self.config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                     lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, name="llmtui-api-http", daemon=True)
        self.error: BaseException | None = None
        self.port = port

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # e.g. the port is taken (uvicorn exits through SystemExit)
            self.error = exc

    def start(self, timeout: float = 15.0) -> "ServerThread":
        quiet_uvicorn()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the API server could not listen on {self.host}:{self.config.port} "
                              "(is the port taken?)")
            time.sleep(0.02)
        for server in self.server.servers:
            for sock in server.sockets:
                self.port = sock.getsockname()[1]
                break
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def quiet_uvicorn(handler: logging.Handler | None = None) -> None:
    """uvicorn must never write to the terminal a TUI is drawing on: its logs go to ``handler`` or nowhere.

    ``llmtui.server`` (our 500s and their tracebacks) keeps its handlers (``llmtui serve`` attaches one for
    stderr) and still propagates (to pytest's caplog, say); its NullHandler keeps a record that nobody
    handles from Python's last-resort stderr handler."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler or logging.NullHandler()]
        lg.propagate = False
    ours = logging.getLogger("llmtui.server")
    if handler is not None and handler not in ours.handlers:
        ours.addHandler(handler)
    if not any(isinstance(h, logging.NullHandler) for h in ours.handlers):
        ours.addHandler(logging.NullHandler())
