"""The API server's engine side: one queue, one worker thread, one engine (no web framework here).

Requests are served strictly in order by a single worker thread that drives
the same :class:`~tui.engine.controller.Controller` the dashboard uses, so a
request is an ordinary run: it can be watched in the panels and recorded.
The worker talks to the web layer through a ``sink`` per job (called from the
worker thread; the web layer hops to its event loop). Each job first gets an
:class:`Accepted` (or an :class:`ApiError`), then one :class:`TokenOut` per
generated token, then :class:`Done`. Cancelling a job (the client went away)
stops its generation before the next token. A job that fails with a 500 is
logged on the ``llmtui.server`` logger (an unexpected exception with its traceback).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.chat import chat_prompt
from ..engine.controller import ChatTurn, Finished, PromptDone, StepEvent
from ..engine.errors import EngineError
from ..engine.loop import StopReason
from ..engine.thread import engine_thread

log = logging.getLogger("llmtui.server")

TOP_LOGPROBS_MAX = 10  # the trace keeps the 10 most likely tokens of every step


class ApiError(Exception):
    """An error the client gets as OpenAI's error JSON with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True, slots=True)
class GenRequest:
    """One completion to generate, already validated by the web layer."""

    kind: str  # "chat" | "completion"
    model: str  # the model's id (name) as the client gave it, resolved
    preset: Any  # tui.sampling.presets.Preset with the request's overrides applied
    seed: int
    max_tokens: int
    prompt: str = ""  # completion: the text; chat: unused
    messages: tuple[dict[str, str], ...] = ()  # chat: the conversation
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; 0: only the chosen token's
    prompt_tokens: tuple[int, ...] | None = None  # completion: the prompt given as token ids
    echo: bool = False  # completion: the answer starts with the prompt (and its logprobs: scoring)
    logit_bias: tuple[tuple[int, float], ...] = ()  # token id → bias added to its logit (-100..100)
    index: int = 0  # the choice this request answers (n > 1, several prompts)
    structure: Any = None  # tui.server.structured.Structure: a grammar the output must follow, tools


@dataclass(frozen=True, slots=True)
class Accepted:
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class TokenOut:
    """One generated token as the client sees it."""

    index: int
    token: int
    piece: bytes
    delta: str  # text released with this token (held back while it may start a stop string)
    logprob: float | None  # log of the token's probability (softmax of the raw logits); None: a prompt's first
    top: tuple[tuple[int, bytes, float], ...]  # (token, piece, logprob) of the most likely tokens
    start: int = 0  # where the token's text starts in the generated text (characters): OpenAI's text_offset


@dataclass(frozen=True, slots=True)
class Done:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    timings: dict[str, float]
    tail: str = ""  # text not yet released by any TokenOut (held back, or the decoder's last bytes)
    echo: str = ""  # the prompt, when the request asked for it back
    prompt_logprobs: tuple[TokenOut, ...] = ()  # echo + logprobs: each prompt token as the model scores it


@dataclass(slots=True)
class Job:
    request: GenRequest
    sink: Callable[[object], None]  # called from the worker thread
    id: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.perf_counter)
    label: str = ""
    shown: str = ""  # the prompt as the model reads it (a chat rendered by its template)


def with_system_note(messages: list[dict[str, str]], note: str) -> list[dict[str, str]]:
    """``note`` at the head of the system message (a new one if there is none)."""
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + note}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _lp(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0  # OpenAI's floor for an impossible token


class StopFilter:
    """Releases generated text except what might be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""  # everything generated
        self.sent = 0  # characters released
        self.hit: int | None = None  # where a stop string starts, once found

    def feed(self, piece: str) -> str:
        if self.hit is not None:
            return ""
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0))
        self.text += piece
        if not self.stops:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        found = [i for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            self.hit = min(found)
            out = self.text[self.sent:self.hit] if self.hit > self.sent else ""
            self.sent = max(self.sent, self.hit)
            return out
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        safe = len(self.text) - hold
        out = self.text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return out

    @property
    def final(self) -> str:
        return self.text if self.hit is None else self.text[:self.hit]


class Service:
    """Serves :class:`Job` s one at a time on the controller ``controller()`` returns.

    ``begin(job)`` (optional) runs on the worker thread before a job starts and
    returns the run id for the controller's events: the dashboard uses it to
    show the request as a new live session.
    """

    def __init__(self, controller: Callable[[], Any], *, begin: Callable[[Job], int] | None = None,
                 max_queue: int = 64, call: Callable[..., Any] | None = None) -> None:
        self._controller = controller
        # generations run on the process's one engine thread (see tui.engine.thread)
        self._call = call or engine_thread().call
        self._begin = begin
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._ids = itertools.count(1)
        self._run_ids = itertools.count(1_000_000)
        self.current: Job | None = None
        self.served = 0  # requests finished (answered or failed)
        self.started = 0  # requests that reached the engine
        # counters for /metrics (what llama-server and vLLM count too)
        self.prompt_tokens_total = 0  # prompt tokens evaluated
        self.cached_tokens_total = 0  # prompt tokens the KV cache already held
        self.generated_total = 0
        self._thread: threading.Thread | None = None

    # -- the web layer's side ----------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        """Jobs waiting (not counting the one being served)."""
        return self._queue.qsize()

    def controller(self) -> Any:
        """The controller requests run on (None while no model is loaded)."""
        return self._controller()

    @property
    def busy(self) -> bool:
        return self.current is not None

    def submit(self, request: GenRequest, sink: Callable[[object], None], label: str = "") -> Job:
        job = Job(request, sink, next(self._ids), label=label)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ApiError(429, f"too many requests waiting ({self._queue.maxsize}); try again later",
                           type="rate_limit_error", code="queue_full") from None
        return job

    def start(self) -> "Service":
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="llmtui-api-worker", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            job = self.current
            if job is not None:
                job.cancel.set()
            while True:  # the waiting jobs are answered, never left hanging
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is not None:
                    waiting.cancel.set()
                    waiting.sink(ApiError(503, "the server is shutting down", type="server_error"))
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout=5)
            self._thread = None

    # -- the worker --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                continue  # the client left while it waited
            self.current = job
            try:
                self._serve(job)
            except ApiError as exc:
                if exc.status == 500:  # generation failed: the engine's message says why
                    log.error("API request #%d (%s) failed: %s", job.id, job.label, exc.message)
                job.sink(exc)
            except EngineError as exc:  # a complete one-line message, no traceback needed
                log.error("API request #%d (%s) failed: %s", job.id, job.label, exc)
                job.sink(ApiError(500, str(exc), type="server_error"))
            except Exception as exc:  # a bug; never let one request kill the worker
                log.exception("API request #%d (%s) failed", job.id, job.label)
                job.sink(ApiError(500, f"{type(exc).__name__}: {exc}", type="server_error"))
            finally:
                self.current = None
                self.served += 1

    def _prompt(self, ctl: Any, req: GenRequest) -> tuple[str, list[int]]:
        """What the model reads (a chat rendered by its template) and its tokens."""
        eng = ctl.engine
        if req.kind == "chat":
            messages = [dict(m) for m in req.messages]
            structure = req.structure
            if structure is not None and structure.tools:
                if getattr(eng, "template_takes_tools", False):  # the model's own way of being told of tools
                    tools = [{"type": "function", "function": f} for f in structure.tools]
                    return chat_prompt(eng, messages, tools)
                messages = with_system_note(messages, structure.system_note)  # its template cannot say it
            return chat_prompt(eng, messages)
        if req.prompt_tokens is not None:
            bad = [t for t in req.prompt_tokens if not 0 <= t < eng.n_vocab]
            if bad:
                raise ApiError(400, f"prompt: token id {bad[0]} is not in this model's vocabulary "
                               f"(0..{eng.n_vocab - 1:,})", param="prompt")
            text = b"".join(eng.piece(t) for t in req.prompt_tokens).decode("utf-8", "replace")
            return text, list(req.prompt_tokens)
        return req.prompt, eng.tokenize(req.prompt, add_bos=None, parse_special=True)

    def _constrained(self, ctl: Any, req: GenRequest, preset: Any) -> tuple[Any, Any]:
        """``preset`` with the request's grammar as a stage (llama.cpp's grammar engine), and the grammar to
        close after the run (None without one)."""
        gbnf = getattr(req.structure, "grammar", None)
        if gbnf is None:
            return preset, None
        from ..engine.grammar import Grammar

        try:
            grammar = self._call(Grammar, ctl.engine, gbnf)
        except EngineError as exc:
            raise ApiError(400, str(exc), param="grammar") from None
        return preset.with_grammar(grammar), grammar

    def _biased(self, ctl: Any, req: GenRequest) -> Any:
        """The request's preset with its logit_bias as the chain's first stage (ids checked here)."""
        if not req.logit_bias:
            return req.preset
        n_vocab = ctl.engine.n_vocab
        bad = [t for t, _ in req.logit_bias if not 0 <= t < n_vocab]
        if bad:
            raise ApiError(400, f"logit_bias: token id {bad[0]} is not in this model's vocabulary "
                           f"(0..{n_vocab - 1:,})", param="logit_bias")
        from ..sampling.presets import SamplerSpec

        spec = SamplerSpec("logit_bias", {"bias": dict(req.logit_bias)})
        return dataclasses.replace(req.preset, samplers=(spec, *req.preset.samplers))

    def _scored(self, ctl: Any, tokens: list[int], k: int) -> tuple[TokenOut, ...]:
        """Each prompt token as the model scores it (echo + logprobs): its logprob after the tokens before it
        (the first has none) and the top-``k`` there; one pass over the prompt with every position's logits."""
        from ..engine.lab import log_softmax

        eng = ctl.engine
        logits = ctl.exclusive(lambda: eng.evaluate_all(tokens))
        logp = log_softmax(logits[:-1]) if len(tokens) > 1 else np.empty((0, eng.n_vocab))
        out, start = [], 0
        for i, tok in enumerate(tokens):
            piece = eng.piece(tok)
            lp = None if i == 0 else float(logp[i - 1, tok])
            top: tuple[tuple[int, bytes, float], ...] = ()
            if i and k:
                best = np.argpartition(-logp[i - 1], k)[:k]
                best = best[np.argsort(-logp[i - 1][best])]
                top = tuple((int(b), eng.piece(int(b)), float(logp[i - 1, b])) for b in best)
            out.append(TokenOut(i, tok, piece, "", lp, top, start))
            start += len(piece.decode("utf-8", "replace"))
        return tuple(out)

    def _serve(self, job: Job) -> None:
        ctl = self._controller()
        if ctl is None:
            raise ApiError(503, "no model is loaded yet; try again in a moment", type="server_error",
                           code="model_loading")
        req = job.request
        t_start = time.perf_counter()
        job.shown, tokens = self._prompt(ctl, req)
        n_ctx = ctl.engine.n_ctx
        if not tokens:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if len(tokens) >= n_ctx:
            raise ApiError(400, f"This model's maximum context length is {n_ctx} tokens, but the prompt has "
                           f"{len(tokens)} tokens (llmtui: start it with a larger --n-ctx, or shorten the "
                           "prompt)", param="messages" if req.kind == "chat" else "prompt",
                           code="context_length_exceeded")
        preset, grammar = self._constrained(ctl, req, self._biased(ctl, req))
        try:
            self._generate(job, ctl, req, tokens, preset, t_start)
        finally:
            if grammar is not None:
                grammar.close()

    def _generate(self, job: Job, ctl: Any, req: GenRequest, tokens: list[int], preset: Any,
                  t_start: float) -> None:
        job.sink(Accepted(len(tokens)))
        self.started += 1
        scored: tuple[TokenOut, ...] = ()
        if req.echo and req.top_logprobs is not None:
            scored = self._call(self._scored, ctl, tokens, req.top_logprobs or 0)
        echo = job.shown if req.echo else ""
        if req.max_tokens == 0:  # scoring only: the prompt back, nothing generated
            job.sink(Done("", "length", len(tokens), 0, 0, {}, "", echo, scored))
            return
        run_id = self._begin(job) if self._begin is not None else next(self._run_ids)
        stop = StopFilter(req.stop)
        t: dict[str, float] = {"first": 0.0, "prompt_ms": 0.0}
        cached = [0]  # prompt tokens the KV cache already held (the controller's ChatTurn says)
        k = req.top_logprobs or 0
        finished: list[Finished] = []

        # A token goes out once the text it starts in is released: a token that turns out to be part of a stop
        # string never goes out, so its logprobs and its count go with the text that was cut
        held: list[TokenOut] = []
        sent_tokens = [0]

        def release(upto: int, delta: str) -> None:
            out = [tok for tok in held if tok.start < upto]
            del held[:len(out)]
            for i, tok in enumerate(out):
                job.sink(dataclasses.replace(tok, delta=delta if i == len(out) - 1 else ""))
            sent_tokens[0] += len(out)

        def listen(ev: object) -> None:
            if isinstance(ev, StepEvent) and not ev.pending:
                step = ev.step
                if not t["first"]:
                    t["first"] = time.perf_counter()
                if step.is_eog:
                    return
                start = len(stop.text)
                delta = stop.feed(step.text)
                top: tuple[tuple[int, bytes, float], ...] = ()
                tr = step.trace
                if req.top_logprobs is not None:
                    piece = ctl.engine.piece
                    top = tuple((int(i), piece(int(i)), _lp(float(p)))
                                for i, p in zip(tr.top_ids[:k], tr.top_p_before[:k]))
                held.append(TokenOut(step.index, step.token, step.piece, "", _lp(tr.raw_p), top, start))
                if stop.hit is not None:
                    release(stop.hit, delta)
                    held.clear()  # the stop string's own tokens
                    job.cancel.set()  # the loop stops before decoding another token
                elif delta:
                    release(stop.sent, delta)
                elif not step.text and stop.sent == start:  # part of a character, nothing held before it
                    release(start + 1, "")
            elif isinstance(ev, PromptDone):
                t["prompt_ms"] = ev.ms
            elif isinstance(ev, ChatTurn):
                cached[0] = ev.reused
            elif isinstance(ev, Finished):
                finished.append(ev)

        stats = self._call(ctl.run, job.shown, prefix=tokens, run_id=run_id, preset=preset, seed=req.seed,
                        max_tokens=req.max_tokens, listener=listen, cancel=job.cancel, reuse=True)
        end = time.perf_counter()
        if stats.stop_reason is StopReason.ERROR:
            raise ApiError(500, f"generation failed: {stats.error or 'the engine gave no reason'}",
                           type="server_error")
        self.generated_total += stats.generated  # /metrics counts the requests answered
        self.cached_tokens_total += cached[0]
        self.prompt_tokens_total += max(0, len(tokens) - cached[0])
        sent = stop.sent  # what TokenOut deltas released
        if stop.hit is None and finished:
            last = finished[-1].text[len(stop.text):]  # the decoder's last bytes, if any
            if last.strip("\ufffd"):  # a character cut by max_tokens is dropped, not sent as U+FFFD
                stop.feed(last)
        release(len(stop.final) + 1, "")  # tokens held with text that never became a stop string
        tail = stop.final[sent:]  # held-back text and those last bytes, for the stream's final chunk
        reason = "length" if stats.stop_reason in (StopReason.MAX_TOKENS, StopReason.CONTEXT_FULL) else "stop"
        if stop.hit is not None:
            reason = "stop"
        ttft = (t["first"] - job.created) * 1000.0 if t["first"] else 0.0
        timings = {
            "queue_ms": round((t_start - job.created) * 1000.0, 3),
            "prompt_ms": round(stats.prompt_ms, 3),
            "prompt_tok_per_s": round(stats.prompt_tps, 2),
            "generation_ms": round(stats.gen_ms, 3),
            "generation_tok_per_s": round(stats.gen_tps, 2),
            "time_to_first_token_ms": round(ttft, 3),
            "overhead_ms": round(max(0.0, ttft - (t_start - job.created) * 1000.0 - stats.prompt_ms), 3),
            "total_ms": round((end - job.created) * 1000.0, 3),
        }
        # a stop string's tokens are not counted: completion_tokens are the tokens of the text sent
        n_out = sent_tokens[0] if stop.hit is not None else stats.generated
        job.sink(Done(stop.final, reason, len(tokens), n_out, cached[0], timings, tail, echo, scored))
