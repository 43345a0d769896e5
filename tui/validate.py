"""Checks for values that come from outside, where they enter: command-line arguments here.

The other entries check their own values once, each in one place:
config files (``tui.config``, typed with pydantic), engine settings from any
source (``EngineSettings``: types and ranges), presets (``tui.sampling.presets``:
each sampler's declared parameters), themes (``tui.app.themes``), recordings
(``tui.record.checks``) and API bodies (``tui.server.http``, pydantic).

Every check gives one line that names the value and says what would be right.
No Textual, no llama_cpp.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from .engine.settings import MAX_BATCH, MAX_CTX, MAX_GPU_LAYERS, MAX_TOKENS, SEED_MAX, max_threads

MAX_REPS = 100


def int_in(lo: int, hi: int | Callable[[], int] | None, what: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number in lo..hi (``hi`` may be computed when checked)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        top = hi() if callable(hi) else hi
        if value < lo or (top is not None and value > top):
            span = f"{lo:,}..{top:,}" if top is not None else f"at least {lo:,}"
            raise argparse.ArgumentTypeError(f"{value:,} is outside {span}{what}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its messages
    return parse


def number_in(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number (``nan`` and ``inf`` are refused), optionally in lo..hi."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value:g} is outside {lo:g}..{hi:g}" if lo is not None and hi is not None
                                             else f"{value:g} must be at least {lo:g}" if lo is not None
                                             else f"{value:g} must be at most {hi:g}")
        return value

    parse.__name__ = "number"
    return parse


def utf8_text(text: str) -> str:
    """An argparse type for text that goes to the model: the command line's bytes must be UTF-8
    (Python keeps undecodable bytes as lone surrogates, which no tokenizer can take)."""
    for i, ch in enumerate(text):
        if 0xD800 <= ord(ch) < 0xE000:
            byte = f"byte 0x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else "a lone surrogate"
            raise argparse.ArgumentTypeError(f"not valid UTF-8 ({byte} at character {i}): give UTF-8 text")
    return text


utf8_text.__name__ = "text"

# the engine's ranges, as argument types (the values are checked again by EngineSettings)
N_CTX = int_in(8, MAX_CTX)
THREADS = int_in(0, max_threads, " (0: automatic; at most 4 per logical CPU)")
BATCH = int_in(1, MAX_BATCH)
GPU_LAYERS = int_in(-1, MAX_GPU_LAYERS, " (-1: all)")
SEED = int_in(-1, SEED_MAX, " (-1: a random seed)")
TOKENS = int_in(0, MAX_TOKENS)
N_KEEP = int_in(-1, MAX_CTX, " (-1: the prompt)")
PORT = int_in(0, 65535, " (0: a free port)")
STEP = int_in(0, MAX_TOKENS)
TOP_K = int_in(-1, (1 << 31) - 1, " (<= 0: off)")
PROB = number_in(0.0, 1.0)
TEMP = number_in(-1e6, 1e6)
REPS = int_in(1, MAX_REPS)
BODY_MIB = number_in(0.001, 1024.0)
