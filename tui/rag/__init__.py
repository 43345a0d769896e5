"""Retrieval (no Textual): text files split into chunks, embedded with llama.cpp (:mod:`tui.engine.embed`), kept in
a local index (numpy vectors + a JSON manifest, :mod:`tui.rag.index`), searched by cosine similarity."""

from .chunk import Chunk, chunk_text
from .index import Hit, Index, IndexError_, build_index, open_index

__all__ = ["Chunk", "Hit", "Index", "IndexError_", "build_index", "chunk_text", "open_index"]
