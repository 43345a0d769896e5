"""Samplers that pick the token and so end a chain: greedy, dist, mirostat (v1 and 2.0), adaptive-p."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..base import Sampler, SeededSampler
from ..candidates import F32, NEG_INF, Candidates, expf, logf, seq_sum_f32
from ..schema import BuildContext, Native, Param


class Greedy(Sampler):
    """Select the highest logit (the first one on ties: llama.cpp scans with a strict ``>``)."""

    name = "greedy"
    help = "always the most likely token"
    native = Native("greedy")
    selects = True

    def apply(self, cur: Candidates) -> None:
        cur.selected = cur.argmax() if len(cur) else -1


class Dist(SeededSampler):
    """Draw from the softmax of the candidates, walking them in their current order.

    llama.cpp (``llama_sampler_dist_apply``): float32 ``expf(l - max)``, a
    double running sum, one canonical double ``u``, then the first candidate
    whose double cumulative sum reaches ``u * sum``. One candidate: p = 1, but
    the generator still advances (to stay aligned with backend sampling).
    """

    name = "dist"
    help = "draw from the distribution (seeded)"
    native = Native("dist", ("seed",))
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


class Mirostat(SeededSampler):
    """Mirostat v1 (Basu et al.): estimate Zipf's s from the top m, pick k, draw; adapt mu."""

    name = "mirostat"
    help = "mirostat v1 (target surprise)"
    schema = {"tau": Param(float, 5.0, 0.0, None, "target surprise (bits)"),
              "eta": Param(float, 0.1, 0.0, None, "learning rate of mu"),
              "m": Param(int, 100, 1, None, "candidates that estimate Zipf's exponent")}
    native = Native("mirostat", ("n_vocab", "seed", "tau", "eta", "m"))
    selects = True

    def __init__(self, n_vocab: int, seed: int = 0, tau: float = 5.0, eta: float = 0.1, m: int = 100) -> None:
        super().__init__(seed)
        self.n_vocab, self.tau, self.eta, self.m = int(n_vocab), F32(tau), F32(eta), int(m)
        self.mu = F32(2.0) * self.tau

    @classmethod
    def from_params(cls, ctx: BuildContext, params: Mapping[str, Any]) -> Sampler:
        return cls(ctx.n_vocab, **cls.resolve(ctx, params))  # the model's vocabulary size, as llama.cpp's

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


class MirostatV2(SeededSampler):
    """Mirostat 2.0: drop candidates whose surprise -log2(p) exceeds mu, draw, adapt mu."""

    name = "mirostat_v2"
    help = "mirostat 2.0"
    schema = {"tau": Param(float, 5.0, 0.0, None, "target surprise (bits)"),
              "eta": Param(float, 0.1, 0.0, None, "learning rate of mu")}
    native = Native("mirostat_v2", ("seed", "tau", "eta"))
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


class AdaptiveP(SeededSampler):
    """adaptive-p: favour tokens near a target probability, tracked by an EMA of chosen probabilities."""

    name = "adaptive_p"
    help = "favour a target probability"
    schema = {"target": Param(float, 0.5, None, 1.0, "probability to favour (< 0: plain dist)"),
              "decay": Param(float, 0.9, 0.0, 0.99, "EMA decay of the chosen probabilities")}
    native = Native("adaptive_p", ("target", "decay", "seed"))
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

