"""What DRY needs from the model: token pieces and a tokenizer (no llama_cpp import here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence


class DryVocab:
    """The model's token pieces and tokenizer, and the breaker sequences DRY derives from them."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes], tokenize: Callable[[str], list[int]]) -> None:
        self.n_vocab = n_vocab
        self.piece = piece
        self.tokenize = tokenize
        self._breakers: dict[tuple[str, ...], dict[int, list[list[int]]]] = {}

    def breakers(self, strings: Sequence[str], max_char_len: int = 40, max_seq_len: int = 20) -> dict[int, list[list[int]]]:
        """llama.cpp's ``get_overlapping_token_sequences`` for every breaker string, cached."""
        key = tuple(strings)
        cached = self._breakers.get(key)
        if cached is not None:
            return cached
        out: dict[int, list[list[int]]] = {}
        pieces = [self.piece(t) for t in range(self.n_vocab)]
        for s in strings:
            raw = s.encode("utf-8")[:max_char_len]
            if not raw:
                continue
            for tok, word in enumerate(pieces):
                if raw in word:
                    out.setdefault(tok, [])
                    if [] not in out[tok]:
                        out[tok].append([])
                    continue
                pos = word.find(raw[:1])
                while pos != -1:
                    i = 1
                    match = True
                    while i < len(raw) and pos + i < len(word):
                        if word[pos + i] != raw[i]:
                            match = False
                            break
                        i += 1
                    if match:
                        tail = self.tokenize(raw[i:].decode("utf-8", errors="ignore"))[:max_seq_len]
                        seqs = out.setdefault(tok, [])
                        if tail not in seqs:
                            seqs.append(tail)
                    pos = word.find(raw[:1], pos + 1)
        self._breakers[key] = out
        return out
