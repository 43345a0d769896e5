"""The ? screen: every key, its binding id (for remapping) and what it does."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..widgets.safe import plain

HELP_TEXT = """[b]llmtui[/b] — watch a model choose each token. Type a prompt and press [b]Enter[/b]. \
Keys work when the prompt box is not focused (press [b]Esc[/b] to leave it, [b]i[/b] to come back). \
↑↓, PgUp/PgDn scroll this list; Esc closes it.
Remap any key in config.toml: [dim]\\[keys]  {example}[/dim]   (binding id = key)."""


def remap_example(rows: list[tuple[str, str, str]], binding_id: str = "preset.next") -> str:
    """A ``[keys]`` line for the help text that moves ``binding_id`` to a key nothing is bound to (the
    keys as configured: a remapped key is taken, the one it left is free)."""
    taken = {k.strip() for keys, _desc, _bid in rows for k in keys.split(",")}
    free = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in taken)
    ids = [bid for *_, bid in rows]
    return f'{binding_id if binding_id in ids or not ids else ids[0]} = "{free}"'


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 95%; height: auto; max-height: 90%;
                                  border: round $primary; background: $surface; padding: 1 2; }
    HelpScreen DataTable { height: auto; max-height: initial; overflow: hidden; }
    """

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        # one scroll view for the text and the whole table: ↓ scrolls at once (a table cursor would first
        # walk down the rows already on screen)
        with VerticalScroll(id="help"):
            yield Static(HELP_TEXT.format(example=plain(remap_example(self.rows)).markup))
            table: DataTable[str] = DataTable(cursor_type="none", zebra_stripes=True)
            table.can_focus = False
            table.add_columns("key", "action", "binding id")
            for key, description, binding_id in self.rows:
                table.add_row(plain(key), description, plain(binding_id))  # keys come from the config
            yield table
