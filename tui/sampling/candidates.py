"""The candidate array the samplers work on: llama.cpp's ``llama_token_data_array``.

Structure of arrays instead of an array of ``{id, logit, p}`` structs, so every
sampler is a handful of vectorised numpy operations. Order matters exactly as in
llama.cpp: the final draw walks the candidates in their current order (sorted
by logit after a truncating sampler, token-id order otherwise).
"""

from __future__ import annotations

import numpy as np

_ARANGE_CACHE: dict[int, np.ndarray] = {}


def _arange(n: int) -> np.ndarray:
    ids = _ARANGE_CACHE.get(n)
    if ids is None:
        ids = np.arange(n, dtype=np.int32)
        ids.flags.writeable = False
        _ARANGE_CACHE[n] = ids
    return ids


class Candidates:
    """ids, logits, probs (``None`` = not computed), sorted flag, selected index."""

    __slots__ = ("ids", "logits", "probs", "sorted", "selected", "_argmax")

    def __init__(
        self,
        ids: np.ndarray,
        logits: np.ndarray,
        probs: np.ndarray | None = None,
        sorted: bool = False,
        selected: int = -1,
    ) -> None:
        self.ids = ids
        self.logits = logits
        self.probs = probs
        self.sorted = sorted
        self.selected = selected
        self._argmax: tuple[np.ndarray, int] | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> "Candidates":
        """The full vocabulary in token-id order.

        No copy: samplers never write into the arrays they are given (they
        replace them), so the engine's logits buffer is only ever read.
        """
        return cls(_arange(len(logits)), logits)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.ids)

    def copy(self) -> "Candidates":
        return Candidates(
            self.ids.copy(),
            self.logits.copy(),
            None if self.probs is None else self.probs.copy(),
            self.sorted,
            self.selected,
        )

    # -- operations shared by samplers ------------------------------------------

    def keep(self, index: np.ndarray | slice, *, sorted: bool | None = None) -> None:
        """Keep the candidates at ``index`` (in that order)."""
        self.ids = self.ids[index]
        self.logits = self.logits[index]
        if self.probs is not None:
            self.probs = self.probs[index]
        if sorted is not None:
            self.sorted = sorted

    def sort_desc(self) -> None:
        """Sort by logit, descending (stable: equal logits keep their current order)."""
        if self.sorted:
            return
        order = np.argsort(-self.logits, kind="stable")
        self.keep(order, sorted=True)

    def argmax(self) -> int:
        """Index of the first maximal logit (cached while ``logits`` is the same array)."""
        cached = self._argmax
        if cached is not None and cached[0] is self.logits:
            return cached[1]
        i = int(np.argmax(self.logits))
        self._argmax = (self.logits, i)
        return i

    def hint_argmax(self, index: int) -> None:
        """Record an argmax already computed for the current ``logits`` array."""
        self._argmax = (self.logits, index)

    def max_logit(self) -> np.float32:
        return self.logits[0] if self.sorted else self.logits.max()

    def softmax(self) -> np.ndarray:
        """llama.cpp's ``softmax_impl`` without sorting: float32 exp, float32 running sum."""
        ex = np.exp(self.logits - self.max_logit(), dtype=np.float32)
        # np.cumsum on float32 adds sequentially, like llama.cpp's `float cum_sum += p`
        total = np.cumsum(ex, dtype=np.float32)[-1] if len(ex) else np.float32(1)
        self.probs = ex / total
        return self.probs
