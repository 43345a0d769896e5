"""The controller for a remote server (no Textual, no llama_cpp): it streams what the server samples, or
probes it through :class:`~tui.remote.source.RemoteEngine` so the ordinary controller runs our chain.

Both ways emit a local run's events (``Started``, ``PromptDone``, ``StepEvent``, ``Accepted``, ``Finished``)
plus :class:`ServerCounters`: what the server said about each request (its prompt cache reuse, its KV use,
a refusal), so the run model and the panels never ask where a step came from.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..engine.controller import Accepted, Controller, Finished, PromptDone, Resampled, RunState, Started, StepEvent
from ..engine.errors import EngineError
from ..engine.loop import GenerationStats, Step, StopReason
from .backend import ProbeResult, RemoteDone, RemoteToken, Request, Sampling
from .http import RemoteError
from .source import RemoteEngine, lower_bound_entropy, remote_trace


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
    prompt_ms: float | None = None  # the server's own time for the prompt (llama-server's timings)


def done_reason(done: RemoteDone) -> StopReason:
    """How a stream ended, as a run's stop reason: the limit is the limit; every other end the server chose
    (end of generation, a stop string) is an end of generation (its own word is kept as ``finish_reason``)."""
    if done.finish_reason in ("length", "limit"):
        return StopReason.MAX_TOKENS
    if done.finish_reason in ("abort", "error", "cancelled"):
        return StopReason.ERROR
    return StopReason.EOG


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
        self._first_probe: ServerCounters | None = None
        self._told_step: tuple[Any, Any] = (None, None)  # the last probed step and its truthful trace
        self.last_summary: dict[str, Any] = {}  # the last run's, as Finished carried it

    def _probed(self, result: ProbeResult) -> None:
        self._send(ServerCounters(self._probe_index, result.prompt_n, result.cache_n, None,
                                  self.engine.remote.n_ctx, result.ms, retokenized=self.engine.retokenized))
        self._probe_index += 1

    def _send(self, event: object) -> None:
        if isinstance(event, ServerCounters):
            self.last_counters = event
            if event.step == 0:
                self._first_probe = event
        elif isinstance(event, (StepEvent, Accepted, Resampled)):
            told = self._known_only(event.step)
            if told is not event.step:
                event = replace(event, step=told)
        elif isinstance(event, Finished):
            event = replace(event, summary=self._told(event.summary))
            self.last_summary = event.summary
        super()._send(event)

    def _told(self, summary: dict[str, Any]) -> dict[str, Any]:
        """A probed run's summary with the prompt as the server counted it: a text-only server was sent the
        prompt as one piece of text, so our count of it (1) says nothing; unknown stays null."""
        if self.engine.mode != "probe" or self.engine.remote.token_ids or not summary:
            return summary
        first = self._first_probe
        n = None if first is None or first.prompt_n is None else first.prompt_n + (first.cache_n or 0)
        tps = None if n is None or not summary.get("prompt_ms") else round(n * 1000.0 / summary["prompt_ms"], 2)
        return {**summary, "prompt_tokens": n, "prompt_tok_per_s": tps}

    def _known_only(self, step: Step) -> Step:
        """A probed step's trace, told truthfully: the server's probabilities, an entropy lower bound (worked
        out once per step: its StepEvent and its Accepted carry the same step)."""
        tr = step.trace
        if tr.top_k_only or tr.server_sampled:
            return step
        if self._told_step[0] is step:
            return self._told_step[1]
        told = self._patch(step)
        self._told_step = (step, told)
        return told

    def _patch(self, step: Step) -> Step:
        tr = step.trace
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
             parent: dict[str, Any] | None, reuse: bool = False, branch: Any = None) -> GenerationStats:
        if branch is not None:  # refused with one line by the ordinary run: a server holds no sequences of ours
            return super()._run(prompt, cancel, step_mode, add_bos, parse_special, prefix, history, parent, False,
                                branch)
        self._probe_index = 0
        self._first_probe = None
        probing = (self.probe or step_mode) and (self.chat is None or self.engine.can_probe_chat)
        self.engine.mode = "probe" if probing else "stream"
        if probing:
            return super()._run(prompt, cancel, step_mode, add_bos, parse_special, prefix, history, parent, False)
        return self._stream(prompt, cancel, parent)

    # -- streaming --------------------------------------------------------------------------------------

    def _stream(self, prompt: str, cancel: threading.Event, parent: dict[str, Any] | None) -> GenerationStats:
        eng: RemoteEngine = self.engine
        self.last = RunState()  # the server sampled: no logits of ours to re-sample from
        preset = self.active_preset
        chat = self.chat  # a ChatSession: its messages (system prompt first) are the conversation
        if chat is not None:
            chat.messages.append({"role": "user", "content": prompt})
        messages = tuple(chat.messages) if chat is not None else ()
        shown = "".join(f"<{m['role']}> {m['content']}\n" for m in messages) if chat is not None else prompt
        stats = GenerationStats()
        n_prompt: int | None = None
        if chat is None and eng.remote.exposes.get("tokenize"):
            try:
                n_prompt = len(eng.tokenize(prompt))
            except EngineError:
                n_prompt = None
        self._send(Started(shown, (), preset.name, self.seed, False, given=prompt, spec=preset,
                           max_tokens=self.max_tokens, ignore_eos=self.ignore_eos, parent=parent))
        request = Request(prompt="" if chat is not None else prompt, messages=messages, max_tokens=self.max_tokens,
                          n_probs=eng.n_probs if eng.remote.max_top_k else 0,
                          sampling=preset_sampling(preset, self.seed), ignore_eos=self.ignore_eos)
        t0 = time.perf_counter()
        last_t = t0
        done: RemoteDone | None = None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        endpoint = eng.backend.endpoint
        endpoint.reset_abort()
        try:
            for item in eng.backend.stream(request):
                if cancel.is_set():
                    break
                if isinstance(item, RemoteDone):
                    done = item
                    break
                if stats.generated >= self.max_tokens:  # a server that ignores the limit is not followed past it
                    stats.stop_reason = StopReason.MAX_TOKENS
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
            if not cancel.is_set():
                stats.stop_reason, stats.error = StopReason.ERROR, str(exc)
        except (ValueError, TypeError, OverflowError, IndexError) as exc:  # a shape the parsers let through
            stats.stop_reason = StopReason.ERROR
            stats.error = f"{eng.remote.url} sent something llmtui cannot use ({type(exc).__name__}: {exc})"
        finally:
            endpoint.reset_abort()
        if cancel.is_set() and stats.stop_reason is not StopReason.ERROR:
            stats.stop_reason = StopReason.CANCELLED
        stats.gen_ms = (last_t - t0) * 1000.0 - stats.prompt_ms if stats.generated else 0.0
        note = eng.refresh()
        if done is not None:
            stats.stop_reason = done_reason(done)
            self._send(ServerCounters(-1, done.prompt_n, done.cache_n, done.predicted_n, done.n_ctx or eng.remote.n_ctx,
                                      stats.prompt_ms, kv_usage=self._kv_usage(), note=note, prompt_ms=done.prompt_ms))
            if n_prompt is None and done.prompt_n is not None:
                n_prompt = stats.prompt_tokens = done.prompt_n + (done.cache_n or 0)
        elif note:
            self._send(ServerCounters(-1, None, None, None, eng.remote.n_ctx, stats.prompt_ms, note=note))
        if stats.stop_reason is None:
            stats.stop_reason, stats.error = StopReason.ERROR, f"{eng.remote.url} ended the stream without saying why"
        if chat is not None:
            if stats.stop_reason is StopReason.ERROR:
                chat.messages.pop()  # the question goes back: it was not answered
            else:
                chat.finish(stats.text)
        summary = {**stats.summary(), "remote": eng.remote.backend,
                   "finish_reason": done.finish_reason if done is not None else None,
                   "server": None if done is None else {"prompt_n": done.prompt_n, "cache_n": done.cache_n,
                                                        "predicted_n": done.predicted_n, "prompt_ms": done.prompt_ms,
                                                        "predicted_ms": done.predicted_ms}}
        if n_prompt is None:  # the server said nothing of the prompt: unknown, not 0
            summary["prompt_tokens"] = summary["prompt_tok_per_s"] = None
        self._send(Finished(stats.stop_reason, stats.error, summary, stats.text))
        return stats

    def stop(self) -> None:
        super().stop()
        self.engine.backend.endpoint.abort()  # a read blocked on a silent server returns now

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
        if last.trace.server_sampled or self.last.last_logits is None:
            raise EngineError("the server sampled this run: re-sampling needs probe mode (o, or step mode)")
        return super().resample_last(preset, last)
