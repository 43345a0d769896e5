"""What a sampler class declares about itself, once: its parameters (:class:`Param`), how llama.cpp
builds the same sampler (:class:`Native`), and what building one needs from the run (:class:`BuildContext`).

The preset registry, preset validation, the app's parameter editor and the llama.cpp oracle
(``tui.engine.oracle``) all read these declarations; none keeps a table of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .vocab import DryVocab


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a sampler: its kind (``float``, ``int``, ``list`` of strings, ``dict`` of
    token id → bias), default, range and a help line. Preset validation enforces all of it."""

    kind: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    help: str = ""
    lo_open: bool = False  # the value must be above ``lo``, not equal to it
    minus_one_is_n_ctx: bool = False  # -1 stands for the context size, as in llama.cpp's common/arg.cpp


class Native(NamedTuple):
    """llama.cpp's constructor of the same sampler: ``llama_sampler_init_<init>(*args)``.

    Each name in ``args`` is one C argument, in order: a parameter of the sampler (a ``list`` of
    strings goes as a ``char **`` array, a ``dict`` of biases as a ``llama_logit_bias`` array),
    ``len(<parameter>)`` for its length, ``seed`` (the run's seed, masked to 32 bits), ``n_vocab`` or
    ``vocab`` (the model's vocabulary size or pointer).
    """

    init: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What building a chain needs from the run: the model's vocabulary and the seed, and for a request that
    constrains its output, a grammar: a filter with ``allowed(ids, logits) -> bool mask``, ``accept(token)``,
    ``reset()`` and ``clone()`` (:class:`~.samplers.grammar.GrammarFilter`; the engine's is
    ``tui.engine.grammar.Grammar``) in its start state. A chain built with one gets its own copy of it as the
    first stage (:meth:`~.presets.Preset.build`)."""

    n_vocab: int
    seed: int = 42
    n_ctx: int = 4096
    dry_vocab: DryVocab | None = None
    grammar: Any = None
