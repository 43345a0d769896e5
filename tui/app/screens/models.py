"""The model picker: every discovered model, searchable; Enter loads the highlighted one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ...remote.entries import looks_like_url
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

    def __init__(self, entries: list[Any], current: str, loaded: list[str],
                 add_url: Callable[[str], Any] | None = None) -> None:
        super().__init__()
        self.entries = entries
        self.add_url = add_url  # a server's URL typed in the filter becomes an entry (tui.app.remote_host)
        self.current = current
        self.loaded = set(loaded)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble(("Models", "bold"), " — loaded now: ", (visible(self.current), "bold"),
                                       " · type to filter (Enter picks the only match), ↑↓ and Enter to switch (",
                                       ("warm", "italic"),
                                       " = still in memory), Esc to close; a server's URL + Enter attaches to it"))
            yield SafeInput(placeholder="filter by name, arch, quant… or http://host:port of a server", id="filter")
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
                remote = e.source == "remote"  # a server: no file, figures known once attached
                table.add_row(plain(e.name), plain(e.arch), plain(e.quant), "—" if remote else human_count(e.n_params),
                              "—" if remote else human_bytes(e.size), f"{e.n_ctx_train:,}" if e.n_ctx_train else "?",
                              f"{e.n_vocab:,}" if e.n_vocab else "?", "yes" if e.has_chat_template else "no",
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
        text = self.query_one("#filter", Input).value
        if self.add_url is not None and looks_like_url(text) and table.row_count != 1:
            from ...remote import RemoteError

            try:
                self.dismiss(self.add_url(text))
            except RemoteError as exc:
                self.notify(str(exc), severity="error")
            return
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
