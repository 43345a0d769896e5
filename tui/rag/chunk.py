"""Splitting text into overlapping chunks, at whitespace where possible (sizes in characters)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class Chunk:
    source: str  # the file, relative to the indexed directory
    start: int  # character offsets in the file's text
    end: int
    text: str


def check_chunking(size: int, overlap: int) -> None:
    if not 1 <= size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be 1..{MAX_CHUNK:,} characters (got {size})")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be 0..size-1 ({size - 1}) characters (got {overlap})")


def chunk_text(text: str, source: str, *, size: int = 800, overlap: int = 100) -> list[Chunk]:
    """Chunks of at most ``size`` characters, each starting ``overlap`` characters before the previous one ended;
    a cut falls on the last whitespace of the window when there is one in its second half."""
    check_chunking(size, overlap)
    out: list[Chunk] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + size)
        if end < n:
            cut = max(text.rfind(" ", start + size // 2, end), text.rfind("\n", start + size // 2, end))
            if cut > start:
                end = cut + 1
        piece = text[start:end]
        if piece.strip():
            out.append(Chunk(source, start, end, piece.strip()))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)  # begin at a word: the first space inside the overlap
        start = space + 1 if overlap and space != -1 and space + 1 < end else nxt
    return out
