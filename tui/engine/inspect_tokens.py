"""Tokenizer inspector data: how a text becomes tokens, and how small changes to it move the
next-token distribution (BOS or not, a trailing space or not: the classic prompt-format traps)."""

from __future__ import annotations

from typing import Any

from ..sampling.trace import raw_stats


def token_rows(engine: Any, tokens: list[int]) -> list[dict[str, Any]]:
    info = engine.info
    rows = []
    for t in tokens:
        piece = engine.piece(t)
        rows.append({"id": t, "piece": piece.decode("utf-8", "backslashreplace"), "bytes": len(piece),
                     "bos": t == info.bos, "eos": engine.is_eog(t), "special": engine.is_control(t)})
    return rows


def next_token_top(engine: Any, tokens: list[int], k: int = 5) -> list[tuple[str, float]]:
    engine.clear()
    engine.decode(tokens)
    stats = raw_stats(engine.logits(), k, head_size=0)
    return [(engine.piece(int(t)).decode("utf-8", "backslashreplace"), float(p))
            for t, p in zip(stats.top_ids.tolist(), stats.top_p.tolist())]


def inspect_text(engine: Any, text: str, *, add_bos: bool | None, parse_special: bool) -> dict[str, Any]:
    """Rows for ``text`` and the top-5 next tokens for four variants of it (the cache is cleared)."""
    tokens = engine.tokenize(text, add_bos=add_bos, parse_special=parse_special)
    base = text.rstrip(" ")
    variants: dict[str, list[int]] = {
        "with BOS": engine.tokenize(text, add_bos=True, parse_special=parse_special),
        "without BOS": engine.tokenize(text, add_bos=False, parse_special=parse_special),
        "no trailing space": engine.tokenize(base, add_bos=add_bos, parse_special=parse_special),
        "trailing space": engine.tokenize(base + " ", add_bos=add_bos, parse_special=parse_special),
    }
    tops = {label: next_token_top(engine, toks) for label, toks in variants.items() if toks}
    engine.clear()
    return {"tokens": token_rows(engine, tokens), "variants": {k: len(v) for k, v in variants.items()},
            "top": tops}
