"""Preset picker and in-place editor.

Left: the presets (built-in and yours). Right: the highlighted preset's
samplers and parameters. Enter on a preset uses it. Enter on a parameter puts
it in the edit box: change the value, Enter applies it at once (the current
step is re-sampled with it). ctrl+s saves the edited preset under a new name
as a TOML file in the user presets directory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from ...sampling.presets import SAMPLER_TYPES, PresetError
from ..widgets.safe import SafeInput, plain


def parse_value(text: str, kind: type) -> Any:
    text = text.strip()
    if kind is float:
        return float(text)
    if kind is int:
        return int(text)
    if kind in (list, dict):
        return json.loads(text)
    return text


class WidthWatchingTable(DataTable[Any]):
    """A DataTable that calls ``on_width`` after each change of its size: rows that wrap are laid out for
    one width (the presets table's changes with the parameters table beside it, and with the terminal)."""

    def __init__(self, on_width: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_width = on_width

    def on_resize(self) -> None:
        self.call_after_refresh(self.on_width)


class PresetScreen(ModalScreen[Any]):
    """Dismisses with the preset to use (or None)."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="presets.close"),
        Binding("ctrl+s", "save_as", "Save as…", id="presets.save"),
    ]
    DEFAULT_CSS = """
    PresetScreen { align: center middle; }
    PresetScreen > VerticalScroll { width: 118; max-width: 96%; height: auto; max-height: 92%;
                              border: round $primary; background: $surface; padding: 0 1; }
    PresetScreen #lists { height: auto; max-height: 20; }
    PresetScreen #presets { width: 1fr; height: auto; max-height: 20; }
    PresetScreen #params { width: auto; max-width: 60%; height: auto; max-height: 20; margin-left: 1; }
    PresetScreen #chain { height: auto; margin: 1 0 0 0; color: $text-muted; }
    """

    def __init__(self, catalog: Any, current: Any, on_change: Callable[[Any], None],
                 save: Callable[[Any], str]) -> None:
        super().__init__()
        self.catalog = catalog
        self.current = current  # the preset in use (may be an edited one)
        self.shown = current
        self.on_change = on_change
        self.save = save
        self._editing: tuple[str, str] | None = None  # (sampler, param)
        self._mode = "edit"

    def compose(self) -> ComposeResult:
        with VerticalScroll(can_focus=False):  # on a short terminal the edit box is below the fold
            yield Static("[b]Presets[/b] — Enter on a preset uses it · Enter on a parameter edits it "
                         "(applied at once, the current step is re-sampled) · ctrl+s saves as · Esc closes")
            with Horizontal(id="lists"):
                yield WidthWatchingTable(self._fill_presets, id="presets", cursor_type="row", zebra_stripes=True)
                params: DataTable[str] = DataTable(id="params", cursor_type="row", zebra_stripes=True)
                params.add_columns("#", "sampler", "parameter", "value")
                yield params
            yield Static("", id="chain")
            yield SafeInput(placeholder="select a parameter to edit it", id="edit")

    def on_mount(self) -> None:
        self._names = list(self.catalog.presets)  # the rows of the presets table, in order
        if self.current.name not in self._names:
            self._names.insert(0, self.current.name)
        self._description_width = 0
        self._show(self.current)
        self.query_one("#presets", DataTable).focus()  # filled when it learns its width

    def _fill_presets(self, *, force: bool = False) -> None:
        """The presets with their descriptions wrapped in the width the table has (a long one is never
        cut short); rebuilt when that width changes, or (``force``) when the rows did, the shown preset
        highlighted then."""
        table = self.query_one("#presets", DataTable)
        name_width = max(len("preset"), *(len(n) for n in self._names))
        # the padding of both columns, and room for the scrollbar the table may need
        width = max(8, table.size.width - name_width - 4 * table.cell_padding - table.styles.scrollbar_size_vertical)
        if width == self._description_width and not force:
            return
        self._description_width = width
        highlighted = self.shown.name
        if table.row_count and not force:
            highlighted = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        with self.prevent(DataTable.RowHighlighted):  # the same preset stays shown, its parameters untouched
            table.clear(columns=True)
            table.add_column("preset", width=name_width)
            table.add_column("description", width=width)
            for name in self._names:
                p = self._preset(name)
                table.add_row(plain(name), plain(p.description or ("(edited)" if p is self.current else "")),
                              key=name, height=None)
            table.move_cursor(row=self._names.index(highlighted) if highlighted in self._names else 0)

    def _preset(self, name: str) -> Any:
        return self.current if name == self.current.name else self.catalog.presets[name]

    def _show(self, preset: Any) -> None:
        self.shown = preset
        params = self.query_one("#params", DataTable)
        params.clear()
        for i, spec in enumerate(preset.samplers):
            schema = SAMPLER_TYPES[spec.name].params
            if not schema:
                params.add_row(str(i), spec.name, "", "", key=f"{i}:")
            for key, p in schema.items():
                value = spec.params.get(key, p.default)
                params.add_row(str(i), spec.name, key, plain(json.dumps(value)) if not isinstance(value, (int, float))
                               else f"{value:g}", key=f"{i}:{key}")
        self.query_one("#chain", Static).update(plain(preset.describe()))

    @on(DataTable.RowHighlighted, "#presets")
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show(self._preset(event.row_key.value))

    @on(DataTable.RowSelected, "#presets")
    def _use(self, event: DataTable.RowSelected) -> None:
        self.dismiss(self._preset(event.row_key.value))

    @on(DataTable.RowSelected, "#params")
    def _edit(self, event: DataTable.RowSelected) -> None:
        index, _, param = event.row_key.value.partition(":")
        if not param:
            return
        spec = self.shown.samplers[int(index)]
        value = spec.params.get(param, SAMPLER_TYPES[spec.name].params[param].default)
        self._editing = (spec.name, param)
        self._mode = "edit"
        box = self.query_one("#edit", Input)
        box.value = json.dumps(value)
        box.placeholder = f"{spec.name}.{param}"
        box.border_title = f"{spec.name}.{param} — Enter applies"
        box.focus()

    @on(Input.Submitted, "#edit")
    def _submitted(self, event: Input.Submitted) -> None:
        if self._mode == "save":
            self._save(event.value)
            return
        if self._editing is None:
            return
        sampler, param = self._editing
        kind = SAMPLER_TYPES[sampler].params[param].kind
        try:
            value = parse_value(event.value, kind)
            edited = self.shown.with_param(sampler, param, value)
        except (ValueError, PresetError) as exc:
            self.notify(str(exc).split(": ", 1)[-1], severity="error")
            return
        base = self.shown.name.rstrip("*")
        edited = dataclasses.replace(edited, name=f"{base}*", source="edited")
        self.current = edited
        self.on_change(edited)
        self._show(edited)
        # one edited preset at a time (the one in use): its row first, with its description of what changed
        self._names = [edited.name] + [n for n in self._names if n != edited.name and n in self.catalog.presets]
        self._fill_presets(force=True)
        params = self.query_one("#params", DataTable)
        row = next((i for i, spec in enumerate(edited.samplers) if spec.name == sampler), None)
        if row is not None and f"{row}:{param}" in params.rows:
            params.move_cursor(row=params.get_row_index(f"{row}:{param}"))  # back on the parameter just edited
        params.focus()

    def action_save_as(self) -> None:
        self._mode = "save"
        box = self.query_one("#edit", Input)
        box.value = self.shown.name.rstrip("*") + "-mine"
        box.border_title = "save as (name) — Enter writes the TOML file"
        box.focus()

    def _save(self, name: str) -> None:
        name = name.strip()
        if not name:
            self.notify("give the preset a name", severity="warning")
            return
        preset = dataclasses.replace(self.shown, name=name, source="user")
        try:
            path = self.save(preset)
        except OSError as exc:
            self.notify(f"cannot save: {exc}", severity="error")
            return
        self.notify(f"saved {name} to {path}", timeout=6)
        self._mode = "edit"
        self.dismiss(preset)

    def action_close(self) -> None:
        self.dismiss(None)
