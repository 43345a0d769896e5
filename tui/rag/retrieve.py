"""Retrieval for a question: an index and the embedding model that built it, and the user turn that carries the
retrieved chunks into a chat template (no Textual; use it on the engine thread)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .index import Hit, Index, IndexError_, open_index

CONTEXT_HEAD = "Use the following context to answer the question. If it does not help, say so.\n\nContext:\n"


@dataclass(frozen=True, slots=True)
class Retrieved:
    """What one question retrieved: the chunks, how long it took, and the user turn that carries them."""

    question: str
    hits: tuple[Hit, ...]
    ms: float  # embedding the question and searching
    message: str  # the user turn: the context, then the question
    context_span: tuple[int, int]  # where the retrieved text sits in ``message`` (characters)

    def as_dict(self) -> dict[str, Any]:
        """What a recording keeps of it."""
        return {"question": self.question, "ms": round(self.ms, 3), "chunks": [h.as_dict() for h in self.hits]}


def augmented_message(question: str, hits: tuple[Hit, ...] | list[Hit]) -> tuple[str, tuple[int, int]]:
    """The user turn for a retrieval-augmented answer, and the span of the retrieved text in it."""
    blocks = "\n\n".join(f"[{h.rank + 1}] ({h.chunk.source}) {h.chunk.text}" for h in hits)
    start = len(CONTEXT_HEAD)
    return f"{CONTEXT_HEAD}{blocks}\n\nQuestion: {question}", (start, start + len(blocks))


class Retriever:
    """An index and its embedding model (loaded once, closed with :meth:`close`)."""

    def __init__(self, index_path: str | Path, *, k: int = 3) -> None:
        from ..engine.embed import Embedder

        self.index: Index = open_index(index_path)
        model = self.index.model.get("path")
        path = Path(model) if isinstance(model, str) and model else None
        if path is None or not path.exists():
            raise IndexError_(f"{self.index.path}: the embedding model it was built with is not at {model or '?'}")
        self.embedder = Embedder(path, pooling=self.index.model["pooling"])
        self.index.check_model(self.embedder)
        self.k = k

    def retrieve(self, question: str, k: int | None = None) -> Retrieved:
        """The top ``k`` chunks for ``question`` (default: :attr:`k`)."""
        t0 = time.perf_counter()
        hits = tuple(self.index.search(self.embedder.embed(question).vector, self.k if k is None else k))
        ms = (time.perf_counter() - t0) * 1000.0
        message, span = augmented_message(question, hits)
        return Retrieved(question, hits, ms, message, span)

    def close(self) -> None:
        self.embedder.close()
