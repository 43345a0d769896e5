"""A deterministic, scripted engine for UI tests and screenshots of layout.

It has the real engine's interface (tokenize, decode, logits, pieces, KV
layout, metadata) and produces word-like text from logits that depend only on
the position and the previous token, so every run is identical. It never
stands in for llama.cpp in the engine or sampler tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ContextError
from .kv import KvLayout
from .records import ModelInfo
from .sequences import Attached, CellUse, SeqTable
from .settings import EngineSettings

WORDS = (
    "<eos> the a cat dog sat on mat and then ran to house garden sun moon quiet loud small big "
    "old new bright dark tree river stone under over near far it was is when while happy slowly "
    "quickly . , ! ? \n café 你好 🙂 lighthouse keeper storm night light sea waves boat"
).split(" ")
PIECES = [b"" if w == "<eos>" else (w if w in ".,!?\n" else " " + w).encode() for w in WORDS]
EOS = 0


class FakeEngine:
    """Scripted logits over a 64-word vocabulary; optional per-token delay."""

    def __init__(self, settings: EngineSettings | None = None, *, delay_s: float = 0.0, seed: int = 0,
                 eos_after: int | None = None, chat_template: str | None = None) -> None:
        self.settings = settings or EngineSettings(n_ctx=512)
        self.n_ctx = self.settings.n_ctx
        self.n_vocab = 64
        self.delay_s = delay_s
        self.eos_after = eos_after
        self.path = Path("fake-model.gguf")
        self.load_ms, self.context_ms = 12.5, 3.0
        self.seqs = SeqTable(self.n_ctx)  # the same sequence bookkeeping as the real engine, no cells behind it
        self._rng_seed = seed
        self._pieces = (PIECES + [f" w{i}".encode() for i in range(len(PIECES), self.n_vocab)])[: self.n_vocab]
        self._logits = np.zeros(self.n_vocab, dtype=np.float32)
        self._t_eval = 0.0
        self._n_eval = 0
        self.info = ModelInfo(
            name="Fake 64-word model", path=str(self.path), arch="fake", quant="F32", description="fake 1M F32",
            n_params=1_000_000, size_bytes=4_000_000, file_size=4_000_000, n_ctx_train=4096,
            n_vocab=self.n_vocab, n_layer=4, n_head=4, n_head_kv=2, n_embd=64, n_swa=0, bos=-1, eos=EOS,
            eot=-1, add_bos=False, chat_template=chat_template,
        )
        self.closed = False

    # -- tokens ---------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        out = []
        for word in text.split():
            key = (" " + word).encode()
            out.append(self._pieces.index(key) if key in self._pieces else 1 + (sum(key) % 40))
        return out or [1]

    def piece(self, token: int) -> bytes:
        return self._pieces[token]

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def is_control(self, token: int) -> bool:
        return token == EOS

    def eog_tokens(self) -> list[int]:
        return [EOS]

    # -- evaluation --------------------------------------------------------------------

    def decode(self, tokens: Sequence[int], *, should_stop: Callable[[], bool] | None = None) -> float:
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextError(f"context full: {self.n_past} + {len(tokens)} tokens > n_ctx {self.n_ctx}")
        t0 = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s * max(1, len(tokens) // 8))
        self.seqs.appended(tokens)
        self._logits = self._scripted(self.n_past, self.held[-1])
        ms = (time.perf_counter() - t0) * 1000.0
        self._t_eval += ms
        self._n_eval += len(tokens)
        return ms

    def _scripted(self, n_past: int, prev: int) -> np.ndarray:
        rng = np.random.default_rng(self._rng_seed * 1_000_003 + n_past * 7919 + prev)
        lg = rng.standard_normal(self.n_vocab).astype(np.float32) * 2.0
        lg[EOS] = -4.0
        lg[rng.integers(1, self.n_vocab)] += 5.0  # a clear favourite, like a real model
        lg[rng.integers(1, self.n_vocab)] += 3.5
        if self.eos_after is not None and n_past >= self.eos_after:
            lg[EOS] = 30.0
        return lg

    def logits(self) -> np.ndarray:
        return self._logits

    def attach(self, tokens: Sequence[int], key: Any = None, *, reserve: int = 0) -> Attached:
        return self.seqs.attach(tokens, key, reserve=reserve)

    def decode_rows(self, rows: Sequence[tuple[int, int]]) -> np.ndarray:
        active, out = self.seqs.active, []
        for seq, tok in rows:
            self.seqs.active = seq
            self.seqs.appended([tok])
            out.append(self._scripted(self.n_past, tok))
        self.seqs.active = active
        return np.stack(out)

    def cell_use(self) -> CellUse:
        return self.seqs.cell_use()

    # -- memory, counters, lifecycle ------------------------------------------------------

    @property
    def held(self) -> list[int]:
        """The tokens the (pretend) KV cache's active sequence holds, in position order."""
        return self.seqs.held

    @property
    def n_past(self) -> int:
        return len(self.seqs.held)

    def clear(self) -> None:
        self.seqs.reset()

    def truncate(self, n_keep: int) -> None:
        self.seqs.truncated(n_keep)

    def can_shift(self) -> bool:
        return True

    def shift(self, n_keep: int, n_discard: int) -> None:
        while self.seqs.others():
            self.seqs.evicted.append(self.seqs.evict_one())
        self.seqs.truncated(n_keep, n_keep + n_discard)

    def kv_layout(self) -> KvLayout:
        return KvLayout(n_layer=4, n_head_kv=2, head_dim_k=16, head_dim_v=16, type_k=self.settings.type_k,
                        type_v=self.settings.type_v, n_ctx=self.n_ctx)

    def recreate_context(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.n_ctx = settings.n_ctx
        self.seqs = SeqTable(self.n_ctx)

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        text = " ".join(f"{m['role']}: {m['content']}" for m in messages)
        return text + (" assistant:" if add_generation_prompt else "")

    def build_context(self, seed: int) -> Any:
        from ..sampling.presets import BuildContext

        return BuildContext(n_vocab=self.n_vocab, seed=seed, n_ctx=self.n_ctx)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "FakeEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
