"""Widgets and helpers that never pass a control character (or markup) from outside to the terminal.

Textual's ``Input`` renders its value as-is, so an ESC in a prompt that came
from a recording, ``--prompt`` or a paste would reach the terminal raw. Here
the value stays exactly what the user has (it is what the model reads); only
what is drawn goes through the one sanitiser, character for character so the
cursor stays where it belongs.
"""

from __future__ import annotations

from typing import Any

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Input

from ...safe_text import visible

_SAME_WIDTH = "\ufffd"  # what visible() writes as several characters is drawn as one here


def _one_for_one(text: str) -> str:
    out = visible(text)
    if len(out) == len(text):
        return out
    return "".join(v if len(v := visible(ch)) == 1 else _SAME_WIDTH for ch in text)


class VisibleControls(Highlighter):
    """A highlighter (Input's public hook on what it draws) that makes control characters visible."""

    def __call__(self, text: str | Text) -> Text:
        if isinstance(text, str):
            return Text(_one_for_one(text))
        shown = _one_for_one(text.plain)
        if shown == text.plain:
            return text
        out = Text(shown, style=text.style, justify=text.justify, overflow=text.overflow, no_wrap=text.no_wrap,
                   end=text.end)
        out.spans = list(text.spans)
        return out

    def highlight(self, text: Text) -> None:  # __call__ does the work
        return None


class SafeInput(Input):
    """``Input`` drawn through :class:`VisibleControls`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("highlighter", VisibleControls())
        super().__init__(*args, **kwargs)


def plain(value: Any) -> Text:
    """A table cell or label from outside (a file name, a model's name, a recording's prompt): plain
    text, never markup (``[`` in a name would be read as a tag), control characters visible."""
    return Text(visible(str(value)))
