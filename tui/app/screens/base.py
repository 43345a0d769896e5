"""The frame the large modal screens share (anatomy, labs, learn, results)."""

from __future__ import annotations

from textual.screen import ModalScreen, ScreenResultType


class WideModal(ModalScreen[ScreenResultType]):
    """A modal screen whose one Vertical fills most of the terminal, framed."""

    DEFAULT_CSS = """
    WideModal { align: center middle; }
    WideModal > Vertical { width: 96%; height: 94%; border: round $primary; background: $surface; padding: 0 1; }
    """
