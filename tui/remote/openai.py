"""Any OpenAI-compatible server: ``/v1/completions`` and ``/v1/chat/completions`` with logprobs.

This is llmtui's own ``llmtui serve``, llama-cpp-python's ``llama_cpp.server``,
vLLM (:mod:`tui.remote.vllm` adds its metrics and limits) and anything else that
speaks the OpenAI API. What the protocol gives: the text of each streamed
token, its logprob and the top-K alternatives *by their text* (no token ids:
:class:`~tui.remote.vocab.RemoteVocab` numbers them), usage at the end where the
server sends it. What it does not give: n_ctx, the KV cache, the sampler chain.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .backend import Backend, Candidate, Key, MetricsSample, ProbeResult, RemoteDone, RemoteInfo, RemoteToken, Request
from .http import Endpoint, RemoteError, safe_url
from .metrics import server_metrics
from .parse import as_count, as_logprob, done_from_timings, token_piece

__all__ = ["OpenAIBackend", "candidates_from_dict", "candidates_from_list", "chat_tokens", "completion_tokens",
           "done_from_usage", "token_piece"]

_LIMIT = re.compile(r"(?:less than or equal to|at most|<=|maximum(?: of| is)?|max(?:imum)?(?: of| is)?)\s*(\d+)",
                    re.IGNORECASE)


def lowered_top_k(message: str, asked: int) -> int:
    """How many logprobs to ask for after a server refused ``asked`` with ``message``: the limit it names
    ("less than or equal to 10"), else 5 (OpenAI's legacy cap), else 0 (it refuses logprobs altogether)."""
    if "logprob" not in message.lower():
        return 0
    found = _LIMIT.search(message)
    if found and 0 < int(found.group(1)) < asked:
        return int(found.group(1))
    return 5 if asked > 5 else 0


def _id_or(entry: dict[str, Any], key: Key) -> Key:
    """llama-server's OpenAI logprobs also carry the token id: keep it (the panels then agree with /completion)."""
    tid = as_count(entry.get("id"))
    return tid if tid is not None else key


def candidates_from_dict(top: Any) -> tuple[Candidate, ...]:
    """Legacy completions' ``top_logprobs`` entry ``{token: logprob}``, best first."""
    if not isinstance(top, dict):
        return ()
    out = []
    for token, lp in top.items():
        value = as_logprob(lp)
        if value is not None:
            key, piece = token_piece(token)
            out.append(Candidate(key, piece, value))
    return tuple(sorted(out, key=lambda c: -c.logprob))


def candidates_from_list(top: Any) -> tuple[Candidate, ...]:
    """Chat's ``top_logprobs`` list ``[{token, logprob, bytes}]``, best first."""
    if not isinstance(top, list):
        return ()
    out = []
    for entry in top:
        if isinstance(entry, dict) and "token" in entry:
            value = as_logprob(entry.get("logprob"))
            if value is not None:
                key, piece = token_piece(entry["token"], entry.get("bytes"))
                out.append(Candidate(_id_or(entry, key), piece, value))
    return tuple(sorted(out, key=lambda c: -c.logprob))


def completion_tokens(choice: dict[str, Any], t: float) -> list[RemoteToken]:
    """The tokens of one streamed legacy-completions choice (usually one)."""
    text = choice.get("text") if isinstance(choice.get("text"), str) else ""
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("tokens"), list) and lp["tokens"]:
        tokens = lp["tokens"]
        lps = lp.get("token_logprobs") if isinstance(lp.get("token_logprobs"), list) else []
        tops = lp.get("top_logprobs") if isinstance(lp.get("top_logprobs"), list) else []
        out = []
        for i, token in enumerate(tokens):
            key, piece = token_piece(token)
            out.append(RemoteToken(key, piece, piece.decode("utf-8", "replace") if len(tokens) > 1 else text,
                                   as_logprob(lps[i]) if i < len(lps) else None,
                                   candidates_from_dict(tops[i]) if i < len(tops) else (), t))
        return out
    return [RemoteToken(None, text.encode("utf-8", "surrogatepass"), text, None, (), t)] if text else []


def chat_tokens(choice: dict[str, Any], t: float) -> list[RemoteToken]:
    """The tokens of one streamed chat choice."""
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    text = delta.get("content") if isinstance(delta.get("content"), str) else ""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if isinstance(content, list) and content:
        out = []
        for entry in content:
            if not isinstance(entry, dict) or "token" not in entry:
                continue
            key, piece = token_piece(entry["token"], entry.get("bytes"))
            out.append(RemoteToken(_id_or(entry, key), piece, piece.decode("utf-8", "replace") if len(content) > 1 else text,
                                   as_logprob(entry.get("logprob")), candidates_from_list(entry.get("top_logprobs")), t))
        if out:
            return out
    return [RemoteToken(None, text.encode("utf-8", "surrogatepass"), text, None, (), t)] if text else []


def done_from_usage(finish: Any, usage: Any) -> RemoteDone:
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    reason = finish if isinstance(finish, str) else None
    prompt, cached = as_count(usage.get("prompt_tokens")), as_count(details.get("cached_tokens"))
    if prompt is not None and cached is not None:  # OpenAI's prompt_tokens include the cached ones
        prompt = max(0, prompt - cached)
    return RemoteDone(reason, prompt_n=prompt, cache_n=cached,
                      predicted_n=as_count(usage.get("completion_tokens")), stopped_eog=reason == "stop")


class OpenAIBackend(Backend):
    name: ClassVar[str] = "openai"
    max_logprobs: ClassVar[int] = 20  # what llama-cpp-python's server, ours and vLLM's default take
    stream_usage: ClassVar[bool] = False  # send stream_options.include_usage (not every server accepts it)

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._top_k = self.max_logprobs
        self.refused_logprobs = ""  # the server's answer when it refused logprobs (the run goes on without)

    detect_path: ClassVar[str] = "/v1/models"

    @classmethod
    def recognises(cls, body: dict[str, Any]) -> bool:
        return isinstance(body.get("data"), list)

    def models(self) -> list[dict[str, Any]]:
        body = self.endpoint.get_json("/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise RemoteError(f"{self.endpoint.shown}/v1/models did not list models (no \"data\"): not an "
                              "OpenAI-compatible server?", kind="bad-json")
        return [m for m in data if isinstance(m, dict)]

    def info(self) -> RemoteInfo:
        if self._info is None:
            models = self.models()
            first = models[0] if models else {}
            model = str(first.get("id", "")) or "(no model listed)"
            n_ctx = as_count(first.get("max_model_len")) or as_count((first.get("meta") or {}).get("n_ctx_train")
                                                             if isinstance(first.get("meta"), dict) else None)
            try:  # a Prometheus page? llmtui serve has one; most OpenAI-compatible servers do not
                self.endpoint.get_text("/metrics", timeout=5, limit=8 * 2**20)
                metrics = True
            except RemoteError:
                metrics = False
            self._info = RemoteInfo(
                backend=self.name, url=safe_url(self.endpoint.url), model=model, n_ctx=n_ctx, chat=True,
                max_top_k=self._top_k, token_ids=False, version=str(first.get("owned_by", "")),
                exposes={"logprobs": self._top_k > 0, "top_k": self._top_k > 0, "token_ids": False,
                         "n_ctx": n_ctx is not None, "kv": False, "metrics": metrics, "tokenize": False,
                         "cache_n": False, "server_sampler_chain": False},
            )
        return self._info

    # -- generation ------------------------------------------------------------------------------------------

    def _body(self, request: Request, n_probs: int) -> dict[str, Any]:
        s = request.sampling
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens, "stream": True}
        # top_k, min_p, repeat_penalty are not OpenAI's: llama-cpp-python's server, vLLM and ours take them
        # (others ignore unknown fields); top_k 0 ("off") is left out: some refuse it
        body.update(s.fields(skip=("top_k",) if s.top_k is not None and s.top_k <= 0 else ()))
        if request.messages:
            body["messages"] = list(request.messages)
            if n_probs:
                body["logprobs"] = True
                body["top_logprobs"] = n_probs
        else:
            body["prompt"] = request.prompt
            if n_probs:
                body["logprobs"] = n_probs
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        path = "/v1/chat/completions" if request.messages else "/v1/completions"
        n_probs = min(request.n_probs, self._top_k)
        try:
            events = self.endpoint.stream(path, self._body(request, n_probs))
            first = next(events, None)
        except RemoteError as exc:
            if exc.status not in (400, 422) or n_probs <= 0:
                raise
            # a server that refuses logprobs (or this many): ask again with what it takes, or without
            self._top_k = lowered_top_k(str(exc), n_probs)
            self._info = None
            if self._top_k == 0:
                self.refused_logprobs = str(exc)
            yield from self.stream(request)
            return
        parse = chat_tokens if request.messages else completion_tokens
        finish: Any = None
        usage: Any = None
        timings: Any = None  # llama-server adds its own timings to the last chunk
        event = first
        while event is not None:
            t = time.perf_counter()
            if isinstance(event, dict):
                if isinstance(event.get("usage"), dict):
                    usage = event["usage"]
                if isinstance(event.get("timings"), dict):
                    timings = event["timings"]
                choices = event.get("choices")
                if isinstance(choices, list):
                    for choice in choices:
                        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                            continue
                        yield from parse(choice, t)
                        if choice.get("finish_reason") is not None:
                            finish = choice["finish_reason"]
            event = next(events, None)
        if finish is None:
            raise RemoteError(f"{self.endpoint.shown}{path} ended the stream without a finish_reason: the server "
                              "stopped mid-answer", kind="died")
        done = done_from_usage(finish, usage)
        if timings is not None:
            served = done_from_timings({"timings": timings})
            done = replace(done, prompt_n=served.prompt_n, cache_n=served.cache_n,
                           predicted_n=served.predicted_n if served.predicted_n is not None else done.predicted_n,
                           prompt_ms=served.prompt_ms, predicted_ms=served.predicted_ms)
        yield done

    def metrics(self) -> MetricsSample:
        info = self.info()
        table = "llmtui" if info.version == "local" else self.name  # llmtui serve's models are owned_by "local"
        return server_metrics(self.endpoint, backend=table, url=info.url, model=info.model)

    def probe(self, prompt: Sequence[Key] | str, n_probs: int) -> ProbeResult:
        if not isinstance(prompt, str):
            raise RemoteError(f"{self.name}: probing takes text here", kind="unsupported")
        n = min(n_probs, self._top_k)
        if n <= 0:
            raise RemoteError(f"{self.endpoint.shown} returns no logprobs: probe mode needs them", kind="unsupported")
        t0 = time.perf_counter()
        while True:
            try:
                body = self.endpoint.post_json("/v1/completions", {"model": self.model, "prompt": prompt,
                                                                    "max_tokens": 1, "logprobs": n, "temperature": 0})
                break
            except RemoteError as exc:
                lower = lowered_top_k(str(exc), n) if exc.status in (400, 422) else 0
                if lower <= 0:
                    raise
                self._top_k, self._info, n = lower, None, lower
        ms = (time.perf_counter() - t0) * 1000.0
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        lp = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        tops = lp.get("top_logprobs") if isinstance(lp.get("top_logprobs"), list) else []
        top = candidates_from_dict(tops[0]) if tops else ()
        if not top:
            raise RemoteError(f"{self.endpoint.shown}/v1/completions gave no top logprobs for the probe",
                              kind="unsupported")
        done = done_from_usage(choice.get("finish_reason"), body.get("usage") if isinstance(body, dict) else None)
        eog = tuple(c.key for c in top[:1]) if choice.get("finish_reason") == "stop" and not choice.get("text") else ()
        return ProbeResult(top, prompt_n=done.prompt_n, cache_n=done.cache_n, ms=ms, eog=eog)
