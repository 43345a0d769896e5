"""SGLang's native API: ``/generate`` with token ids, logprobs and the server's counters.

From SGLang's ``python/sglang/srt/entrypoints/http_server.py``, ``managers/logprob_ops.py`` and the
tokenizer manager's output processor: ``POST /generate`` with ``return_logprob``,
``top_logprobs_num`` and ``return_text_in_logprobs`` streams server-sent events
(``data: {...}`` … ``data: [DONE]``) whose ``meta_info`` holds
``output_token_logprobs`` as ``[logprob, token_id, text]`` triples and
``output_top_logprobs`` as one list of such triples per token, ``finish_reason``
(``{"type": "stop", "matched": id | text}``, ``{"type": "length", ...}``,
``{"type": "abort", "message": ...}`` or null), ``prompt_tokens``,
``completion_tokens`` and ``cached_tokens``. By default every chunk repeats the
whole output so far (text and logprob lists); with ``--incremental-streaming-output``
each carries only what is new. The stream below counts the tokens it has
emitted and takes only the new ones either way.

``/get_model_info`` (``model_path``), ``/get_server_info`` (server arguments,
``version``), ``/v1/models`` (``max_model_len``: the context the engine runs
with), ``/tokenize`` (``{"prompt", "add_special_tokens"}`` → ``{"tokens"}``) and,
with ``--enable-metrics``, ``/metrics`` (``sglang:*``) describe the server. Chat
goes through its OpenAI-compatible ``/v1/chat/completions``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .backend import Backend, Candidate, Key, MetricsSample, ProbeResult, RemoteDone, RemoteInfo, RemoteToken, Request
from .http import RemoteError, error_text, safe_url
from .parse import as_count, as_logprob

MAX_TOP_LOGPROBS = 20  # SGLang sets no cap; the panels show far fewer, and every one is detokenized per token


def _triple(entry: Any) -> tuple[float, int, bytes] | None:
    """``[logprob, token_id, text]`` (text null without ``return_text_in_logprobs``); None for anything else."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        return None
    lp, tid = as_logprob(entry[0]), as_count(entry[1])
    if lp is None or tid is None:
        return None
    text = entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""
    return lp, tid, text.encode("utf-8", "surrogatepass")


def _candidates(entries: Any) -> tuple[Candidate, ...]:
    if not isinstance(entries, list):
        return ()
    out = [Candidate(tid, piece, lp) for lp, tid, piece in filter(None, map(_triple, entries))]
    return tuple(sorted(out, key=lambda c: -c.logprob))


def _finish(meta: dict[str, Any]) -> dict[str, Any] | None:
    reason = meta.get("finish_reason")
    if reason is None:
        return None
    if isinstance(reason, str):  # an older server's bare reason
        return {"type": reason}
    return reason if isinstance(reason, dict) else {"type": "?"}


def _eog(reason: dict[str, Any]) -> bool:
    """Ended at an end-of-generation token: ``"stop"`` matched a token id (a stop string matches text)."""
    matched = reason.get("matched")
    return reason.get("type") == "stop" and (
        (isinstance(matched, int) and not isinstance(matched, bool))
        or (isinstance(matched, list) and bool(matched) and all(isinstance(m, int) for m in matched)))


def _cumulative(listed: int, total: int | None, emitted: int) -> bool | None:
    """Whether a chunk listing ``listed`` output tokens repeats the whole output so far (True, SGLang's default) or
    holds only the new ones (False, ``--incremental-streaming-output``); None: its ``completion_tokens`` cannot tell."""
    if total is None:
        return None
    if listed == total - emitted and listed != total:
        return False
    return True if listed == total else None


def done_from_meta(meta: dict[str, Any], reason: dict[str, Any]) -> RemoteDone:
    prompt, cached = as_count(meta.get("prompt_tokens")), as_count(meta.get("cached_tokens"))
    evaluated = prompt - min(prompt, cached or 0) if prompt is not None else None  # prompt_tokens counts the cached
    kind = reason.get("type") if isinstance(reason.get("type"), str) else None
    return RemoteDone(kind, prompt_n=evaluated, cache_n=cached, predicted_n=as_count(meta.get("completion_tokens")),
                      stopped_eog=_eog(reason))


class SGLangBackend(Backend):
    name: ClassVar[str] = "sglang"
    detect_path: ClassVar[str] = "/get_model_info"

    @classmethod
    def recognises(cls, body: dict[str, Any]) -> bool:
        return isinstance(body.get("model_path"), str)

    # -- what the server is ------------------------------------------------------------------------------

    def info(self) -> RemoteInfo:
        if self._info is not None:
            return self._info
        model_info = self.endpoint.get_json("/get_model_info")
        if not isinstance(model_info, dict) or not isinstance(model_info.get("model_path"), str):
            raise RemoteError(f"{self.endpoint.shown}/get_model_info has no model_path: not SGLang?", kind="bad-json")
        model = model_info["model_path"]
        n_ctx = None
        models = self._object("/v1/models", timeout=10).get("data")
        if isinstance(models, list) and models and isinstance(models[0], dict):
            first = models[0]
            model = first["id"] if isinstance(first.get("id"), str) and first["id"] else model  # served name
            n_ctx = as_count(first.get("max_model_len"))
        server = self._object("/get_server_info", timeout=10)
        n_ctx = n_ctx or as_count(server.get("context_length"))
        version = server.get("version") if isinstance(server.get("version"), str) else ""
        tokenize = False
        try:
            answer = self.endpoint.post_json("/tokenize", {"prompt": "a", "add_special_tokens": False}, timeout=10)
            tokenize = isinstance(answer, dict) and isinstance(answer.get("tokens"), list)
            n_ctx = n_ctx or (as_count(answer.get("max_model_len")) if tokenize else None)
        except RemoteError:
            pass
        try:
            self.endpoint.get_text("/metrics", timeout=5, limit=8 * 2**20)
            metrics = True
        except RemoteError:
            metrics = False
        notes = () if metrics else ("no /metrics: start SGLang with --enable-metrics for the fleet view",)
        self._info = RemoteInfo(
            backend=self.name, url=safe_url(self.endpoint.url), model=model or "(no model path)", n_ctx=n_ctx,
            chat=True, max_top_k=MAX_TOP_LOGPROBS, token_ids=True, version=version,
            exposes={"logprobs": True, "top_k": True, "token_ids": True, "n_ctx": n_ctx is not None, "kv": metrics,
                     "metrics": metrics, "tokenize": tokenize, "cache_n": True, "server_sampler_chain": False},
            notes=notes,
        )
        return self._info

    # -- generation ------------------------------------------------------------------------------------------

    def _sampling(self, request: Request) -> dict[str, Any]:
        # no seed: SGLang's sampling_seed is recent, and a server older than it fails a request that names it
        s = request.sampling
        params: dict[str, Any] = {"max_new_tokens": request.max_tokens}
        if request.ignore_eos:
            params["ignore_eos"] = True
        params.update(s.fields(rename={"repeat_penalty": "repetition_penalty"}, skip=("seed",)))
        if s.top_k is not None and s.top_k <= 0:
            params["top_k"] = -1  # SGLang: -1 is "off", 0 is refused
        return params

    def _generate_body(self, request: Request, n_probs: int) -> dict[str, Any]:
        body: dict[str, Any] = {"text": request.prompt, "sampling_params": self._sampling(request), "stream": True}
        if n_probs:
            body.update(return_logprob=True, top_logprobs_num=n_probs, return_text_in_logprobs=True)
        return body

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        if request.messages:
            yield from self._stream_chat(request)
            return
        n_probs = max(0, min(request.n_probs, MAX_TOP_LOGPROBS))
        emitted = 0  # tokens yielded so far
        seen = ""  # the text so far (when the chunks carry no logprobs)
        for chunk in self.endpoint.stream("/generate", self._generate_body(request, n_probs)):
            t = time.perf_counter()
            if not isinstance(chunk, dict):
                raise RemoteError(f"{self.endpoint.shown}/generate streamed an event that is not an object",
                                  kind="bad-json")
            meta = chunk.get("meta_info") if isinstance(chunk.get("meta_info"), dict) else {}
            total = as_count(meta.get("completion_tokens"))
            tokens = meta.get("output_token_logprobs")
            if n_probs and tokens is not None:
                for token in self._new_tokens(tokens, meta.get("output_top_logprobs"), emitted, total, t):
                    emitted += 1
                    yield token
            else:
                text = chunk.get("text") if isinstance(chunk.get("text"), str) else ""
                ids = chunk.get("output_ids")
                whole = _cumulative(len(ids), total, emitted) if isinstance(ids, list) else None
                if whole is None:
                    whole = emitted > 0 and text.startswith(seen)
                delta = text[len(seen):] if whole else text
                seen = seen + delta
                emitted = total if total is not None else emitted + 1
                if delta:
                    yield RemoteToken(None, delta.encode("utf-8", "surrogatepass"), delta, None, (), t)
            reason = _finish(meta)
            if reason is not None:
                if reason.get("type") == "abort":
                    raise RemoteError(f"{self.endpoint.shown}/generate: the server aborted the request "
                                      f"({error_text(reason)})", kind="http")
                yield done_from_meta(meta, reason)
                return
        raise RemoteError(f"{self.endpoint.shown}/generate ended the stream without a finish_reason: the server "
                          "stopped mid-answer", kind="died")

    def _new_tokens(self, tokens: Any, tops: Any, emitted: int, total: int | None,
                    t: float) -> Iterator[RemoteToken]:
        """The tokens of one chunk not yet emitted: all of an incremental chunk, the tail of a cumulative one."""
        if not isinstance(tokens, list):
            raise RemoteError(f"{self.endpoint.shown}/generate sent output_token_logprobs that is not a list",
                              kind="bad-json")
        tops = tops if isinstance(tops, list) else []
        whole = _cumulative(len(tokens), total, emitted)
        if whole is None:
            whole = len(tokens) > emitted  # no count to go by: a list longer than what was seen repeats it
        for i in range(emitted if whole else 0, len(tokens)):
            triple = _triple(tokens[i])
            if triple is None:
                raise RemoteError(f"{self.endpoint.shown}/generate sent a token logprob that is not "
                                  "[logprob, token_id, text]", kind="bad-json")
            lp, tid, piece = triple
            yield RemoteToken(tid, piece, piece.decode("utf-8", "replace"), lp,
                              _candidates(tops[i]) if i < len(tops) else (), t)

    def _stream_chat(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        """Chat mode: the server's template through ``/v1/chat/completions`` (OpenAI logprobs, by text)."""
        from .openai import OpenAIBackend

        chat = OpenAIBackend(self.endpoint)
        chat._info = self.info()
        yield from chat.stream(request)

    def probe(self, prompt: Sequence[Key] | str, n_probs: int) -> ProbeResult:
        body: dict[str, Any] = {"sampling_params": {"max_new_tokens": 1, "temperature": 0}, "stream": False,
                                "return_logprob": True, "top_logprobs_num": max(1, min(n_probs, MAX_TOP_LOGPROBS)),
                                "return_text_in_logprobs": True}
        if isinstance(prompt, str):
            body["text"] = prompt
        else:
            ids = [as_count(k) for k in prompt]
            if any(i is None for i in ids):
                raise RemoteError(f"{self.name}: a probe's prompt takes token ids or text", kind="unsupported")
            body["input_ids"] = ids
        t0 = time.perf_counter()
        answer = self.endpoint.post_json("/generate", body)
        ms = (time.perf_counter() - t0) * 1000.0
        if isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        if not isinstance(answer, dict):
            raise RemoteError(f"{self.endpoint.shown}/generate answered a probe with no object", kind="bad-json")
        meta = answer.get("meta_info") if isinstance(answer.get("meta_info"), dict) else {}
        tops = meta.get("output_top_logprobs")
        top = _candidates(tops[0]) if isinstance(tops, list) and tops else ()
        if not top:
            raise RemoteError(f"{self.endpoint.shown}/generate gave no top logprobs for the probe", kind="unsupported")
        reason = _finish(meta) or {}
        done = done_from_meta(meta, reason)
        tokens = meta.get("output_token_logprobs")
        chosen = _triple(tokens[0]) if isinstance(tokens, list) and tokens else None
        eog = (chosen[1],) if done.stopped_eog and chosen is not None else ()
        return ProbeResult(top, prompt_n=done.prompt_n, cache_n=done.cache_n, ms=ms, eog=eog)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int] | None:
        answer = self.endpoint.post_json("/tokenize", {"prompt": text, "add_special_tokens": add_special})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(as_count(t) is not None for t in tokens):
            raise RemoteError(f"{self.endpoint.shown}/tokenize answered without a list of token ids", kind="bad-json")
        return tokens

    def detokenize(self, ids: Sequence[int]) -> bytes | None:
        answer = self.endpoint.post_json("/detokenize", {"tokens": list(ids)})
        text = answer.get("text") if isinstance(answer, dict) else None
        return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else None

    def metrics(self) -> MetricsSample:
        from .metrics import sample_from_prometheus

        info = self.info()
        try:
            page = self.endpoint.get_text("/metrics", limit=8 * 2**20)
        except RemoteError as exc:
            if exc.kind != "not-found":
                raise
            raise RemoteError(f"{self.endpoint.shown}/metrics answered 404: start SGLang with --enable-metrics",
                              status=404, kind="not-found") from None
        return sample_from_prometheus(page, backend=self.name, url=info.url, model=info.model)
