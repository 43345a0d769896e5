"""The model picker: every discovered model, searchable; Enter loads the highlighted one."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ...safe_text import visible
from ...units import human_bytes, human_count
from ..widgets.safe import SafeInput, plain


class ModelPicker(ModalScreen[Any]):
    """Dismisses with the chosen ModelEntry (or None)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="models.close")]
    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker > Vertical { width: 120; max-width: 96%; height: auto; max-height: 90%;
                             border: round $primary; background: $surface; padding: 0 1; }
    ModelPicker DataTable { height: auto; max-height: 22; }
    ModelPicker #filter { margin: 0 0 1 0; }
    """

    def __init__(self, entries: list[Any], current: str, loaded: list[str]) -> None:
        super().__init__()
        self.entries = entries
        self.current = current
        self.loaded = set(loaded)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble(("Models", "bold"), " — loaded now: ", (visible(self.current), "bold"),
                                       " · type to filter (Enter picks the only match), ↑↓ and Enter to switch (",
                                       ("warm", "italic"),
                                       " = still in memory), Esc to close"))
            yield SafeInput(placeholder="filter by name, arch, quant…", id="filter")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="models")
            table.add_columns("name", "arch", "quant", "params", "size", "ctx", "vocab", "chat", "source", "")
            yield table

    def on_mount(self) -> None:
        self._fill("")
        self.query_one("#filter", Input).focus()

    def on_key(self, event) -> None:
        # ↓ from the filter box goes to the list
        if event.key == "down" and self.focused is self.query_one("#filter", Input):
            self.query_one(DataTable).focus()
            event.stop()

    def _fill(self, needle: str) -> None:
        table = self.query_one(DataTable)
        table.clear()
        low = needle.lower()
        for i, e in enumerate(self.entries):
            hay = f"{e.name} {e.arch} {e.quant} {e.source}".lower()
            if low and low not in hay:
                continue
            if e.usable:
                state = "● loaded" if e.name == self.current else ("warm" if e.path in self.loaded else "")
                table.add_row(plain(e.name), plain(e.arch), plain(e.quant), human_count(e.n_params), human_bytes(e.size),
                              f"{e.n_ctx_train:,}", f"{e.n_vocab:,}", "yes" if e.has_chat_template else "no",
                              e.source, state, key=str(i))
            else:
                table.add_row(plain(e.name), "unusable", plain((e.error or "")[:60]), "", "", "", "", "", e.source, "",
                              key=str(i))

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#filter")
    def _submitted(self) -> None:
        """Enter in the filter: the one model that matches is picked; with several, the list takes over."""
        table = self.query_one(DataTable)
        if table.row_count == 1:
            self._pick(int(table.coordinate_to_cell_key(Coordinate(0, 0)).row_key.value))
        elif table.row_count:
            table.focus()
        else:
            self.notify("no model matches the filter", severity="warning")

    @on(DataTable.RowSelected, "#models")
    def _chosen(self, event: DataTable.RowSelected) -> None:
        self._pick(int(event.row_key.value))

    def _pick(self, index: int) -> None:
        entry = self.entries[index]
        if not entry.usable:
            self.notify(f"{entry.name}: {entry.error}", severity="error")
            return
        self.dismiss(entry)
