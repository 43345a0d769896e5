"""A/B lockstep: two sampler chains on one model, or two models, on the same prompt, one step at a time.

**Two presets, one model** (``engine_b`` None): one llama_decode per step. While both chains pick the same
token the two sides are one sequence, and both chains sample the *same* logits; at the first step where they
pick differently, side B gets its own sequence, sharing every cell of the common prefix with A's
(``seq_cp`` in the unified cache: :mod:`tui.engine.sequences`); from then on each step decodes A's token and
B's token in one batch of two rows.

**Two models** (same tokenizer: quantized variants of one model, as ``llmtui compare`` needs): each side
generates its own story with its own chain, and model B also reads A's text (a second sequence of B once the
stories part), so every step reports KL(A‖B) between the two models' next-token distributions *on the same
text* — what ``llmtui compare`` reports per token — and whether their top-1 tokens agree.

Events (immutable, for a front end or the CLI): :class:`ABStarted`, one :class:`ABStep` per step,
:class:`ABFinished`.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling.errors import SamplingError
from .errors import ContextError, EngineError
from .lab import log_softmax
from .loop import Step, StopReason

MODES = ("presets", "models")


@dataclass(frozen=True, slots=True)
class ABStarted:
    mode: str  # presets | models
    label_a: str  # preset (and model) of each side
    label_b: str
    prompt: str
    prompt_tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ABStep:
    index: int
    a: Step | None  # None once that side has stopped
    b: Step | None
    # nats: KL(A‖B) of the two models' next-token distributions on A's text (models), or of the two sides'
    # distributions (presets: 0 while they share the text, then each on its own story); None: a side stopped
    kl: float | None
    entropy_a: float | None  # nats, of each side's model distribution at this step
    entropy_b: float | None
    top1_agree: bool | None  # the two distributions' most likely tokens agree
    diverged: bool  # the two sides' tokens differ at this step or did before
    decodes: int  # llama_decode calls that produced this step's logits (presets: 1; step 0: the prompt's)


@dataclass(frozen=True, slots=True)
class ABFinished:
    summary: dict[str, Any]


@dataclass(slots=True)
class ABResult:
    steps: list[ABStep] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def text(self, side: str) -> str:
        """The text side ``"a"`` or ``"b"`` wrote."""
        return "".join(step.text for s in self.steps if (step := s.a if side == "a" else s.b) is not None)


def kl_divergence(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """KL(P‖Q) in nats between the softmax distributions of two logit vectors (``lab.log_softmax``, as
    ``llmtui compare``); tokens P gives no probability (-inf logits) add nothing."""
    lp, lq = log_softmax(np.stack([logits_p, logits_q]))
    p = np.exp(lp)
    mask = p > 0
    return float((p[mask] * (lp[mask] - lq[mask])).sum())


@dataclass(slots=True)
class _Side:
    engine: Any
    chain: Any
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    seq: int = 0


class ABRun:
    """One lockstep run (on the engine thread). ``emit`` gets ABStarted, each ABStep, ABFinished."""

    def __init__(self, engine_a: Any, chain_a: Any, chain_b: Any, *, engine_b: Any = None, max_tokens: int = 64,
                 cancel: threading.Event | None = None, emit: Callable[[object], None] = lambda e: None,
                 label_a: str = "A", label_b: str = "B", ignore_eos: bool = False) -> None:
        if engine_b is not None and engine_b.n_vocab != engine_a.n_vocab:
            raise EngineError("the two models have different vocabularies: A/B of two models needs variants of "
                              "one model (the same tokenizer)")
        self.mode = "models" if engine_b is not None else "presets"
        self.a = _Side(engine_a, chain_a)
        self.b = _Side(engine_b or engine_a, chain_b)
        self.max_tokens = max_tokens
        self.cancel = cancel or threading.Event()
        self.emit = emit
        self.labels = (label_a, label_b)
        self.ignore_eos = ignore_eos
        self._eog = np.asarray(engine_a.eog_tokens(), dtype=np.int64) if ignore_eos else None
        self.diverged_at: int | None = None
        self.decode_calls = 0
        self._b_on_a = 0  # models: model B's sequence that reads A's text
        self._parted = False  # side B has its own sequence
        self._n_prompt = 0
        self._decode_ms = 0.0  # the decode that produced the current step's logits

    # -- decoding ---------------------------------------------------------------------------------------

    def _decode(self, engine: Any, tokens: Sequence[int]) -> np.ndarray:
        engine.decode(list(tokens))
        self.decode_calls += 1
        return np.array(engine.logits(), dtype=np.float32, copy=True)

    def _rows(self, engine: Any, rows: list[tuple[int, int]]) -> np.ndarray:
        self.decode_calls += 1
        return engine.decode_rows(rows)

    def _split(self, engine: Any, a_key: Any, b_tokens: list[int]) -> int:
        """Give side B its own sequence: ``b_tokens`` (the common prefix and B's first own token) share every
        cell of the prefix with the current sequence (named ``a_key``); B's token is left to decode."""
        seqs = engine.seqs
        seqs.keys[seqs.active] = a_key  # so that B's tokens do not grow the current sequence in place
        att = engine.attach(b_tokens, ("ab", "B"))
        if len(att.evaluate) != 1:
            raise EngineError(f"side B shares {att.reused} cells where {len(b_tokens) - 1} were expected")
        return att.seq

    # -- the run ----------------------------------------------------------------------------------------------

    def run(self, prompt_tokens: Sequence[int], prompt: str = "") -> ABResult:
        a, b = self.a, self.b
        prompt_tokens = [int(t) for t in prompt_tokens]
        self._n_prompt = len(prompt_tokens)
        if not prompt_tokens:
            raise EngineError("empty prompt: give at least one token")
        self.emit(ABStarted(self.mode, self.labels[0], self.labels[1], prompt, tuple(prompt_tokens)))
        result = ABResult()
        reason = StopReason.MAX_TOKENS
        error = None
        t0 = t_prompt = time.perf_counter()
        try:
            a.engine.clear()
            la = self._decode(a.engine, prompt_tokens)
            if self.mode == "models":
                b.engine.clear()
                lb_on_a = self._decode(b.engine, prompt_tokens)
            else:
                lb_on_a = la
            lb = lb_on_a
            t_prompt = time.perf_counter()
            calls_before = 0  # step 0's logits came from the prompt's decodes: they count as its own
            for index in range(self.max_tokens):
                if self.cancel.is_set():
                    reason = StopReason.CANCELLED
                    break
                ts = time.perf_counter()
                if self._eog is not None:  # as llama.cpp's --ignore-eos: a -inf logit bias on every EOG token
                    for logits in {id(x): x for x in (la, lb, lb_on_a)}.values():
                        logits[self._eog] = -np.inf
                tr_a = a.chain.sample(la) if not a.done else None
                tr_b = b.chain.sample(lb) if not b.done else None
                sample_ms = (time.perf_counter() - ts) * 1000.0
                # models: B's distribution on A's text; presets: B's own (the same logits until they part)
                other = lb_on_a if self.mode == "models" else (lb if not b.done else None)
                kl = None if a.done or other is None else 0.0 if other is la else kl_divergence(la, other)
                agree = (int(np.argmax(la)) == int(np.argmax(other))) if kl is not None else None
                if self.diverged_at is None and tr_a is not None and tr_b is not None and tr_a.token != tr_b.token:
                    self.diverged_at = index
                step_a = self._step(a, index, tr_a, sample_ms) if tr_a is not None else None
                step_b = self._step(b, index, tr_b, sample_ms) if tr_b is not None else None
                decodes = self.decode_calls - calls_before
                calls_before = self.decode_calls
                ev = ABStep(index, step_a, step_b, kl, tr_a.entropy if tr_a else None,
                            tr_b.entropy if tr_b else None, agree, self.diverged_at is not None, decodes)
                result.steps.append(ev)
                self.emit(ev)
                for side, step in ((a, step_a), (b, step_b)):
                    if step is not None:
                        side.chain.accept(step.token)
                        side.tokens.append(step.token)
                        side.done = side.done or (step.is_eog and not self.ignore_eos)
                if (a.done and b.done) or index + 1 >= self.max_tokens:
                    reason = StopReason.EOG if a.done and b.done else StopReason.MAX_TOKENS
                    break
                td = time.perf_counter()
                la, lb, lb_on_a = self._advance(prompt_tokens, step_a, step_b, la, lb, lb_on_a)
                self._decode_ms = (time.perf_counter() - td) * 1000.0
        except (ContextError, SamplingError) as exc:
            reason, error = StopReason.CONTEXT_FULL if isinstance(exc, ContextError) else StopReason.ERROR, str(exc)
        except EngineError as exc:
            reason, error = StopReason.ERROR, str(exc)
        t_end = time.perf_counter()
        n = len(result.steps)
        kls = [s.kl for s in result.steps if s.kl is not None]
        agrees = [s.top1_agree for s in result.steps if s.top1_agree is not None]
        result.summary = {
            "mode": self.mode, "a": self.labels[0], "b": self.labels[1], "steps": n,
            "diverged_at": self.diverged_at, "kl_mean": float(np.mean(kls)) if kls else None,
            "kl_max": float(np.max(kls)) if kls else None,
            "top1_agreement": float(np.mean(agrees)) if agrees else None,
            "decode_calls": self.decode_calls, "prompt_ms": round((t_prompt - t0) * 1000.0, 3),
            "steps_per_s": round(n / (t_end - t_prompt), 2) if n and t_end > t_prompt else 0.0,
            "stop_reason": reason.value, "error": error,
            "text_a": result.text("a"), "text_b": result.text("b"),
        }
        self.emit(ABFinished(dict(result.summary)))
        return result

    def _advance(self, prompt: list[int], step_a: Step | None, step_b: Step | None, la: np.ndarray,
                 lb: np.ndarray, lb_on_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode this step's tokens: the next step's logits of A, of B, and of model B on A's text."""
        a, b = self.a, self.b
        tok_a = step_a.token if step_a is not None and not a.done else None
        tok_b = step_b.token if step_b is not None and not b.done else None
        if self.mode == "presets":
            eng = a.engine
            if self.diverged_at is None:  # one sequence, one token, both chains read its logits
                la = self._decode(eng, [tok_a])
                return la, la, la
            if not self._parted:
                self._parted = True
                b.seq = self._split(eng, ("ab", "A"), prompt + b.tokens)
            la, lb = self._both(eng, (a.seq, tok_a, la), (b.seq, tok_b, lb))
            return la, lb, lb_on_a
        # two models: A alone on its engine; model B reads A's text and, once they part, its own
        if tok_a is not None:
            la = self._decode(a.engine, [tok_a])
        if self.diverged_at is None:
            lb = lb_on_a = self._decode(b.engine, [tok_a])
            return la, lb, lb_on_a
        eng_b = b.engine
        if not self._parted:
            self._parted = True
            self._b_on_a = eng_b.seqs.active
            b.seq = self._split(eng_b, ("ab", "onA"), prompt + b.tokens)
        lb_on_a, lb = self._both(eng_b, (self._b_on_a, tok_a, lb_on_a), (b.seq, tok_b, lb))
        return la, lb, lb_on_a

    def _both(self, engine: Any, *rows: tuple[int, int | None, np.ndarray]) -> tuple[np.ndarray, ...]:
        """One llama_decode of each ``(sequence, token, logits)`` row whose token is not None (a side that
        stopped decodes nothing): the new logits of those rows, the old ones of the others."""
        live = [(seq, tok) for seq, tok, _ in rows if tok is not None]
        out = iter(self._rows(engine, live)) if live else iter(())
        return tuple(next(out) if tok is not None else old for _, tok, old in rows)

    def _step(self, side: _Side, index: int, trace: Any, sample_ms: float) -> Step:
        eng = side.engine
        token = trace.token
        eog = eng.is_eog(token)
        piece = eng.piece(token)
        text = "" if eog else side.decoder.decode(piece)
        return Step(index=index, token=token, piece=piece, text=text, prob=trace.prob, trace=trace,
                    decode_ms=self._decode_ms, sample_ms=sample_ms, n_past=self._n_prompt + len(side.tokens),
                    n_ctx=eng.n_ctx, is_eog=eog,
                    t=time.perf_counter())
