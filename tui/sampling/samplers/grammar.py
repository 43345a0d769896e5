"""The grammar stage: removes the candidates a grammar does not allow next (structured output: a JSON
schema, a tool call), as llama.cpp's grammar sampler does — their logits become -inf.

The grammar itself is a filter object from the run (``BuildContext.grammar``); this layer knows only its
protocol (:class:`GrammarFilter`). ``llmtui serve`` passes :class:`tui.engine.grammar.Grammar`, which asks
llama.cpp's own grammar engine.

Where it sits: first, on the full vocabulary, before every other stage (:func:`with_grammar`). That is
llama.cpp's grammar-first mode, and the only place where the chain's distribution is exactly "the preset's
chain over the tokens the grammar allows": a truncation before it (top_k, top_p) would judge the tokens by
a probability mass the grammar then removes, and could leave nothing allowed. llama.cpp's default mode saves
the cost differently — it samples without the grammar, checks the chosen token alone, and only re-samples
with the grammar first when the token is rejected — which changes the distribution and draws twice, so a
learner could not read the trace as one chain. The cost, measured with ``benchmarks/bench_grammar.py``
(SmolLM2's 49,152 candidates, a JSON schema, two shared cores): llama.cpp's check of the full vocabulary
takes ~4 ms a step where few tokens fit and ~8-10 ms inside strings, where nearly all do, against ~0.15 ms
for the 40 candidates left after top_k; one SmolLM2 decode takes ~9 ms there. So a constrained SmolLM2 run
is up to twice as slow per token; a larger model's decode dwarfs the check. Only requests that ask for a
grammar pay it.

The stage is not a preset sampler (not in ``SAMPLERS``): a grammar belongs to one request, and preset files
stay as they are.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..base import Sampler
from ..candidates import NEG_INF, Candidates, Head
from ..errors import SamplingError


class GrammarFilter(Protocol):
    """What the grammar stage needs from a grammar."""

    def allowed(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """A bool mask over ``ids``: which may come next."""
        ...

    def accept(self, token: int) -> None:
        """Advance past the chosen ``token``."""
        ...

    def reset(self) -> None:
        """Back to the start."""
        ...

    def clone(self) -> "GrammarFilter":
        """An independent copy in the same state."""
        ...


class GrammarStage(Sampler):
    """Masks (-inf) every candidate the grammar does not allow; accepts the chosen token into the grammar."""

    name = "grammar"
    help = "keep only the tokens a grammar allows next (per request: JSON schema, tools)"

    def __init__(self, grammar: GrammarFilter) -> None:
        self.grammar = grammar
        self.last_note = ""

    def apply(self, cur: Candidates) -> None:
        mask = np.asarray(self.grammar.allowed(cur.ids, cur.logits), dtype=bool)
        if mask.shape != cur.ids.shape:
            raise SamplingError(f"the grammar answered for {mask.size:,} of {len(cur):,} candidates")
        rejected = len(cur) - int(np.count_nonzero(mask))
        self.last_note = f"{rejected:,} rejected" if rejected else "all allowed"
        if not rejected:
            return
        head = cur.head()
        logits = np.where(mask, cur.logits, NEG_INF)
        if not np.any(logits != NEG_INF):
            raise SamplingError("the grammar allows none of the candidates left (a stage before it removed "
                                "them, or the model gives them no chance): the output cannot go on")
        cur.logits = logits
        cur.probs = None
        if head is not None:
            # the best candidates stay the best once the others are masked: a following top_k needs no scan
            cur.set_head(Head(head.idx[mask[head.idx]], head.floor))

    def accept(self, token: int) -> None:
        self.grammar.accept(token)

    def reset(self) -> None:
        self.grammar.reset()

    def clone(self) -> "GrammarStage":
        return GrammarStage(self.grammar.clone())


def with_grammar(stages: list[Sampler], grammar: Any) -> list[Sampler]:
    """``stages`` with a grammar stage for ``grammar`` in front (see the module docstring for why first)."""
    return [GrammarStage(grammar), *stages]
