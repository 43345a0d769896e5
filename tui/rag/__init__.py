"""Retrieval (no Textual): text files split into chunks, embedded with llama.cpp (:mod:`tui.engine.embed`), kept in
a local index (numpy vectors + a JSON manifest, :mod:`tui.rag.index`), searched by cosine similarity."""

from pathlib import Path

from .chunk import Chunk, chunk_text
from .index import Hit, Index, IndexError_, build_index, open_index
from .retrieve import Retrieved, Retriever, augmented_message

SAMPLE_DOCS = Path(__file__).parent / "sample"  # ten short documents on unrelated topics (shipped): try retrieval

__all__ = ["SAMPLE_DOCS", "Chunk", "Hit", "Index", "IndexError_", "Retrieved", "Retriever", "augmented_message", "build_index",
           "chunk_text", "open_index"]
