"""The generation loop: one immutable :class:`Step` per token.

The loop owns nothing but the order of operations::

    prompt -> decode -> [logits -> sampler chain -> accept -> (yield Step) -> decode token] ...

It is a plain iterator so any consumer (CLI, Textual worker, recorder, API
server) drives it at its own pace; it checks a cancel flag between tokens and
always knows why it stopped.
"""

from __future__ import annotations

import codecs
import dataclasses
import enum
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..sampling.errors import SamplingError
from .errors import ContextError, EngineError

if TYPE_CHECKING:
    from ..sampling.trace import SampleTrace


class StopReason(str, enum.Enum):
    EOG = "eog"
    MAX_TOKENS = "max_tokens"
    CONTEXT_FULL = "context_full"
    CANCELLED = "cancelled"
    ERROR = "error"

    def describe(self) -> str:
        return {
            "eog": "end of generation token",
            "max_tokens": "max tokens reached",
            "context_full": "context full",
            "cancelled": "stopped by user",
            "error": "error",
        }[self.value]


CONTEXT_POLICIES = ("stop", "shift")


class TokenSampler(Protocol):
    """The seam where the sampler chain plugs in (see ``tui.sampling.Chain``)."""

    def sample(self, logits: np.ndarray) -> "SampleTrace": ...

    def accept(self, token: int) -> None: ...


class Engine(Protocol):
    """What the loop needs from an engine (the real llama.cpp one or the fake)."""

    n_ctx: int
    n_past: int
    n_vocab: int

    def decode(self, tokens: Sequence[int], *, should_stop: Callable[[], bool] | None = None) -> float: ...

    def logits(self) -> np.ndarray: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Step:
    """Everything that happened for one generated token."""

    index: int  # 0-based position among generated tokens
    token: int
    piece: bytes  # the token's exact bytes
    text: str  # text completed by this token (incremental UTF-8: may be "" mid-character)
    prob: float  # probability the token had in the distribution it was drawn from
    trace: "SampleTrace"
    decode_ms: float  # decode that produced these logits (0 for the first step: see prompt_ms)
    sample_ms: float
    n_past: int  # positions in the KV cache the logits attended to
    n_ctx: int
    is_eog: bool
    t: float  # time.perf_counter() when the step was ready
    shift: tuple[int, int] | None = None  # (n_keep, n_discard) if the context was shifted before this step
    draw: int = 1  # 1 for the run's own sample; a re-sample at this step is draw 2, 3…
    forced: bool = False  # the user chose this token (``Generation.force``): ``prob`` is the model's own


@dataclass(slots=True)
class GenerationStats:
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    generated: int = 0
    gen_ms: float = 0.0  # wall time from the end of the prompt to the last step
    decode_ms: float = 0.0
    sample_ms: float = 0.0
    stop_reason: StopReason | None = None
    error: str | None = None
    texts: list[str] = field(default_factory=list)

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens * 1000.0 / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def gen_tps(self) -> float:
        return self.generated * 1000.0 / self.gen_ms if self.gen_ms > 0 else 0.0

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def summary(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated,
            "prompt_ms": round(self.prompt_ms, 3),
            "generation_ms": round(self.gen_ms, 3),
            "prompt_tok_per_s": round(self.prompt_tps, 2),
            "generation_tok_per_s": round(self.gen_tps, 2),
            "decode_ms": round(self.decode_ms, 3),
            "sample_ms": round(self.sample_ms, 3),
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "error": self.error,
        }


class Generation:
    """Iterate to generate. ``stats`` is complete once iteration ends.

    Each yielded :class:`Step` is *pending* until the consumer asks for the
    next one: only then is its token accepted by the sampler chain and decoded.
    While a step is pending, :meth:`resample` may replace it (another chain on
    the same logits, no re-decode) — that is what step mode and "re-sample with
    another preset" use. The loop stops on an end-of-generation token (unless
    ``ignore_eos``), after ``max_tokens``, when the context is full, when
    ``cancel`` is set, or on an engine error.
    """

    def __init__(
        self,
        engine: Engine,
        prompt_tokens: Sequence[int],
        sampler: TokenSampler,
        *,
        max_tokens: int = 256,
        ignore_eos: bool = False,
        cancel: threading.Event | None = None,
        eog_tokens: Sequence[int] = (),
        on_prompt_done: Callable[["GenerationStats"], None] | None = None,
        context_policy: str = "stop",
        n_keep: int = -1,
        start: int = 0,
    ) -> None:
        if max_tokens < 0:
            raise EngineError("max_tokens must be >= 0")
        if context_policy not in CONTEXT_POLICIES:
            raise EngineError(f"context policy must be one of {', '.join(CONTEXT_POLICIES)} (got {context_policy!r})")
        self.context_policy = context_policy
        self.n_keep = n_keep  # -1: the whole prompt, reused part included (capped at half the context)
        self._prompt_end = 0  # positions the cache held once the prompt was evaluated
        self.shifts: list[tuple[int, int, int]] = []  # (step index, n_keep, n_discard)
        self._shift: tuple[int, int] | None = None
        self.engine = engine
        self.prompt_tokens = list(prompt_tokens)
        self.sampler = sampler
        self.max_tokens = max_tokens
        self.start = start  # the index of the first step (a branch's first step follows its parent's path)
        self.ignore_eos = ignore_eos
        self.cancel = cancel or threading.Event()
        self.stats = GenerationStats(prompt_tokens=len(self.prompt_tokens))
        self._eog = np.asarray(sorted(eog_tokens), dtype=np.int64)
        self._on_prompt_done = on_prompt_done
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending: Step | None = None
        self._pending_logits: np.ndarray | None = None
        self._decoder_state: tuple[bytes, int] = self._decoder.getstate()
        self.last_logits: np.ndarray | None = None  # a copy of the logits behind the last step

    def stop(self) -> None:
        self.cancel.set()

    def _make_step(self, index: int, trace: "SampleTrace", decode_ms: float, sample_ms: float) -> Step:
        eng = self.engine
        token = trace.token
        eog = eng.is_eog(token)
        piece = eng.piece(token)
        self._decoder.setstate(self._decoder_state)
        text = "" if eog else self._decoder.decode(piece)
        return Step(
            index=index, token=token, piece=piece, text=text, prob=trace.prob, trace=trace,
            decode_ms=decode_ms, sample_ms=sample_ms, n_past=eng.n_past, n_ctx=eng.n_ctx,
            is_eog=eog, t=time.perf_counter(), shift=self._shift,
        )

    def _context_shift(self, next_index: int) -> None:
        """llama.cpp's context shift: keep the first n_keep positions, drop half of the rest."""
        eng = self.engine
        if not getattr(eng, "can_shift", lambda: False)():
            raise EngineError("context full and this model's KV cache cannot shift positions; "
                              "use a larger --n-ctx")
        n_keep = self._prompt_end if self.n_keep < 0 else self.n_keep
        n_keep = max(0, min(n_keep, eng.n_ctx // 2))
        n_discard = (eng.n_past - n_keep) // 2
        if n_discard <= 0:
            raise EngineError(f"context full: nothing to discard after keeping {n_keep} tokens")
        eng.shift(n_keep, n_discard)
        self._shift = (n_keep, n_discard)
        self.shifts.append((next_index, n_keep, n_discard))

    def resample(self, sampler: TokenSampler) -> Step:
        """Replace the pending step by sampling its logits with ``sampler`` (which is used from now on)."""
        if self.pending is None or self._pending_logits is None:
            raise EngineError("no pending step to re-sample")
        ts = time.perf_counter()
        try:
            trace = sampler.sample(self._pending_logits)
        except SamplingError as exc:
            raise EngineError(str(exc)) from None
        sample_ms = (time.perf_counter() - ts) * 1000.0
        self.sampler = sampler
        old = self.pending
        self.pending = dataclasses.replace(self._make_step(old.index, trace, old.decode_ms, sample_ms),
                                           draw=old.draw + 1)
        return self.pending

    def force(self, token: int) -> Step:
        """Replace the pending step by ``token``, a candidate the user chose: the trace keeps what the chain
        made of these logits; the token, and its probability under the model (before the chain), are the
        user's choice. Generation goes on from it with the same chain."""
        if self.pending is None or self._pending_logits is None:
            raise EngineError("no pending step to force: use step mode (s), then choose a candidate")
        logits = self._pending_logits
        if not 0 <= token < len(logits):
            raise EngineError(f"token {token} is not in this model's vocabulary (0..{len(logits) - 1:,})")
        finite = logits[np.isfinite(logits)].astype(np.float64)
        top = float(finite.max())
        p = float(np.exp(float(logits[token]) - top - np.log(np.exp(finite - top).sum())))
        old = self.pending
        trace = dataclasses.replace(old.trace, token=int(token), prob=p, draw=None, draw_lo=0.0, draw_hi=0.0,
                                    raw_logit=float(logits[token]), raw_p=p)
        self.pending = dataclasses.replace(self._make_step(old.index, trace, old.decode_ms, 0.0),
                                           draw=old.draw + 1, forced=True)
        return self.pending

    def _accept(self, step: Step) -> None:
        self.sampler.accept(step.token)
        self._decoder_state = self._decoder.getstate()
        stats = self.stats
        stats.generated += 1
        stats.sample_ms += step.sample_ms
        stats.decode_ms += step.decode_ms
        stats.texts.append(step.text)
        self.pending = None

    def __iter__(self) -> Iterator[Step]:
        eng, stats = self.engine, self.stats
        if not self.prompt_tokens and eng.n_past == 0:
            raise EngineError("empty prompt: give at least one token")
        if eng.n_past + len(self.prompt_tokens) > eng.n_ctx:
            raise ContextError(
                f"prompt of {len(self.prompt_tokens)} tokens does not fit in n_ctx {eng.n_ctx}"
                f" ({eng.n_past} already cached): raise --n-ctx or shorten the prompt"
            )
        t0 = time.perf_counter()
        try:
            eng.decode(self.prompt_tokens, should_stop=self.cancel.is_set)
        except EngineError as exc:
            stats.stop_reason, stats.error = StopReason.ERROR, str(exc)
            return
        t_prompt = time.perf_counter()
        self._prompt_end = eng.n_past
        stats.prompt_ms = (t_prompt - t0) * 1000.0
        if self._on_prompt_done is not None:
            self._on_prompt_done(stats)
        decode_ms = 0.0
        index = self.start
        end = self.start + self.max_tokens
        try:
            while True:
                if index >= end:
                    stats.stop_reason = StopReason.MAX_TOKENS
                    break
                if self.cancel.is_set():
                    stats.stop_reason = StopReason.CANCELLED
                    break
                ts = time.perf_counter()
                logits = eng.logits()
                if self.ignore_eos and self._eog.size:
                    logits[self._eog] = -np.inf  # as llama.cpp's --ignore-eos does (a -inf logit bias)
                try:
                    trace = self.sampler.sample(logits)
                except SamplingError as exc:  # NaN/inf logits from a broken model: a one-line error
                    stats.stop_reason, stats.error = StopReason.ERROR, f"step {index}: {exc}"
                    break
                sample_ms = (time.perf_counter() - ts) * 1000.0
                self._pending_logits = logits
                self.pending = self._make_step(index, trace, decode_ms, sample_ms)
                self._shift = None
                stats.gen_ms = (self.pending.t - t_prompt) * 1000.0
                try:
                    yield self.pending
                except GeneratorExit:
                    # the consumer saw this step and left: it counts as generated
                    self._accept(self.pending)
                    self.last_logits = np.array(logits, copy=True)
                    stats.stop_reason = stats.stop_reason or StopReason.CANCELLED
                    raise
                step = self.pending
                self._accept(step)
                index += 1
                if step.is_eog:
                    stats.stop_reason = StopReason.EOG
                    break
                if index >= end or self.cancel.is_set():
                    continue  # checked at the top, without decoding a token nobody will use
                if eng.n_past >= eng.n_ctx:
                    if self.context_policy != "shift":
                        stats.stop_reason = StopReason.CONTEXT_FULL
                        stats.error = (f"context full at {eng.n_ctx} tokens (policy stop): raise --n-ctx or use "
                                       "--context-policy shift")
                        break
                    try:
                        self._context_shift(index)
                    except EngineError as exc:
                        stats.stop_reason, stats.error = StopReason.CONTEXT_FULL, str(exc)
                        break
                try:
                    decode_ms = eng.decode([step.token])
                except ContextError as exc:
                    stats.stop_reason, stats.error = StopReason.CONTEXT_FULL, str(exc)
                    break
                except EngineError as exc:
                    stats.stop_reason, stats.error = StopReason.ERROR, str(exc)
                    break
        finally:
            self._pending_logits = None
        if stats.generated and self.last_logits is None and stats.stop_reason is not StopReason.ERROR:
            # nothing was decoded after the last step: its logits are still in the engine
            self.last_logits = np.array(eng.logits(), copy=True)
        tail = self._decoder.decode(b"", final=True)
        if tail:
            stats.texts.append(tail)
        stats.gen_ms = (time.perf_counter() - t_prompt) * 1000.0 if stats.generated else 0.0
