"""llama.cpp's own ``llama-server``: the richest remote view.

``/completion`` streams one ``completion_probabilities`` entry per token with
token ids and bytes (``n_probs`` candidates, before the sampler chain unless
``post_sampling_probs``), and the last chunk carries ``timings`` (``prompt_n``,
``cache_n``, ``predicted_n``); ``/props`` gives n_ctx and the default sampler
chain; ``/tokenize`` and ``/detokenize`` let probe mode send token ids, so the
server's prompt cache is reused from one probe to the next (``cache_n``);
``/metrics`` (with ``--metrics``) is Prometheus text.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .backend import Backend, Candidate, Key, MetricsSample, ProbeResult, RemoteDone, RemoteInfo, RemoteToken, Request
from .http import Endpoint, RemoteError, safe_url
from .metrics import server_metrics
from .parse import as_count, as_logprob, as_prob_logprob, done_from_timings, token_piece

MAX_N_PROBS = 100  # llama-server takes more; the histogram shows far fewer, and each costs the server a sort


def _candidates(entries: Any) -> tuple[Candidate, ...]:
    if not isinstance(entries, list):
        return ()
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        lp = as_logprob(e.get("logprob"))
        if lp is None:  # post_sampling_probs: "prob"
            lp = as_prob_logprob(e.get("prob"))
        tid = as_count(e.get("id"))
        if lp is None:
            continue
        key, piece = token_piece(e.get("token", ""), e.get("bytes"))
        out.append(Candidate(tid if tid is not None else key, piece, lp))
    return tuple(sorted(out, key=lambda c: -c.logprob))


def _token(entry: dict[str, Any], text: str, t: float) -> RemoteToken:
    tid = as_count(entry.get("id"))
    key, piece = token_piece(entry.get("token", ""), entry.get("bytes"))
    lp = as_logprob(entry.get("logprob"))
    if lp is None:
        lp = as_prob_logprob(entry.get("prob"))
    top = _candidates(entry.get("top_logprobs", entry.get("top_probs")))
    return RemoteToken(tid if tid is not None else key, piece, text, lp, top, t)


MAX_SLOTS = 64  # lines shown; a server with more slots says how many in its metrics


def slot_line(slot: dict[str, Any]) -> str:
    """One slot of llama-server's ``/slots`` in words (fields of the wrong type read as "?")."""
    def n(key: str, where: dict[str, Any] = slot) -> str:
        value = as_count(where.get(key))
        return "?" if value is None else f"{value:,}"

    nxt = slot.get("next_token")
    nxt = nxt[0] if isinstance(nxt, list) and nxt and isinstance(nxt[0], dict) else nxt if isinstance(nxt, dict) else {}
    params = slot.get("params") if isinstance(slot.get("params"), dict) else {}
    state = "generating" if slot.get("is_processing") is True else "idle"
    line = (f"slot {n('id')}: {state} · task {n('id_task')} · prompt {n('n_prompt_tokens')} "
            f"({n('n_prompt_tokens_cache')} from the cache) · decoded {n('n_decoded', nxt)}")
    remain = nxt.get("n_remain")
    if isinstance(remain, int) and not isinstance(remain, bool) and remain >= 0:
        line += f" · {remain:,} to go"
    temp = params.get("temperature")
    if isinstance(temp, (int, float)) and not isinstance(temp, bool) and math.isfinite(temp):
        line += f" · T={temp:.2f}"
    return line


class LlamaServerBackend(Backend):
    name: ClassVar[str] = "llama-server"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.props: dict[str, Any] = {}

    detect_path: ClassVar[str] = "/props"

    @classmethod
    def recognises(cls, body: dict[str, Any]) -> bool:
        return isinstance(body.get("default_generation_settings"), dict)

    def info(self) -> RemoteInfo:
        if self._info is not None:
            return self._info
        props = self.endpoint.get_json("/props")
        if not isinstance(props, dict):
            raise RemoteError(f"{self.endpoint.shown}/props is not llama-server's (not an object)", kind="bad-json")
        self.props = props
        settings = props.get("default_generation_settings")
        settings = settings if isinstance(settings, dict) else {}
        n_ctx = as_count(settings.get("n_ctx"))
        model_path = props.get("model_path") if isinstance(props.get("model_path"), str) else ""
        meta: dict[str, Any] = {}
        model = model_path.rsplit("/", 1)[-1] or "llama-server model"
        try:
            models = self.endpoint.get_json("/v1/models")
            first = models["data"][0] if isinstance(models, dict) and models.get("data") else {}
            meta = first.get("meta") if isinstance(first.get("meta"), dict) else {}
            model = str(first.get("id") or model).rsplit("/", 1)[-1]
        except (RemoteError, KeyError, IndexError, TypeError, AttributeError):
            pass
        metrics = True
        try:
            self.endpoint.get_text("/metrics", timeout=5, limit=8 * 2**20)
        except RemoteError:
            metrics = False
        params = settings.get("params") if isinstance(settings.get("params"), dict) else {}
        samplers = params.get("samplers") if isinstance(params.get("samplers"), list) else []
        notes = (f"server's default chain: {' → '.join(str(s) for s in samplers)}",) if samplers else ()
        self._info = RemoteInfo(
            backend=self.name, url=safe_url(self.endpoint.url), model=model, n_ctx=n_ctx,
            n_vocab=as_count(meta.get("n_vocab")), chat=bool(props.get("chat_template")), max_top_k=MAX_N_PROBS,
            token_ids=True, version=str(props.get("build_info", "")),
            exposes={"logprobs": True, "top_k": True, "token_ids": True, "n_ctx": n_ctx is not None, "kv": True,
                     "metrics": metrics, "tokenize": True, "cache_n": True, "server_sampler_chain": bool(samplers),
                     "apply_template": bool(props.get("chat_template"))},
            notes=notes,
        )
        return self._info

    # -- generation ------------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        if request.messages:
            yield from self._stream_chat(request)
            return
        body = {"prompt": request.prompt, "n_predict": request.max_tokens, "stream": True, "cache_prompt": True,
                "n_probs": min(request.n_probs, MAX_N_PROBS), "ignore_eos": request.ignore_eos,
                **request.sampling.fields()}
        done = None
        for chunk in self.endpoint.stream("/completion", body):
            t = time.perf_counter()
            if not isinstance(chunk, dict):
                continue
            text = chunk.get("content") if isinstance(chunk.get("content"), str) else ""
            probs = chunk.get("completion_probabilities")
            if isinstance(probs, list) and probs:
                for i, entry in enumerate(probs):
                    if isinstance(entry, dict):
                        yield _token(entry, text if len(probs) == 1 else "", t)
            elif text:
                tokens = chunk.get("tokens") if isinstance(chunk.get("tokens"), list) else []
                key = as_count(tokens[0]) if len(tokens) == 1 else None
                yield RemoteToken(key, text.encode("utf-8"), text, None, (), t)
            if chunk.get("stop") is True:
                done = done_from_timings(chunk)
                break
        if done is None:
            raise RemoteError(f"{self.endpoint.shown}/completion ended the stream before its last chunk: the server "
                              "stopped mid-answer", kind="died")
        yield done

    def _stream_chat(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        """Chat mode: the server's template through ``/v1/chat/completions`` (OpenAI logprobs with bytes)."""
        from .openai import OpenAIBackend

        chat = OpenAIBackend(self.endpoint)
        chat._info = self.info()
        chat.stream_usage = True  # type: ignore[misc]  # llama-server takes stream_options
        yield from chat.stream(request)

    def probe(self, prompt: Sequence[Key] | str, n_probs: int) -> ProbeResult:
        body = {"prompt": list(prompt) if not isinstance(prompt, str) else prompt, "n_predict": 1,
                "n_probs": min(n_probs, MAX_N_PROBS), "temperature": 0, "cache_prompt": True, "stream": False}
        t0 = time.perf_counter()
        answer = self.endpoint.post_json("/completion", body)
        ms = (time.perf_counter() - t0) * 1000.0
        if not isinstance(answer, dict):
            raise RemoteError(f"{self.endpoint.shown}/completion answered a probe with no object", kind="bad-json")
        probs = answer.get("completion_probabilities")
        entry = probs[0] if isinstance(probs, list) and probs and isinstance(probs[0], dict) else {}
        top = _candidates(entry.get("top_logprobs", entry.get("top_probs")))
        done = done_from_timings(answer)
        if not top:
            if done.stopped_eog:
                # the greedy token was an end of generation and the server sent no probabilities for it
                raise RemoteError(f"{self.endpoint.shown} gave no probabilities at the end of generation",
                                  kind="unsupported")
            raise RemoteError(f"{self.endpoint.shown}/completion gave no probabilities (n_probs)", kind="unsupported")
        eog = (top[0].key,) if done.stopped_eog and as_count(entry.get("id")) == top[0].key else ()
        return ProbeResult(top, prompt_n=done.prompt_n, cache_n=done.cache_n, ms=ms, eog=eog)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int] | None:
        answer = self.endpoint.post_json("/tokenize", {"content": text, "add_special": add_special,
                                                        "parse_special": True})
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise RemoteError(f"{self.endpoint.shown}/tokenize answered without a list of token ids", kind="bad-json")
        return tokens

    def eog_keys(self) -> list[Key]:
        keys: list[Key] = []
        for name in ("eos_token", "eot_token"):
            text = self.props.get(name) if isinstance(self.props, dict) else None
            if isinstance(text, str) and text:
                try:
                    ids = self.tokenize(text, add_special=False) or []
                except RemoteError:
                    continue
                if len(ids) == 1:
                    keys.append(ids[0])
        return keys

    def apply_template(self, messages: Sequence[dict[str, str]]) -> str | None:
        answer = self.endpoint.post_json("/apply-template", {"messages": list(messages)})
        prompt = answer.get("prompt") if isinstance(answer, dict) else None
        if not isinstance(prompt, str):
            raise RemoteError(f"{self.endpoint.shown}/apply-template answered without a prompt", kind="bad-json")
        return prompt

    def detokenize(self, ids: Sequence[int]) -> bytes | None:
        answer = self.endpoint.post_json("/detokenize", {"tokens": list(ids)})
        content = answer.get("content") if isinstance(answer, dict) else None
        return content.encode("utf-8") if isinstance(content, str) else None

    def metrics(self) -> MetricsSample:
        info = self.info()
        sample = server_metrics(self.endpoint, backend=self.name, url=info.url, model=info.model)
        return replace(sample, requests=self.slots())

    def slots(self) -> tuple[str, ...] | None:
        """What each of the server's slots is doing (``/slots``): the requests it serves now; None where the
        endpoint is off (``--no-slots``)."""
        try:
            body = self.endpoint.get_json("/slots", timeout=5)
        except RemoteError:
            return None
        if not isinstance(body, list):
            return None
        return tuple(slot_line(slot) for slot in body[:MAX_SLOTS] if isinstance(slot, dict))
