"""The sampler interface, modelled on llama.cpp's ``llama_sampler_i``, and what each sampler declares.

A sampler class says everything about itself once, in class variables: its ``name``, its
parameters (``schema``), whether it ``selects`` the token, is ``seeded``, ``uses_head`` or
``changes_logits``, a ``help`` line, and llama.cpp's constructor of the same sampler (``native``).
Presets, their validation, the app and the llama.cpp oracle derive what they need from these.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from .candidates import Candidates
from .rng import Mt19937, resolve_seed
from .schema import BuildContext, Native, Param


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
    #: one line for the user (``llmtui presets``, the preset editor)
    help: ClassVar[str] = ""
    #: the parameters a preset may set, by name: kind, default, range, help
    schema: ClassVar[Mapping[str, Param]] = {}
    #: llama.cpp's constructor of the same sampler (the oracle of the identity tests); None: none
    native: ClassVar[Native | None] = None
    #: True for samplers that pick the token (greedy, dist, mirostat…): they end a chain
    selects: ClassVar[bool] = False
    #: True for samplers that draw random numbers: they take the run's seed
    seeded: ClassVar[bool] = False
    #: True for samplers that change logit values (temp, penalties, biases…) rather than
    #: only removing or masking candidates; the chain's trace uses it
    changes_logits: ClassVar[bool] = False
    #: True for samplers that can truncate from the chain's head of best candidates
    uses_head: ClassVar[bool] = False

    @classmethod
    def resolve(cls, ctx: BuildContext, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value for this run: the declared defaults overridden by ``params``, a
        -1 that stands for the context size replaced by it, and the run's seed for a seeded sampler."""
        full = {key: copy.copy(p.default) for key, p in cls.schema.items()}
        full.update(params)
        for key, p in cls.schema.items():
            if p.minus_one_is_n_ctx and full[key] == -1:
                full[key] = ctx.n_ctx
        if cls.seeded:
            full["seed"] = ctx.seed
        return full

    @classmethod
    def from_params(cls, ctx: BuildContext, params: Mapping[str, Any]) -> "Sampler":
        """Build this sampler for a run from (validated) preset parameters."""
        return cls(**cls.resolve(ctx, params))

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


class SeededSampler(Sampler):
    """Samplers with a std::mt19937 of their own; ``reset`` reseeds it."""

    seeded = True

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
