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


def _completion_logprobs(tokens: Sequence[TokenOut], offset: int = 0) -> dict[str, Any]:
    return {"tokens": [_legacy_token(t.piece) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [{_legacy_token(p): lp for _, p, lp in t.top} for t in tokens],
            "text_offset": [offset + t.start for t in tokens]}


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


async def respond(service: Service, req: GenRequest, body: SamplingParams, *, chat: bool, label: str,
                  request: Request | None = None) -> Any:
    """Submit ``req`` and answer it: an error before any byte is sent (a context overflow is a 400), then
    the whole answer as one object or, when ``body.stream``, as server-sent events; a 499 for a client
    that left while it waited."""
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
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": done.text, "refusal": None},
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
