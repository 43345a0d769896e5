"""Errors of the sampler chain (one line each, for the user)."""

from __future__ import annotations

import numpy as np


class SamplingError(ValueError):
    """A step that cannot be sampled (one line for the user): non-finite logits, no candidate left."""


class NonFiniteLogits(SamplingError):
    """The model produced NaN or +inf logits (damaged weights, a failing backend)."""

    def __init__(self, logits: np.ndarray) -> None:
        n_nan = int(np.count_nonzero(np.isnan(logits)))
        n_inf = int(np.count_nonzero(np.isposinf(logits)))
        n_all = int(np.count_nonzero(np.isneginf(logits))) if not (n_nan or n_inf) else 0
        if n_nan or n_inf:
            what = f"{n_nan:,} NaN and {n_inf:,} +inf of {len(logits):,}"
        else:
            what = f"all {n_all:,} are -inf"
        super().__init__(f"the model produced NaN/inf logits ({what}): its weights are damaged or the "
                         "backend failed; try another model file or --n-gpu-layers 0")
