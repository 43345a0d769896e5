"""The candidate array the samplers work on: llama.cpp's ``llama_token_data_array``.

Structure of arrays instead of an array of ``{id, logit, p}`` structs, so every
sampler is a handful of vectorised numpy operations. Order matters exactly as in
llama.cpp: a draw walks the candidates in their current order (sorted by logit
after a sorting sampler, token-id order otherwise), so the ``sorted`` flag is
carried exactly as llama.cpp carries it.

Arithmetic follows llama.cpp's float32 code: ``expf``/``logf`` are evaluated in
float64 and rounded to float32 (glibc's are correctly rounded to within half an
ulp, so this gives the same bits), running sums use ``np.cumsum`` (sequential,
like a C loop), never ``np.sum`` (pairwise).
"""

from __future__ import annotations

import numpy as np

_ARANGE_CACHE: dict[int, np.ndarray] = {}
F32 = np.float32
NEG_INF = F32(-np.inf)


def arange_ids(n: int) -> np.ndarray:
    """The shared, read-only ``0..n-1`` id array (its identity marks 'full vocabulary, id order')."""
    ids = _ARANGE_CACHE.get(n)
    if ids is None:
        ids = np.arange(n, dtype=np.int32)
        ids.flags.writeable = False
        _ARANGE_CACHE[n] = ids
    return ids


def expf(x: np.ndarray) -> np.ndarray:
    """float32 exp with glibc's rounding (computed in double, rounded once)."""
    return np.exp(x.astype(np.float64)).astype(F32)


def logf(x: np.ndarray | float) -> np.ndarray | np.float32:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(x, dtype=np.float64)).astype(F32)


def seq_sum_f32(x: np.ndarray) -> np.float32:
    """``float s = 0; for (…) s += x[i];`` — sequential float32 accumulation."""
    return np.cumsum(x, dtype=F32)[-1] if len(x) else F32(0.0)


class Scratch:
    """Reusable float32 buffers, so a step allocates (and page-faults) nothing vocab-sized."""

    __slots__ = ("a", "b", "ones", "edits")

    def __init__(self) -> None:
        self.a = self.b = self.ones = np.empty(0, np.float32)
        self.edits: tuple[np.ndarray, np.ndarray] | None = None

    def edit_buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Two buffers for sparse edits of a vocabulary-sized array (Candidates.edit)."""
        if self.edits is None or len(self.edits[0]) != n:
            self.edits = (np.empty(n, np.float32), np.empty(n, np.float32))
        return self.edits

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self.a) < n:
            self.a = np.empty(n, np.float32)
            self.b = np.empty(n, np.float32)
            self.ones = np.ones(n, np.float32)
        return self.a[:n], self.b[:n], self.ones[:n]


class Candidates:
    """ids, logits, probs (``None`` = never computed), sorted flag, selected index.

    Samplers never write into these arrays: they assign new ones. That lets the
    logits start as a zero-copy view of llama.cpp's buffer and lets the chain
    keep each stage's arrays for its trace.
    """

    __slots__ = ("ids", "logits", "probs", "sorted", "selected", "_argmax", "_head", "last_edit", "scratch")

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
        self._head: tuple[np.ndarray, Head] | None = None
        # (logits before, positions) of the last sparse edit, for the chain's trace
        self.last_edit: tuple[np.ndarray, np.ndarray] | None = None
        # lends two reusable vocabulary-sized buffers for sparse edits (see edit); set by a chain
        self.scratch: Scratch | None = None

    @classmethod
    def from_logits(cls, logits: np.ndarray) -> "Candidates":
        """The full vocabulary in token-id order (no copy: see the class docstring)."""
        return cls(arange_ids(len(logits)), logits)

    @classmethod
    def from_arrays(cls, ids: np.ndarray, logits: np.ndarray, sorted: bool = False) -> "Candidates":
        return cls(np.ascontiguousarray(ids, dtype=np.int32), np.ascontiguousarray(logits, dtype=F32), None, sorted)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def is_full_vocab(self) -> bool:
        return self.ids is _ARANGE_CACHE.get(len(self.ids))

    def copy(self) -> "Candidates":
        return Candidates(
            self.ids.copy(),
            self.logits.copy(),
            None if self.probs is None else self.probs.copy(),
            self.sorted,
            self.selected,
        )

    # -- cached argmax -----------------------------------------------------------

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

    # -- the head: the best candidates of a large array, known without a scan -------

    def head(self) -> "Head | None":
        """The head for the current ``logits`` array, if one is known (full vocabulary only)."""
        h = self._head
        if h is not None and h[0] is self.logits and self.is_full_vocab:
            return h[1]
        return None

    def set_head(self, head: "Head") -> None:
        self._head = (self.logits, head)

    def edit(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Replace the logits at ``positions`` (a sparse edit: penalties, biases, DRY).

        Keeps a known head valid by merging the edited candidates into it, so
        a following top_k still needs no scan of the vocabulary.
        """
        before = self.logits
        head = self.head()
        if self.scratch is not None and self.is_full_vocab:
            # a fresh 200 KB-1 MB array every step costs page faults. Write into the
            # buffer ``before`` does not live in, through a new view (identities stay unique).
            a, b = self.scratch.edit_buffers(len(before))
            lg = b[:] if before.base is a else a[:]
            np.copyto(lg, before)
        else:
            lg = before.copy()
        lg[positions] = values
        self.logits = lg
        self.last_edit = (before, positions)
        if head is not None:
            self.set_head(head.merged(lg, positions))

    # -- operations shared by samplers ---------------------------------------------

    def take(self, index: np.ndarray | slice, *, sorted: bool | None = None) -> None:
        """Keep the candidates at ``index``, in that order."""
        self.ids = self.ids[index]
        self.logits = self.logits[index]
        if self.probs is not None:
            self.probs = self.probs[index]
        if sorted is not None:
            self.sorted = sorted

    def truncate(self, n: int) -> None:
        """``cur_p->size = n``: keep the first n (no copy: a view)."""
        if n < len(self.ids):
            self.take(slice(0, n))

    def partial_sort(self, k: int) -> None:
        """llama.cpp's ``partial_sort_inplace(cur_p, k)``: keep the k best, sorted, descending.

        Equal logits keep their current relative order here; llama.cpp's
        ``std::partial_sort``/``std::sort`` leave the order of exact ties
        unspecified, so only ties can differ from it.
        """
        k = min(k, len(self.ids))
        self.take(top_k_stable(self.logits, k), sorted=True)

    def sort(self) -> None:
        if not self.sorted:
            self.partial_sort(len(self.ids))

    def max_logit(self) -> np.float32:
        return self.logits[0] if self.sorted else self.logits[self.argmax()]

    def softmax(self, do_sort: bool = False) -> np.ndarray:
        """llama.cpp's ``llama_sampler_softmax_impl``: probs in the current order.

        float32 ``expf(logit - max)``, a sequential float32 sum, float32 division.
        """
        if do_sort and not self.sorted:
            self.sort()
        ex = expf(self.logits - self.max_logit())
        self.probs = ex / seq_sum_f32(ex)
        return self.probs


class Head:
    """The best candidates of a full-vocabulary array, best first (ties by index).

    Complete above ``floor``: every candidate whose logit is > floor is listed,
    so the first k entries are exactly ``top_k_stable(logits, k)`` for any
    k <= len(idx).
    """

    __slots__ = ("idx", "floor")

    def __init__(self, idx: np.ndarray, floor: float) -> None:
        self.idx = idx
        self.floor = floor

    def merged(self, logits: np.ndarray, positions: np.ndarray) -> "Head":
        """The head after ``logits[positions]`` changed (``logits`` is the new array;
        ``positions`` are distinct)."""
        edited = np.zeros(len(logits), dtype=bool)
        edited[positions] = True
        keep = self.idx[~edited[self.idx]]
        moved = positions[logits[positions] > self.floor]
        if len(moved) == 0:
            return Head(keep, self.floor)
        cand = np.concatenate([keep, moved.astype(keep.dtype)])
        return Head(cand[np.lexsort((cand, -logits[cand]))], self.floor)


def best_first(logits: np.ndarray, want: int) -> tuple[np.ndarray, float]:
    """(indices best first, ties by index; floor).

    Every logit above ``floor`` is listed and nothing at or below it, so the
    first k entries are exactly ``top_k_stable(logits, k)`` for any k up to
    their number. At least ``want`` entries less the ties at the cut (callers
    check the length).

    A large array costs one compare pass: a strided sample of ~1k logits gives
    a threshold with ~4 × ``want`` logits above it (how far below the best that
    lies varies from 3 to 25 units step by step on real models, so no fixed gap
    works); if the sample misled us, a lower one is tried.
    """
    n = len(logits)
    if n > 4096 and want < n // 16:
        stride = n // 1024
        sample = logits[::stride]
        ns = len(sample)
        rank = -(-4 * want // stride) + 1  # expect ~4 × want above the threshold
        while rank < ns // 2:
            t = np.partition(sample, ns - rank)[ns - rank]
            cand = np.flatnonzero(logits > t)
            found = len(cand)
            if found >= want:
                vals = logits[cand]
                floor = t
                if found > 2 * want:
                    kth = np.partition(vals, found - want)[found - want]
                    keep = vals > kth
                    cand, vals, floor = cand[keep], vals[keep], kth
                return cand[np.argsort(-vals, kind="stable")], float(floor)
            rank *= 4
    # small arrays and odd distributions: the exact route
    idx = top_k_stable(logits, want)
    if 0 < len(idx) < n:  # (none: NaN logits compare false; raw_stats reports them)
        floor = logits[idx[-1]]
        return idx[logits[idx] > floor], float(floor)
    return idx, float("-inf")


def top_k_stable(logits: np.ndarray, k: int, max_logit: float | None = None) -> np.ndarray:
    """Indices of the k largest logits, best first; ties keep index order.

    For large arrays a threshold compare finds a small superset first (the top
    of a real distribution is a few units wide), so 262k candidates cost a
    compare pass instead of a full ``argpartition``.
    """
    n = len(logits)
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    if n > 4096 and k < n // 8:
        m = F32(logits[int(np.argmax(logits))] if max_logit is None else max_logit)
        # the top of a real distribution is narrow: on SmolLM2 and Gemma 3 the
        # 128th best logit is a median 8 (max ~13) below the best
        for gap in (10.0, 15.0, 20.0, 30.0):
            cand = np.flatnonzero(logits >= m - F32(gap))
            if len(cand) >= k:
                if len(cand) > 4 * k:
                    # keep the k best of the superset (plus ties at the cut), then order them
                    vals = logits[cand]
                    kth = np.partition(vals, len(vals) - k)[len(vals) - k]
                    above = cand[vals > kth]
                    ties = cand[vals == kth][: k - len(above)]
                    cand = np.concatenate([above, ties])
                    cand.sort()
                return cand[np.argsort(-logits[cand], kind="stable")[:k]]
    if k == n:
        return np.argsort(-logits, kind="stable")
    # kth value, then everything above it plus the first ties at it (index order)
    kth = np.partition(logits, n - k)[n - k]
    above = np.flatnonzero(logits > kth)
    ties = np.flatnonzero(logits == kth)[: k - len(above)]
    cand = np.concatenate([above, ties])
    return cand[np.argsort(-logits[cand], kind="stable")]
