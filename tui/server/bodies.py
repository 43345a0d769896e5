"""The API's request bodies and its error body, as pydantic models (the OpenAPI schema is built from them).

Each field is range-checked where it enters; a body that fails a check is a 400
(:mod:`tui.server.errors` words it). Unknown fields are ignored, as OpenAI's API does.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine.settings import MAX_TOKENS, SEED_MAX
from .service import TOP_LOGPROBS_MAX, ApiError

MAX_CHOICES = 8  # n: each choice is a run of its own on one engine
MAX_RUNS = 16  # prompts × n in one request: bounded work


class SamplingParams(BaseModel):
    """The fields both request bodies share: the model and how to sample."""

    # Python's json reads the NaN / Infinity literals; no sampler parameter means anything with them
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-1, le=SEED_MAX)  # llama.cpp's seeds are 32-bit (-1: random)
    # null is accepted where OpenAI accepts it: it means the default
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(1, ge=1, le=MAX_CHOICES, description="choices: each a run of its own, one after the "
                          "other (with seeds seed, seed+1…)")
    logit_bias: dict[str, float] | None = Field(None, description="token id → bias added to its logit, -100..100")
    # structured output: a grammar stage in the chain enforces it (tui.server.structured)
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | None = None  # llama-server's field
    grammar: str | None = None  # llama-server's raw GBNF: only with `llmtui serve --allow-grammar`
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
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's earlier calls (shown to the model as JSON)
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            if self.tool_calls:  # the calls the model made, as it wrote them
                calls = [c.get("function", {}) for c in self.tool_calls if isinstance(c, dict)]
                return json.dumps([{"name": c.get("name"), "arguments": c.get("arguments")} for c in calls])
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


class ChatRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # one call per answer here, whatever it says
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)


class CompletionRequest(SamplingParams):
    prompt: str | list[str] | list[int] | list[list[int]]  # text, texts, token ids, lists of token ids
    max_tokens: int | None = Field(16, ge=0, le=MAX_TOKENS)  # 0 with echo: score the prompt only
    logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS_MAX)
    echo: bool | None = False


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: the text, and whether the model's special tokens (its BOS) are added and parsed."""

    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(max_length=1_000_000)
    add_special_tokens: bool | None = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tokens: list[int] = Field(max_length=1_000_000)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response (for the OpenAPI schema; :meth:`ApiError.body` builds it)."""

    error: ErrorDetail


# every route's ``responses=``: any status may be an error in OpenAI's shape
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {"default": {"model": ErrorBody,
                                                                "description": "An error, in OpenAI's shape"}}
