"""A chain of samplers that is itself a sampler, and records what every stage did."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .base import Sampler
from .candidates import Candidates, _arange
from .trace import NEGLIGIBLE_LOGIT_GAP, RawStats, SampleTrace, Scratch, StageTrace, raw_stats

TOP_K_DISPLAY = 10
TOP_SURVIVORS = 5


def _log_z(logits: np.ndarray) -> float:
    """log Σ exp(logits), skipping candidates that cannot matter (see trace.py)."""
    if len(logits) == 0:
        return float("-inf")
    m = float(logits.max())
    if not np.isfinite(m):
        return m
    if len(logits) > 4096:
        logits = logits[logits > m - NEGLIGIBLE_LOGIT_GAP]
    return m + float(np.log(np.exp(logits.astype(np.float64) - m).sum()))


def _positions(ids_in: np.ndarray, ids_out: np.ndarray) -> np.ndarray:
    """Where each id of ``ids_out`` sits in ``ids_in``."""
    if ids_in is _arange(len(ids_in)):
        return ids_out.astype(np.intp)
    order = np.argsort(ids_in, kind="stable")
    return order[np.searchsorted(ids_in[order], ids_out)]


class Chain(Sampler):
    """Applies its samplers in order; ``accept``/``reset`` reach every member.

    ``sample(logits)`` is llama.cpp's ``llama_sampler_sample``: build the
    candidates from the logits in token-id order, apply the chain, take the
    selected candidate, and return a :class:`SampleTrace` of every stage.
    ``accept`` is left to the caller (as the generation loop does) so a step can
    be re-sampled without changing sampler state: use ``clone()``.
    """

    name = "chain"

    def __init__(self, samplers: Iterable[Sampler] = (), *, trace: bool = True) -> None:
        self.samplers: list[Sampler] = list(samplers)
        self.trace = trace
        self._scratch = Scratch()

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

    def describe(self) -> str:
        return " → ".join(s.describe() for s in self.samplers)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samplers]

    # -- sampling with a trace ---------------------------------------------------

    def sample(self, logits: np.ndarray) -> SampleTrace:
        raw = raw_stats(logits, TOP_K_DISPLAY, self._scratch)
        cur = Candidates.from_logits(logits)
        cur.hint_argmax(raw.argmax)
        initial_logits = cur.logits
        stages: list[StageTrace] = []
        for s in self.samplers:
            if self.trace:
                stages.append(self._traced_apply(s, cur))
            else:
                s.apply(cur)
        if cur.selected < 0 or cur.selected >= len(cur):
            raise RuntimeError(f"the chain {self.describe()!r} selected no token: end it with greedy, dist or mirostat")
        return self._finish(cur, raw, tuple(stages), logits, initial_logits)

    def _traced_apply(self, s: Sampler, cur: Candidates) -> StageTrace:
        ids_in, logits_in = cur.ids, cur.logits
        n_in = int(np.isfinite(logits_in).sum()) if len(logits_in) <= 4096 else len(logits_in)
        s.apply(cur)
        changed_ids = cur.ids is not ids_in
        changed_logits = cur.logits is not logits_in
        note = getattr(s, "last_note", "")
        if not changed_ids and not changed_logits:
            n_out = n_in
            return StageTrace(s.name, n_in, n_out, 0.0, (), (), note)
        finite_out = np.isfinite(cur.logits)
        n_out = int(finite_out.sum())
        # mass removed = input probability of candidates that did not survive
        lz_in = _log_z(logits_in)
        if changed_ids or n_out < len(cur.logits):
            surv_ids = cur.ids[finite_out]
            pos = _positions(ids_in, surv_ids) if changed_ids else np.flatnonzero(finite_out)
            kept = float(np.exp(logits_in[pos].astype(np.float64) - lz_in).sum()) if np.isfinite(lz_in) else 0.0
            mass_removed = max(0.0, 1.0 - kept)
        else:
            mass_removed = 0.0
        top_ids, top_probs = self._top_survivors(cur)
        if len(logits_in) > 4096 and not changed_ids:
            n_in = n_out if n_out == len(logits_in) else n_in
        return StageTrace(s.name, n_in, n_out, mass_removed, top_ids, top_probs, note)

    @staticmethod
    def _top_survivors(cur: Candidates) -> tuple[tuple[int, ...], tuple[float, ...]]:
        logits = cur.logits
        if len(logits) == 0:
            return (), ()
        k = min(TOP_SURVIVORS, len(logits))
        if cur.sorted:
            idx = np.arange(k)
        elif len(logits) > 4 * k:
            part = np.argpartition(-logits, k - 1)[:k]
            idx = part[np.argsort(-logits[part], kind="stable")]
        else:
            idx = np.argsort(-logits, kind="stable")[:k]
        lz = _log_z(logits)
        probs = np.exp(logits[idx].astype(np.float64) - lz) if np.isfinite(lz) else np.zeros(k)
        return tuple(int(i) for i in cur.ids[idx]), tuple(float(p) for p in probs)

    def _finish(
        self,
        cur: Candidates,
        raw: RawStats,
        stages: tuple[StageTrace, ...],
        logits: np.ndarray,
        initial_logits: np.ndarray,
    ) -> SampleTrace:
        sel = cur.selected
        token = int(cur.ids[sel])
        draw = getattr(self.samplers[-1], "last_draw", None) if self.samplers else None
        n = len(cur.ids)
        # The final distribution is what the selecting sampler drew from: its
        # probabilities when it computed them, else the softmax of the final logits.
        if cur.probs is not None and len(cur.probs) == n:
            probs = cur.probs

            def p_of(index: np.ndarray) -> np.ndarray:
                return probs[index].astype(np.float64)

        else:
            # unchanged logits (e.g. greedy straight on the raw distribution): reuse the raw normaliser
            lz = raw.log_z if cur.logits is initial_logits else _log_z(cur.logits)
            final_logits = cur.logits

            def p_of(index: np.ndarray) -> np.ndarray:
                if not np.isfinite(lz):
                    return np.zeros(len(index))
                return np.exp(final_logits[index].astype(np.float64) - lz)

        prob = float(p_of(np.array([sel]))[0])
        cdf_lo = float(p_of(np.arange(sel)).sum()) if draw is not None else 0.0
        # probability after the chain of the raw top-k (0 when the chain removed it)
        if cur.ids is _arange(n):
            p_after = p_of(raw.top_ids.astype(np.intp))
        else:
            pos = {t: i for i, t in enumerate(cur.ids.tolist())} if n <= 65536 else {}
            where = np.array([pos.get(t, -1) for t in raw.top_ids.tolist()], dtype=np.intp)
            p_after = np.where(where >= 0, p_of(np.maximum(where, 0)), 0.0)
        p_after.flags.writeable = False
        n_final = n if n > 4096 else int(np.isfinite(cur.logits).sum())
        raw_logit = float(logits[token])
        return SampleTrace(
            token=token,
            prob=prob,
            entropy=raw.entropy,
            top_ids=raw.top_ids,
            top_logits=raw.top_logits,
            top_p_before=raw.top_p,
            top_p_after=p_after,
            stages=stages,
            n_final=n_final,
            draw=draw,
            draw_lo=cdf_lo,
            draw_hi=cdf_lo + prob,
            raw_logit=raw_logit,
            raw_p=raw.prob_of_logit(raw_logit),
        )
