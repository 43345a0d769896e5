"""Samplers that remove (or mask) candidates: top-k, top-p, min-p, typical, top-n-sigma, XTC.

Parameters that disable a sampler make it a no-op, like llama.cpp's ``llama_sampler_init_empty``
(e.g. ``top_k(0)``, ``top_p(1.0)``, ``min_p(0)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import Sampler, SeededSampler
from ..candidates import F32, NEG_INF, Candidates, logf, seq_sum_f32
from ..schema import Native, Param

_MIN_KEEP = Param(int, 1, 0, None, "keep at least this many")

class TopK(Sampler):
    """Keep the k highest logits (sorted). k <= 0 disables it."""

    name = "top_k"
    help = "keep the k most likely"
    schema = {"k": Param(int, 40, -1, None, "keep the k best (<= 0: off)")}
    native = Native("top_k", ("k",))
    uses_head = True  # truncates from the chain's precomputed head when it can

    def __init__(self, k: int = 40) -> None:
        self.k = int(k)

    def apply(self, cur: Candidates) -> None:
        if self.k <= 0:
            return
        k = min(self.k, len(cur))
        if not cur.sorted:
            head = cur.head()
            if head is not None and len(head.idx) >= k:
                cur.take(head.idx[:k], sorted=True)  # no scan of the vocabulary
                return
            cur.partial_sort(k)
        cur.truncate(k)

    def params(self) -> dict[str, Any]:
        return {"k": self.k}


class TopP(Sampler):
    """Nucleus: the smallest sorted prefix whose probability reaches p (at least min_keep)."""

    name = "top_p"
    help = "nucleus: smallest set with mass >= p"
    schema = {"p": Param(float, 0.95, 0.0, 1.0, "cumulative mass to keep (1: off)"),
              "min_keep": _MIN_KEEP}
    native = Native("top_p", ("p", "min_keep"))

    def __init__(self, p: float = 0.95, min_keep: int = 1) -> None:
        self.p, self.min_keep = F32(p), int(min_keep)

    def apply(self, cur: Candidates) -> None:
        if self.p >= 1.0:
            return
        cur.softmax(do_sort=False)  # probabilities over the current set, in its order
        cur.sort()  # llama.cpp sorts (adaptively) when the set is not sorted yet
        cum = np.cumsum(cur.probs, dtype=F32)  # float cum_sum += p, in sorted order
        # the first i with cum[i] >= p (cum never decreases) and i + 1 >= min_keep
        # (all -inf logits give NaN probabilities: nothing reaches p, all are kept, as in C)
        hit = max(int(np.searchsorted(cum, self.p, side="left")), self.min_keep - 1)
        if hit < len(cum) and cum[hit] >= self.p:
            cur.truncate(hit + 1)

    def params(self) -> dict[str, Any]:
        return {"p": float(self.p), "min_keep": self.min_keep}


class MinP(Sampler):
    """Keep candidates whose probability is at least p times the best one's."""

    name = "min_p"
    help = "keep tokens with p >= min_p * p_max"
    schema = {"p": Param(float, 0.05, 0.0, 1.0, "relative to the best token (0: off)"),
              "min_keep": _MIN_KEEP}
    native = Native("min_p", ("p", "min_keep"))
    uses_head = True  # truncates from the chain's precomputed head when it can

    def __init__(self, p: float = 0.05, min_keep: int = 1) -> None:
        self.p, self.min_keep = F32(p), int(min_keep)
        self._log_p = logf(self.p)

    def apply(self, cur: Candidates) -> None:
        if self.p <= 0 or len(cur) == 0:
            return
        if not cur.sorted:
            # llama.cpp's unsorted path keeps the survivors in their current order
            # llama.cpp starts its max at -FLT_MAX, so an all -inf set keeps nothing here
            mx = max(float(cur.max_logit()), float(-np.finfo(F32).max))
            min_logit = F32(F32(mx) + self._log_p)
            head = cur.head()
            if head is not None and min_logit > head.floor:
                keep = np.sort(head.idx[cur.logits[head.idx] >= min_logit])  # survivors all in the head
            else:
                keep = np.flatnonzero(cur.logits >= min_logit)
            if len(keep) and len(keep) >= self.min_keep:
                cur.take(keep)
                return
            cur.sort()
        min_logit = F32(cur.logits[0] + self._log_p)
        lg = cur.logits
        # sorted descending: the first logit below min_logit (from index min_keep, and never the
        # first) ends the survivors
        start = max(1, self.min_keep)
        below = np.flatnonzero(lg[start:] < min_logit)
        cur.truncate(start + int(below[0]) if len(below) else len(cur))

    def params(self) -> dict[str, Any]:
        return {"p": float(self.p), "min_keep": self.min_keep}


class Typical(Sampler):
    """Locally typical sampling: keep tokens whose surprise is closest to the entropy."""

    name = "typical"
    help = "locally typical sampling"
    schema = {"p": Param(float, 1.0, 0.0, 1.0, "typical mass to keep (1: off)"),
              "min_keep": _MIN_KEEP}
    native = Native("typical", ("p", "min_keep"))

    def __init__(self, p: float = 1.0, min_keep: int = 1) -> None:
        self.p, self.min_keep = F32(p), int(min_keep)

    def apply(self, cur: Candidates) -> None:
        if self.p >= 1.0:
            return
        probs = cur.softmax(do_sort=True)
        logp = logf(probs)
        # A zero probability (a -inf logit from top_n_sigma or a logit bias, or an
        # exp underflow) gives llama.cpp 0 * log 0 = NaN, a NaN entropy and an
        # undefined std::sort order: a llama.cpp bug. We count 0 log 0 as 0.
        with np.errstate(invalid="ignore"):
            terms = np.where(probs > 0, -probs * logp, F32(0)).astype(F32)
        entropy = seq_sum_f32(terms)
        shifted = np.abs(-logp - entropy).astype(F32)
        # std::sort on the shifted scores: exact ties have unspecified order in llama.cpp
        order = np.argsort(shifted, kind="stable")
        cum = np.cumsum(probs[order], dtype=F32)
        i = np.arange(len(order))
        ok = (cum > self.p) & ((self.min_keep == 0) | (i >= self.min_keep - 1))
        hit = np.flatnonzero(ok)
        last = int(hit[0]) + 1 if len(hit) else len(order)
        cur.take(order[:last], sorted=False)

    def params(self) -> dict[str, Any]:
        return {"p": float(self.p), "min_keep": self.min_keep}


class TopNSigma(Sampler):
    """Mask (-inf) logits more than n standard deviations below the maximum.

    Like llama.cpp, masked candidates stay in the array with a -inf logit.
    """

    name = "top_n_sigma"
    help = "mask logits below max - n*sigma"
    schema = {"n": Param(float, -1.0, None, None, "std devs below the max (<= 0: off)")}
    native = Native("top_n_sigma", ("n",))

    def __init__(self, n: float = -1.0) -> None:
        self.n = F32(n)

    def apply(self, cur: Candidates) -> None:
        if self.n <= 0 or len(cur) <= 1:
            return
        lg = cur.logits
        valid = lg[lg != NEG_INF]
        if len(valid) == 0:
            return
        mx = F32(max(float(lg[0]), float(valid.max())))
        mean = F32(seq_sum_f32(valid) / F32(len(valid)))
        # llama.cpp: `float acc += pow(l - mean, 2)` rounds to float after every
        # addition; we sum in double (a sequential replay would cost a Python loop
        # over the vocabulary). Only tokens within float noise of the cut can differ.
        acc = F32(np.sum((valid - mean).astype(np.float64) ** 2))
        std = F32(np.sqrt(F32(acc / F32(len(valid)))))
        cur.logits = np.where(lg < F32(mx - self.n * std), NEG_INF, lg).astype(F32)
        self.last_note = f"σ={float(std):.3f} cut<{float(mx - self.n * std):.3f}"

    def params(self) -> dict[str, Any]:
        return {"n": float(self.n)}


class XTC(SeededSampler):
    """Exclude Top Choices: with some probability, drop every top token but the last one above threshold."""

    name = "xtc"
    help = "exclude top choices"
    schema = {"probability": Param(float, 0.5, 0.0, 1.0, "chance of removing the top choices per step"),
              "threshold": Param(float, 0.1, 0.0, 1.0, "top choices: probability at least this (> 0.5: off)"),
              "min_keep": _MIN_KEEP}
    native = Native("xtc", ("probability", "threshold", "min_keep", "seed"))

    def __init__(self, probability: float = 0.5, threshold: float = 0.1, min_keep: int = 1, seed: int = 0) -> None:
        super().__init__(seed)
        self.probability, self.threshold, self.min_keep = F32(probability), F32(threshold), int(min_keep)

    def apply(self, cur: Candidates) -> None:
        self.last_draw = None
        self.last_note = ""
        if self.probability <= 0 or self.threshold > 0.5 or len(cur) < 2:
            return
        chance = self.rng.uniform_float()
        self.last_draw = chance
        if chance > self.probability:
            self.last_note = f"skipped (chance {chance:.3f} > {float(self.probability):.2f})"
            return
        probs = cur.softmax(do_sort=True)
        above = probs >= self.threshold
        # pos_last: the last index of the leading run of candidates at or above the threshold
        pos_last = int(np.argmin(above)) - 1 if not above.all() else len(probs) - 1
        pos_last = max(pos_last, 0)
        if len(cur) - pos_last >= self.min_keep and pos_last > 0:
            cur.take(slice(pos_last, None))
            self.last_note = f"removed the top {pos_last}"

    def params(self) -> dict[str, Any]:
        return {"probability": float(self.probability), "threshold": float(self.threshold),
                "min_keep": self.min_keep, "seed": self.seed}

