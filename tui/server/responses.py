"""A job's events (:mod:`tui.server.service`) as OpenAI's answer: one JSON object, or server-sent events.

The events move from the worker thread onto the event loop through a
:class:`_Stream`; a client that goes away cancels its job (before the next token).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from .bodies import SamplingParams
from .service import Accepted, ApiError, Done, GenRequest, Service, TokenOut
from .structured import tool_calls


def _token_str(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def _legacy_token(piece: bytes) -> str:
    """A token in legacy completions' logprobs: its text, or ``bytes:\\xNN…`` (OpenAI's form) for a token that
    holds part of a character — so two such tokens never collide as one "\ufffd" key."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


def _chat_logprobs(tokens: Sequence[TokenOut]) -> dict[str, Any]:
    return {"content": [
        {"token": _token_str(t.piece), "logprob": t.logprob, "bytes": list(t.piece),
         "top_logprobs": [{"token": _token_str(p), "logprob": lp, "bytes": list(p)} for _, p, lp in t.top]}
        for t in tokens
    ], "refusal": None}


def _completion_logprobs(tokens: Sequence[TokenOut], prompt_offset: int = 0, offset: int = 0,
                         n_prompt: int = 0) -> dict[str, Any]:
    """Legacy logprobs: the first ``n_prompt`` tokens are the prompt's (echo: offsets from ``prompt_offset``),
    the rest generated ones (offsets from ``offset``, where the generated text starts)."""
    return {"tokens": [_legacy_token(t.piece) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.logprob is None else {_legacy_token(p): lp for _, p, lp in t.top}
                             for t in tokens],
            "text_offset": [(prompt_offset if i < n_prompt else offset) + t.start for i, t in enumerate(tokens)]}


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


async def _submit(service: Service, req: GenRequest, body: SamplingParams, label: str,
                  request: Request | None) -> tuple[_Stream, Any] | Response:
    """Queue ``req``; once the engine took it (its prompt fits), its stream and job — or a 499 for a client
    that left while it waited. An error before any byte is sent (a context overflow) is raised."""
    stream = _Stream(wake_on_tokens=bool(body.stream))
    job = service.submit(req, stream.sink, label)
    try:
        accepted = await _next(stream, request)
    except _ClientGone:
        job.cancel.set()  # it left while queued: the worker skips it
        return Response(status_code=499)
    except BaseException:
        job.cancel.set()
        raise
    assert isinstance(accepted, Accepted)
    return stream, job


def _fingerprint(req: GenRequest) -> str:
    return f"llmtui-{req.preset.name}-seed{req.seed}"


async def respond(service: Service, reqs: Sequence[GenRequest], body: SamplingParams, *, chat: bool, label: str,
                  request: Request | None = None) -> Any:
    """Answer ``reqs`` (one per choice: ``n`` > 1 and several prompts are several runs, one after the other):
    an error before any byte is sent (a context overflow is a 400), then the whole answer as one object or,
    when ``body.stream``, as server-sent events; a 499 for a client that left while it waited."""
    first = await _submit(service, reqs[0], body, label, request)
    if isinstance(first, Response):
        return first
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(_sse_all(service, first, reqs, body, label, rid, created, chat, include_usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    choices, dones = [], []
    for i, req in enumerate(reqs):
        submitted = first if i == 0 else await _submit(service, req, body, label, request)
        if isinstance(submitted, Response):
            return submitted
        answered = await _collect(*submitted, request)
        if isinstance(answered, Response):
            return answered
        tokens, done = answered
        choices.append(_choice(req, done, tokens, chat))
        dones.append(done)
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": reqs[0].model, "choices": choices, "usage": _usage_of(dones, body.n or 1),
            "system_fingerprint": _fingerprint(reqs[0])}


async def _collect(stream: _Stream, job: Any, request: Request | None) -> tuple[list[TokenOut], Done] | Response:
    tokens: list[TokenOut] = []
    try:
        while True:
            item = await _next(stream, request)
            if isinstance(item, TokenOut):
                tokens.append(item)
            elif isinstance(item, Done):
                return tokens, item
    except _ClientGone:
        job.cancel.set()  # nobody to answer: the engine stops before the next token
        return Response(status_code=499)
    except BaseException:
        job.cancel.set()
        raise


def _answer(req: GenRequest, text: str, finish: str) -> tuple[dict[str, Any], str]:
    """A chat answer's message and finish reason: a tool call when the request offered tools and the model
    called one (its grammar made the call well-formed), else the text (structured output: its JSON)."""
    structure = req.structure
    calls = tool_calls(text, structure) if structure is not None else None
    if calls:
        return {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}, "tool_calls"
    if structure is not None and structure.grammar is not None:
        text = text.rstrip()  # a JSON grammar allows trailing whitespace
    return {"role": "assistant", "content": text, "refusal": None}, finish


def _choice(req: GenRequest, done: Done, tokens: Sequence[TokenOut], chat: bool) -> dict[str, Any]:
    if chat:
        message, finish = _answer(req, done.text, done.finish_reason)
        return {"index": req.index, "message": message, "finish_reason": finish,
                "logprobs": _chat_logprobs(tokens) if req.top_logprobs is not None else None}
    offset = len(done.echo) if req.echo else len(req.prompt)  # OpenAI's text_offset counts from the prompt
    logprobs = None
    if req.top_logprobs is not None:
        logprobs = _completion_logprobs([*done.prompt_logprobs, *tokens], 0, offset, len(done.prompt_logprobs))
    return {"index": req.index, "text": done.echo + done.text, "finish_reason": done.finish_reason,
            "logprobs": logprobs}


def _usage_of(dones: Sequence[Done], n: int) -> dict[str, Any]:
    """One request's usage: each prompt's tokens once (its ``n`` choices share it), every choice's completion."""
    usage = _usage(dones[0])
    if len(dones) > 1:
        usage["prompt_tokens"] = sum(d.prompt_tokens for d in dones[::n])
        usage["completion_tokens"] = sum(d.completion_tokens for d in dones)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return usage


def _sse_line(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse_all(service: Service, first: tuple[_Stream, Any], reqs: Sequence[GenRequest], body: SamplingParams,
                   label: str, rid: str, created: int, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """Every choice's events, one choice after the other (each chunk names its choice's index)."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    base = {"id": rid, "object": obj, "created": created, "model": reqs[0].model,
            "system_fingerprint": _fingerprint(reqs[0])}
    dones: list[Done] = []
    for i, req in enumerate(reqs):
        if i:
            try:
                submitted = await _submit(service, req, body, label, None)
            except ApiError as exc:  # after the stream started: report it in-band, as OpenAI does
                yield _sse_line(exc.body())
                break
            if isinstance(submitted, Response):
                break
        else:
            submitted = first
        stream, job = submitted
        async for line in _sse(stream, job, req, base, chat, dones):
            yield line
    if include_usage and dones:
        yield _sse_line({**base, "choices": [], "usage": _usage_of(dones, body.n or 1)})
    yield "data: [DONE]\n\n"


async def _sse(stream: _Stream, job: Any, req: GenRequest, base: dict[str, Any], chat: bool,
               dones: list[Done]) -> AsyncIterator[str]:
    want_lp = req.top_logprobs is not None

    def chunk(delta: str | None, finish: str | None, tokens: Sequence[TokenOut] = (), role: bool = False,
              offset: int = 0, n_prompt: int = 0) -> str:
        if chat:
            d: dict[str, Any] = {}
            if role:
                d["role"] = "assistant"
            if delta is not None:
                d["content"] = delta
            choice: dict[str, Any] = {"index": req.index, "delta": d, "finish_reason": finish,
                                      "logprobs": _chat_logprobs(tokens) if want_lp and tokens else None}
        else:
            choice = {"index": req.index, "text": delta or "", "finish_reason": finish,
                      "logprobs": _completion_logprobs(tokens, 0, offset, n_prompt) if want_lp and tokens else None}
        return _sse_line({**base, "choices": [choice]})

    offset = 0 if chat else len(req.prompt)  # OpenAI's text_offset counts from the prompt's start
    # offered tools: the answer is a call or text, known at its end (then sent as one delta)
    held = chat and req.structure is not None and bool(req.structure.tools)
    text = ""
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
                if held:
                    text += item.delta
                elif item.delta or want_lp:
                    yield chunk(item.delta, None, (item,), offset=offset)
            elif isinstance(item, Done) and held:
                message, finish = _answer(req, text + item.tail, item.finish_reason)
                if message.get("tool_calls"):
                    calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
                    yield _sse_line({**base, "choices": [{"index": req.index, "delta": {"tool_calls": calls},
                                                          "finish_reason": None, "logprobs": None}]})
                else:
                    yield chunk(message["content"], None)
                yield chunk(None, finish)
                dones.append(item)
                break
            elif isinstance(item, Done):
                if item.echo or item.prompt_logprobs:  # scoring: the prompt first, with its logprobs
                    offset = len(item.echo)
                    yield chunk(item.echo, None, item.prompt_logprobs, n_prompt=len(item.prompt_logprobs))
                if item.tail:
                    yield chunk(item.tail, None)
                yield chunk(None if chat else "", item.finish_reason)
                dones.append(item)
                break
    finally:
        job.cancel.set()  # the client went away (or we are done): free the engine before the next token
