"""The dashboard as the host of the Learn path's experiments (:class:`tui.learn.host.Host`).

An experiment drives the app through this object only: the same public calls
the keys use (settings, presets, chat, :meth:`LlmTuiApp.generate`), screens it
opens come back as views, and ``mark`` highlights where the answer is. The
driver :func:`run_experiment` is the Learn bar around one recipe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.widget import Widget

from ..config import app_dirs
from ..engine.errors import EngineError
from ..learn import find
from ..learn.host import Finding, LearnError, finished_run
from ..learn.predict import GuessError, parse_guess, prediction_for
from ..learn.predict import verdict as predicted
from ..run import Phase, RunResult
from ..units import shorten
from .widgets.panels import escape


class AppHost:
    """:class:`tui.learn.host.Host` over a running :class:`~tui.app.app.LlmTuiApp`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    # -- what the app is -----------------------------------------------------------------------------------

    @property
    def quick(self) -> bool:
        return self.app.learn_quick

    @property
    def engine(self) -> Any:
        return self.app.engine

    @property
    def catalog(self) -> Any:
        return self.app.catalog

    @property
    def settings(self) -> Any:
        return self.app.settings

    @property
    def base_settings(self) -> Any:
        return self.app.base_settings

    @property
    def model_label(self) -> str:
        return self.app.model_label

    @property
    def load_info(self) -> str:
        return self.app.model_load_info  # the model's load (not a context recreated since)

    @property
    def chat_mode(self) -> bool:
        return self.app.chat_mode

    @property
    def cache_dir(self) -> Any:
        return app_dirs().cache

    def current(self) -> RunResult:
        return self.app.dashboard.model.snapshot()

    def chat_turns(self) -> int:
        chat = self.app.controller.chat if self.app.controller is not None else None
        return len(chat.messages) if chat is not None else 0

    # -- the engine ---------------------------------------------------------------------------------------

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not cond():
            if loop.time() > deadline:
                raise LearnError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def ready(self) -> None:
        app = self.app
        try:
            await asyncio.wait_for(app.engine_settled.wait(), timeout=300)
        except asyncio.TimeoutError:
            raise LearnError("timed out waiting for the model to load") from None
        if app.engine is None:
            state = app.dashboard.model
            raise LearnError(state.detail if state.phase is Phase.ERROR else app.NO_MODEL)

    async def idle(self) -> None:
        if self.app.running:
            self.app.controller.stop()
        await self.app.controller_idle()

    async def in_thread(self, job: Callable[[], Any]) -> Any:
        await self.idle()
        return await asyncio.to_thread(self.app.run_guarded, job)

    async def use_settings(self, **changes: Any) -> Any:
        app = self.app
        try:
            target = app.base_settings.with_(**changes)
        except EngineError as exc:
            raise LearnError(str(exc)) from None
        if app.settings != target:
            await self.idle()
            await app.apply_settings(target).wait()
            if app.settings != target:
                raise LearnError(f"the context could not be recreated with {changes}")
        return target

    def policy(self, policy: str = "stop", n_keep: int = -1, ignore_eos: bool = False) -> None:
        self.app.controller.ignore_eos = ignore_eos
        self.app.set_context_policy(policy, n_keep)

    def use_preset(self, preset: Any) -> Any:
        preset = self.app.catalog.get(preset) if isinstance(preset, str) else preset
        self.app.set_preset(preset, remember=False, quiet=True)
        return preset

    def chat(self, on: bool, system: str | None = None) -> None:
        self.app.set_chat(on, system)

    async def generate(self, prompt: str, max_tokens: int, *, step_mode: bool = False) -> RunResult:
        await self.idle()
        try:
            run = await self.app.generate(prompt, step_mode=step_mode, max_tokens=max_tokens)
        except EngineError as exc:
            raise LearnError(str(exc)) from None
        return finished_run(run)

    async def resample(self, preset: Any) -> RunResult:
        from ..engine.controller import Resample

        app = self.app
        board = app.dashboard
        if board.model.pending is None:
            raise LearnError("re-sampling needs a pending step (step mode)")
        # the re-sampled step: another pending step than this one (a fork's tree event may be folded first)
        replaced = board.waiters.add(board.model.run_id, pending=True, replacing=board.model.pending)
        app.controller.send(Resample(preset))
        try:
            return await asyncio.wait_for(replaced, timeout=60)
        except asyncio.TimeoutError:
            raise LearnError("timed out waiting for the re-sampled step") from None

    async def recording(self, on: bool) -> bool:
        return self.app.recorder.set(on)

    def model_file(self) -> str:
        path = self.app.model_file()
        if path is None:
            raise LearnError("this experiment needs a model file (the loaded model has none)")
        return path

    # -- what the learner sees -------------------------------------------------------------------------------

    def mark(self, target: Any, text: str, part: str | None = None) -> None:
        """Highlight the widget that shows the answer, the figure in its border."""
        if isinstance(target, str):
            widget: Widget = self.app.dashboard.query_one(f"#{target}")
        elif part == "table":
            from textual.widgets import DataTable

            widget = target.query_one(DataTable)
        else:
            widget = target.query_one(part) if part else target
        widget.add_class("-learn")
        widget.border_subtitle = escape(f"★ {text}")
        self.app.learn_marked.append(widget)

    def notify(self, message: str, *, severity: str = "information", timeout: float | None = None) -> None:
        self.app.notify(message, severity=severity, timeout=timeout)

    async def _push(self, screen: Any) -> Any:
        await self.app.push_screen(screen)
        return screen

    async def show_anatomy(self, anatomy: Any) -> Any:
        from .screens.anatomy import AnatomyScreen

        return await self._push(AnatomyScreen(anatomy))

    async def show_models(self) -> tuple[int, int]:
        from .screens.models import ModelPicker

        app = self.app
        if app.discover is None:
            raise LearnError("model discovery is not available here")
        entries = await asyncio.to_thread(app.discover)
        await app.push_screen(ModelPicker(entries, app.model_label, app.loaded_paths()), app.use_picked_model)
        return len(entries), len(app.loaded_paths())

    async def tokenizer(self, text: str, special: bool = False) -> tuple[Any, dict[str, Any]]:
        from .screens.tokenizer import TokenizerScreen

        screen = await self._push(TokenizerScreen(text, self.app.tokenizer_job, special=special))
        await self.until(lambda: screen.result is not None, "the tokenizer")
        if isinstance(screen.result, EngineError):
            raise LearnError(str(screen.result))
        self.app.set_focus(None)  # the number keys reach the app, not the text box
        return screen, screen.result

    async def show_results(self, title: str, columns: list[str], rows: list[list[str]], notes: str = "",
                           mark_row: int | None = None, widths: dict[int, int] | None = None) -> Any:
        from .screens.learn import ResultsScreen

        return await self._push(ResultsScreen(title, columns, rows, notes, mark_row=mark_row, widths=widths))

    async def quant_lab(self, types: tuple[str, ...] | None, max_tokens: int) -> Any:
        from .screens.labs import QuantLab

        return await self._push(QuantLab(self.model_file(), self.app.run_guarded, types=types or QuantLab.TYPES,
                                         max_tokens=max_tokens, on_result=self.app.recorder.lab))



def bar_text(finding: Finding, verdict: str = "") -> str:
    """The Learn bar for a finding (markup: what came from the model is escaped), with the learner's
    prediction beside the measurement when there was one."""
    keys = "  ".join(f"[b]{t.split(':', 1)[0]}[/b]:{escape(shorten(t.split(':', 1)[1], 44))}"
                     for t in finding.try_next)
    return (f"[b]Learn {finding.number}[/b]{f' · variation {finding.variant}' if finding.variant else ''} · "
            f"{escape(finding.headline)}\n" + (f"[b]prediction[/b]: {escape(verdict)}\n" if verdict else "")
            + (f"try next: {keys}   " if keys else "") + "[b]L[/b]: the question")


async def run_experiment(app: Any, question_id: str, variant: int = 0, guess: str | None = None) -> Finding | None:
    """Run one experiment (an async worker's body); the finding lands in the app and is returned, with the
    learner's ``guess`` (predict, then run) set beside what was measured."""
    from ..learn.experiments import EXPERIMENTS, run

    try:
        question = find(question_id)
    except KeyError as exc:
        app.notify(str(exc.args[0]), severity="error", timeout=8)
        return None
    if question.experiment not in EXPERIMENTS:
        app.notify(f"{question.id}: unknown experiment {question.experiment!r}", severity="error")
        return None
    while len(app.screen_stack) > 1:  # experiments start from the dashboard
        app.pop_screen()
    app.leave_learn()  # each recipe sets chat on or off itself (host.chat): 2.2's variation continues one
    label = question.label + (f" — variation {variant}" if variant else "")
    app.learn_question = question.id
    app._repaint_status()  # LEARN (ctrl+n: leave Learn)
    bar = app.dashboard.query_one("#learnbar")
    bar.update(f"[b]Learn {question.number}[/b] · running the experiment…")
    bar.display = True
    app.notify(f"experiment: {label}", timeout=3)
    try:
        finding = await run(AppHost(app), question, variant)
    except (LearnError, EngineError) as exc:
        bar.update(f"[b]Learn {question.number}[/b] · the experiment could not run: {escape(str(exc))}")
        app.notify(f"{label}: {exc}", severity="error", timeout=10)
        return None
    verdict = ""
    prediction = prediction_for(question.id, variant)
    if guess is not None and prediction is not None:
        try:
            verdict = predicted(prediction, parse_guess(prediction, guess), finding.values)
        except (GuessError, KeyError) as exc:
            verdict = f"your guess could not be compared: {exc}"
    app.show_finding(finding, verdict)
    app.notify(finding.headline, title=f"Learn {question.number}", timeout=12)
    if verdict:
        app.notify(verdict, title="your prediction", timeout=20)
    return finding
