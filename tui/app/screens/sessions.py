"""The sessions browser (recordings in the sessions directory) and the replay's jump box."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ...record.reader import MAX_HEADER_BYTES, SessionFileError, read_header
from ...safe_text import visible
from ..widgets.safe import SafeInput, plain


def summarize(path: Path) -> dict[str, Any]:
    """Model, preset, token count and date of a recording, read cheaply (the checked header, then a
    count of step lines); anything unreadable is listed as such, never raised."""
    info: dict[str, Any] = {"path": path, "model": "?", "preset": "?", "tokens": 0, "date": "?", "state": ""}
    try:
        header = read_header(path)
        steps = 0
        complete = False
        with open(path, "rb") as fh:
            fh.readline(MAX_HEADER_BYTES)
            for line in fh:
                if line.startswith(b'{"type":"step"'):
                    steps += 1
                elif line.startswith(b'{"type":"footer"'):
                    complete = True
    except (OSError, SessionFileError):
        info["state"] = "unreadable"
        return info
    info.update(model=header["model"]["name"], preset=header["preset"]["name"], tokens=steps,
                date=str(header.get("created", "?"))[:19].replace("T", " "), state="" if complete else "cut off")
    if header.get("parent"):
        info["state"] = (info["state"] + f" fork@{header['parent'].get('fork_step')}").strip()
    return info


class SessionsScreen(ModalScreen[Any]):
    """Dismisses with the path to replay (or None). d deletes (asks first)."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="sessions.close"),
        Binding("d,delete", "delete", "Delete", id="sessions.delete"),
    ]
    DEFAULT_CSS = """
    SessionsScreen { align: center middle; }
    SessionsScreen > Vertical { width: 120; max-width: 96%; height: auto; max-height: 90%;
                                border: round $primary; background: $surface; padding: 0 1; }
    SessionsScreen DataTable { height: auto; max-height: 24; }
    SessionsScreen #confirm { color: $warning; height: auto; }
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.paths: list[Path] = []
        self._confirm: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble(("Sessions", "bold"), f" in {visible(self.directory)} — Enter replays, d deletes, "
                                        "Esc closes"))
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="sessions")
            table.add_columns("date", "model", "preset", "tokens", "file", "")
            yield table
            yield Static("", id="confirm")

    def on_mount(self) -> None:
        self._fill()
        self.query_one(DataTable).focus()

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.paths = sorted(self.directory.glob("*.jsonl"), reverse=True) if self.directory.is_dir() else []
        for i, path in enumerate(self.paths):
            s = summarize(path)
            table.add_row(plain(s["date"]), plain(s["model"]), plain(s["preset"]), str(s["tokens"]), plain(path.name),
                          s["state"], key=str(i))
        if not self.paths:
            self.query_one("#confirm", Static).update("no recordings yet: ctrl+r in the dashboard records")

    @on(DataTable.RowSelected, "#sessions")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.dismiss(self.paths[int(event.row_key.value)])

    def action_delete(self) -> None:
        table = self.query_one(DataTable)
        if not self.paths:
            return
        path = self.paths[table.cursor_row]
        if self._confirm != path:
            self._confirm = path
            self.query_one("#confirm", Static).update(plain(f"delete {path.name}? press d again to confirm"))
            return
        try:
            path.unlink()
        except OSError as exc:
            self.notify(f"cannot delete {path.name}: {exc.strerror}", severity="error")
            return
        self._confirm = None
        self.query_one("#confirm", Static).update(plain(f"deleted {path.name}"))
        self._fill()


class JumpScreen(ModalScreen[Any]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="jump.close")]
    DEFAULT_CSS = """
    JumpScreen { align: center middle; }
    JumpScreen > Vertical { width: 40; height: auto; border: round $primary; background: $surface; padding: 0 1; }
    """

    def __init__(self, n_steps: int) -> None:
        super().__init__()
        self.n_steps = n_steps

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"jump to step (0–{self.n_steps})")
            yield SafeInput(type="integer", id="step")

    @on(Input.Submitted)
    def _go(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(int(event.value))
        except ValueError:
            self.notify("a step number, please", severity="warning")
