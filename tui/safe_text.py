"""The one sanitiser for text that came from outside: files, models, servers, users.

Everything llmtui shows in a terminal — in the dashboard's widgets and in CLI
output alike — that it did not write itself goes through :func:`visible`
first. Control characters become visible stand-ins, so an ESC in a recording's
prompt, a GGUF's ``general.name`` or a model's output can never set the
terminal's title, clear the screen or move the cursor:

* C0 controls and DEL → the Unicode control pictures (``\\x1b`` → ``␛``, DEL → ``␡``);
* C1 controls (U+0080–U+009F: ``\\x9b`` is CSI on some terminals) → ``\\x9b``;
* bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069: text that
  reads differently from what it is) → ``\\u202e``;
* lone surrogates (undecodable bytes of a command line, ``surrogateescape``) →
  ``\\xNN`` for the byte they stand for.

No Textual, no numpy: the CLI and every layer may use it. Exports escape for
their own format on top of this (``html.escape`` for HTML, :func:`markdown_text` and
:func:`markdown_code` for Markdown).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any


def _table(keep: str) -> dict[int, str]:
    table: dict[int, str] = {}
    for c in range(0x20):
        table[c] = chr(0x2400 + c)
    table[0x7F] = "\u2421"  # ␡
    for c in range(0x80, 0xA0):
        table[c] = f"\\x{c:02x}"
    for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[c] = f"\\u{c:04x}"
    for c in range(0xD800, 0xE000):
        table[c] = f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"
    for ch in keep:
        table.pop(ord(ch), None)
    return table


@functools.lru_cache(maxsize=8)
def _cached_table(keep: str) -> dict[int, str]:
    return _table(keep)


def visible(text: Any, keep: str = "") -> str:
    """``text`` (anything: it is ``str()``-ed) with every control character made visible.

    ``keep`` lists characters to leave as they are, e.g. ``"\\n\\t"`` for
    multi-line output. ``str.translate`` runs in C: cheap enough per token.
    """
    if not isinstance(text, str):
        text = str(text)
    return text.translate(_cached_table(keep))


def visible_lines(text: Any) -> str:
    """:func:`visible`, keeping newlines and tabs (generated text, multi-line messages)."""
    return visible(text, "\n\t")


_WHITESPACE_LABELS = str.maketrans({" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"})


def piece_label(piece: bytes) -> str:
    """A token's bytes as a label (panels, notices, CLI tables): space as ␣, whitespace as escapes, invalid
    UTF-8 as \\xNN, every other control character visible; never a Python repr (``b'...'``)."""
    text = piece.decode("utf-8", errors="backslashreplace")
    return visible(text.translate(_WHITESPACE_LABELS)) or "∅"


def is_clean(text: str, keep: str = "\n\t") -> bool:
    """True when ``text`` holds no character :func:`visible` would replace."""
    return visible(text, keep) == text


# JSON: json.dumps escapes C0 controls; these others pass through with ensure_ascii=False.
_JSON_EXTRA = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False)`` that a terminal can print safely: DEL, C1 controls, bidi
    overrides and lone surrogates (which no UTF-8 stream can carry) escaped as ``\\uXXXX`` too; parsed
    back, it is the same data."""
    kwargs.setdefault("ensure_ascii", False)
    text = json.dumps(obj, **kwargs)
    if kwargs["ensure_ascii"]:
        return text
    return _escape_surrogates(text).translate(_JSON_EXTRA)


def _escape_surrogates(text: str) -> str:
    if not any(0xD800 <= ord(c) < 0xE000 for c in text):
        return text
    return "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) < 0xE000 else c for c in text)


_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: "\\" + c for c in "\\`*_[]|~#"}})


def markdown_text(text: Any) -> str:
    """Text for a Markdown document: visible (a newline as ``\\n``, so a table cell stays one cell),
    HTML's ``& < >`` as entities and Markdown's active characters backslash-escaped: a recording's
    ``<script>`` or ``**`` reads as text in any renderer."""
    return visible(text, "\n").translate(_MD_ESCAPES).replace("\n", "\\n")


def markdown_code(text: Any) -> str:
    """An inline code span holding ``text`` (visible, a newline as ``\\n``): a fence longer than any
    backtick run inside, and ``|`` escaped so the span stays inside a table cell. Markdown reads
    nothing inside a code span, HTML included."""
    body = visible(text, "\n").replace("\n", "\\n").replace("|", "\\|")
    fence = "`" * (max(map(len, re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or not body.strip() else ""
    return f"{fence}{pad}{body}{pad}{fence}"
