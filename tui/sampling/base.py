"""The sampler interface, modelled on llama.cpp's ``llama_sampler_i``."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from .candidates import Candidates


class Sampler:
    """One stage of a chain.

    ``apply`` transforms the candidates. Implementations must *replace*
    ``cur.ids`` / ``cur.logits`` / ``cur.probs`` with new arrays rather than
    writing into them: the chain keeps the previous arrays to trace what each
    stage changed. ``accept`` sees every token the chain finally picked;
    ``reset`` returns the sampler to its freshly-built state; ``clone`` copies
    it with its state.
    """

    name: ClassVar[str] = "sampler"
    #: True for samplers that pick the token (greedy, dist, mirostat…): they end a chain
    selects: ClassVar[bool] = False
    #: True for samplers that change logit values (temp, penalties, biases…) rather than
    #: only removing or masking candidates; the chain's trace uses it
    changes_logits: ClassVar[bool] = False
    #: True for samplers that can truncate from the chain's head of best candidates
    uses_head: ClassVar[bool] = False

    def apply(self, cur: Candidates) -> None:
        raise NotImplementedError

    def accept(self, token: int) -> None:
        """Stateless by default."""

    def reset(self) -> None:
        """Stateless by default."""

    def clone(self) -> "Sampler":
        return copy.deepcopy(self)

    def params(self) -> dict[str, Any]:
        """The parameters that rebuild this sampler (for presets and recordings)."""
        return {}

    def describe(self) -> str:
        ps = ", ".join(f"{k}={v}" for k, v in self.params().items() if k != "seed")
        return f"{self.name}({ps})" if ps else self.name

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
