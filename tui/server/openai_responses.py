"""``POST /v1/responses``: the subset of OpenAI's Responses API that llama.cpp's server serves too — text in
(a string, or messages), text out, streamed as the API's typed events or answered as one object.

A response is a chat turn underneath (``instructions`` is the system message): the same run, the same panels.
What the subset does not cover (tools, ``previous_response_id``, structured ``text.format``, images) is a 400
that says so, never a silent 200.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..engine.settings import MAX_TOKENS, SEED_MAX
from .responses import _collect, _submit
from .service import ApiError, Done, GenRequest, Service, TokenOut


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=-1, le=SEED_MAX)  # not OpenAI's, llama.cpp's: a reproducible answer
    stream: bool | None = False
    tools: list[Any] | None = None
    previous_response_id: str | None = None
    text: dict[str, Any] | None = None
    # the fields _gen_request reads from a chat body (none of them part of this API)
    stop: str | list[str] | None = None
    preset: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int | None = 1
    stream_options: dict[str, Any] | None = None


def messages_of(body: ResponsesRequest) -> tuple[dict[str, str], ...]:
    """The conversation a Responses request asks about; what the subset does not serve is a 400 naming it."""
    if body.tools:
        raise ApiError(400, "tools are not supported on /v1/responses by llmtui: use /v1/chat/completions",
                       param="tools")
    if body.previous_response_id is not None:
        raise ApiError(400, "previous_response_id is not supported: llmtui keeps no responses; send the whole "
                       "conversation as input", param="previous_response_id")
    fmt = (body.text or {}).get("format") if isinstance(body.text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise ApiError(400, f"text.format {fmt.get('type')!r} is not supported on /v1/responses: use "
                       "/v1/chat/completions with response_format", param="text.format")
    out: list[dict[str, str]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        out.append({"role": "user", "content": body.input})
        return tuple(out)
    for i, item in enumerate(body.input):
        role = item.get("role")
        if item.get("type", "message") != "message" or role not in ("user", "assistant", "system", "developer"):
            raise ApiError(400, f"input[{i}]: only messages (role user, assistant, system, developer) are supported",
                           param=f"input[{i}]")
        out.append({"role": "system" if role == "developer" else role, "content": _text(item.get("content"), i)})
    if not out or out[-1]["role"] == "system":
        raise ApiError(400, "input: give at least one user message", param="input")
    return tuple(out)


def _text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise ApiError(400, f"input[{i}].content: only text parts are supported", param=f"input[{i}].content")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(400, f"input[{i}].content: expected text", param=f"input[{i}].content")


def _response(rid: str, mid: str, created: int, req: GenRequest, text: str, status: str,
              done: Done | None) -> dict[str, Any]:
    usage = None
    if done is not None:
        usage = {"input_tokens": done.prompt_tokens, "output_tokens": done.completion_tokens,
                 "total_tokens": done.prompt_tokens + done.completion_tokens,
                 "input_tokens_details": {"cached_tokens": done.cached_tokens},
                 "output_tokens_details": {"reasoning_tokens": 0}}
    output = [] if status == "in_progress" else [
        {"type": "message", "id": mid, "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
    incomplete = {"reason": "max_output_tokens"} if done is not None and done.finish_reason == "length" else None
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": req.model,
            "output": output, "usage": usage, "error": None, "incomplete_details": incomplete,
            "instructions": None, "metadata": {}, "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
            "temperature": None, "top_p": None, "seed": req.seed}


async def respond_responses(service: Service, req: GenRequest, body: ResponsesRequest,
                            request: Request | None) -> Any:
    submitted = await _submit(service, req, body, "responses", request)  # type: ignore[arg-type]
    if isinstance(submitted, Response):
        return submitted
    rid, mid, created = "resp_" + uuid.uuid4().hex[:24], "msg_" + uuid.uuid4().hex[:24], int(time.time())
    if body.stream:
        return StreamingResponse(_events(*submitted, req, rid, mid, created), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    answered = await _collect(*submitted, request)
    if isinstance(answered, Response):
        return answered
    _tokens, done = answered
    status = "incomplete" if done.finish_reason == "length" else "completed"
    return _response(rid, mid, created, req, done.text, status, done)


async def _events(stream: Any, job: Any, req: GenRequest, rid: str, mid: str, created: int) -> AsyncIterator[str]:
    seq = iter(range(1 << 30))

    def event(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **data})}\n\n"

    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    text = ""
    try:
        yield event("response.created", response=_response(rid, mid, created, req, "", "in_progress", None))
        yield event("response.output_item.added", output_index=0,
                    item={"type": "message", "id": mid, "status": "in_progress", "role": "assistant", "content": []})
        while True:
            try:
                item = await stream.get()
            except ApiError as exc:  # after the stream started: an error event, as the API does
                yield event("error", code=exc.code, message=exc.message, param=exc.param)
                return
            if isinstance(item, TokenOut) and item.delta:
                text += item.delta
                yield event("response.output_text.delta", delta=item.delta, logprobs=[], **where)
            elif isinstance(item, Done):
                text += item.tail
                if item.tail:
                    yield event("response.output_text.delta", delta=item.tail, logprobs=[], **where)
                yield event("response.output_text.done", text=text, logprobs=[], **where)
                status = "incomplete" if item.finish_reason == "length" else "completed"
                yield event("response.completed" if status == "completed" else "response.incomplete",
                            response=_response(rid, mid, created, req, text, status, item))
                return
    finally:
        job.cancel.set()
