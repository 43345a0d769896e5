"""BPE merges step by step, for one word: the mechanism behind a gpt2-style tokenizer.

llama.cpp's BPE session (``llm_tokenizer_bpe_session`` in src/llama-vocab.cpp) splits the text into words
with the pre-tokenizer, maps each byte to a printable character (GPT-2's byte-to-unicode table: a space is
``Ġ``), then repeatedly merges the adjacent pair with the best (lowest) rank in ``tokenizer.ggml.merges``
until no listed pair is left. :func:`merge_steps` replays that for one word so the Learn screen can show
each merge; the end result is checked against the real tokenizer by the tests.
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_merge_ranks(path: str | Path) -> dict[tuple[str, str], int]:
    """``tokenizer.ggml.merges`` of a GGUF file as {(left, right): rank} (rank 0 merges first)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("tokenizer.ggml.merges")
    if field is None:
        return {}
    ranks: dict[tuple[str, str], int] = {}
    for rank, i in enumerate(field.data):
        left, _, right = bytes(field.parts[i]).decode("utf-8", "replace").partition(" ")
        ranks.setdefault((left, right), rank)
    return ranks


def merge_steps(word: str, ranks: dict[tuple[str, str], int]) -> list[tuple[list[str], tuple[str, str] | None, int]]:
    """Each state of ``word`` while merging: (symbols, the pair merged to get here, its rank); the first state
    is the word's bytes as symbols (no merge yet), the last one has no listed pair left."""
    table = byte_to_unicode()
    symbols = [table[b] for b in word.encode("utf-8")]
    steps: list[tuple[list[str], tuple[str, str] | None, int]] = [(list(symbols), None, -1)]
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        listed = [(rank, i) for rank, i in pairs if rank is not None]
        if not listed:
            break
        rank, i = min(listed)
        pair = (symbols[i], symbols[i + 1])
        symbols[i:i + 2] = [pair[0] + pair[1]]
        steps.append((list(symbols), pair, rank))
    return steps


def shown(symbol: str) -> str:
    """A symbol as a reader sees it: GPT-2's ``Ġ`` (a space) drawn as ``␣``."""
    return symbol.replace("Ġ", "␣").replace("Ċ", "\\n")
