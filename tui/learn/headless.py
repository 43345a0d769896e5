"""The Learn path without the dashboard: a :class:`~tui.learn.host.Host` over a real engine (no Textual).

:class:`HeadlessHost` owns a loaded engine and a :class:`~tui.engine.controller.Controller`, and folds the
controller's events into a :class:`~tui.run.RunModel` exactly as the dashboard does, so ``current()`` is what
the dashboard's would be. Every run and every engine job goes to the one engine thread. Step mode works as
on the dashboard: a run pauses at its first pending step on the engine thread, ``resample`` sends it a
``Resample`` command and waits for the re-sampled step. The screens an experiment opens become views
(:mod:`tui.learn.headless_views`) holding the data the screens show; ``mark`` records where the dashboard
would highlight the answer. ``llmtui learn QUESTION --run`` drives it and prints :func:`report`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.chat import chat_policy, loop_policy
from ..engine.errors import EngineError
from ..run import Phase, RunModel, RunResult
from ..run.waiters import RunWaiters
from ..safe_text import json_text, visible
from . import Question
from .headless_views import (
    QUANT_LAB_TYPES,
    AnatomyView,
    ModelsView,
    QuantLab,
    ResultsView,
    TokenizerView,
    View,
)
from .host import Finding, LearnError, finished_run

# the dashboard's panels a recipe may mark (their widget ids)
PANELS = ("stream", "hist", "trace", "kv", "mem", "tput", "status")

RUN_TIMEOUT_S = 600.0  # a run (or a stop) that takes longer is reported, never waited for forever


class HeadlessHost:
    """:class:`tui.learn.host.Host` over ``engine`` (loaded), without a screen.

    ``preset``: the preset runs use until a recipe picks one; ``discover``: lists the models (for the model
    picker's figures); ``quick``: shortened experiments (tests).
    """

    def __init__(self, engine: Any, *, preset: Any, catalog: Any, settings: Any = None, model_label: str = "",
                 load_info: str = "", discover: Callable[[], list[Any]] | None = None, quick: bool = False,
                 max_tokens: int = 256, context_policy: str = "stop", n_keep: int = -1,
                 system: str | None = None) -> None:
        from ..engine.controller import Controller

        self.engine = engine
        self.catalog = catalog
        self.settings = settings if settings is not None else engine.settings
        self.base_settings = self.settings  # what experiments start from
        self.preset = preset
        self.model_label = visible(model_label or getattr(getattr(engine, "info", None), "name", ""))
        self.load_info = load_info  # the model's load (a recreated context says so in context_info)
        self.context_info = ""
        self.discover = discover
        self.quick = quick
        self.context_policy, self.n_keep = context_policy, n_keep
        self.system = system
        self.controller = Controller(engine, preset, seed=self.settings.seed, emit=self._emit, max_tokens=max_tokens,
                                     context_policy=loop_policy(self.context_policy), n_keep=n_keep)
        self.model = RunModel()
        self.model.set_phase(Phase.IDLE)
        self.waiters = RunWaiters()
        self._inbox: deque[tuple[int, object]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_future: Any = None  # the engine thread's future of the current run
        self._chat_mode = False
        self._recorder: Any = None
        self._recording = False
        # what the last experiment showed: the screens it opened, where it pointed, what it said
        self.views: list[View] = []
        self.marks: list[tuple[str, str | None, str]] = []  # (target: a panel id or a view's name, part, text)
        self.notices: list[tuple[str, str]] = []  # (severity, message)

    @classmethod
    def load(cls, path: str | Path, settings: Any, **kw: Any) -> HeadlessHost:
        """Load the model at ``path`` (EngineError when it cannot be) and host it."""
        from ..engine.llama import LlamaEngine

        t0 = time.perf_counter()
        engine = LlamaEngine(path, settings)
        ms = (time.perf_counter() - t0) * 1000.0
        kw.setdefault("load_info", f"loaded in {ms:,.0f} ms (cold)")
        return cls(engine, settings=settings, **kw)

    async def aclose(self) -> None:
        """Stop what runs, then free the engine (on the engine thread, after whatever runs there)."""
        try:
            await self.idle()
        finally:
            await asyncio.to_thread(self.engine.close)

    # -- what the host is ------------------------------------------------------------------------------------

    @property
    def cache_dir(self) -> Path:
        from ..config import app_dirs

        return app_dirs().cache

    @property
    def chat_mode(self) -> bool:
        return self._chat_mode

    @property
    def running(self) -> bool:
        return self._run_future is not None and not self._run_future.done()

    def current(self) -> RunResult:
        if self._on_loop():
            self._fold()  # what has arrived so far (waiters are woken on the loop only)
        return self.model.snapshot()

    def _on_loop(self) -> bool:
        try:
            return self._loop is None or asyncio.get_running_loop() is self._loop
        except RuntimeError:  # a worker thread
            return False

    def chat_turns(self) -> int:
        chat = self.controller.chat
        return len(chat.messages) if chat is not None else 0

    # -- events: the controller's (engine thread) folded on the event loop, as the dashboard folds them -----

    def _emit(self, event: object) -> None:
        self._inbox.append((self.controller.run_id, event))
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._fold)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _fold(self) -> None:
        if not self._inbox:
            return
        events = []
        while self._inbox:
            events.append(self._inbox.popleft())
        up = self.model.apply(events)
        self.notices.extend((severity, message) for message, severity in up.notices)
        self.waiters.wake(self.model, finished=up.finished is not None)

    def _new_run(self, phase: Phase = Phase.PROMPT) -> int:
        """The one way a run starts: whoever waited for the last one gets it as it stood."""
        self.waiters.release(self.model)
        self._inbox.clear()
        return self.model.new_run(phase)

    def _run_failed(self, run_id: int, error: BaseException) -> None:
        """A run raised outside the controller's own handling (a bug): the run is an error, waiters wake."""
        if self.model.run_id == run_id:
            self._fold()
            self.model.set_phase(Phase.ERROR, f"{type(error).__name__}: {error}")
            self.waiters.release(self.model)

    # -- the engine -------------------------------------------------------------------------------------------

    async def ready(self) -> None:
        if self.engine is None or getattr(self.engine, "closed", False):
            raise LearnError("no model loaded")

    async def idle(self) -> None:
        """Stop what runs (a step-mode run paused at its pending step too) and wait until it has ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_TIMEOUT_S
        while self.running:
            self.controller.stop()  # again each time: a run that had not started yet misses the first
            if loop.time() > deadline:
                raise LearnError("timed out waiting for the run to stop")
            await asyncio.sleep(0.01)
        self._fold()

    def run_guarded(self, job: Callable[[], Any]) -> Any:
        """Engine work (blocking: call it from a worker thread) while no generation uses the engine."""
        from ..engine.thread import engine_thread

        controller = self.controller
        controller.stop()
        return engine_thread().call(lambda: controller.exclusive(job))

    async def in_thread(self, job: Callable[[], Any]) -> Any:
        await self.idle()
        return await asyncio.to_thread(self.run_guarded, job)

    async def use_settings(self, **changes: Any) -> Any:
        try:
            target = self.base_settings.with_(**changes)
        except EngineError as exc:
            raise LearnError(str(exc)) from None
        if self.settings != target:
            await self.idle()
            t0 = time.perf_counter()
            try:
                await asyncio.to_thread(self.run_guarded, lambda: self.engine.recreate_context(target))
            except EngineError as exc:
                raise LearnError(f"the context could not be recreated with {changes}: {exc}") from None
            self.settings = target
            self.controller.seed = target.seed
            self.context_info = f"context recreated in {(time.perf_counter() - t0) * 1000.0:,.0f} ms"
            self._new_run(Phase.IDLE)  # a new context: the cache is empty
        return target

    def policy(self, policy: str = "stop", n_keep: int = -1, ignore_eos: bool = False) -> None:
        self.controller.ignore_eos = ignore_eos
        self.context_policy, self.n_keep = policy, n_keep
        self.controller.context_policy = loop_policy(self.context_policy)
        self.controller.n_keep = n_keep
        if self.controller.chat is not None:
            self.controller.chat.policy = chat_policy(self.context_policy)

    def use_preset(self, preset: Any) -> Any:
        from ..engine.controller import SetPreset

        preset = self.catalog.get(preset) if isinstance(preset, str) else preset
        self.preset = preset
        if self.controller.running:
            self.controller.send(SetPreset(preset))  # the run (paused in step mode, say) switches too
        else:
            self.controller.preset = preset
        return preset

    def chat(self, on: bool, system: str | None = None) -> None:
        from ..engine.chat import ChatSession

        if system is not None:
            self.system = system
        self.controller.chat = ChatSession(self.engine, system=self.system, policy=chat_policy(self.context_policy)) if on else None
        self.model.chat_turn = None
        self._chat_mode = on

    async def generate(self, prompt: str, max_tokens: int, *, step_mode: bool = False) -> RunResult:
        from ..engine.thread import engine_thread

        await self.idle()
        if not prompt.strip():
            raise LearnError("the run could not start: an empty prompt")
        self._loop = asyncio.get_running_loop()
        run_id = self._new_run()
        waiter = self.waiters.add(run_id, pending=step_mode)  # its end (or its first pending step)
        future = engine_thread().submit(self.controller.run, prompt, step_mode=step_mode, run_id=run_id,
                                        max_tokens=max_tokens)
        self._run_future = future
        loop = self._loop

        def done(f: Any) -> None:
            error = f.exception()
            if error is not None:
                try:
                    loop.call_soon_threadsafe(self._run_failed, run_id, error)
                except RuntimeError:
                    pass

        future.add_done_callback(done)
        try:
            run = await asyncio.wait_for(waiter, timeout=RUN_TIMEOUT_S)
        except TimeoutError:
            raise LearnError(f"timed out waiting for the run ({len(self.model.steps)} tokens so far)") from None
        return finished_run(run)

    async def resample(self, preset: Any) -> RunResult:
        from ..engine.controller import Resample

        self._fold()
        if self.model.pending is None or not self.running:
            raise LearnError("re-sampling needs a pending step (step mode)")
        self._loop = asyncio.get_running_loop()
        # the re-sampled step: another pending step than this one (a fork's tree event may be folded first)
        replaced = self.waiters.add(self.model.run_id, pending=True, replacing=self.model.pending)
        self.controller.send(Resample(preset))
        try:
            return await asyncio.wait_for(replaced, timeout=60)
        except TimeoutError:
            raise LearnError("timed out waiting for the re-sampled step") from None

    async def recording(self, on: bool) -> bool:
        """Recording on or off from the next run on (a session file per run in the sessions directory)."""
        from ..record.recorder import Recorder

        was, self._recording = self._recording, on
        if self._recorder is None:
            self._recorder = Recorder(self.engine, self._new_writer, self._emit)
            self.controller.listeners.append(self._recorder)
        self._recorder.enabled = on  # read when a run starts: the current recording always finishes
        return was

    def _new_writer(self, header: dict[str, Any]) -> Any:
        from ..config import app_dirs
        from ..record import SessionWriter

        return SessionWriter.new_in(app_dirs().sessions, self.model_label, header, self.engine.piece)

    def model_file(self) -> str:
        path = getattr(self.engine, "path", None)
        if path is None or not str(path).endswith(".gguf") or not Path(path).exists():
            raise LearnError("this experiment needs a model file (the loaded model has none)")
        return str(path)

    # -- what the learner sees --------------------------------------------------------------------------------

    def mark(self, target: Any, text: str, part: str | None = None) -> None:
        """Where the dashboard would highlight the answer: a panel (by id) or a view, with its figure."""
        if isinstance(target, str):
            if target not in PANELS:
                raise ValueError(f"no dashboard panel #{target}")  # a recipe's bug, as the dashboard's query
            name = target
        else:
            name = getattr(target, "name", type(target).__name__)
        self.marks.append((name, part, text))

    def notify(self, message: str, *, severity: str = "information", timeout: float | None = None) -> None:
        self.notices.append((severity, message))

    def _show(self, view: View) -> Any:
        self.views.append(view)
        return view

    async def show_anatomy(self, anatomy: Any) -> Any:
        return self._show(AnatomyView(anatomy))

    async def show_models(self) -> tuple[int, int]:
        if self.discover is None:
            raise LearnError("model discovery is not available here")
        entries = await asyncio.to_thread(self.discover)
        loaded = [str(getattr(self.engine, "path", ""))]
        self._show(ModelsView(entries, self.model_label, loaded))
        return len(entries), len(loaded)

    async def tokenizer(self, text: str, special: bool = False) -> tuple[Any, dict[str, Any]]:
        from ..engine.inspect_tokens import inspect_text

        if self.running:
            raise LearnError("stop the generation first: the inspector uses the model")
        engine = self.engine
        try:
            result = await asyncio.to_thread(self.run_guarded, lambda: inspect_text(
                engine, text, add_bos=None, parse_special=special))  # the screen's "add BOS" box starts off
        except EngineError as exc:
            raise LearnError(str(exc)) from None
        return self._show(TokenizerView(text, special, result)), result

    async def show_results(self, title: str, columns: list[str], rows: list[list[str]], notes: str = "",
                           mark_row: int | None = None, widths: dict[int, int] | None = None) -> Any:
        view = ResultsView(title, list(columns), [list(r) for r in rows], notes, mark_row, dict(widths or {}))
        return self._show(view)

    async def quant_lab(self, types: tuple[str, ...] | None, max_tokens: int) -> QuantLab:
        from ..config import app_dirs

        return self._show(QuantLab(self.model_file(), self.run_guarded, app_dirs().models,
                                   types=types or QUANT_LAB_TYPES, max_tokens=max_tokens))

    # -- one experiment ----------------------------------------------------------------------------------------

    async def run_question(self, question: Question, variant: int = 0) -> Finding:
        """Run ``question``'s experiment (variation ``variant``) from a clean slate, as the Learn screen does:
        nothing shown or marked yet, raw completion unless the recipe asks for chat. LearnError: it cannot run."""
        from .experiments import EXPERIMENTS, run

        if question.experiment not in EXPERIMENTS:
            raise LearnError(f"{question.id}: unknown experiment {question.experiment!r}")
        if not 0 <= variant <= len(question.try_next):
            raise LearnError(f"{question.number} has no variation {variant} (it has "
                             f"{len(question.try_next)}: 1–{len(question.try_next)})" if question.try_next
                             else f"{question.number} has no variations")
        self.views.clear()
        self.marks.clear()
        self.notices.clear()
        return await run(self, question, variant)  # each recipe sets chat on or off itself (2.2 continues one)


# -- what a headless run prints ---------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as objects, sequences as arrays, numpy scalars as numbers; anything
    else (and a float that JSON cannot hold: nan, inf) as its ``str()``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    return str(value)


def report(host: HeadlessHost, question: Question, finding: Finding) -> dict[str, Any]:
    """What the experiment found, as data: the figure, the values behind it, where the dashboard would point,
    and the tables of the screens it opened (print it with :func:`tui.safe_text.json_text`)."""
    return {
        "question": finding.question, "number": finding.number, "title": question.title, "variant": finding.variant,
        "panel": finding.panel, "headline": finding.headline, "values": jsonable(finding.values),
        "marks": [{"target": target, "part": part, "text": text} for target, part, text in host.marks],
        "tables": [table.as_dict() for view in host.views for table in view.tables()],
        "notices": [{"severity": severity, "message": message} for severity, message in host.notices],
        "try_next": list(finding.try_next),
    }


def _cell(value: Any) -> str:
    """A table cell on one line: the recipe's line breaks as " · ", control characters visible."""
    return visible(" · ".join(str(value).splitlines()))


def table_lines(table: Any, max_width: int = 60) -> list[str]:
    """A table as aligned text lines (the marked row starts with ★), its notes after it."""
    cells = [[_cell(c) for c in table.columns]] + [[_cell(c) for c in row] for row in table.rows]
    n = max(len(r) for r in cells)
    widths = [min(max_width, max((len(r[i]) for r in cells if i < len(r)), default=0)) for i in range(n)]

    def line(row: list[str], lead: str) -> str:
        parts = [(c if len(c) <= w else c[: w - 1] + "…").ljust(w) for c, w in zip(row, widths)]
        return (lead + " │ ".join(parts)).rstrip()

    out = [f"table: {visible(table.title)}", line(cells[0], "    ")]
    out += [line(row, "  ★ " if i == table.mark_row else "    ") for i, row in enumerate(cells[1:])]
    if table.notes:
        out += ["  " + visible(n) for n in table.notes.splitlines() if n.strip()]
    return out


def _value_text(value: Any) -> str:
    """A finding's value on one line: text as it is, anything else as its JSON (never a Python repr)."""
    return visible(value) if isinstance(value, str) else json_text(jsonable(value), ensure_ascii=False)


def report_lines(host: HeadlessHost, question: Question, finding: Finding) -> list[str]:
    """What the experiment found, as text: the question, the headline, one ``key: value`` per value, the marks
    and the tables. Every line is safe to print (control characters visible)."""
    variation = ""
    if 0 < finding.variant <= len(finding.try_next):  # the items read "1: …"
        variation = f" — variation {finding.try_next[finding.variant - 1]}"
    lines = [visible(f"Learn {question.number} {question.title}{variation}"),
             visible(f"headline: {finding.headline}"), "values:"]
    lines += [f"  {visible(key)}: {_value_text(value)}" for key, value in finding.values.items()]
    if host.marks:
        lines.append("marks:")
        lines += [visible(f"  {target}{f' {part}' if part else ''}: ★ {text}") for target, part, text in host.marks]
    for view in host.views:
        for table in view.tables():
            lines += table_lines(table)
    return lines
