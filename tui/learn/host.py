"""What an experiment may do, and nothing else: the :class:`Host` protocol (no Textual here).

An experiment is a recipe: set the app up (model, settings, preset, chat,
policy), run, read the figures, and say where the answer is on screen. It
drives a :class:`Host` — the dashboard implements it (``tui.app.learn_host``);
a headless host could too — through these calls only, so a recipe never
reaches into a widget or a private member. Screens it opens come back as
*views*: objects it reads results from and can ``mark``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import Question


class LearnError(Exception):
    """An experiment could not run (no model, a refused setting): said in one line."""


@dataclass(frozen=True)
class Finding:
    question: str  # id
    number: str
    variant: int
    panel: str  # where the answer is: a dashboard panel id or a screen's name
    headline: str
    values: dict[str, Any] = field(default_factory=dict)
    try_next: tuple[str, ...] = ()


class QuantLabView(Protocol):
    """The quantization lab: variants of the model, then their perplexity, KL and top-1 agreement."""

    types: tuple[str, ...]
    made: list[Any]  # QuantizeResult of each variant made
    result: Any  # the Comparison, once compared
    shown: int  # the variant whose per-token KL the lab paints

    @property
    def status_text(self) -> str: ...

    def variants_exist(self) -> bool: ...

    async def make_variants(self) -> None: ...

    async def compare(self) -> Any: ...

    def show_variant(self, index: int) -> None: ...


class Host(Protocol):
    """The app as an experiment sees it."""

    quick: bool  # shortened runs (tests)
    engine: Any  # the loaded engine: pieces, KV layout, dims (engine work goes through in_thread)
    catalog: Any  # the presets
    settings: Any  # the engine settings now
    base_settings: Any  # the settings the app started with
    model_label: str
    load_info: str
    cache_dir: Any  # where derived files go (the anatomy cache)

    @property
    def chat_mode(self) -> bool: ...

    def current(self) -> Any:
        """The dashboard's run as it stands (a :class:`~tui.run.RunResult`)."""

    def chat_turns(self) -> int:
        """Messages in the chat conversation (0: chat mode off)."""

    async def ready(self) -> None:
        """Wait for the model; LearnError if it cannot load."""

    async def idle(self) -> None:
        """Stop what runs and wait until the engine is free."""

    async def in_thread(self, job: Callable[[], Any]) -> Any:
        """Engine work off the UI thread, while no generation uses the engine."""

    async def use_settings(self, **changes: Any) -> Any:
        """The start-up settings with ``changes`` (the context is recreated if they differ)."""

    def policy(self, policy: str = "stop", n_keep: int = -1, ignore_eos: bool = False) -> None: ...

    def use_preset(self, preset: Any) -> Any:
        """Use a preset (a name or a Preset) for the next runs, without making it the remembered default."""

    def chat(self, on: bool, system: str | None = None) -> None: ...

    async def generate(self, prompt: str, max_tokens: int, *, step_mode: bool = False) -> Any:
        """Run ``prompt`` on the dashboard; the run when it stopped (in step mode: at its first pending step)."""

    async def resample(self, preset: Any) -> Any:
        """Re-sample the pending step with ``preset`` (no new decode); the run with the new pending step."""

    async def recording(self, on: bool) -> bool:
        """Recording on or off; returns what it was."""

    def model_file(self) -> str:
        """The loaded model's GGUF file (LearnError when there is none)."""

    def mark(self, target: Any, text: str, part: str | None = None) -> None:
        """Highlight where the answer is: a dashboard panel ("kv", "hist", "trace", "stream", "tput") or a
        view, optionally one ``part`` of it (a widget id such as "#summary"), the figure in its border."""

    def notify(self, message: str, *, severity: str = "information", timeout: float | None = None) -> None: ...

    async def show_anatomy(self, anatomy: Any) -> Any: ...

    async def show_models(self) -> tuple[int, int]:
        """Open the model picker; (models found, models loaded)."""

    async def tokenizer(self, text: str, special: bool = False) -> tuple[Any, dict[str, Any]]:
        """Open the tokenizer on ``text``; (the view, its result: tokens, top-5 per variant)."""

    async def show_results(self, title: str, columns: list[str], rows: list[list[str]], notes: str = "",
                           mark_row: int | None = None, widths: dict[int, int] | None = None) -> Any: ...

    async def quant_lab(self, types: tuple[str, ...] | None, max_tokens: int) -> QuantLabView: ...


def finished_run(run: Any) -> Any:
    """The run an experiment waited for, or LearnError: it failed, or another run cut it short."""
    if run.phase.value == "error" or run.state.startswith("stopped: error"):
        raise LearnError(run.state)
    if run.phase.value not in ("stopped", "paused"):
        raise LearnError(f"the run was cut short by another ({run.state} after {len(run.steps)} tokens)")
    return run


class Runner:
    """One experiment's run: the question, the variation, and the host with a few conveniences."""

    def __init__(self, host: Host, question: Question, variant: int) -> None:
        self.host = host
        self.question = question
        self.variant = variant

    def n(self, full: int, quick: int) -> int:
        """A token count: ``quick`` in shortened runs (tests)."""
        return quick if self.host.quick else full

    def finding(self, panel: str, headline: str, **values: Any) -> Finding:
        q = self.question
        return Finding(q.id, q.number, self.variant, panel, headline, values, tuple(q.try_next))
