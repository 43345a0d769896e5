"""Messages from workers to the UI (immutable snapshots; a worker never touches a widget)."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineNotice(Message):
    """Wakes the UI to fold the inbox now (state changes, step-mode steps)."""


class EngineLoaded(Message):
    def __init__(self, engine: Any | None, error: str | None, *, entry: Any = None, cold: bool = True,
                 ms: float = 0.0, resume: str | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.error = error
        self.entry = entry
        self.cold = cold
        self.ms = ms
        self.resume = resume  # a prompt to generate again on the new model


class LoadProgress(Message):
    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction
