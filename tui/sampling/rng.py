"""llama.cpp's random numbers, bit for bit.

llama.cpp seeds a ``std::mt19937`` with the sampler seed and reads it through
libstdc++'s distributions. NumPy's ``MT19937`` with *legacy* seeding
(``RandomState(seed)``) produces the same raw 32-bit stream, so we only have to
reproduce how libstdc++ turns raw words into numbers:

* ``std::uniform_real_distribution<double>(0, 1)`` → ``generate_canonical<double, 53>``:
  two words, ``(w1 + w2 * 2**32) / 2**64`` rounded to double (used by ``dist``);
* ``std::uniform_real_distribution<float>(0, 1)`` → one word, ``float(w) / 2**32``
  (used by ``xtc``);
* ``std::discrete_distribution<int>`` → normalises the weights in double,
  accumulates them, draws one canonical double and takes the first cumulative
  value ``>=`` it; with fewer than two weights it returns 0 *without drawing*
  (used by ``mirostat``, ``mirostat_v2``, ``adaptive_p``).

Results ``>= 1`` are replaced by the largest value below 1, as libstdc++ does.
"""

from __future__ import annotations

import math
import random

import numpy as np

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
_TWO32 = 4294967296.0
_TWO64 = 18446744073709551616.0
_BELOW_ONE_F64 = math.nextafter(1.0, 0.0)
_BELOW_ONE_F32 = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def resolve_seed(seed: int) -> int:
    """llama.cpp draws a random seed for LLAMA_DEFAULT_SEED (0xFFFFFFFF); we do too, once."""
    seed = int(seed) & 0xFFFFFFFF
    if seed == LLAMA_DEFAULT_SEED:
        return random.SystemRandom().getrandbits(32)
    return seed


class Mt19937:
    """A std::mt19937 with the libstdc++ distributions llama.cpp's samplers use."""

    __slots__ = ("seed", "_bits", "draws")

    def __init__(self, seed: int) -> None:
        self.seed = int(seed) & 0xFFFFFFFF
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(self.seed)  # init_genrand(seed): std::mt19937(seed)
        self.draws = 0  # raw 32-bit words consumed (for the trace)

    def reseed(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = int(seed) & 0xFFFFFFFF
        self._bits._legacy_seeding(self.seed)
        self.draws = 0

    def copy(self) -> "Mt19937":
        other = Mt19937.__new__(Mt19937)
        other.seed = self.seed
        other._bits = np.random.MT19937()
        other._bits.state = self._bits.state
        other.draws = self.draws
        return other

    def word(self) -> int:
        self.draws += 1
        return int(self._bits.random_raw())

    def uniform_double(self) -> float:
        w1, w2 = self._bits.random_raw(2)
        self.draws += 2
        u = (float(w1) + float(w2) * _TWO32) / _TWO64
        return _BELOW_ONE_F64 if u >= 1.0 else u

    def uniform_float(self) -> float:
        self.draws += 1
        u = float(np.float32(self._bits.random_raw())) / _TWO32
        return _BELOW_ONE_F32 if u >= 1.0 else u

    def discrete(self, weights: np.ndarray) -> tuple[int, float | None]:
        """std::discrete_distribution: (index, the uniform draw or None when none was made)."""
        n = len(weights)
        if n < 2:
            return 0, None
        w = weights.astype(np.float64)
        total = float(np.cumsum(w)[-1])  # std::accumulate: sequential
        cp = np.cumsum(w / total)
        cp[-1] = 1.0
        u = self.uniform_double()
        return int(np.searchsorted(cp, u, side="left")), u
