"""The ? screen: every key, its binding id (for remapping) and what it does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..widgets.safe import plain

HELP_TEXT = """[b]llmtui[/b] — watch a model choose each token.
Type a prompt and press [b]Enter[/b]. Keys work when the prompt box is not focused
(press [b]Esc[/b] to leave it, [b]i[/b] to come back). Remap any key in config.toml:
[dim][keys]  preset.next = "n"[/dim]   (binding id = key)."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90; max-width: 95%; height: auto; max-height: 90%;
                            border: round $primary; background: $surface; padding: 1 2; }
    HelpScreen DataTable { height: auto; max-height: 28; }
    """

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(HELP_TEXT)
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "action", "binding id")
            for key, description, binding_id in self.rows:
                table.add_row(plain(key), description, plain(binding_id))  # keys come from the config
            yield table
