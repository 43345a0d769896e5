"""A minimal streaming screen (the dashboard issue replaces it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Header, Input, Static


@dataclass
class StepText(Message):
    text: str


@dataclass
class Finished(Message):
    reason: str


class LlmTuiApp(App[int]):
    TITLE = "llmtui"
    BINDINGS = [Binding("escape", "stop", "Stop", id="gen.stop"), Binding("ctrl+q", "quit", "Quit", id="app.quit")]

    def __init__(self, entry: Any, settings: Any, preset: Any, prompt: str | None = None) -> None:
        super().__init__()
        self.entry = entry
        self.settings = settings
        self.preset = preset
        self.initial_prompt = prompt or "Once upon a time"
        self._cancel = threading.Event()
        self._text = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(self.initial_prompt, id="prompt")
        yield Static("", id="stream")
        yield Footer()

    @on(Input.Submitted)
    def _generate(self, event: Input.Submitted) -> None:
        self._cancel.clear()
        self._text = event.value
        self.query_one("#stream", Static).update(self._text)
        self._run(event.value)

    @work(thread=True, exclusive=True, group="gen", exit_on_error=False)
    def _run(self, prompt: str) -> None:
        from ..engine import Generation
        from ..engine.llama import LlamaEngine
        with LlamaEngine(self.entry.path, self.settings) as engine:
            chain = self.preset.build(engine.build_context(self.settings.seed))
            gen = Generation(engine, engine.tokenize(prompt), chain, max_tokens=256, cancel=self._cancel)
            for step in gen:
                self.post_message(StepText(step.text))
            self.post_message(Finished(gen.stats.stop_reason.describe() if gen.stats.stop_reason else "?"))

    def on_step_text(self, message: StepText) -> None:
        self._text += message.text
        self.query_one("#stream", Static).update(self._text)

    def on_finished(self, message: Finished) -> None:
        self.sub_title = f"stopped: {message.reason}"

    def action_stop(self) -> None:
        self._cancel.set()


def run_app(entry: Any, settings: Any, preset: Any, prompt: str | None = None) -> int:
    LlmTuiApp(entry, settings, preset, prompt).run()
    return 0
