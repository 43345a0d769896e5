"""Embeddings through llama.cpp's own embedding support: a context created with ``embeddings`` on and a pooling
type, one text per sequence, the pooled vector read with ``llama_get_embeddings_seq`` (no encoder of ours).

A sentence encoder (a BERT-style GGUF: pooling in its metadata) is what embeddings are made for. A chat model
(SmolLM2, Gemma) can be read the same way — its last hidden states, mean-pooled — but it was never trained to
place texts of similar meaning close together: those vectors are *weak*, and :attr:`Embedder.kind` says so
wherever they are shown.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batch import Batch
from .binding import LOG, ensure_backend, error_from_log, ll, tokenize_bytes
from .errors import ContextError, EngineError, ModelFileError
from .gguf_header import read_header

POOLINGS = {"mean": ll.LLAMA_POOLING_TYPE_MEAN, "cls": ll.LLAMA_POOLING_TYPE_CLS,
            "last": ll.LLAMA_POOLING_TYPE_LAST}
_POOLING_NAMES = {v: k for k, v in POOLINGS.items()} | {ll.LLAMA_POOLING_TYPE_NONE: "none"}
SEQS = 16  # texts embedded together in one llama_decode (as long as their tokens fit one batch)


@dataclass(frozen=True, slots=True)
class Embedding:
    text: str
    n_tokens: int
    vector: np.ndarray  # float32, L2-normalised (cosine similarity = dot product)
    norm: float  # the pooled vector's length before normalising
    truncated: bool  # the text had more tokens than the context holds: its end was left out


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarities between L2-normalised rows."""
    return np.clip(vectors @ vectors.T, -1.0, 1.0)


class Embedder:
    """One model loaded for embeddings. Not thread-safe: use from one thread (the engine thread in the app)."""

    def __init__(self, path: str | os.PathLike[str], *, pooling: str | None = None, n_ctx: int = 512,
                 threads: int = 0) -> None:
        from .settings import default_threads

        self.path = Path(path)
        if pooling is not None and pooling not in POOLINGS:
            raise EngineError(f"pooling must be one of {', '.join(POOLINGS)} (got {pooling!r})")
        read_header(self.path)  # a missing or damaged file: one clear line before llama.cpp sees it
        ensure_backend()
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Batch | None = None
        mark = LOG.mark
        t0 = time.perf_counter()
        mparams = ll.llama_model_default_params()
        self._progress = ll.llama_progress_callback(lambda p, u: True)
        mparams.progress_callback = self._progress
        model = ll.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise ModelFileError(str(self.path), error_from_log(mark))
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(ll.llama_model_n_embd(model))
        self.encoder = bool(ll.llama_model_has_encoder(model)) and not bool(ll.llama_model_has_decoder(model))
        self.name = self.path.stem  # as the model list names a file
        arch = self._meta("general.architecture") or "?"
        own = self._meta(f"{arch}.pooling_type")
        self.sentence_encoder = own is not None and own.isdigit() and int(own) in _POOLING_NAMES and int(own) > 0
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_ctx  # a whole text in one batch: pooling needs all its tokens
        cparams.n_seq_max = SEQS  # several texts in one batch, one sequence each, in one cache of n_ctx cells
        cparams.kv_unified = True
        cparams.embeddings = True
        cparams.pooling_type = POOLINGS[pooling] if pooling else (
            ll.LLAMA_POOLING_TYPE_UNSPECIFIED if self.sentence_encoder else ll.LLAMA_POOLING_TYPE_MEAN)
        cparams.n_threads = cparams.n_threads_batch = threads or default_threads()
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            self.close()
            raise ContextError(f"cannot create an embedding context with n_ctx={n_ctx}: {error_from_log(mark)}")
        self._ctx = ctx
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        self.pooling = _POOLING_NAMES.get(int(ll.llama_pooling_type(ctx)), "?")
        self._batch = Batch(self.n_ctx)
        self.load_ms = (time.perf_counter() - t0) * 1000.0

    # -- what it is -----------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        from .native_info import meta_value

        return meta_value(self._model, key)

    @property
    def kind(self) -> str:
        """What these vectors are, in a few words (shown wherever they are used)."""
        if self.sentence_encoder:
            return f"sentence encoder ({self.pooling} pooling)"
        return (f"a chat model's hidden states, {self.pooling}-pooled — weak embeddings: it was not trained to "
                "place similar texts close together")

    # -- embedding ------------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of ``text`` with its special tokens (BOS for a model that adds one)."""
        data = text.encode("utf-8", errors="replace")
        return [t for t in tokenize_bytes(self._vocab, data, add_special=True, parse_special=False)
                if 0 <= t < self.n_vocab]

    def embed(self, text: str) -> Embedding:
        return self.embed_texts([text])[0]

    def embed_many(self, texts: list[str]) -> np.ndarray:
        """(len(texts), n_embd) L2-normalised rows."""
        done = self.embed_texts(texts)
        return np.stack([e.vector for e in done]) if done else np.zeros((0, self.n_embd), np.float32)

    def embed_texts(self, texts: list[str]) -> list[Embedding]:
        """Each text's pooled vector: texts are packed into batches of up to :data:`SEQS` sequences and n_ctx
        tokens (one llama_decode each); a text longer than the context keeps its first n_ctx tokens."""
        if self._ctx is None:
            raise EngineError("the embedding model is closed")
        tokens = [self.tokenize(t) or [0] for t in texts]
        out: list[Embedding] = []
        i = 0
        while i < len(texts):
            group = [i]
            total = min(len(tokens[i]), self.n_ctx)
            while (i + len(group) < len(texts) and len(group) < SEQS
                   and total + min(len(tokens[i + len(group)]), self.n_ctx) <= self.n_ctx):
                total += min(len(tokens[i + len(group)]), self.n_ctx)
                group.append(i + len(group))
            vectors = self._decode_group([tokens[j][:self.n_ctx] for j in group])
            for j, (vec, norm) in zip(group, vectors):
                out.append(Embedding(texts[j], min(len(tokens[j]), self.n_ctx), vec, norm,
                                     len(tokens[j]) > self.n_ctx))
            i += len(group)
        return out

    def _decode_group(self, group: list[list[int]]) -> list[tuple[np.ndarray, float]]:
        mem = ll.llama_get_memory(self._ctx)
        if mem:
            ll.llama_memory_clear(mem, True)
        rows_tok: list[int] = []
        rows_pos: list[int] = []
        rows_seq: list[int] = []
        for seq, toks in enumerate(group):
            rows_tok += toks
            rows_pos += range(len(toks))
            rows_seq += [seq] * len(toks)
        assert self._batch is not None
        batch = self._batch.fill(rows_tok, rows_pos, rows_seq, [True] * len(rows_tok))
        rc = ll.llama_encode(self._ctx, batch) if self.encoder else ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"llama.cpp could not embed the text (code {rc}): {error_from_log(LOG.mark - 5)}")
        out = []
        for seq in range(len(group)):
            ptr = ll.llama_get_embeddings_seq(self._ctx, seq)
            if not ptr:
                raise EngineError("llama.cpp gave no pooled embedding for this model")
            vec = np.array(np.ctypeslib.as_array(ptr, shape=(self.n_embd,)), dtype=np.float32, copy=True)
            norm = float(np.linalg.norm(vec))
            if not math.isfinite(norm) or norm == 0.0:
                raise EngineError("the model gave an empty or non-finite embedding")
            out.append((vec / norm, norm))
        return out

    def close(self) -> None:
        if self._batch is not None:
            self._batch.free()
            self._batch = None
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
