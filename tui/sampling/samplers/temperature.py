"""Temperature: a fixed one and llama.cpp's dynamic (entropy-driven) one."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import Sampler
from ..candidates import F32, NEG_INF, Candidates, logf, seq_sum_f32
from ..schema import Native, Param

_TINY_T = 1e-30  # above it, logit / t overflows only for |logit| > 3e8: no model's (the chain checks anyway)


def _finite_f32(logit: np.float32, t: np.float32) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.isfinite(F32(logit) / t))


class Temp(Sampler):
    """Divide logits by t. t <= 0 keeps only the (first) best logit; the rest become -inf."""

    name = "temp"
    help = "divide logits by t"
    schema = {"t": Param(float, 0.8, None, None, "temperature (<= 0: keep only the best)")}
    native = Native("temp", ("t",))
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
    help = "dynamic temperature"
    schema = {"t": Param(float, 0.8, None, None, "base temperature (<= 0: keep only the best)"),
              "delta": Param(float, 0.0, 0.0, None, "T ranges over t ± delta (0: a fixed t)"),
              "exponent": Param(float, 1.0, 0.0, None, "shapes how entropy maps to T")}
    native = Native("temp_ext", ("t", "delta", "exponent"))
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

