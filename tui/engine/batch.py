"""One reusable ``llama_batch`` with explicit rows: (token, position, sequence, wants logits).

``llama_batch_get_one`` puts every token in sequence 0 at positions llama.cpp works out itself; branches
live in other sequences, and A/B lockstep decodes one token of each of two sequences in *one*
``llama_decode``: both need the rows spelled out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .binding import ll
from .errors import ContextError, EngineError
from .sequences import CellUse, SeqTable


class Batch:
    """A batch of up to ``capacity`` rows, allocated once (``llama_batch_init``) and freed with :meth:`free`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._b: Any = ll.llama_batch_init(capacity, 0, 1)

    def fill(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
             logits: Sequence[bool]) -> Any:
        """The batch holding these rows (at most ``capacity``); pass it to ``llama_decode``."""
        b = self._b
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"{n} rows do not fit a batch of {self.capacity}")
        b.n_tokens = n
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seqs[i]
            b.logits[i] = 1 if logits[i] else 0
        return b

    def run(self, ctx: Any, tokens: Sequence[int], start: int, seq: int, *, all_logits: bool = False) -> int:
        """Decode ``tokens`` of one sequence at positions ``start``…: llama_decode's return code (0 = done)."""
        n = len(tokens)
        batch = self.fill(tokens, range(start, start + n), [seq] * n,
                          [True] * n if all_logits else [i == n - 1 for i in range(n)])
        return int(ll.llama_decode(ctx, batch))

    def free(self) -> None:
        if self._b is not None:
            ll.llama_batch_free(self._b)
            self._b = None


class SequenceOps:
    """The engine's calls on several sequences at once (a mixin of :class:`tui.engine.llama.LlamaEngine`)."""

    _ctx: Any
    _memory: Any
    _batch: Batch | None
    seqs: SeqTable
    n_ctx: int
    n_vocab: int

    if TYPE_CHECKING:  # the engine's own
        def _require_open(self) -> None: ...

        def _check_token(self, token: int) -> None: ...

    def decode_rows(self, rows: Sequence[tuple[int, int]]) -> np.ndarray:
        """One llama_decode of one token for each of several sequences, ``(seq, token)`` rows (A/B lockstep):
        each sequence's next position; a copy of every row's logits, shape (len(rows), n_vocab)."""
        self._require_open()
        assert self._batch is not None
        seqs = self.seqs
        for seq, tok in rows:
            self._check_token(tok)
            if seq not in seqs.tokens or len(seqs.tokens[seq]) >= self.n_ctx:
                raise ContextError(f"sequence {seq} is full or not resident (n_ctx {self.n_ctx})")
        batch = self._batch.fill([t for _, t in rows], [len(seqs.tokens[s]) for s, _ in rows],
                                 [s for s, _ in rows], [True] * len(rows))
        rc = ll.llama_decode(self._ctx, batch)
        if rc == 1:
            raise ContextError(f"context full: no KV cells for {len(rows)} more tokens (n_ctx {self.n_ctx})")
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc} for {len(rows)} sequences")
        active = seqs.active
        for seq, tok in rows:
            seqs.active = seq
            seqs.appended([tok])
        seqs.active = active
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        for i in range(len(rows)):
            out[i] = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))
        return out

    def cell_use(self) -> CellUse:
        return self.seqs.cell_use()

    def seq_pos_max(self, seq: int) -> int:
        """llama.cpp's own answer: the last position sequence ``seq`` holds (-1: none)."""
        return int(ll.llama_memory_seq_pos_max(self._memory, seq))

    def state_bytes(self, seq: int | None = None) -> int:
        """llama.cpp's size of the context's state (``llama_state_get_size``: grows with the cells in use),
        or of one sequence's (``llama_state_seq_get_size``: as if it held its cells alone)."""
        if seq is None:
            return int(ll.llama_state_get_size(self._ctx))
        return int(ll.llama_state_seq_get_size(self._ctx, seq))

