"""The samplers, one small class each, with llama.cpp's names and semantics.

The reference is llama.cpp's ``src/llama-sampler.cpp`` (the version vendored in
the llama-cpp-python we depend on); ``tests/test_samplers.py`` compares every
sampler here with llama.cpp's own through its C API. Where llama.cpp does
something surprising we do the same and say so.

Each class declares its name, parameters and llama.cpp constructor (see :mod:`..base`);
``SAMPLERS`` lists them in the order ``llmtui presets`` and error messages show them, and
is the one registry presets and the llama.cpp oracle derive theirs from.

A new sampler is one class in the module of its kind: ``name``, ``help``, ``schema`` (a
:class:`~..schema.Param` per parameter, its default the constructor's), ``native`` (llama.cpp's
``llama_sampler_init_*`` and its arguments), the flags, ``apply`` / ``accept`` / ``reset`` /
``params``, and ``from_params`` only when building needs more of the run than the declared
parameters and seed; then one entry in ``SAMPLERS`` below.
"""

from __future__ import annotations

from ..base import Sampler
from ..vocab import DryVocab
from .penalties import Dry, LogitBias, Penalties
from .selectors import AdaptiveP, Dist, Greedy, Mirostat, MirostatV2
from .temperature import Temp, TempExt
from .truncation import XTC, MinP, TopK, TopNSigma, TopP, Typical

SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (Greedy, Dist, TopK, TopP, MinP, Typical, TopNSigma, Temp, TempExt, XTC, Penalties, Dry, LogitBias,
                Mirostat, MirostatV2, AdaptiveP)
}

__all__ = [
    "SAMPLERS", "XTC", "AdaptiveP", "Dist", "Dry", "DryVocab", "Greedy", "LogitBias", "MinP", "Mirostat",
    "MirostatV2", "Penalties", "Temp", "TempExt", "TopK", "TopNSigma", "TopP", "Typical",
]
