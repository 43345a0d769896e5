"""Engine and context settings; applying recreates the context (the model stays mapped)."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from ...engine.errors import EngineError
from ...engine.settings import CACHE_TYPES
from ...units import quoted
from ..widgets.safe import SafeInput, plain

POLICIES = [("stop", "stop"), ("shift (llama.cpp context shift)", "shift"),
            ("drop-oldest-turns (chat)", "drop-oldest-turns")]


class SettingsScreen(ModalScreen[Any]):
    """Dismisses with (EngineSettings, context policy, n_keep) or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="settings.close")]
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > Vertical { width: 80; height: auto; border: round $primary; background: $surface;
                                padding: 0 1; }
    SettingsScreen Grid { grid-size: 2; grid-columns: 26 1fr; grid-rows: 3; height: auto; }
    SettingsScreen Label { padding: 1 0 0 0; }
    SettingsScreen #error { color: $error; height: auto; }
    """

    def __init__(self, settings: Any, policy: str, n_keep: int) -> None:
        super().__init__()
        self.settings = settings
        self.policy = policy
        self.n_keep = n_keep

    def compose(self) -> ComposeResult:
        s = self.settings
        types = [(t, t) for t in CACHE_TYPES]
        with Vertical():
            yield Static("[b]Settings[/b] — applying recreates the context: the KV cache starts empty; "
                         "the model stays loaded")
            with Grid():
                yield Label("n_ctx (tokens)")
                yield SafeInput(str(s.n_ctx), id="n_ctx", type="integer")
                yield Label("n_batch")
                yield SafeInput(str(s.n_batch), id="n_batch", type="integer")
                yield Label("threads (0 = auto)")
                yield SafeInput(str(s.n_threads), id="n_threads", type="integer")
                yield Label("K cache type")
                yield Select(types, value=s.type_k, allow_blank=False, id="type_k")
                yield Label("V cache type")
                yield Select(types, value=s.type_v, allow_blank=False, id="type_v")
                yield Label("flash attention")
                yield Select([(x, x) for x in ("auto", "on", "off")], value=s.flash_attn, allow_blank=False,
                             id="flash_attn")
                yield Label("context policy")
                yield Select(POLICIES, value=self.policy, allow_blank=False, id="policy")
                yield Label("n_keep (-1 = the prompt)")
                yield SafeInput(str(self.n_keep), id="n_keep", type="integer")
            yield Static("", id="error")
            yield Button("Apply", variant="primary", id="apply")

    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        def num(wid: str) -> int:
            text = self.query_one(f"#{wid}", Input).value.strip()
            try:
                return int(text)
            except ValueError:  # int()'s own words quote Python's repr: say what the field wants instead
                raise ValueError(f"{wid}: expected a whole number, got {quoted(text)}") from None

        try:
            new = self.settings.with_(
                n_ctx=num("n_ctx"), n_batch=num("n_batch"), n_ubatch=num("n_batch"), n_threads=num("n_threads"),
                type_k=self.query_one("#type_k", Select).value, type_v=self.query_one("#type_v", Select).value,
                flash_attn=self.query_one("#flash_attn", Select).value,
            )
            n_keep = num("n_keep")
        except (ValueError, EngineError) as exc:
            self.query_one("#error", Static).update(plain(str(exc)))  # text, never markup
            return
        self.dismiss((new, self.query_one("#policy", Select).value, n_keep))
