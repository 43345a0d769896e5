"""The OpenAI-compatible HTTP API (FastAPI) on top of :class:`~tui.server.service.Service`.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions``
(both streaming as server-sent events or not), ``GET /health`` and the OpenAPI
schema at ``GET /openapi.json``. Every error, the framework's own included, uses
OpenAI's JSON shape ``{"error": {"message", "type", "param", "code"}}``.

The input is untrusted: :class:`~tui.server.guard.Guard` checks the API key and the
body size before anything reads the body, and every text field is checked for text that
cannot be tokenized. A 500 is a bug or an engine failure: it is logged with its
traceback on the ``llmtui.server`` logger.

This module builds the app and turns a request body into a :class:`~tui.server.service.GenRequest`;
the bodies are in :mod:`~tui.server.bodies`, the errors in :mod:`~tui.server.errors`, the answers
in :mod:`~tui.server.responses`, the uvicorn runner in :mod:`~tui.server.runner`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.openapi.utils import get_openapi

from ..engine.settings import SEED_MAX
from ..engine.thread import engine_thread
from .bodies import (
    ERROR_RESPONSES,
    MAX_RUNS,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    SamplingParams,
    TokenizeRequest,
)
from .config import MAX_BODY_BYTES, OPEN_PATHS, ServerConfig
from .errors import add_error_handlers
from .guard import Guard
from .openai_responses import ResponsesRequest, messages_of, respond_responses
from .responses import respond
from .runner import ServerThread, quiet_uvicorn
from .structured import Structure, response_grammar, tool_structure
from .service import ApiError, GenRequest, Service

# the app's surface: what the dashboard, `llmtui serve` and the tests import from here
__all__ = ["MAX_BODY_BYTES", "OPEN_PATHS", "ServerConfig", "ServerThread", "create_app", "quiet_uvicorn"]


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


class Cors(CORSMiddleware):
    """Starlette's CORS, whose refusals come in OpenAI's error shape like every other answer."""

    def preflight_response(self, request_headers: Any) -> Any:
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            return answer
        why = answer.body.decode("utf-8", "replace")  # "Disallowed CORS origin, method"
        error = ApiError(400, f"{why}: this server lets browser pages from its --cors-origin list call it",
                         code="cors_refused")
        return JSONResponse(error.body(), status_code=400, headers={k: v for k, v in answer.headers.items()
                                                                    if k.lower().startswith("access-control")})


def create_app(service: Service, config: ServerConfig) -> FastAPI:
    """The API app serving ``service`` as ``config`` says (run it with :class:`ServerThread`)."""
    app = FastAPI(title="llmtui", version="1", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.service = service
    app.state.config = config
    app.openapi = _openapi(app, config)  # type: ignore[method-assign]
    app.add_middleware(Guard, config=config)  # API key and body size: before any body is read
    if config.cors_origins:
        # outermost: a browser's preflight (OPTIONS, which never carries the key) is answered here, before the
        # key is asked for; the real request then passes the guard like any other
        app.add_middleware(Cors, allow_origins=list(config.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=600)
    add_error_handlers(app)  # every error in OpenAI's shape

    @app.get("/health", responses=ERROR_RESPONSES)
    async def health() -> dict[str, Any]:
        loaded = config.loaded()
        return {"status": "ok" if loaded is not None else "loading", "model": loaded.name if loaded else None,
                "busy": service.busy, "queue_length": service.queue_length, "served": service.served}

    @app.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
    async def metrics() -> str:
        """Prometheus text, as llama-server's --metrics and vLLM write theirs (the fleet view reads it)."""
        ctl = service.controller()
        engine = getattr(ctl, "engine", None)
        n_ctx = getattr(engine, "n_ctx", 0) or 0
        usage = (getattr(engine, "n_past", 0) or 0) / n_ctx if n_ctx else 0.0
        rows = [("requests_processing", "gauge", "requests being generated", int(service.busy)),
                ("requests_waiting", "gauge", "requests queued", service.queue_length),
                ("requests_served_total", "counter", "requests finished", service.served),
                ("prompt_tokens_total", "counter", "prompt tokens evaluated", service.prompt_tokens_total),
                ("prompt_tokens_cached_total", "counter", "prompt tokens reused from the KV cache",
                 service.cached_tokens_total),
                ("tokens_predicted_total", "counter", "tokens generated", service.generated_total),
                ("kv_cache_usage_ratio", "gauge", "KV cache cells in use / n_ctx", round(usage, 6))]
        out = []
        for name, kind, text, value in rows:
            out += [f"# HELP llmtui:{name} {text}", f"# TYPE llmtui:{name} {kind}", f"llmtui:{name} {value}"]
        return "\n".join(out) + "\n"

    @app.get("/v1/models", responses=ERROR_RESPONSES)
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

    def engine() -> Any:
        ctl = service.controller()
        if ctl is None:
            raise ApiError(503, "no model is loaded yet; try again in a moment", type="server_error",
                           code="model_loading")
        return ctl.engine

    async def on_engine(job: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(engine_thread().call, job)

    # vLLM's tokenizer routes (lm-evaluation-harness's local-completions finds and uses them)
    @app.get("/tokenizer_info", responses=ERROR_RESPONSES)
    async def tokenizer_info() -> dict[str, Any]:
        eng = engine()
        info = eng.info

        def text(token: int) -> str | None:
            return eng.piece(token).decode("utf-8", "replace") if token >= 0 else None

        return {"bos_token": text(info.bos), "eos_token": text(info.eos), "n_vocab": info.n_vocab,
                "add_bos_token": info.add_bos, "model_max_length": eng.n_ctx}

    @app.post("/tokenize", responses=ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        eng = engine()
        text = _valid_text(body.prompt, "prompt")
        tokens = await on_engine(lambda: eng.tokenize(text, add_bos=None if body.add_special_tokens else False,
                                                      parse_special=bool(body.add_special_tokens)))
        return {"tokens": tokens, "count": len(tokens), "max_model_len": eng.n_ctx}

    @app.post("/detokenize", responses=ERROR_RESPONSES)
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        eng = engine()
        bad = [t for t in body.tokens if not 0 <= t < eng.n_vocab]
        if bad:
            raise ApiError(400, f"tokens: {bad[0]} is not a token id of this model (0..{eng.n_vocab - 1:,})",
                           param="tokens")
        return {"prompt": b"".join(eng.piece(t) for t in body.tokens).decode("utf-8", "replace")}

    @app.get("/v1/models/{model_id:path}", responses=ERROR_RESPONSES)
    async def model(model_id: str) -> dict[str, Any]:
        for entry in (await models())["data"]:
            if entry["id"] == model_id:
                return entry
        raise ApiError(404, f"The model {model_id!r} does not exist (GET /v1/models lists them)", param="model",
                       code="model_not_found")

    @app.post("/v1/chat/completions", response_model=None, responses=ERROR_RESPONSES)
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
        structure = tool_structure(body.tools, body.tool_choice)
        if structure.tools and _grammar(config, body) is not None:
            raise ApiError(400, "tools and response_format both constrain the answer: give one", param="tools")
        if not structure.tools:
            structure = Structure(grammar=_grammar(config, body))
        req = _gen_request(config, body, "chat", max_tokens=max_tokens, messages=messages, top_logprobs=k,
                           structure=structure)
        return await respond(service, _choices([req], body), body, chat=True,
                             label=f"chat · {len(messages)} message(s)", request=request)

    @app.post("/v1/completions", response_model=None, responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        prompts = _prompts(body.prompt)
        if body.max_tokens == 0 and not body.echo:
            raise ApiError(400, "max_tokens 0 generates nothing: it is for scoring a prompt, with echo and logprobs",
                           param="max_tokens")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        base = _gen_request(config, body, "completion", max_tokens=max_tokens, top_logprobs=body.logprobs,
                            echo=bool(body.echo), structure=Structure(grammar=_grammar(config, body)))
        reqs = [dataclasses.replace(base, index=i, **_prompt_fields(p)) for i, p in enumerate(prompts)]
        return await respond(service, _choices(reqs, body), body, chat=False, label="completion", request=request)

    @app.post("/v1/responses", response_model=None, responses=ERROR_RESPONSES)
    async def responses(body: ResponsesRequest, request: Request) -> Any:
        messages = tuple({"role": m["role"], "content": _valid_text(m["content"], "input")}
                         for m in messages_of(body))
        req = _gen_request(config, body, "chat", max_tokens=body.max_output_tokens or config.max_tokens,
                           messages=messages)
        return await respond_responses(service, req, body, request)

    return app


def _grammar(config: ServerConfig, body: SamplingParams) -> str | None:
    """The grammar ``response_format`` / ``json_schema`` / ``grammar`` ask for (raw GBNF only where the server
    allows it: a grammar can make every step exponential in llama.cpp's engine)."""
    if body.grammar is not None and not config.allow_grammar:
        raise ApiError(400, "grammar: raw GBNF is refused here (one can make every step exponential); use "
                       "response_format or json_schema, or start the server with --allow-grammar", param="grammar")
    return response_grammar(body.response_format, body.grammar, body.json_schema)


def _prompts(prompt: Any) -> list[str | list[int]]:
    """A completion's prompt(s): a text, texts, token ids, or lists of token ids (OpenAI's four forms)."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]
    else:
        prompts = list(prompt)
    if not prompts or len(prompts) > MAX_RUNS:
        raise ApiError(400, f"prompt: give 1 to {MAX_RUNS} prompts (got {len(prompts)})", param="prompt")
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            _valid_text(p, f"prompt[{i}]" if len(prompts) > 1 else "prompt")
        elif not p:
            raise ApiError(400, f"prompt[{i}]: an empty list of tokens", param="prompt")
    return prompts


def _prompt_fields(prompt: str | list[int]) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {"prompt": prompt}
    return {"prompt": "", "prompt_tokens": tuple(prompt)}


def _choices(reqs: list[GenRequest], body: SamplingParams) -> list[GenRequest]:
    """``n`` runs per prompt: choice i·n + j samples with seed + j (each choice another draw, all reproducible)."""
    n = body.n or 1
    if len(reqs) * n > MAX_RUNS:
        raise ApiError(400, f"n × prompts = {len(reqs) * n}: at most {MAX_RUNS} runs per request", param="n")
    return [dataclasses.replace(r, index=r.index * n + j, seed=(r.seed + j) % (SEED_MAX + 1))
            for r in reqs for j in range(n)]


def _gen_request(config: ServerConfig, body: SamplingParams, kind: str, **kw: Any) -> GenRequest:
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
    bias = _logit_bias(body.logit_bias)
    return GenRequest(kind=kind, model=loaded.name, preset=preset, seed=request_seed(body.seed, config.seed), stop=stop,
                      logit_bias=bias, **kw)


def _logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's logit_bias: token ids (as strings) → -100..100 (the engine checks the ids against its vocabulary)."""
    out = []
    for key, value in (bias or {}).items():
        if not (key.isascii() and key.isdigit() and len(key) <= 9):
            raise ApiError(400, f"logit_bias: {key[:20]!r} is not a token id", param="logit_bias")
        if not -100.0 <= value <= 100.0:
            raise ApiError(400, f"logit_bias[{key}]: {value} is outside -100..100", param="logit_bias")
        out.append((int(key), float(value)))
    if len(out) > 1024:
        raise ApiError(400, "logit_bias: at most 1024 tokens", param="logit_bias")
    return tuple(out)


def request_seed(asked: int | None, server: int | None) -> int:
    """The seed a request samples with: its own; else the server's where the user set one; else a fresh one
    (as OpenAI and llama.cpp do: "regenerate" gives another answer). -1 asks for a fresh one too. The seed
    used goes back in ``system_fingerprint`` and the recording, so any answer can be reproduced."""
    for seed in (asked, server):
        if seed is not None and seed >= 0:
            return seed
    return secrets.randbelow(SEED_MAX + 1)
