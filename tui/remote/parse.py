"""Reading what servers send (untrusted JSON) into plain values: shared by the protocol modules.

Nothing here trusts a type: a field of the wrong type reads as None (not exposed), never as an exception.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .backend import Key, RemoteDone

_BYTES = re.compile(r"\\x([0-9a-fA-F]{2})")


def token_piece(token: Any, raw: Any = None) -> tuple[Key, bytes]:
    """A logprobs entry's token as (key, bytes): ``bytes`` where the server sent them, ``bytes:\\xNN`` (OpenAI's
    form for a partial UTF-8 token), ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``), else the text."""
    text = token if isinstance(token, str) else str(token)
    if isinstance(raw, list) and raw and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        piece = bytes(raw)
    elif text.startswith("bytes:"):
        piece = bytes(int(h, 16) for h in _BYTES.findall(text[6:]))
    else:
        piece = text.encode("utf-8", "surrogatepass") if text else b""
    digits = text[9:]
    if text.startswith("token_id:") and digits.isascii() and digits.isdigit() and len(digits) <= 9:
        return int(digits), bytes(raw) if isinstance(raw, list) and piece == bytes(raw) else b""
    return text, piece


def as_logprob(value: Any) -> float | None:
    """A log-probability: ≤ 0 (a hair above 0 is float noise for p = 1), or -inf; anything else is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    if v == -math.inf or (math.isfinite(v) and v <= 0.0):
        return v
    return 0.0 if 0.0 < v <= 1e-4 else None


def as_prob_logprob(value: Any) -> float | None:
    """A probability (llama-server's ``prob`` with post_sampling_probs) as a log-probability; None unless 0..1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        return None
    return math.log(value) if value > 0 else -math.inf


MAX_COUNT = (1 << 31) - 1  # token ids and counts beyond int32 are not what any server means


def as_count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT
    return value if ok else None


def done_from_timings(chunk: dict[str, Any]) -> RemoteDone:
    timings = chunk.get("timings") if isinstance(chunk.get("timings"), dict) else {}
    stop_type = chunk.get("stop_type") if isinstance(chunk.get("stop_type"), str) else None
    settings = chunk.get("generation_settings") if isinstance(chunk.get("generation_settings"), dict) else {}

    def ms(name: str) -> float | None:
        v = timings.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return RemoteDone({"eos": "stop", "limit": "length", "word": "stop"}.get(stop_type or "", stop_type),
                      prompt_n=as_count(timings.get("prompt_n")), cache_n=as_count(timings.get("cache_n")),
                      predicted_n=as_count(timings.get("predicted_n")), prompt_ms=ms("prompt_ms"),
                      predicted_ms=ms("predicted_ms"), n_ctx=as_count(settings.get("n_ctx")),
                      stopped_eog=stop_type == "eos")
