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
from textual.containers import Horizontal, Vertical
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


class PresetScreen(ModalScreen[Any]):
    """Dismisses with the preset to use (or None)."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="presets.close"),
        Binding("ctrl+s", "save_as", "Save as…", id="presets.save"),
    ]
    DEFAULT_CSS = """
    PresetScreen { align: center middle; }
    PresetScreen > Vertical { width: 118; max-width: 96%; height: auto; max-height: 92%;
                              border: round $primary; background: $surface; padding: 0 1; }
    PresetScreen #lists { height: auto; max-height: 20; }
    PresetScreen #presets { width: 2fr; height: auto; max-height: 20; }
    PresetScreen #params { width: 3fr; height: auto; max-height: 20; }
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
        with Vertical():
            yield Static("[b]Presets[/b] — Enter on a preset uses it · Enter on a parameter edits it "
                         "(applied at once, the current step is re-sampled) · ctrl+s saves as · Esc closes")
            with Horizontal(id="lists"):
                presets: DataTable[str] = DataTable(id="presets", cursor_type="row", zebra_stripes=True)
                presets.add_columns("preset", "description")
                yield presets
                params: DataTable[str] = DataTable(id="params", cursor_type="row", zebra_stripes=True)
                params.add_columns("#", "sampler", "parameter", "value")
                yield params
            yield Static("", id="chain")
            yield SafeInput(placeholder="select a parameter to edit it", id="edit")

    def on_mount(self) -> None:
        table = self.query_one("#presets", DataTable)
        names = list(self.catalog.presets)
        if self.current.name not in names:
            names.insert(0, self.current.name)
        for name in names:
            p = self._preset(name)
            table.add_row(plain(name), plain(p.description or ("(edited)" if p is self.current else "")), key=name)
        table.move_cursor(row=names.index(self.current.name))
        self._show(self.current)
        table.focus()

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
        table = self.query_one("#presets", DataTable)
        if f"{base}*" not in [str(k.value) for k in table.rows]:
            table.add_row(plain(edited.name), "(edited)", key=edited.name)
        self.query_one("#params", DataTable).focus()

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
