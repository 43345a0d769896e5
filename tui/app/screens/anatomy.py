"""Model anatomy (the roadmap's Netron): hyperparameters, bytes per type, every tensor by layer."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from ...engine.anatomy import bits_per_weight
from ...engine.models import display_name
from ...safe_text import visible
from ...units import human_bytes, human_count, short_number
from ..widgets.safe import plain
from .base import WideModal


class AnatomyScreen(WideModal[None]):
    BINDINGS = [Binding("escape,q,a", "dismiss", "Close", id="anatomy.close")]
    DEFAULT_CSS = """
    AnatomyScreen #summary { height: auto; margin-bottom: 1; }
    AnatomyScreen #tables { height: auto; max-height: 14; }
    AnatomyScreen #hyper, AnatomyScreen #types { width: 1fr; height: auto; max-height: 14; }
    AnatomyScreen #tensors { height: 1fr; }
    """

    def __init__(self, anatomy: Any) -> None:
        super().__init__()
        self.anatomy = anatomy

    def compose(self) -> ComposeResult:
        a = self.anatomy
        with Vertical():
            yield Static(
                Text.assemble((visible(display_name(a.path)), "bold"),
                              f" · {visible(a.arch)} · {a.file_type} · file {human_bytes(a.file_size)} · "
                              f"tensor data {human_bytes(a.total_bytes)} in {len(a.tensors)} tensors · "
                              f"{human_count(a.total_elements)} parameters · {a.bits_per_weight:.2f} bits/weight · "
                              f"vocab {a.vocab_size:,}   ", ("(Esc closes)", "dim")),
                id="summary",
            )
            with Horizontal(id="tables"):
                hyper: DataTable[str] = DataTable(id="hyper", zebra_stripes=True, cursor_type="none")
                hyper.add_columns("hyperparameter", "value")
                hyper.add_row("general.name", plain(a.name))
                for label, value in a.hyper.items():
                    hyper.add_row(label, plain(short_number(value)))
                yield hyper
                types: DataTable[str] = DataTable(id="types", zebra_stripes=True, cursor_type="none")
                types.add_columns("type", "tensors", "parameters", "bytes", "bits/weight")
                for t, row in a.by_type().items():
                    bpw = bits_per_weight(row["bytes"], row["elements"])
                    types.add_row(t, str(row["tensors"]), f"{row['elements']:,}", human_bytes(row["bytes"]),
                                  f"{bpw:.2f}")
                yield types
            tensors: DataTable[str] = DataTable(id="tensors", zebra_stripes=True, cursor_type="row")
            tensors.add_columns("layer", "tensor", "shape", "type", "bytes", "bits/weight")
            for group, items in a.by_layer().items():
                total = sum(t.n_bytes for t in items)
                tensors.add_row(f"[b]{group}[/b]", "", "", "", f"[b]{human_bytes(total)}[/b]", "")
                for t in items:
                    tensors.add_row("", plain(t.name), "×".join(map(str, t.shape)), t.type, human_bytes(t.n_bytes),
                                    f"{t.bits_per_weight:.2f}")
            yield tensors
