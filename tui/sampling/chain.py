"""A chain of samplers that is itself a sampler, and records what every stage did."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .base import Sampler
from .errors import SamplingError
from .candidates import Candidates, top_k_stable
from .trace import HEAD_SIZE, RawStats, SampleTrace, Scratch, StageTrace, raw_stats

TOP_K_DISPLAY = 10
TOP_SURVIVORS = 5
_SMALL = 4096  # below this many candidates, exact bookkeeping is cheaper than being clever


def _log_z(logits: np.ndarray) -> float:
    """log Σ exp(logits) over the finite logits (-inf ones add exp(-inf) = 0)."""
    if len(logits) == 0:
        return float("-inf")
    m = float(logits.max())
    if not math.isfinite(m):
        return m
    if len(logits) > _SMALL:  # float32 exp (one SIMD pass), summed in double
        return m + math.log(float(np.exp(logits - np.float32(m)).sum(dtype=np.float64)))
    return m + math.log(float(np.exp(logits.astype(np.float64) - m).sum()))


def _n_finite(logits: np.ndarray) -> int:
    return int(np.count_nonzero(logits != -np.inf))


class Chain(Sampler):
    """Applies its samplers in order; ``accept``/``reset`` reach every member.

    ``sample(logits)`` is llama.cpp's ``llama_sampler_sample`` without the
    accept: build the candidates from the logits in token-id order, apply the
    chain, take the selected candidate. It returns a :class:`SampleTrace` of
    every stage. The caller accepts the token (``accept``), so a step can be
    re-sampled on a ``clone()`` without touching this chain's state.
    """

    name = "chain"

    def __init__(self, samplers: Iterable[Sampler] = (), *, trace: bool = True) -> None:
        self.samplers: list[Sampler] = list(samplers)
        self.trace = trace
        self._scratch = Scratch()
        # a head of the best candidates pays off only when a truncating sampler can use it
        self._head_size = HEAD_SIZE if any(getattr(s, "uses_head", False) for s in self.samplers) else 0

    # -- llama_sampler_i -------------------------------------------------------

    def apply(self, cur: Candidates) -> None:
        for s in self.samplers:
            s.apply(cur)

    def accept(self, token: int) -> None:
        for s in self.samplers:
            s.accept(token)

    def reset(self) -> None:
        for s in self.samplers:
            s.reset()

    def clone(self) -> "Chain":
        return Chain([s.clone() for s in self.samplers], trace=self.trace)

    def continue_draws(self, other: Sampler | None) -> "Chain":
        """Draw on from where ``other``'s generator stands (a chain rebuilt mid-run for another preset or a
        re-sample): the next number is a new one, never the seed's first again. Returns self."""
        seeded = [s for s in getattr(other, "samplers", ()) if getattr(s, "seeded", False)]
        by_name = {s.name: s for s in seeded}
        selector = next((s for s in reversed(seeded) if getattr(s, "selects", False)), seeded[-1] if seeded else None)
        for s in self.samplers:
            if getattr(s, "seeded", False):
                source = by_name.get(s.name) or (selector if getattr(s, "selects", False) else None)
                if source is not None:  # each generator goes on from its own counterpart's position
                    s.rng = source.rng.copy()  # type: ignore[attr-defined]
        return self

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.samplers)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samplers]

    # -- sampling with a trace -----------------------------------------------------

    def sample(self, logits: np.ndarray) -> SampleTrace:
        raw = raw_stats(logits, TOP_K_DISPLAY, self._scratch, self._head_size)
        cur = Candidates.from_logits(logits)
        cur.scratch = self._scratch
        cur.hint_argmax(raw.argmax)
        if raw.head is not None:
            cur.set_head(raw.head)
        tracer = _Tracer(logits, raw) if self.trace else None
        for s in self.samplers:
            if hasattr(s, "last_note"):
                s.last_note = ""
            cur.last_edit = None
            if tracer is None:
                s.apply(cur)
                continue
            before = (cur.ids, cur.logits, cur.probs)
            s.apply(cur)
            tracer.stage(s, before, cur)
        if not 0 <= cur.selected < len(cur):
            raise SamplingError(f"the chain {self.describe()} selected no token: end it with greedy, dist, "
                                "mirostat, mirostat_v2 or adaptive_p")
        return _finish(self, cur, raw, logits, tracer)


class _Tracer:
    """Per-stage bookkeeping, cheap where the candidates are many."""

    def __init__(self, logits: np.ndarray, raw: RawStats) -> None:
        self.raw_logits = logits
        self.raw = raw
        # log-normaliser of arrays we already know it for (by identity)
        self._lz: list[tuple[np.ndarray, float]] = [(logits, raw.log_z)]
        self.stages: list[StageTrace] = []
        self.n_in = len(logits)
        self.survivors: tuple[tuple[int, ...], tuple[float, ...]] = (
            tuple(raw.top_ids[:TOP_SURVIVORS].tolist()),
            tuple(raw.top_p[:TOP_SURVIVORS].tolist()),
        )

    def log_z(self, logits: np.ndarray) -> float:
        for arr, lz in self._lz:
            if arr is logits:
                return lz
        lz = _log_z(logits)
        self._lz.append((logits, lz))
        return lz

    def stage(self, s: Sampler, before: tuple, cur: Candidates) -> None:
        ids_in, lg_in, probs_in = before
        note = getattr(s, "last_note", "") or ""
        n_in = self.n_in
        if cur.ids is ids_in and cur.logits is lg_in:
            # nothing removed and no logit changed (a probability pass or a selection)
            self.stages.append(StageTrace(s.name, n_in, n_in, 0.0, *self.survivors, note))
            return
        edit = cur.last_edit
        if edit is not None and edit[0] is lg_in and cur.ids is ids_in and len(cur) > _SMALL:
            self._sparse_stage(s, lg_in, cur, edit[1], note)
            return
        lg_out = cur.logits
        if len(lg_out) > _SMALL and lg_out is lg_in:  # large, values untouched: nothing to count
            self.stages.append(StageTrace(s.name, n_in, n_in, 0.0, *self.survivors, note))
            return
        n_out = _n_finite(lg_out)
        lz_in = self.log_z(lg_in)
        if not s.changes_logits and math.isfinite(lz_in):
            # removal only: survivors keep their logits, so one exp pass over them
            # gives the kept mass, the output normaliser and the survivors' probabilities
            e = np.exp(lg_out.astype(np.float64) - lz_in)
            kept = float(e.sum())
            mass_removed = max(0.0, 1.0 - kept)
            if kept > 0:
                self._lz.append((lg_out, lz_in + math.log(kept)))
            idx = self._top_idx(cur)
            probs = e[idx] / kept if kept > 0 else np.zeros(len(idx))
            self.survivors = (tuple(cur.ids[idx].tolist()), tuple(probs.tolist()))
        else:
            mass_removed = 0.0
            if n_out < n_in and cur.ids is ids_in and math.isfinite(lz_in):  # masked to -inf
                gone = (lg_out == -np.inf) & (lg_in != -np.inf)
                mass_removed = float(np.exp(lg_in[gone].astype(np.float64) - lz_in).sum())
            self.survivors = self._top(cur)
        self.stages.append(StageTrace(s.name, n_in, n_out, mass_removed, *self.survivors, note))
        self.n_in = n_out

    def _sparse_stage(self, s: Sampler, lg_in: np.ndarray, cur: Candidates, pos: np.ndarray, note: str) -> None:
        """A few logits of the full vocabulary changed: update the normaliser instead of recomputing it."""
        lg_out = cur.logits
        lz_in = self.log_z(lg_in)
        old = lg_in[pos].astype(np.float64)
        new = lg_out[pos].astype(np.float64)
        z = 1.0 - float(np.exp(old - lz_in).sum()) + float(np.exp(new - lz_in).sum())
        if math.isfinite(lz_in) and z > 1e-6:
            self._lz.append((lg_out, lz_in + math.log(z)))
        banned = int(np.count_nonzero((new == -np.inf) & (old != -np.inf)))
        n_out = self.n_in - banned
        mass_removed = float(np.exp(old[new == -np.inf] - lz_in).sum()) if banned else 0.0
        self.survivors = self._top(cur)
        self.stages.append(StageTrace(s.name, self.n_in, n_out, mass_removed, *self.survivors, note))
        self.n_in = n_out

    @staticmethod
    def _top_idx(cur: Candidates) -> np.ndarray | slice:
        lg = cur.logits
        if cur.sorted:
            return slice(0, TOP_SURVIVORS)
        head = cur.head()
        if head is not None and len(head.idx) >= TOP_SURVIVORS:
            return head.idx[:TOP_SURVIVORS]
        if len(lg) <= _SMALL:
            return np.argsort(-lg, kind="stable")[:TOP_SURVIVORS]
        return top_k_stable(lg, TOP_SURVIVORS)

    def _top(self, cur: Candidates) -> tuple[tuple[int, ...], tuple[float, ...]]:
        lg = cur.logits
        if len(lg) == 0:
            return (), ()
        if lg is self.raw_logits:
            return self.survivors
        idx = self._top_idx(cur)
        lz = self.log_z(lg)
        probs = np.exp(lg[idx].astype(np.float64) - lz) if math.isfinite(lz) else np.zeros(len(lg[idx]))
        return tuple(cur.ids[idx].tolist()), tuple(probs.tolist())


def _finish(chain: Chain, cur: Candidates, raw: RawStats, logits: np.ndarray, tracer: _Tracer | None) -> SampleTrace:
    sel = cur.selected
    token = int(cur.ids[sel])
    n = len(cur)
    last = chain.samplers[-1] if chain.samplers else None
    draw = getattr(last, "last_draw", None)
    # The final distribution is the one the selecting sampler drew from: its
    # probabilities when it computed them, else the softmax of the final logits.
    probs = cur.probs
    if probs is None or len(probs) != n:
        lz = raw.log_z if cur.logits is logits else (tracer.log_z(cur.logits) if tracer else _log_z(cur.logits))
        if math.isfinite(lz) and n <= _SMALL:
            probs = np.exp(cur.logits.astype(np.float64) - lz)
        elif math.isfinite(lz):
            probs = None  # a large array: only the few probabilities needed below
        else:
            probs = np.zeros(n)

    def p_at(index: np.ndarray) -> np.ndarray:
        if probs is not None:
            return probs[index].astype(np.float64)
        return np.exp(cur.logits[index].astype(np.float64) - lz)

    prob = float(probs[sel]) if probs is not None else float(p_at(np.array([sel]))[0])
    if not math.isfinite(prob):  # the logits were finite (raw_stats checks): a stage broke them
        raise SamplingError(f"the chain {chain.describe()} produced a NaN probability for token {token}")
    if draw is None:
        cdf_lo = 0.0
    elif probs is not None:
        cdf_lo = float(probs[:sel].sum(dtype=np.float64))
    else:
        cdf_lo = float(p_at(np.arange(sel)).sum())
    # probability after the chain of the raw top-k (0 when the chain removed it)
    top = raw.top_ids
    if cur.is_full_vocab:
        p_after = p_at(top.astype(np.intp))
    elif n <= _SMALL:
        eq = cur.ids == top[:, None]  # (k, n): where each raw top token sits now
        p_after = np.where(eq.any(axis=1), p_at(eq.argmax(axis=1)), 0.0) if n else np.zeros(len(top))
    elif n <= 65536:
        where = {t: i for i, t in enumerate(cur.ids.tolist())}
        pos = np.array([where.get(t, -1) for t in top.tolist()], dtype=np.intp)
        p_after = np.where(pos >= 0, p_at(np.maximum(pos, 0)), 0.0)
    else:
        p_after = np.zeros(len(top))
    raw_logit = float(logits[token])
    return SampleTrace(
        token=token,
        prob=prob,
        entropy=raw.entropy,
        top_ids=top,
        top_logits=raw.top_logits,
        top_p_before=raw.top_p,
        top_p_after=p_after,
        stages=tuple(tracer.stages) if tracer else (),
        n_final=n if n > _SMALL else _n_finite(cur.logits),
        draw=draw,
        draw_lo=cdf_lo,
        draw_hi=cdf_lo + prob,
        raw_logit=raw_logit,
        raw_p=raw.prob_of_logit(raw_logit),
    )
