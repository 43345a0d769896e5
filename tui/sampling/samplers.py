"""The samplers, one small class each, with llama.cpp's names and semantics.

The reference is llama.cpp's ``src/llama-sampler.cpp`` (the version vendored in
the llama-cpp-python we depend on); the tests compare every sampler here with
llama.cpp's own through its C API.
"""

from __future__ import annotations

from .base import Sampler
from .candidates import Candidates


class Greedy(Sampler):
    """Select the highest logit (the first one on ties, like llama.cpp's strict ``>`` scan)."""

    name = "greedy"
    selects = True

    def apply(self, cur: Candidates) -> None:
        cur.selected = cur.argmax() if len(cur) else -1
