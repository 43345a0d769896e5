"""What the sampler chain did at one step: the data the dashboard draws."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import NonFiniteLogits
from .candidates import Head, Scratch, best_first, top_k_stable


# probability buckets for colouring a token by the probability it was drawn with
PROB_BUCKETS = (0.05, 0.2, 0.5, 0.8)


def prob_bucket(p: float) -> int:
    for i, edge in enumerate(PROB_BUCKETS):
        if p < edge:
            return i
    return len(PROB_BUCKETS)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True)
class StageTrace:
    """One sampler's effect on the candidates."""

    name: str
    n_in: int
    n_out: int
    mass_removed: float  # probability (under the stage's input distribution) of the dropped candidates
    top_ids: tuple[int, ...]  # the best survivors, in order
    top_probs: tuple[float, ...]  # their probability under the stage's output distribution
    note: str = ""  # e.g. "T=0.8", "xtc skipped (chance 0.73 > 0.5)"


@dataclass(frozen=True, slots=True)
class SampleTrace:
    """The whole story of choosing one token."""

    token: int
    prob: float  # probability of ``token`` in the final distribution it was drawn from
    entropy: float  # nats, of the full raw distribution (softmax of the logits, T=1)
    top_ids: np.ndarray  # the k most likely tokens before the chain (raw logits), best first
    top_logits: np.ndarray
    top_p_before: np.ndarray  # softmax of the raw logits
    top_p_after: np.ndarray  # probability in the final distribution (0 = removed by the chain)
    stages: tuple[StageTrace, ...]
    n_final: int  # candidates left for the final selection
    draw: float | None = None  # the uniform number of the final random draw (None: deterministic)
    draw_lo: float = 0.0  # the chosen token's interval on the cumulative distribution
    draw_hi: float = 0.0
    raw_logit: float = 0.0  # logit of the chosen token before the chain
    raw_p: float = 0.0  # probability of the chosen token before the chain
    # >0: only a remote server's top-K was known (tui.remote): the tail is unknown, ``entropy`` is a lower bound
    # over those K, ``top_p_before`` are the server's probabilities; 0: the whole vocabulary's logits were seen
    top_k_only: int = 0
    server_sampled: bool = False  # a remote server chose the token (tui.remote, stream mode): no chain of ours ran

    @property
    def entropy_bits(self) -> float:
        return self.entropy / np.log(2.0)

    @property
    def rank(self) -> int:
        """1-based rank of the chosen token among the raw top-k (0 if outside)."""
        hits = np.flatnonzero(self.top_ids == self.token)
        return int(hits[0]) + 1 if hits.size else 0


@dataclass(frozen=True, slots=True)
class RawStats:
    """Statistics of the raw distribution, from the logits alone."""

    max_logit: float
    argmax: int
    log_z: float  # log of the softmax normaliser (including the max)
    entropy: float
    top_ids: np.ndarray
    top_logits: np.ndarray
    top_p: np.ndarray
    head: Head | None = None  # the best HEAD_SIZE candidates (see candidates.Head)

    def prob_of_logit(self, logit: float) -> float:
        return float(np.exp(np.float64(logit) - self.log_z)) if np.isfinite(logit) else 0.0


HEAD_SIZE = 128  # like llama.cpp's partial-sort cut-over; covers top_k up to ~128 without a scan


def raw_stats(logits: np.ndarray, k: int, scratch: Scratch | None = None, head_size: int = HEAD_SIZE) -> RawStats:
    """Top-k, softmax normaliser and entropy of ``logits``.

    Passes over the vocabulary are what cost (right after a decode, with cold
    caches, each pass over SmolLM2's 49k logits costs 20-60 µs): one compare
    for the best candidates (whose first is the argmax), subtract, exp, and
    two dot products.
    """
    if len(logits) == 0:
        empty = _frozen(np.empty(0, dtype=np.int32))
        return RawStats(float("-inf"), -1, float("-inf"), 0.0, empty, _frozen(np.empty(0, np.float32)),
                        _frozen(np.empty(0, np.float64)))
    # the best candidates first: the first of them is the argmax (ties: the lowest id)
    idx, floor = best_first(logits, max(head_size, k))
    best = int(idx[0]) if len(idx) else int(logits.argmax())
    m = logits[best]
    if not np.isfinite(m):
        raise NonFiniteLogits(logits)
    shifted, ex, ones = (scratch or Scratch()).get(len(logits))
    np.subtract(logits, m, out=shifted)
    np.exp(shifted, out=ex)
    # two BLAS dots (one thread, vectorised) beat np.sum's pairwise float32 loop
    z = float(np.dot(ex, ones))
    if not math.isfinite(z):
        # a NaN or +inf logit anywhere makes the normaliser non-finite: the one check a step needs
        raise NonFiniteLogits(logits)
    # H = -Σ p ln p = ln Z - Σ p (l - m)   (p = e^(l-m) / Z)
    with np.errstate(invalid="ignore"):
        dot = float(np.dot(ex, shifted))
    if not math.isfinite(dot):
        # -inf logits (banned tokens) make 0 * -inf = nan: clamp and redo (rare path)
        np.maximum(shifted, np.float32(-200.0), out=shifted)
        dot = float(np.dot(ex, shifted))
    log_z0 = math.log(z)
    entropy = max(0.0, log_z0 - dot / z)
    log_z = float(m) + log_z0
    head = Head(idx, floor) if head_size > k else None
    order = idx[:k] if len(idx) >= k else top_k_stable(logits, k, m)
    top_logits = logits[order]
    return RawStats(
        max_logit=float(m),
        argmax=best,
        log_z=log_z,
        entropy=entropy,
        top_ids=_frozen(order.astype(np.int32)),
        top_logits=_frozen(top_logits.astype(np.float32)),
        top_p=_frozen(np.exp(top_logits.astype(np.float64) - log_z)),
        head=head,
    )
