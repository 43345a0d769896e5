"""Branches of one prompt share the KV cache: llama.cpp sequences in one unified cache (no llama_cpp here).

The context is created with ``n_seq_max`` sequences and a unified KV cache (``kv_unified``): every sequence
draws its cells from the same ``n_ctx`` cells, and ``llama_memory_seq_cp`` *shares* cells (it adds the
destination sequence's id to each cell of the source's range; nothing is copied). So a branch that leaves
its parent at position ``p`` holds the parent's first ``p`` cells and pays only for its own tokens.

:class:`SeqTable` mirrors what llama.cpp holds: for every resident sequence its tokens and, parallel to
them, the id of the cell each position lives in (shared ids = shared cells). :meth:`SeqTable.attach` makes
a token list the active sequence's content with as little evaluation as possible: it starts from the
resident sequence that shares the longest prefix, copies that prefix into a free sequence (or the least
recently used one, evicted), and leaves only the rest to decode. The engine calls llama.cpp's memory API
through the ``ops`` it passes in (the fake engine passes no-ops: the bookkeeping is the same).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ContextError, EngineError

SEQ_MAX = 8  # sequences in one context: branches resident at once (more are evicted and re-evaluated)


@dataclass(frozen=True, slots=True)
class MemoryOps:
    """llama.cpp's memory calls for one context (``llama_memory_seq_rm`` / ``seq_cp``), or no-ops."""

    rm: Callable[[int, int, int], Any]  # (seq, p0, p1): drop positions [p0, p1) (-1: to the end)
    cp: Callable[[int, int, int, int], Any]  # (src, dst, p0, p1): share src's cells [p0, p1) with dst


NO_OPS = MemoryOps(rm=lambda s, a, b: True, cp=lambda s, d, a, b: None)


@dataclass(frozen=True, slots=True)
class Attached:
    """What :meth:`SeqTable.attach` did: where the tokens now live and what is left to evaluate."""

    seq: int
    reused: int  # positions taken from cells the cache already held
    evaluate: tuple[int, ...]  # the tokens left to decode (at least one: its logits are the next step's)
    source: int | None  # the sequence whose cells were shared (None: none, or the same sequence)
    evicted: tuple[Any, ...]  # keys of the sequences dropped to make room (least recently used first)


@dataclass(frozen=True, slots=True)
class CellUse:
    """The cache's cells as the sequences hold them (the KV cell map's figures)."""

    used: int  # distinct cells in use (a shared cell counts once)
    held: int  # positions held, summed over sequences (a shared cell counts once per sequence)
    sequences: int
    active_shared: tuple[int, ...]  # for each position of the active sequence: how many sequences hold its cell

    @property
    def saved(self) -> int:
        """Cells that sharing saved: what separate copies would have used, minus what is used."""
        return self.held - self.used


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class SeqTable:
    """The resident sequences of one context: tokens and cell ids per sequence, which is active, LRU order."""

    def __init__(self, n_ctx: int, n_seq: int = SEQ_MAX, ops: MemoryOps = NO_OPS) -> None:
        self.n_ctx, self.n_seq, self.ops = n_ctx, max(1, n_seq), ops
        self._cell_ids = itertools.count()
        self.reset()

    def reset(self) -> None:
        """The cache was cleared: one empty sequence (0), active."""
        self.tokens: dict[int, list[int]] = {0: []}
        self.cells: dict[int, list[int]] = {0: []}
        self.keys: dict[int, Any] = {0: None}
        self._clock = itertools.count(1)
        self.last_used: dict[int, int] = {0: 0}
        self.active = 0
        self.evicted: list[Any] = []  # keys evicted since the caller last took them (see take_evicted)

    # -- what the active sequence holds (the engine's ``held``) ---------------------------------------------

    @property
    def held(self) -> list[int]:
        return self.tokens[self.active]

    def appended(self, tokens: Sequence[int]) -> None:
        """The active sequence decoded ``tokens`` into new cells."""
        self.tokens[self.active].extend(int(t) for t in tokens)
        self.cells[self.active].extend(next(self._cell_ids) for _ in tokens)

    def truncated(self, n_keep: int, n_end: int | None = None) -> None:
        """The active sequence dropped positions [n_keep, n_end) (its cells stay with the other holders)."""
        del self.tokens[self.active][n_keep:n_end]
        del self.cells[self.active][n_keep:n_end]

    def replaced(self, tokens: Sequence[int]) -> None:
        """The active sequence now holds exactly ``tokens``, each in a new cell (a whole re-evaluation)."""
        self.tokens[self.active] = []
        self.cells[self.active] = []
        self.appended(tokens)

    # -- figures ------------------------------------------------------------------------------------------------

    def cell_use(self) -> CellUse:
        holders: dict[int, int] = {}
        for ids in self.cells.values():
            for c in ids:
                holders[c] = holders.get(c, 0) + 1
        return CellUse(used=len(holders), held=sum(len(ids) for ids in self.cells.values()),
                       sequences=sum(1 for t in self.tokens.values() if t),
                       active_shared=tuple(holders[c] for c in self.cells[self.active]))

    def others(self) -> list[int]:
        """Resident sequences other than the active one, least recently used first."""
        return sorted((s for s in self.tokens if s != self.active), key=self.last_used.__getitem__)

    def take_evicted(self) -> list[Any]:
        out, self.evicted = self.evicted, []
        return out

    # -- moving between token lists ---------------------------------------------------------------------

    def attach(self, tokens: Sequence[int], key: Any = None, *, reserve: int = 0) -> Attached:
        """Make the active sequence hold the longest cached prefix of ``tokens`` and say what is left to decode.

        ``key`` names the owner (a branch): its own sequence is reused when resident. ``reserve``: cells the
        caller will need after ``tokens`` (a generation's tokens); sequences are evicted, least recently used
        first, until ``tokens`` and the reserve fit (ContextError if they cannot fit even alone)."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ContextError("nothing to attach: give at least one token")
        if len(tokens) + reserve > self.n_ctx:
            raise ContextError(f"{len(tokens)} tokens + {reserve} to generate do not fit n_ctx {self.n_ctx}")
        limit = len(tokens) - 1  # the last token is always evaluated: its logits are the next step's
        own = next((s for s, k in self.keys.items() if key is not None and k == key), None)
        best, best_n = None, -1
        for s, held in self.tokens.items():
            n = min(common_prefix(held, tokens), limit)
            if n > best_n or (n == best_n and s == own):
                best, best_n = s, n
        assert best is not None
        evicted: list[Any] = []
        if own is not None and common_prefix(self.tokens[own], tokens) >= best_n:
            target = own
        elif best_n == len(self.tokens[best]) and self.keys[best] in (None, key) or not self.tokens[best]:
            target = best  # nobody else's, and wholly a prefix: grow it in place
        else:
            target = own if own is not None and own != best else self._free_sequence(keep=best, evicted=evicted)
        source = best if target != best and best_n > 0 else None
        if target != best:
            self._rm(target, -1, -1)
            self.tokens[target], self.cells[target] = [], []
            if source is not None:
                self.ops.cp(best, target, 0, best_n)
                self.tokens[target] = self.tokens[best][:best_n]
                self.cells[target] = self.cells[best][:best_n]
        n_reuse = min(common_prefix(self.tokens[target], tokens), limit)
        if n_reuse < len(self.tokens[target]):
            self._rm(target, n_reuse, -1)
            del self.tokens[target][n_reuse:]
            del self.cells[target][n_reuse:]
        self.keys[target] = key
        self.active = target
        self.touch()
        self._make_room(len(tokens) - n_reuse + reserve, evicted)
        self.evicted.extend(evicted)
        return Attached(seq=target, reused=n_reuse, evaluate=tuple(tokens[n_reuse:]), source=source,
                        evicted=tuple(evicted))

    def touch(self) -> None:
        self.last_used[self.active] = next(self._clock)

    def evict_one(self) -> Any:
        """Drop the least recently used sequence other than the active one; its key (ContextError if none)."""
        others = self.others()
        if not others:
            raise ContextError(f"context full at {self.n_ctx} tokens")
        s = others[0]
        key = self.keys.get(s)
        self._rm(s, -1, -1)
        for table in (self.tokens, self.cells, self.keys, self.last_used):
            table.pop(s, None)
        return key

    def _rm(self, seq: int, p0: int, p1: int) -> None:
        """llama.cpp refuses to cut a recurrent model's state in the middle (``seq_rm`` returns false): such a
        model cannot hold branches, and the table must never believe a cut that did not happen."""
        if self.ops.rm(seq, p0, p1) is False:
            raise EngineError("this model's memory cannot drop part of a sequence (a recurrent model?): branches "
                              "and A/B need a transformer's KV cache")

    def _free_sequence(self, keep: int, evicted: list[Any]) -> int:
        for s in range(self.n_seq):
            if s not in self.tokens:
                self.tokens[s], self.cells[s], self.keys[s], self.last_used[s] = [], [], None, 0
                return s
        for s in sorted(self.tokens, key=self.last_used.__getitem__):  # reuse the least recently used
            if s != keep:
                evicted.append(self.keys[s])
                return s
        return keep

    def _make_room(self, needed: int, evicted: list[Any]) -> None:
        while self.cell_use().used + needed > self.n_ctx and self.others():
            evicted.append(self.evict_one())
