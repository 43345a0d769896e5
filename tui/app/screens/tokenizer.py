"""Tokenizer inspector: token chips for any text, BOS / special-token toggles, and how the
next-token top-5 moves with and without BOS, with and without a trailing space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Checkbox, DataTable, Input, Static

from ...engine.errors import EngineError
from ...safe_text import piece_label, visible
from ..widgets.safe import SafeInput, plain


class TokenizerScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss", "Close", id="tokenizer.close")]
    DEFAULT_CSS = """
    TokenizerScreen { align: center middle; }
    TokenizerScreen > Vertical { width: 118; max-width: 96%; height: auto; max-height: 94%;
                                 border: round $primary; background: $surface; padding: 0 1; }
    TokenizerScreen #toggles { height: auto; }
    TokenizerScreen #chips { height: auto; max-height: 10; margin: 1 0; }
    TokenizerScreen #compare { height: auto; max-height: 10; }
    """

    def __init__(self, text: str, job: Callable[..., None], *, special: bool = False) -> None:
        super().__init__()
        self.text = text
        self.job = job
        self.special = special
        self.result: Any = None  # the last inspection (rows, variants, top-5s) or an EngineError

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("[b]Tokenizer[/b] — type text and press Enter · chips show each token's piece, id and bytes; "
                         "[reverse] special [/reverse] tokens are marked · Esc closes")
            yield SafeInput(self.text, id="text")
            with Horizontal(id="toggles"):
                yield Checkbox("add BOS (off = as the model asks)", id="bos")
                yield Checkbox("parse special tokens", self.special, id="special")
            yield Static("", id="chips")
            yield Static("[b]next-token top-5[/b] for variants of the text (the prompt-format traps)")
            table: DataTable[str] = DataTable(id="compare", cursor_type="none", zebra_stripes=True)
            table.add_columns("variant", "1", "2", "3", "4", "5")
            yield table

    def on_mount(self) -> None:
        self._run()

    @on(Input.Submitted, "#text")
    @on(Checkbox.Changed)
    def _run(self) -> None:
        text = self.query_one("#text", Input).value
        if not text:
            return
        add_bos = True if self.query_one("#bos", Checkbox).value else None
        self.query_one("#chips", Static).update("tokenizing…")
        self.job(text, add_bos, self.query_one("#special", Checkbox).value, self._show)

    def _show(self, result: Any) -> None:
        self.result = result
        if isinstance(result, EngineError):
            self.query_one("#chips", Static).update(Text(visible(str(result)), style="red"))
            return
        chips = Text()
        for row in result["tokens"]:
            label = f" {visible(row['piece'], chr(10))} "
            flag = "BOS" if row["bos"] else ("EOS" if row["eos"] else ("special" if row["special"] else ""))
            style = "reverse bold" if flag else "on grey23"
            chips.append(label.replace("\n", "\\n"), style=style)
            chips.append(f"{row['id']}·{row['bytes']}B{('·' + flag) if flag else ''}", style="dim")
            chips.append("  ")
        chips.append(f"\n{len(result['tokens'])} tokens", style="bold")
        self.query_one("#chips", Static).update(chips)
        table = self.query_one("#compare", DataTable)
        table.clear()
        for label, top in result["top"].items():
            n = result["variants"][label]
            cells = [plain(f"{piece_label(piece.encode())} {p:.1%}") for piece, p in top]  # text: \xNN kept
            table.add_row(plain(f"{label} ({n} tok)"), *cells)
