"""Units and short texts shown to people (no Textual, no numpy)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'; bytes are whole, larger units one decimal, GiB the largest."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def shorten(text: str, width: int) -> str:
    """``text`` stripped (and without backquotes) in at most ``width`` characters, with … when cut."""
    text = text.strip().replace("`", "")
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
