"""A remote server as a source of steps: the same events as a local run (no Textual, no llama_cpp).

Two ways to watch a server:

* **stream** (the default): the server samples; each streamed token becomes a
  :class:`~tui.engine.loop.Step` whose trace holds the server's top-K only
  (``SampleTrace.top_k_only``: the tail is unknown, the entropy over the top-K
  is a lower bound, the server's chain is not seen). Latency and throughput come
  from arrival times.
* **probe** (step mode, or ``--probe``): :class:`RemoteEngine` is an engine
  whose ``decode`` asks the server for the next position's top-K (one request
  of one token) and whose ``logits`` are those K logprobs (-inf elsewhere). The
  ordinary :class:`~tui.engine.controller.Controller` then runs *our* sampler
  chain on them: step mode, re-sample and presets work on a remote model. The
  chosen token goes back as part of the next prompt; :class:`ServerCounters`
  shows how much of that prompt the server's cache reused.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..engine.controller import Accepted, Controller, Finished, PromptDone, Resampled, Started, StepEvent
from ..engine.errors import EngineError
from ..engine.loop import GenerationStats, Step, StopReason
from ..engine.records import ModelInfo
from ..sampling.trace import SampleTrace
from .backend import Backend, Candidate, Key, ProbeResult, RemoteDone, RemoteInfo, RemoteToken, Request, Sampling
from .http import RemoteError

UNKNOWN_CTX = 1 << 22  # a server that does not say its n_ctx: the loop never calls the context full (MAX_CTX)
TEXT_IDS = 1 << 30  # ids numbered here for text-only keys, on a server that has ids of its own
N_PROBS = 20  # top-K asked for per token (capped by what the server allows)


@dataclass(frozen=True, slots=True)
class ServerCounters:
    """What the server said about a request (llama-server's timings, OpenAI usage); None: not exposed."""

    step: int  # the step it belongs to (-1: the whole run)
    prompt_n: int | None  # tokens the server evaluated
    cache_n: int | None  # prompt tokens it reused from its cache
    predicted_n: int | None
    n_ctx: int | None
    ms: float  # the request's wall time (probe) or time to first token (stream)
    # probe mode on a text-only API: the server read prompt + chosen token as other tokens than we chose (it
    # merged them, e.g. "\n" "\n" → "\n\n"), so from here it predicts after a different tokenisation
    retokenized: bool = False
    kv_usage: float | None = None  # the server's whole KV cache in use, 0..1 (its /metrics), after a stream
    note: str = ""  # something the server showed about itself during the run (it refused logprobs…)


class RemoteVocab:
    """Token keys from a server → the ids the panels, chains and recordings use, and their bytes.

    A server that gives token ids (llama-server, SGLang) keeps them; tokens it names by text only (OpenAI-style
    logprobs, a chat endpoint) get ids numbered here in order of first appearance — from :data:`TEXT_IDS` up
    on a server whose own ids fill the low range, so the two never collide (a recording's header says which)."""

    def __init__(self, token_ids: bool, n_vocab: int | None = None) -> None:
        self.token_ids = token_ids
        self._ids: dict[Key, int] = {}
        self.pieces: dict[int, bytes] = {}
        self._next = TEXT_IDS if token_ids else 0
        self.n_vocab = n_vocab or 0

    def id_of(self, key: Key, piece: bytes) -> int:
        if self.token_ids and isinstance(key, int):
            tid = key
        else:
            tid = self._ids.get(key, -1)
            if tid < 0:
                tid = self._ids[key] = self._next
                self._next += 1
        if piece or tid not in self.pieces:
            self.pieces[tid] = piece
        if tid < TEXT_IDS or not self.token_ids:
            self.n_vocab = max(self.n_vocab, tid + 1)  # the chain's array: server ids (text ids never probe)
        return tid

    def piece(self, tid: int) -> bytes:
        return self.pieces.get(tid, b"")


def _prompt_total(probe: ProbeResult | None) -> int | None:
    """The prompt's length as the server counted it (evaluated + reused from its cache), if it says."""
    if probe is None or probe.prompt_n is None:
        return None
    return probe.prompt_n + (probe.cache_n or 0)


def lower_bound_entropy(logprobs: np.ndarray) -> float:
    """-Σ p log p over the known top-K only: the true entropy is at least this (the tail adds ≥ 0)."""
    finite = logprobs[np.isfinite(logprobs)].astype(np.float64)
    return float(-(np.exp(finite) * finite).sum()) if finite.size else float("nan")


def remote_trace(token: int, logprob: float | None, ids: np.ndarray, logprobs: np.ndarray) -> SampleTrace:
    """The trace of a token the server sampled: its top-K as the server gave it, nothing invented."""
    p = np.exp(logprobs.astype(np.float64))
    hit = np.flatnonzero(ids == token)
    lp = logprob if logprob is not None else (float(logprobs[hit[0]]) if hit.size else None)
    prob = math.exp(lp) if lp is not None else float("nan")
    ids.flags.writeable = logprobs.flags.writeable = p.flags.writeable = False
    after = np.zeros(len(ids))
    after.flags.writeable = False
    return SampleTrace(token=token, prob=prob, entropy=lower_bound_entropy(logprobs), top_ids=ids,
                       top_logits=logprobs, top_p_before=p, top_p_after=after, stages=(), n_final=0, draw=None,
                       raw_logit=lp if lp is not None else float("nan"), raw_p=prob, top_k_only=max(1, len(ids)))


def model_info(info: RemoteInfo) -> ModelInfo:
    """The :class:`ModelInfo` the panels show for a server: only what it exposes (0 / None elsewhere)."""
    return ModelInfo(
        name=f"{info.model} @ {info.url}", path=info.url, arch=info.backend, quant="remote",
        description=f"{info.backend} at {info.url}", n_params=0, size_bytes=0, file_size=0,
        n_ctx_train=info.n_ctx or 0, n_vocab=info.n_vocab or 0, n_layer=0, n_head=0, n_head_kv=0, n_embd=0,
        n_swa=0, bos=-1, eos=-1, eot=-1, add_bos=False,
        chat_template="(applied by the server)" if info.chat else None, general_name=info.model,
    )


class RemoteEngine:
    """A server behind the engine interface. ``decode`` probes (see the module doc)."""

    is_remote = True

    def __init__(self, backend: Backend, *, n_probs: int = N_PROBS) -> None:
        self.backend = backend
        self.remote = backend.info()
        self.info = model_info(self.remote)
        self.path = self.remote.url
        self.n_probs = max(1, min(n_probs, self.remote.max_top_k or 1))
        self.vocab = RemoteVocab(self.remote.token_ids, self.remote.n_vocab)
        self.n_ctx = self.remote.n_ctx or UNKNOWN_CTX
        self.warnings: list[str] = list(self.remote.notes)
        self.held_ids: list[int] = []
        self.eog: set[int] = set()
        try:
            for key in backend.eog_keys():
                self.eog.add(self.vocab.id_of(key, b""))
        except RemoteError as exc:
            self.warnings.append(f"end-of-generation tokens unknown ({exc}): probe mode stops at max tokens")
        self.last_probe: ProbeResult | None = None
        self.retokenized = False  # the last probe's server saw other tokens than we sent (text-only APIs)
        self._top: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.float32))
        self.on_probe: Callable[[ProbeResult], None] | None = None
        self.settings = None
        self.mode = "stream"  # or "probe": what the controller does (a recording's header says it)
        if not self.remote.max_top_k:
            self.warnings.append(f"{self.remote.url} returns no logprobs: tokens without probabilities, no top-K, "
                                 "no probe mode")

    def refresh(self) -> str:
        """What the server showed about itself since it was attached (it refused logprobs, or as many): the
        engine's figures follow, and a line says it (empty: nothing changed)."""
        try:
            now = self.backend.info()
        except RemoteError:
            return ""
        if now == self.remote:
            return ""
        was, self.remote = self.remote, now
        self.n_probs = max(1, min(self.n_probs, now.max_top_k or 1))
        if now.max_top_k == 0 and was.max_top_k:
            why = getattr(self.backend, "refused_logprobs", "")
            line = f"{now.url} returns no logprobs: tokens without probabilities, no top-K, no probe mode" + (
                f" ({why})" if why else "")
        elif now.max_top_k < was.max_top_k:
            line = f"{now.url} gives at most {now.max_top_k} logprobs per token: the top-K shows that many"
        else:
            return ""
        self.warnings.append(line)
        return line

    @property
    def n_vocab(self) -> int:
        return max(1, self.vocab.n_vocab)

    @property
    def n_past(self) -> int:
        return len(self.held_ids)

    # -- tokens ------------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        if self.remote.exposes.get("tokenize"):
            try:
                ids = self.backend.tokenize(text, add_special=add_bos is not False)
            except RemoteError as exc:
                raise EngineError(str(exc)) from None
            if ids is not None:
                return ids
        # a server without a tokenizer endpoint: the prompt is one opaque piece of text
        return [self.vocab.id_of("\x00prompt\x00" + text, text.encode("utf-8", "surrogatepass"))]

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def is_eog(self, token: int) -> bool:
        return token in self.eog

    def is_control(self, token: int) -> bool:
        return token in self.eog

    def eog_tokens(self) -> list[int]:
        return sorted(self.eog)

    @property
    def held(self) -> list[int]:
        """What the server's cache holds for us, as far as we know: what we sent it last."""
        return self.held_ids

    # -- probing -------------------------------------------------------------------------------------------

    def _prompt(self) -> Sequence[Key] | str:
        if self.remote.token_ids and self.remote.exposes.get("tokenize"):  # the prompt went in as the server's ids
            return list(self.held_ids)
        return b"".join(self.vocab.piece(t) for t in self.held_ids).decode("utf-8", "replace")

    def decode(self, tokens: Sequence[int], *, should_stop: Callable[[], bool] | None = None) -> float:
        self.held_ids.extend(int(t) for t in tokens)
        if not self.remote.max_top_k:
            raise EngineError(f"{self.remote.url} returns no logprobs: probe mode needs them (watch it streaming)")
        try:
            result = self.backend.probe(self._prompt(), self.n_probs)
        except RemoteError as exc:
            raise EngineError(str(exc)) from None
        before = self.last_probe
        seen_then, seen_now = _prompt_total(before), _prompt_total(result)
        self.retokenized = bool(not self.remote.token_ids and seen_then is not None and seen_now is not None
                                and seen_now != seen_then + len(tokens))
        self.last_probe = result
        ids = np.fromiter((self.vocab.id_of(c.key, c.piece) for c in result.top), dtype=np.int64,
                          count=len(result.top))
        for key in result.eog:
            self.eog.add(self.vocab.id_of(key, b""))
        self._top = (ids, np.fromiter((c.logprob for c in result.top), dtype=np.float32, count=len(result.top)))
        if self.on_probe is not None:
            self.on_probe(result)
        return result.ms

    def logits(self) -> np.ndarray:
        ids, lps = self._top
        out = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        out[ids] = lps
        return out

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """The last probe's candidate ids and the server's logprobs, best first."""
        return self._top

    def clear(self) -> None:
        self.held_ids.clear()
        self.last_probe = None

    def truncate(self, n_keep: int) -> None:
        del self.held_ids[n_keep:]
        self.last_probe = None

    def can_shift(self) -> bool:
        return False

    def shift(self, n_keep: int, n_discard: int) -> None:
        raise EngineError("a remote server's context cannot be shifted from here")

    def kv_layout(self) -> None:
        return None  # the server's KV cache is its own: see ServerCounters and the fleet view

    def recreate_context(self, settings: Any) -> None:
        raise EngineError("a remote server's context is set where it runs (restart it with another -c)")

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The server's own chat template applied to ``messages`` (llama-server's /apply-template): probe mode
        in chat. A server without it raises EngineError (its chat streams through the chat endpoint)."""
        try:
            text = self.backend.apply_template(messages)
        except RemoteError as exc:
            raise EngineError(str(exc)) from None
        if text is None:
            raise EngineError(f"{self.remote.backend} does not apply its chat template on request: chat streams")
        return text

    @property
    def can_probe_chat(self) -> bool:
        return bool(self.remote.exposes.get("apply_template"))

    def build_context(self, seed: int) -> Any:
        from ..sampling.presets import BuildContext

        return BuildContext(n_vocab=self.n_vocab, seed=seed, n_ctx=self.n_ctx, dry_vocab=None)

    def close(self) -> None:
        self.backend.close()


def preset_sampling(preset: Any, seed: int) -> Sampling:
    """What a preset asks of a server that samples itself, in the parameters the OpenAI and llama.cpp APIs share.
    A sampler the preset leaves out is sent switched off (top_k 0, top_p 1, min_p 0, repeat penalty 1): a
    server's own defaults (llama-server's top_k 40, llama-cpp-python's repeat penalty 1.1) would otherwise
    sample something other than the preset says. Samplers these APIs cannot express (XTC, DRY, mirostat...)
    are not sent: :func:`unsent_samplers` names them."""
    params: dict[str, Any] = {"seed": seed, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
    for spec in getattr(preset, "samplers", ()) or ():
        name = getattr(spec, "name", "")
        args = getattr(spec, "params", {}) or {}
        if name == "greedy":
            params["temperature"] = 0.0
        elif name == "temp" and "t" in args:
            params["temperature"] = float(args["t"])
        elif name == "top_k" and "k" in args:
            params["top_k"] = int(args["k"])
        elif name == "top_p" and "p" in args:
            params["top_p"] = float(args["p"])
        elif name == "min_p" and "p" in args:
            params["min_p"] = float(args["p"])
        elif name == "penalties" and "repeat" in args:
            params["repeat_penalty"] = float(args["repeat"])
    params.setdefault("temperature", 1.0)
    return Sampling(**params)


SENT_SAMPLERS = frozenset({"greedy", "temp", "top_k", "top_p", "min_p", "dist"})


def unsent_samplers(preset: Any) -> list[str]:
    """The preset's samplers a streaming request cannot pass to a server (probe mode runs them here)."""
    out = []
    for spec in getattr(preset, "samplers", ()) or ():
        name = getattr(spec, "name", "")
        params = getattr(spec, "params", {}) or {}
        if name == "penalties" and set(params) <= {"repeat", "last_n"}:
            continue
        if name not in SENT_SAMPLERS:
            out.append(name)
    return out


class RemoteController(Controller):
    """The controller for a server: streams, or probes through :class:`RemoteEngine` in step mode."""

    def __init__(self, engine: RemoteEngine, preset: Any, *, probe: bool = False, **kw: Any) -> None:
        super().__init__(engine, preset, **kw)
        self.probe = probe
        engine.on_probe = self._probed
        self._probe_index = 0
        self.last_counters: ServerCounters | None = None  # the server's last word on a request

    def _probed(self, result: ProbeResult) -> None:
        self._send(ServerCounters(self._probe_index, result.prompt_n, result.cache_n, None,
                                  self.engine.remote.n_ctx, result.ms, retokenized=self.engine.retokenized))
        self._probe_index += 1

    def _send(self, event: object) -> None:
        if isinstance(event, ServerCounters):
            self.last_counters = event
        elif isinstance(event, (StepEvent, Accepted, Resampled)):
            event = replace(event, step=self._known_only(event.step))
        super()._send(event)

    def _known_only(self, step: Step) -> Step:
        """A probed step's trace, told truthfully: the server's probabilities, an entropy lower bound."""
        tr = step.trace
        if tr.top_k_only:
            return step
        ids, lps = self.engine.top()
        server = dict(zip(ids.tolist(), lps.tolist()))
        before = np.array([math.exp(server[t]) if t in server else 0.0 for t in tr.top_ids.tolist()])
        before.flags.writeable = False
        raw = server.get(step.token)
        k = max(1, len(ids))
        # the chain saw a vocabulary-sized array with -inf outside the server's top-K: K candidates in truth
        stages = tuple(replace(st, n_in=min(st.n_in, k), n_out=min(st.n_out, k)) for st in tr.stages)
        trace = replace(tr, top_p_before=before, entropy=lower_bound_entropy(lps), stages=stages,
                        n_final=min(tr.n_final, k), raw_p=math.exp(raw) if raw is not None else 0.0, top_k_only=k)
        return replace(step, trace=trace)

    def _run(self, prompt: str, cancel: threading.Event, step_mode: bool, add_bos: bool | None,
             parse_special: bool, prefix: Sequence[int] | None, history: list[int],
             parent: dict[str, Any] | None, reuse: bool = False) -> GenerationStats:
        self._probe_index = 0
        probing = (self.probe or step_mode) and (self.chat is None or self.engine.can_probe_chat)
        self.engine.mode = "probe" if probing else "stream"
        if probing:
            return super()._run(prompt, cancel, step_mode, add_bos, parse_special, prefix, history, parent, False)
        return self._stream(prompt, cancel, parent)

    # -- streaming --------------------------------------------------------------------------------------

    def _stream(self, prompt: str, cancel: threading.Event, parent: dict[str, Any] | None) -> GenerationStats:
        eng: RemoteEngine = self.engine
        preset = self.active_preset
        chat = self.chat  # a ChatSession: its messages (system prompt first) are the conversation
        if chat is not None:
            chat.messages.append({"role": "user", "content": prompt})
        messages = tuple(chat.messages) if chat is not None else ()
        shown = "".join(f"<{m['role']}> {m['content']}\n" for m in messages) if chat else prompt
        stats = GenerationStats()
        n_prompt: int | None = None
        if chat is None and eng.remote.exposes.get("tokenize"):
            try:
                n_prompt = len(eng.tokenize(prompt))
            except EngineError:
                n_prompt = None
        self._send(Started(shown, (), preset.name, self.seed, False, given=prompt, spec=preset,
                           max_tokens=self.max_tokens, ignore_eos=self.ignore_eos, parent=parent))
        request = Request(prompt="" if chat is not None else prompt, messages=tuple(messages), max_tokens=self.max_tokens,
                          n_probs=eng.n_probs if eng.remote.max_top_k else 0,
                          sampling=preset_sampling(preset, self.seed), ignore_eos=self.ignore_eos)
        t0 = time.perf_counter()
        last_t = t0
        done: RemoteDone | None = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for item in eng.backend.stream(request):
                if cancel.is_set():
                    stats.stop_reason = StopReason.CANCELLED
                    break
                if isinstance(item, RemoteDone):
                    done = item
                    break
                if stats.generated == 0:
                    stats.prompt_ms = (item.t - t0) * 1000.0  # time to first token
                    stats.prompt_tokens = n_prompt or 0
                    self._send(PromptDone(n_prompt or 0, stats.prompt_ms))
                step = self._streamed_step(item, stats.generated, decoder, last_t, n_prompt)
                last_t = item.t
                stats.generated += 1
                stats.decode_ms += step.decode_ms
                stats.texts.append(step.text)
                self._send(StepEvent(step))
                self._send(Accepted(step))
        except RemoteError as exc:
            stats.stop_reason, stats.error = StopReason.ERROR, str(exc)
        stats.gen_ms = (last_t - t0) * 1000.0 - stats.prompt_ms if stats.generated else 0.0
        note = eng.refresh()
        if done is not None:
            stats.stop_reason = StopReason.EOG if done.stopped_eog else StopReason.MAX_TOKENS
            self._send(ServerCounters(-1, done.prompt_n, done.cache_n, done.predicted_n, done.n_ctx or eng.remote.n_ctx,
                                      stats.prompt_ms, kv_usage=self._kv_usage(), note=note))
        elif note:
            self._send(ServerCounters(-1, None, None, None, eng.remote.n_ctx, stats.prompt_ms, note=note))
            if done.prompt_n is not None:
                stats.prompt_tokens = done.prompt_n + (done.cache_n or 0)
        elif stats.stop_reason is None:
            stats.stop_reason, stats.error = StopReason.ERROR, f"{eng.remote.url} ended the stream without saying why"
        if chat is not None:
            if stats.stop_reason is StopReason.ERROR:
                chat.messages.pop()  # the question goes back: it was not answered
            else:
                chat.finish(stats.text)
        summary = {**stats.summary(), "remote": eng.remote.backend,
                   "server": None if done is None else {"prompt_n": done.prompt_n, "cache_n": done.cache_n,
                                                        "predicted_n": done.predicted_n, "prompt_ms": done.prompt_ms,
                                                        "predicted_ms": done.predicted_ms}}
        self._send(Finished(stats.stop_reason, stats.error, summary, stats.text))
        return stats

    def _kv_usage(self) -> float | None:
        """The server's KV usage from its metrics, where it exposes them (vLLM, SGLang; None elsewhere)."""
        if not self.engine.remote.exposes.get("metrics"):
            return None
        try:
            return self.engine.backend.metrics().kv_usage
        except (RemoteError, NotImplementedError):
            return None

    def _streamed_step(self, item: RemoteToken, index: int, decoder: Any, last_t: float,
                       n_prompt: int | None) -> Step:
        vocab = self.engine.vocab
        top = item.top
        ids = np.fromiter((vocab.id_of(c.key, c.piece) for c in top), dtype=np.int64, count=len(top))
        lps = np.fromiter((c.logprob for c in top), dtype=np.float32, count=len(top))
        key = item.key if item.key is not None else item.text
        token = vocab.id_of(key, item.piece)
        text = decoder.decode(item.piece) if item.key is not None else item.text
        trace = remote_trace(token, item.logprob, ids, lps)
        return Step(index=index, token=token, piece=item.piece, text=text, prob=trace.prob, trace=trace,
                    decode_ms=(item.t - last_t) * 1000.0 if index else 0.0, sample_ms=0.0,
                    n_past=(n_prompt or 0) + index + 1, n_ctx=self.engine.n_ctx, is_eog=False, t=item.t)

    def resample_last(self, preset: Any, last: Step) -> Step:
        if last.trace.top_k_only and not last.trace.stages and self.last.last_logits is None:
            raise EngineError("the server sampled this run: re-sampling needs probe mode (step mode probes)")
        return super().resample_last(preset, last)


def probe_top(engine: RemoteEngine) -> list[Candidate]:
    """The last probe's candidates (for tests and the CLI)."""
    ids, lps = engine.top()
    return [Candidate(int(i), engine.piece(int(i)), float(lp)) for i, lp in zip(ids.tolist(), lps.tolist())]
