"""The samplers, one small class each, with llama.cpp's names and semantics.

The reference is llama.cpp's ``src/llama-sampler.cpp`` (the version vendored in
the llama-cpp-python we depend on); ``tests/test_samplers.py`` compares every
sampler here with llama.cpp's own through its C API. Where llama.cpp does
something surprising we do the same and say so.

Parameters that disable a sampler make it a no-op, like llama.cpp's
``llama_sampler_init_empty`` (e.g. ``top_k(0)``, ``top_p(1.0)``, ``min_p(0)``).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .base import Sampler
from .candidates import F32, Candidates, expf, logf, seq_sum_f32
from .rng import Mt19937, resolve_seed

NEG_INF = F32(-np.inf)


# -- selecting samplers -------------------------------------------------------------


class Greedy(Sampler):
    """Select the highest logit (the first one on ties: llama.cpp scans with a strict ``>``)."""

    name = "greedy"
    selects = True

    def apply(self, cur: Candidates) -> None:
        cur.selected = cur.argmax() if len(cur) else -1


class _Seeded(Sampler):
    """Samplers with a std::mt19937 of their own; ``reset`` reseeds it."""

    def __init__(self, seed: int) -> None:
        self.seed = resolve_seed(seed)
        self.rng = Mt19937(self.seed)
        self.last_draw: float | None = None

    def reset(self) -> None:
        self.rng.reseed(self.seed)
        self.last_draw = None

    def clone(self) -> Sampler:
        other = super().clone()
        other.rng = self.rng.copy()  # type: ignore[attr-defined]
        return other


class Dist(_Seeded):
    """Draw from the softmax of the candidates, walking them in their current order.

    llama.cpp (``llama_sampler_dist_apply``): float32 ``expf(l - max)``, a
    double running sum, one canonical double ``u``, then the first candidate
    whose double cumulative sum reaches ``u * sum``. One candidate: p = 1, but
    the generator still advances (to stay aligned with backend sampling).
    """

    name = "dist"
    selects = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)

    def apply(self, cur: Candidates) -> None:
        n = len(cur)
        self.last_draw = None
        if n == 0:
            cur.selected = -1
            return
        if n == 1:
            self.last_draw = self.rng.uniform_double()
            cur.probs = np.ones(1, F32)
            cur.selected = 0
            return
        ex = expf(cur.logits - cur.max_logit())
        cum = np.cumsum(ex, dtype=np.float64)
        total = cum[-1]
        u = self.rng.uniform_double()
        self.last_draw = u
        sel = int(np.searchsorted(cum, total * u, side="left"))
        cur.selected = min(sel, n - 1)  # llama.cpp falls back to the last candidate
        cur.probs = (ex.astype(np.float64) / total).astype(F32)

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}


class Mirostat(_Seeded):
    """Mirostat v1 (Basu et al.): estimate Zipf's s from the top m, pick k, draw; adapt mu."""

    name = "mirostat"
    selects = True

    def __init__(self, n_vocab: int, seed: int = 0, tau: float = 5.0, eta: float = 0.1, m: int = 100) -> None:
        super().__init__(seed)
        self.n_vocab, self.tau, self.eta, self.m = int(n_vocab), F32(tau), F32(eta), int(m)
        self.mu = F32(2.0) * self.tau

    def reset(self) -> None:
        super().reset()
        self.mu = F32(2.0) * self.tau

    def apply(self, cur: Candidates) -> None:
        cur.softmax(do_sort=True)
        p = cur.probs
        n = max(min(self.m - 1, len(cur) - 1), 0)
        i = np.arange(n, dtype=F32)
        # every operation in float32, as the C code does
        t_i = logf(((i + F32(2)) / (i + F32(1))).astype(F32))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            b_i = logf((p[:n] / p[1 : n + 1]).astype(F32))
            sum_ti_bi = seq_sum_f32((t_i * b_i).astype(F32))
            sum_ti_sq = seq_sum_f32((t_i * t_i).astype(F32))
            s_hat = F32(sum_ti_bi / sum_ti_sq) if sum_ti_sq != 0 else F32(np.nan)
            eps = F32(s_hat - F32(1))
            num = F32(eps * _powf(F32(2), self.mu))
            den = F32(F32(1) - _powf(F32(self.n_vocab), -eps))
            k = _powf(F32(num / den), F32(F32(1) / s_hat))
        k_int = _c_int(k)
        cur.partial_sort(max(k_int, 1)) if not cur.sorted else cur.truncate(max(k_int, 1))
        cur.softmax(do_sort=True)
        idx, u = self.rng.discrete(cur.probs)
        self.last_draw = u
        cur.selected = idx
        surprise = -float(np.log2(np.float64(cur.probs[idx])).astype(F32))
        self.mu = F32(self.mu - self.eta * F32(F32(surprise) - self.tau))
        self.last_note = f"k={max(k_int, 1)} mu={float(self.mu):.3f}"

    def params(self) -> dict[str, Any]:
        return {"tau": float(self.tau), "eta": float(self.eta), "m": self.m, "seed": self.seed}


class MirostatV2(_Seeded):
    """Mirostat 2.0: drop candidates whose surprise -log2(p) exceeds mu, draw, adapt mu."""

    name = "mirostat_v2"
    selects = True

    def __init__(self, seed: int = 0, tau: float = 5.0, eta: float = 0.1) -> None:
        super().__init__(seed)
        self.tau, self.eta = F32(tau), F32(eta)
        self.mu = F32(2.0) * self.tau

    def reset(self) -> None:
        super().reset()
        self.mu = F32(2.0) * self.tau

    def apply(self, cur: Candidates) -> None:
        cur.softmax(do_sort=True)
        with np.errstate(divide="ignore"):  # p = 0 -> infinite surprise, as log2f gives
            surprise = (-np.log2(cur.probs.astype(np.float64))).astype(F32)
        over = np.flatnonzero(surprise > self.mu)
        keep = int(over[0]) if len(over) else len(cur)
        cur.truncate(max(keep, 1))
        cur.softmax(do_sort=True)
        idx, u = self.rng.discrete(cur.probs)
        self.last_draw = u
        cur.selected = idx
        observed = -float(np.log2(np.float64(cur.probs[idx])).astype(F32))
        self.mu = F32(self.mu - self.eta * F32(F32(observed) - self.tau))
        self.last_note = f"kept {max(keep, 1)} mu={float(self.mu):.3f}"

    def params(self) -> dict[str, Any]:
        return {"tau": float(self.tau), "eta": float(self.eta), "seed": self.seed}


class AdaptiveP(_Seeded):
    """adaptive-p: favour tokens near a target probability, tracked by an EMA of chosen probabilities."""

    name = "adaptive_p"
    changes_logits = True
    selects = True
    _WIDTH, _PEAK, _SHARP = F32(0.3), F32(5.0), F32(10.0)

    def __init__(self, target: float = 0.5, decay: float = 0.9, seed: int = 0) -> None:
        super().__init__(seed)
        self.target = F32(target)
        self.decay = F32(min(max(decay, 0.0), 0.99))
        self._reset_ema()

    def _reset_ema(self) -> None:
        self.weighted_sum = F32(self.target / (F32(1) - self.decay))
        self.total_weight = F32(F32(1) / (F32(1) - self.decay))
        self.pending: tuple[int, float] | None = None

    def reset(self) -> None:
        super().reset()
        self._reset_ema()

    def apply(self, cur: Candidates) -> None:
        cur.softmax(do_sort=False)
        if self.target < 0:
            idx, u = self.rng.discrete(cur.probs)
            self.last_draw, cur.selected = u, idx
            return
        original = cur.probs
        target = F32(min(max(float(self.target), 0.0), 1.0))
        adapted = target if self.total_weight == 0 else F32(F32(2) * target - F32(self.weighted_sum / self.total_weight))
        adapted = F32(min(max(float(adapted), 0.0), 1.0))
        inv_width = F32(F32(1) / self._WIDTH)
        dist = np.abs((original - adapted) * inv_width).astype(F32)
        new = (self._PEAK - self._SHARP * dist * dist / (F32(1) + dist)).astype(F32)
        cur.logits = np.where(cur.logits == NEG_INF, cur.logits, new)  # -inf stays masked
        cur.softmax(do_sort=False)
        idx, u = self.rng.discrete(cur.probs)
        self.last_draw, cur.selected = u, idx
        self.pending = (int(cur.ids[idx]), float(original[idx]))
        self.last_note = f"target {float(adapted):.3f}"

    def accept(self, token: int) -> None:
        if self.pending is not None and self.pending[0] == token:
            self.weighted_sum = F32(F32(self.pending[1]) + self.decay * self.weighted_sum)
            self.total_weight = F32(F32(1) + self.decay * self.total_weight)
        self.pending = None

    def params(self) -> dict[str, Any]:
        return {"target": float(self.target), "decay": float(self.decay), "seed": self.seed}


def _powf(a: np.float32, b: np.float32) -> np.float32:
    with np.errstate(all="ignore"):
        return np.power(np.float64(a), np.float64(b)).astype(F32)


def _c_int(x: np.float32) -> int:
    """C's ``int(float)`` on x86-64 (cvttss2si): truncation; NaN, inf and out-of-range
    values give INT_MIN (the "integer indefinite" value)."""
    if not np.isfinite(x) or not (-(2.0**31) <= float(x) < 2.0**31):
        return -(2**31)
    return int(float(x))


# -- truncating samplers ------------------------------------------------------------


class TopK(Sampler):
    """Keep the k highest logits (sorted). k <= 0 disables it."""

    name = "top_k"
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

    def __init__(self, p: float = 0.95, min_keep: int = 1) -> None:
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

    def __init__(self, n: float = 1.0) -> None:
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


class XTC(_Seeded):
    """Exclude Top Choices: with some probability, drop every top token but the last one above threshold."""

    name = "xtc"

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


# -- logit transforms ----------------------------------------------------------------


_TINY_T = 1e-30  # above it, logit / t overflows only for |logit| > 3e8: no model's (the chain checks anyway)


def _finite_f32(logit: np.float32, t: np.float32) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isfinite(F32(logit) / t))


class Temp(Sampler):
    """Divide logits by t. t <= 0 keeps only the (first) best logit; the rest become -inf."""

    name = "temp"
    changes_logits = True

    def __init__(self, t: float = 0.8) -> None:
        self.t = F32(t)

    def apply(self, cur: Candidates) -> None:
        _temp(cur, self.t)

    def params(self) -> dict[str, Any]:
        return {"t": float(self.t)}


def _temp(cur: Candidates, t: np.float32) -> None:
    if len(cur) == 0:
        return
    if t <= 0 or (t < _TINY_T and not _finite_f32(cur.max_logit(), t)):
        # t <= 0, or so small that the best logit / t overflows float32 (C gets inf, then NaN
        # probabilities): keep only the best, the limit of t -> 0
        best = cur.argmax()
        lg = np.full(len(cur), NEG_INF, dtype=F32)
        lg[best] = cur.logits[best]
        cur.logits = lg
        return
    with np.errstate(over="ignore"):  # a tiny t overflows to inf, as in C
        cur.logits = (cur.logits / t).astype(F32)


class TempExt(Sampler):
    """Dynamic temperature: T in [t - delta, t + delta] from the normalised entropy."""

    name = "temp_ext"
    changes_logits = True

    def __init__(self, t: float = 0.8, delta: float = 0.0, exponent: float = 1.0) -> None:
        self.t, self.delta, self.exponent = F32(t), F32(delta), F32(exponent)

    def apply(self, cur: Candidates) -> None:
        if self.delta <= 0:
            _temp(cur, self.t)
            return
        if len(cur) <= 1:
            return
        min_t = F32(max(0.0, float(self.t - self.delta)))
        max_t = F32(self.t + self.delta)
        max_entropy = F32(-logf(F32(1.0) / F32(len(cur))))
        probs = cur.softmax(do_sort=True)
        pos = probs[probs > 0]
        entropy = F32(-seq_sum_f32((pos * logf(pos)).astype(F32)))
        norm = F32(entropy / max_entropy)
        dyn_t = F32(min_t + (max_t - min_t) * F32(float(norm) ** float(self.exponent)))
        _temp(cur, dyn_t)
        # llama.cpp re-normalises in double after scaling
        with np.errstate(invalid="ignore", over="ignore"):
            ex = np.exp(cur.logits.astype(np.float64) - np.float64(cur.logits[0]))
        cur.probs = (ex.astype(F32) / ex.sum()).astype(F32)
        self.last_note = f"T={float(dyn_t):.3f}"

    def params(self) -> dict[str, Any]:
        return {"t": float(self.t), "delta": float(self.delta), "exponent": float(self.exponent)}


class LogitBias(Sampler):
    """Add a fixed bias to chosen tokens' logits (-inf bans a token).

    llama.cpp leaves the ``sorted`` flag alone even though a bias can break
    the order; so do we.
    """

    name = "logit_bias"
    changes_logits = True

    def __init__(self, bias: Mapping[int, float] | None = None) -> None:
        self.bias = {int(k): float(v) for k, v in (bias or {}).items()}
        self._tok = np.fromiter(self.bias.keys(), dtype=np.int64, count=len(self.bias))
        self._val = np.fromiter(self.bias.values(), dtype=F32, count=len(self.bias))

    def apply(self, cur: Candidates) -> None:
        if not self.bias:
            return
        if cur.is_full_vocab:
            ok = (self._tok >= 0) & (self._tok < len(cur))
            pos, val = self._tok[ok], self._val[ok]
        else:
            order = np.argsort(cur.ids, kind="stable")
            where = np.minimum(np.searchsorted(cur.ids[order], self._tok), len(order) - 1)
            hit = cur.ids[order][where] == self._tok
            pos, val = order[where[hit]], self._val[hit]
        if len(pos):
            cur.edit(pos, (cur.logits[pos] + val).astype(F32))

    def params(self) -> dict[str, Any]:
        return {"bias": {str(k): v for k, v in self.bias.items()}}


class Penalties(Sampler):
    """Repetition (×/÷ repeat), frequency (−count·freq) and presence (−present) penalties
    over the last ``last_n`` accepted tokens."""

    name = "penalties"
    changes_logits = True

    def __init__(self, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0, presence: float = 0.0) -> None:
        self.last_n = max(int(last_n), 0)
        self.repeat, self.frequency, self.presence = F32(repeat), F32(frequency), F32(presence)
        self.prev: deque[int] = deque()
        self.counts: Counter[int] = Counter()

    @property
    def disabled(self) -> bool:
        return self.last_n == 0 or (self.repeat == 1 and self.frequency == 0 and self.presence == 0)

    def accept(self, token: int) -> None:
        if self.last_n == 0:
            return
        self.counts[token] += 1
        if len(self.prev) >= self.last_n:
            old = self.prev.popleft()
            self.counts[old] -= 1
            if self.counts[old] == 0:
                del self.counts[old]
        self.prev.append(token)

    def reset(self) -> None:
        self.prev.clear()
        self.counts.clear()

    def apply(self, cur: Candidates) -> None:
        if self.disabled:
            return
        if self.counts:
            n = len(self.counts)
            toks = np.fromiter(self.counts.keys(), dtype=np.int64, count=n)
            cnts = np.fromiter(self.counts.values(), dtype=F32, count=n)
            if cur.is_full_vocab:
                pos, cnt = toks, cnts
            else:
                order = np.argsort(cur.ids, kind="stable")
                where = np.searchsorted(cur.ids[order], toks)
                where = np.minimum(where, len(order) - 1)
                hit = cur.ids[order][where] == toks
                pos, cnt = order[where[hit]], cnts[hit]
            sub = cur.logits[pos]  # float32 throughout, as in C
            if self.repeat != 1:
                sub = np.where(sub <= 0, sub * self.repeat, sub / self.repeat)
            if self.frequency != 0 or self.presence != 0:
                sub = sub - (cnt * self.frequency + self.presence)
            if len(pos):
                cur.edit(pos, sub)
        cur.sorted = False

    def params(self) -> dict[str, Any]:
        return {"last_n": self.last_n, "repeat": float(self.repeat), "frequency": float(self.frequency),
                "presence": float(self.presence)}


class DryVocab:
    """What DRY needs from the model: token pieces and a tokenizer (no llama_cpp import here)."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes], tokenize: Callable[[str], list[int]]) -> None:
        self.n_vocab = n_vocab
        self.piece = piece
        self.tokenize = tokenize
        self._breakers: dict[tuple[str, ...], dict[int, list[list[int]]]] = {}

    def breakers(self, strings: Sequence[str], max_char_len: int = 40, max_seq_len: int = 20) -> dict[int, list[list[int]]]:
        """llama.cpp's ``get_overlapping_token_sequences`` for every breaker string, cached."""
        key = tuple(strings)
        cached = self._breakers.get(key)
        if cached is not None:
            return cached
        out: dict[int, list[list[int]]] = {}
        pieces = [self.piece(t) for t in range(self.n_vocab)]
        for s in strings:
            raw = s.encode("utf-8")[:max_char_len]
            if not raw:
                continue
            for tok, word in enumerate(pieces):
                if raw in word:
                    out.setdefault(tok, [])
                    if [] not in out[tok]:
                        out[tok].append([])
                    continue
                pos = word.find(raw[:1])
                while pos != -1:
                    i = 1
                    match = True
                    while i < len(raw) and pos + i < len(word):
                        if word[pos + i] != raw[i]:
                            match = False
                            break
                        i += 1
                    if match:
                        tail = self.tokenize(raw[i:].decode("utf-8", errors="ignore"))[:max_seq_len]
                        seqs = out.setdefault(tok, [])
                        if tail not in seqs:
                            seqs.append(tail)
                    pos = word.find(raw[:1], pos + 1)
        self._breakers[key] = out
        return out


class Dry(Sampler):
    """DRY ("Don't Repeat Yourself"): penalise tokens that would extend a repeated sequence.

    A port of llama.cpp's port of koboldcpp's implementation: restart sequences
    from the breaker strings, a reverse Z-algorithm over the last tokens, then
    ``multiplier * base ** (length - allowed_length)`` off each extending token.
    """

    name = "dry"
    changes_logits = True

    def __init__(
        self,
        vocab: DryVocab | None = None,
        multiplier: float = 0.8,
        base: float = 1.75,
        allowed_length: int = 2,
        penalty_last_n: int = -1,
        sequence_breakers: Sequence[str] = ("\n", ":", '"', "*"),
        n_ctx: int = 4096,
    ) -> None:
        self.multiplier, self.base = F32(multiplier), F32(base)
        self.allowed_length = int(allowed_length)
        # like common/arg.cpp: -1 means the context size
        self.penalty_last_n = max(n_ctx if penalty_last_n == -1 else int(penalty_last_n), 0)
        self.sequence_breakers = list(sequence_breakers)
        self.enabled = self.multiplier != 0 and self.base >= 1 and self.penalty_last_n != 0
        self.processed = vocab.breakers(self.sequence_breakers) if (vocab and self.enabled) else {}
        self.last_tokens: deque[int] = deque(maxlen=self.penalty_last_n or None)

    def accept(self, token: int) -> None:
        if self.enabled:
            self.last_tokens.append(token)

    def reset(self) -> None:
        self.last_tokens.clear()

    def clone(self) -> Sampler:
        other = Dry.__new__(Dry)
        other.__dict__.update(self.__dict__)
        other.last_tokens = deque(self.last_tokens, maxlen=self.last_tokens.maxlen)
        return other

    def apply(self, cur: Candidates) -> None:
        if not self.enabled:
            return
        last_n = min(len(self.last_tokens), self.penalty_last_n)
        if last_n <= self.allowed_length:
            return
        toks = list(self.last_tokens)

        def rat(i: int) -> int:  # ring_buffer::rat: i-th token from the end
            return toks[len(toks) - 1 - i]

        # step 1: restart sequences limit the repetition length
        rep_limit = last_n
        for i in range(last_n):
            seqs = self.processed.get(rat(i))
            if not seqs:
                continue
            longest = -1
            for tail in seqs:
                n = len(tail)
                if n > longest and n <= i and all(tail[o] == rat(i - o - 1) for o in range(n)):
                    longest = n
            if longest >= 0:
                rep_limit = i - longest
                break
        if rep_limit < self.allowed_length:
            return
        # step 2: reverse Z-algorithm
        repeat = [0] * last_n
        last = last_n - 1
        rt = lt = 0
        for k in range(1, last_n):
            if k > rt:
                n = 0
                while n + k < last_n and rat(n) == rat(n + k):
                    n += 1
                repeat[last - k] = min(n, rep_limit)
                if n > 0:
                    lt, rt = k, k + n - 1
            else:
                p = k - lt
                right = rt - k + 1
                if repeat[last - p] < right:
                    repeat[last - k] = min(repeat[last - p], rep_limit)
                else:
                    i = rt + 1
                    while i < last_n and rat(i) == rat(i - k):
                        i += 1
                    repeat[last - k] = min(i - k, rep_limit)
                    lt, rt = k, i - 1
        # step 3: the longest repeat each next token would extend
        max_repeat: dict[int, int] = {}
        for i in range(last_n - 1):
            length = repeat[i]
            if length >= self.allowed_length:
                tok = rat(last_n - 2 - i)
                if max_repeat.get(tok, -1) < length:
                    max_repeat[tok] = length
        if not max_repeat:
            cur.sorted = False
            return
        # step 4: penalties (not on single-token sequence breakers)
        max_exp = int(F32(88.7228391) / F32(math.log(float(self.base)))) if self.base > F32(1.000001) else 0
        toks_arr, pens = [], []
        for tok, length in max_repeat.items():
            if [] in self.processed.get(tok, []):
                continue
            e = length - self.allowed_length
            if max_exp > 0 and e > max_exp:
                e = max_exp
            toks_arr.append(tok)
            pens.append(F32(self.multiplier * F32(math.pow(float(self.base), e))))
        if toks_arr:
            if cur.is_full_vocab:
                pos = np.array([t for t in toks_arr if 0 <= t < len(cur)], dtype=np.int64)
                pen = np.array([p for t, p in zip(toks_arr, pens) if 0 <= t < len(cur)], dtype=F32)
            else:
                where = {t: i for i, t in enumerate(cur.ids.tolist())}
                pairs = [(where[t], p) for t, p in zip(toks_arr, pens) if t in where]
                pos = np.array([i for i, _ in pairs], dtype=np.int64)
                pen = np.array([p for _, p in pairs], dtype=F32)
            if len(pos):
                cur.edit(pos, (cur.logits[pos] - pen).astype(F32))
            self.last_note = f"penalised {len(toks_arr)} token(s)"
        cur.sorted = False

    def params(self) -> dict[str, Any]:
        return {"multiplier": float(self.multiplier), "base": float(self.base),
                "allowed_length": self.allowed_length, "penalty_last_n": self.penalty_last_n,
                "sequence_breakers": self.sequence_breakers}
