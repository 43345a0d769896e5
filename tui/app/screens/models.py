"""Model list (the picker that loads a model comes with the models issue)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..widgets.panels import human_bytes


class ModelsScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,m", "dismiss", "Close", id="models.close")]
    DEFAULT_CSS = """
    ModelsScreen { align: center middle; }
    ModelsScreen > Vertical { width: 110; max-width: 95%; height: auto; max-height: 90%;
                              border: round $primary; background: $surface; padding: 1 2; }
    ModelsScreen DataTable { height: auto; max-height: 24; }
    """

    def __init__(self, entries: list[Any], current: str) -> None:
        super().__init__()
        self.entries = entries
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]Models[/b] (what `llmtui models` finds) — loaded: [b]{self.current}[/b]\n"
                         "[dim]Start llmtui with --model NAME to use another one.[/dim]")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("name", "arch", "quant", "params", "size", "ctx", "vocab", "chat", "source")
            for e in self.entries:
                if e.usable:
                    table.add_row(e.name, e.arch, e.quant, f"{e.n_params / 1e6:.0f}M", human_bytes(e.size),
                                  f"{e.n_ctx_train:,}", f"{e.n_vocab:,}", "yes" if e.has_chat_template else "no",
                                  e.source)
                else:
                    table.add_row(e.name, "unusable", e.error or "", "", "", "", "", "", e.source)
            yield table
