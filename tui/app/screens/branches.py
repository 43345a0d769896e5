"""The token tree's view (every branch: where it leaves its parent, the token chosen there, its figures) and the
small box that asks for text to insert at a step."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ...safe_text import piece_label
from ..widgets.safe import SafeInput, plain

COLUMNS = ("branch", "shown", "origin", "leaves", "choice", "p", "log p", "length", "cache")


def branch_rows(tree: Any, shown: int | None,
                resident: Collection[int] | None) -> list[tuple[int, tuple[str, ...]]]:
    """(branch id, cells) for each branch, depth first: the tree as the view lists it (no Textual objects, so
    the figures can be read as they are drawn). ``resident`` None: a recording's tree (no cache behind it)."""
    rows = []
    for depth, b in tree.depth_first():
        choice = b.choice
        token = piece_label(choice.piece) if choice is not None else "—"
        logprob = f"{b.logprob:.2f}" if math.isfinite(b.logprob) else "-∞"
        rows.append((b.id, (
            "  " * depth + ("└ " if depth else "") + str(b.id),
            "●" if b.id == shown else "",
            b.origin,
            f"{b.parent} @ step {b.fork}" if b.parent is not None else "the prompt",
            token,
            f"{choice.prob:.3f}" if choice is not None and choice.prob == choice.prob else "—",
            logprob,
            str(b.length),
            "recorded" if resident is None else "in cache" if b.id in resident else "re-evaluated on visit",
        )))
    return rows


class BranchScreen(ModalScreen[Any]):
    """Dismisses with ("switch", id), ("continue", id) or None. ↑/↓ move, Enter switches, c continues."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="tree.close"),
        Binding("c", "continue_branch", "Continue", id="tree.continue"),
    ]
    DEFAULT_CSS = """
    BranchScreen { align: center middle; }
    BranchScreen > Vertical { width: 120; max-width: 96%; height: auto; max-height: 90%;
                              border: round $primary; background: $surface; padding: 0 1; }
    BranchScreen DataTable { height: auto; max-height: 30; }
    BranchScreen #tree-note { color: $text-muted; height: auto; }
    """

    def __init__(self, tree: Any, shown: int | None, resident: Collection[int] | None,
                 note: str = "↑/↓ move · Enter shows the branch (the cache then holds it) · c continues it from its "
                             "end · Esc closes") -> None:
        super().__init__()
        self.token_tree, self.shown = tree, shown
        self.resident = frozenset(resident) if resident is not None else None
        self.note = note
        self.ids: list[int] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="tree-title")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="tree")
            table.add_columns(*COLUMNS)
            yield table
            yield Static(Text(self.note), id="tree-note")

    def on_mount(self) -> None:
        self.fill()
        self.query_one(DataTable).focus()

    def update_tree(self, tree: Any, shown: int | None, resident: Collection[int] | None) -> None:
        """The tree changed while the view is open (a run forked, a switch finished)."""
        self.token_tree, self.shown = tree, shown
        self.resident = frozenset(resident) if resident is not None else None
        self.fill()

    def fill(self) -> None:
        table = self.query_one(DataTable)
        keep = self.ids[table.cursor_row] if self.ids and 0 <= table.cursor_row < len(self.ids) else self.shown
        table.clear()
        rows = branch_rows(self.token_tree, self.shown, self.resident)
        self.ids = [bid for bid, _ in rows]
        for bid, cells in rows:
            table.add_row(*(plain(c) for c in cells), key=str(bid))
        if keep in self.ids:
            table.move_cursor(row=self.ids.index(keep))
        n = len(self.ids)
        self.query_one("#tree-title", Static).update(Text.assemble(
            ("Token tree", "bold"),
            f" — {n} branch{'es' if n != 1 else ''} of a {len(self.token_tree.prompt_tokens)}-token prompt · "
            + ("a recording" if self.resident is None else f"{len(self.resident)} in the KV cache")
            + " · ● the one shown"))

    @property
    def selected(self) -> int | None:
        row = self.query_one(DataTable).cursor_row
        return self.ids[row] if 0 <= row < len(self.ids) else None

    @on(DataTable.RowSelected, "#tree")
    def _switch(self, event: DataTable.RowSelected) -> None:
        self.dismiss(("switch", int(event.row_key.value)))

    def action_continue_branch(self) -> None:
        if self.selected is not None:
            self.dismiss(("continue", self.selected))


class InsertTextScreen(ModalScreen[Any]):
    """Asks for text to insert at a step; dismisses with the text (possibly empty) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="insert.close")]
    DEFAULT_CSS = """
    InsertTextScreen { align: center middle; }
    InsertTextScreen > Vertical { width: 72; max-width: 96%; height: auto; border: round $primary;
                                  background: $surface; padding: 0 1; }
    InsertTextScreen #insert-note { color: $text-muted; }
    """

    def __init__(self, title: str, note: str) -> None:
        super().__init__()
        self.title_text, self.note = title, note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(plain(self.title_text))
            yield SafeInput(placeholder="text — Enter forces its tokens, then generation goes on", id="insert")
            yield Static(plain(self.note), id="insert-note")

    def on_mount(self) -> None:
        self.query_one("#insert", Input).focus()

    @on(Input.Submitted, "#insert")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)
