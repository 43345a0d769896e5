"""Units and short texts shown to people (no Textual, no numpy): every screen and CLI command formats
sizes, counts, numbers read from files and token pieces through these, so each reads the same everywhere."""

from __future__ import annotations

from typing import Any

from .safe_text import visible


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


def human_count(n: float) -> str:
    """134_515_008 → '135M', 1_710_000_000 → '1.7B': a parameter count in the units people quote."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            scaled = n / scale
            return f"{scaled:.0f}{unit}" if abs(scaled) >= 100 else f"{scaled:.1f}{unit}"
    return f"{n:.0f}"


def short_number(value: Any) -> str:
    """A number read from a file as people write it: at most 7 significant digits, ``:g`` style
    (a GGUF's float32 1e-5 is 9.999999747378752e-06 as a Python float: shown as '1e-05'); lists of
    numbers comma-separated; anything else as text, control characters visible."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(short_number(v) for v in value)
    return visible(value)


def quoted(value: Any) -> str:
    """A value a user gave, for an error message: text in quotes with control characters visible (never
    Python's escapes: a path's backslashes stay single), anything else as Python writes it."""
    return f"'{visible(value)}'" if isinstance(value, str) else visible(repr(value))
