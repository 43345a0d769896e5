"""The llmtui app: the composition root.

It owns the engine (loading, switching, settings) and the controller that runs it, the sampling preset,
chat mode and the context policy (set through :mod:`tui.app.conversation`), and it is the public API
experiments drive (:meth:`LlmTuiApp.generate`).
What the user sees lives elsewhere: the live dashboard (:mod:`tui.app.dashboard`, panels folded from a
:class:`~tui.run.RunModel`), the replay player (:mod:`tui.app.replay`), the screens the keys open
(:mod:`tui.app.tools`), the modes and their exits (:mod:`tui.app.modes`), the API server's host
(:mod:`tui.app.api_host`), remote servers (:mod:`tui.app.remote_host`), recording (:mod:`tui.app.recording`)
and the key table (:mod:`tui.app.keys`).
Workers never touch widgets: the controller's events are posted to the dashboard, which folds them at a
bounded rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from ..config import save_state
from ..crash import crash_log
from ..engine.chat import loop_policy
from ..engine.controller import Controller, SetPreset
from ..engine.errors import EngineError
from ..engine.thread import engine_thread
from ..run import Phase, RunModel, RunResult
from ..safe_text import visible, visible_lines
from ..sampling.presets import base_name
from .api_host import ApiHost
from .conversation import Conversation
from .dashboard import Dashboard
from .keys import BINDINGS, palette_commands, web_keymap
from .messages import EngineLoaded, EngineNotice, LoadProgress
from .rag_host import RagHost
from .recording import Recording
from .remote_host import RemoteHost
from .themes import DEFAULT_THEME
from .tools import Tools
from .widgets.graphs import MemoryGraph
from .widgets.panels import TopKHistogram

SWITCH_INTERVAL = 0.0005


class LlmTuiApp(Conversation, Tools, App[int]):
    TITLE = "llmtui"
    CSS_PATH = "app.tcss"
    BINDINGS = BINDINGS
    ENABLE_COMMAND_PALETTE = True

    # the modes the status line shows: a change repaints it
    step_mode = var(False)
    chat_mode = var(False)

    def __init__(
        self,
        *,
        engine_factory: Callable[[], Any] | None = None,
        load: Callable[[Any, Callable[[float], None] | None], Any] | None = None,
        entry: Any = None,
        loaded_paths: Callable[[], list[str]] = list,
        model_label: str = "",
        settings: Any,
        preset: Any,
        catalog: Any,
        prompt: str | None = None,
        max_tokens: int = 256,
        themes: Iterable[Any] = (),
        theme: str | None = None,
        keymap: dict[str, str] | None = None,
        discover: Callable[[], list[Any]] | None = None,
        notices: Iterable[str] = (),
        live_metrics: bool = True,
        record: str | None = None,
        replay: Any = None,
        fork_load: Callable[[Any], Any] | None = None,
        context_policy: str = "stop",
        n_keep: int = -1,
        system: str | None = None,
        learn: str | None = None,
        serve: tuple[str, int] | None = None,
        api_key: str | None = None,
        max_body_bytes: int = 8 << 20,
        chat: bool | None = None,
        remotes: Any = None,
        seed_given: bool = False,
    ) -> None:
        super().__init__()
        if load is None and engine_factory is not None:
            factory = engine_factory

            def load(_entry: Any, _progress: Any) -> Any:
                from ..engine.pool import Loaded

                t0 = time.perf_counter()
                engine = factory()
                return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)

        self.load = load  # None: no model (a replay opened without one)
        self.loaded_paths = loaded_paths
        self.entry = entry
        self.model_label = visible(model_label)  # a model's name (a file name, a recording's): untrusted
        self.load_info = self.model_load_info = ""  # the status line's (a recreated context too); the model's load
        self.settings = settings
        self.base_settings = settings  # what experiments start from
        self.preset = preset
        self.catalog = catalog
        self.initial_prompt = prompt if prompt is not None else self.RAW_PROMPT
        self._prompt_given = prompt is not None
        self.chat_start = chat  # None: chat mode on a model with a chat template, raw completion otherwise
        self.max_tokens = max_tokens
        self.extra_themes = list(themes)
        self._start_theme = theme
        self.keymap = dict(keymap or {})
        self.discover = discover
        self._notices = list(notices)
        self.live_metrics = live_metrics and replay is None  # off for snapshot tests: RSS, wall times vary
        self.recorder = Recording(self, record is not None, record)
        self._replay, self._fork_load = replay, fork_load
        self.context_policy = context_policy
        self.n_keep = n_keep
        self.system = system
        self.engine: Any = None
        self.controller: Controller | None = None
        self._gc_frozen = False  # gc.freeze once, after the first model loads
        self.engine_settled = asyncio.Event()  # set once a model loaded or failed to (experiments wait on it)
        self.api = ApiHost(self, serve or ("127.0.0.1", 8000), api_key, max_body_bytes)
        self.remote = RemoteHost(self, remotes)  # servers to watch (--remote), the fleet view
        self.rag = RagHost(self)  # the RAG lab's indexes, retrieval before a chat turn
        self.seed_given = seed_given  # the user chose the seed: API requests without one use it
        self._serve_on_load = serve is not None
        # learn mode: the question whose experiment ran last, what each one found and the learner's guess
        self.learn_open_at = learn  # open the Learn screen at this question once the model is loaded
        self.learn_question: str | None = None
        self.learn_findings: dict[str, Any] = {}
        self.learn_verdicts: dict[str, str] = {}
        self.learn_quick, self.learn_marked = False, []  # shortened experiments (tests); highlighted panels

    # -- screens ------------------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return Dashboard(self.initial_prompt, live_metrics=self.live_metrics)

    @property
    def dashboard(self) -> Dashboard:
        """The live dashboard (the bottom screen: a replay or a modal may be over it)."""
        return self.screen_stack[0]  # type: ignore[return-value]

    @property
    def current(self) -> RunModel:
        """The run the user looks at: the top-most dashboard's (a replay's, or the live one)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, Dashboard):
                return screen.model
        return self.dashboard.model

    def on_mount(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)  # the worker waits less for the GIL between tokens
        for theme in self.extra_themes:
            self.register_theme(theme)
        wanted = self._start_theme or DEFAULT_THEME
        for name in (wanted, DEFAULT_THEME, "textual-dark"):
            if name in self.available_themes:
                self.theme = name
                break
        if self.is_web:  # llmtui web: keys the browser keeps get one that reaches the page
            self.keymap = web_keymap(self.keymap)
        if self.keymap:
            self.set_keymap(self.keymap)
        for notice in self._notices:
            self.notify(notice, severity="warning", timeout=8)

    NO_MODEL = "no model loaded: m picks one"
    RAW_PROMPT = "Once upon a time"  # what the prompt box holds for raw completion until the user types

    def on_dashboard_ready(self, message: Dashboard.Ready) -> None:
        if message.dashboard is not self.screen_stack[0]:
            return  # a replay's
        if self._replay is not None:
            self.open_replay(self._replay, self._fork_load)
        if self.load is not None and (self.entry is not None or self._replay is None):
            self._load_engine()
        else:
            self.dashboard.model.set_phase(Phase.IDLE)
            self.dashboard.query_one(TopKHistogram).clear(self.NO_MODEL)
            self.dashboard.sync_phase()
            self.engine_settled.set()

    def _repaint_status(self) -> None:
        """The status lines and footers of every dashboard (a mode changed)."""
        for screen in self.screen_stack:
            if isinstance(screen, Dashboard) and screen.is_mounted:
                screen.update_status()
                screen.refresh_footer()

    watch_step_mode = watch_chat_mode = _repaint_status

    # -- the engine ----------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_engine(self, entry: Any = None, resume: str | None = None) -> None:
        old = self.controller
        if old is not None:
            old.stop()
            old.wait_idle()  # its run has finished with the old engine
        last_sent = [0.0]

        def progress(fraction: float) -> None:
            now = time.perf_counter()
            if now - last_sent[0] > 0.1 or fraction >= 1.0:
                last_sent[0] = now
                self.post_message(LoadProgress(fraction))

        try:
            loaded = self.load(entry if entry is not None else self.entry, progress)
        except EngineError as exc:
            self.post_message(EngineLoaded(None, str(exc), entry=entry))
            return
        self.post_message(EngineLoaded(loaded.engine, None, entry=entry, cold=loaded.cold, ms=loaded.ms,
                                       resume=resume))

    def on_load_progress(self, message: LoadProgress) -> None:
        self.dashboard.model.set_phase(Phase.LOADING, f"{message.fraction:.0%}")
        self.dashboard.sync_phase()

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        if not self.screen_stack:  # the app is closing
            return
        board = self.dashboard
        if message.error:
            board.model.set_phase(Phase.ERROR, message.error)
            board.query_one(TopKHistogram).clear(message.error)
            self.notify(message.error, severity="error", timeout=15)
            board.sync_phase()
            self.engine_settled.set()
            return
        self.use_engine(message.engine, message.entry, cold=message.cold, ms=message.ms)
        if self._serve_on_load:
            self._serve_on_load = False
            self.api.start()
        if self.learn_open_at is not None:
            current, self.learn_open_at = self.learn_open_at, None
            self.action_learn(current)
        elif self.remote.fleet_on_start:
            self.remote.fleet_on_start = False
            self.remote.open_fleet()
        elif message.resume:
            self.start_generation(message.resume)
        elif self.screen is board:
            board.query_one("#prompt").focus()

    def use_engine(self, engine: Any, entry: Any = None, *, cold: bool = True, ms: float = 0.0) -> None:
        """``engine`` (just loaded) becomes the app's: a controller for it, the dashboard reset."""
        board = self.dashboard
        self.engine = engine
        if entry is not None:
            self.entry = entry
            self.model_label = visible(entry.name)
        if getattr(engine, "is_remote", False):  # named by its URL until it answers; now by its model too
            self.model_label = visible(engine.info.name)
        self.load_info = self.model_load_info = f"loaded in {ms:,.0f} ms ({'cold' if cold else 'warm'})"
        self.controller = self.remote.controller(self.engine, self.preset, seed=self.settings.seed, emit=self.emit,
                                                 max_tokens=self.max_tokens, context_policy=loop_policy(self.context_policy),
                                                 n_keep=self.n_keep)
        self.recorder.sync()
        board.model.can_chat = self.can_chat
        self.set_chat(self.can_chat if self.chat_start is None else self.chat_start)
        if self.chat_mode and not self._prompt_given and board.query_one("#prompt").value == self.RAW_PROMPT:
            board.query_one("#prompt").value = ""  # a question goes here: the placeholder says so
        for warning in getattr(self.engine, "warnings", []):
            self.notify(warning, severity="warning", timeout=8)
        for note in getattr(self.engine, "notes", []):  # a remote server's facts (its default sampler chain…)
            self.notify(note, timeout=8)
        board.reset_run(Phase.IDLE)
        if not self._gc_frozen:
            # Start-up objects (widgets, styles, the first model's records) live as long as the
            # app: freezing them once keeps the collector's full passes off them while tokens stream.
            self._gc_frozen = True
            self.call_after_refresh(gc.freeze)
        board.query_one(TopKHistogram).clear()
        board.query_one(MemoryGraph).model_bytes = getattr(self.engine.info, "file_size", 0)
        board.update_kv()
        board.sync_phase()
        self.engine_settled.set()

    @property
    def can_chat(self) -> bool:
        """The loaded model has a chat template (chat mode is possible, and where it starts)."""
        info = getattr(self.engine, "info", None)
        return bool(getattr(info, "chat_template", None))

    def switch_model(self, entry: Any) -> None:
        """Stop what runs, then load ``entry`` (warm if it is still in the pool); a replay is left."""
        self.leave_replays()
        if self.entry is not None and entry.path == self.entry.path and self.engine is not None:
            self.notify(f"{entry.name} is already loaded", timeout=3)
            return
        board = self.dashboard
        resume = board.query_one("#prompt").value if self.running else None
        if self.controller is not None:
            self.controller.stop()
        board.reset_run(Phase.LOADING, visible(entry.name))  # whatever the old run still sends is dropped
        self.model_label = visible(entry.name)
        self.engine = None
        self.engine_settled.clear()
        board.sync_phase()
        self._load_engine(entry, resume)

    # -- runs --------------------------------------------------------------------------------------------

    def emit(self, event: object) -> None:
        """The controller's events (any thread): to the live dashboard, which folds them (none once the app
        has closed its screens: a run's last events can come after)."""
        if self.screen_stack:
            self.dashboard.post_events(self.controller.run_id if self.controller else 0, event)

    def on_engine_notice(self, _: EngineNotice) -> None:
        if self.screen_stack:  # a notice still queued while the app closes finds no dashboard
            self.dashboard.fold()

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.running

    @property
    def serving_request(self) -> bool:
        """An API client's request is running: the dashboard's controls wait for the next run."""
        return self.api.busy

    def start_generation(self, prompt: str, *, step_mode: bool | None = None, **run: Any) -> int | None:
        """Generate from ``prompt`` on the live dashboard; ``run``: :meth:`Controller.run`'s per-run options
        (``preset``, ``max_tokens``…). Returns the run's id (None when it could not start)."""
        if self.refuse_start(prompt):
            return None
        if step_mode is not None:
            self.step_mode = step_mode
        self.api.job = None
        board = self.dashboard
        run_id = board.new_run(prompt)
        board.query_one("#stream").focus()
        self._generate(prompt, run_id, step_mode=self.step_mode, **run)
        return run_id

    def refuse_start(self, prompt: str) -> bool:
        """Whether a dashboard run from ``prompt`` cannot start now (a notice says why); when it can, the run
        going now is stopped (the new one takes the engine). Shared with a retrieval-augmented turn, which
        retrieves before it starts."""
        if self.controller is None or self.engine is None:
            model = self.dashboard.model
            self.notify(f"no model: {model.detail} — m picks one" if model.phase is Phase.ERROR
                        else "the model is still loading", severity="warning")
            return True
        if not prompt.strip():
            self.notify("type a prompt first", severity="warning")
            return True
        if self.serving_request:
            self.notify("an API request is running: wait for it, or esc to stop it", severity="warning")
            return True
        if self.running:
            self.controller.stop()
        return False

    async def generate(self, prompt: str, *, step_mode: bool = False, **run: Any) -> RunResult:
        """Run ``prompt`` on the live dashboard and return the run when it stopped (in step mode: at its
        first pending step). ``run``: per-run ``preset``, ``seed``, ``max_tokens`` (the app's stay as
        they are). What experiments (and tests) drive the app with."""
        if self.running:
            self.controller.stop()
            await self.controller_idle()
        self.dashboard.query_one("#prompt").value = prompt
        run_id = self.start_generation(prompt, step_mode=step_mode, **run)
        if run_id is None:
            raise EngineError(f"the run could not start: {self.dashboard.model.state_text}")
        return await self.dashboard.waiters.add(run_id, pending=step_mode)  # its end (or first pending step)

    async def controller_idle(self) -> None:
        """Wait (without blocking the UI) until no run uses the engine."""
        while self.running:
            await asyncio.sleep(0.01)

    @work(thread=True, group="gen", exit_on_error=False)
    def _generate(self, prompt: str, run_id: int, **run: Any) -> None:
        """A dashboard run on the engine thread (``run``: Controller.run's options)."""
        assert self.controller is not None
        engine_thread().call(self.controller.run, prompt, run_id=run_id, **run)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.worker_failed(event.worker)

    WORKS = {"gen": "the run", "load": "loading", "resample": "re-sampling", "learn": "the experiment",
             "models": "model discovery", "anatomy": "the anatomy", "tokenizer": "the tokenizer"}

    def worker_failed(self, worker: Worker) -> None:
        """A worker (the app's or a screen's) raised what it should have caught: a bug. Say it in one line,
        keep the traceback in crash.log, and release whoever waits on what the worker was doing."""
        error = worker.error
        if worker.group == "load":
            self.engine_settled.set()  # whoever waits for the model learns that it is not coming
        if worker.group in ("gen", "load", "resample"):
            self.dashboard.fail_run(str(error))
        where = crash_log(error) if isinstance(error, BaseException) else "none"
        self.notify(f"{self.WORKS.get(worker.group, worker.group or 'a task')} failed: {type(error).__name__}: "
                    f"{error} (traceback: {where})", severity="error", timeout=15)

    # -- sampling, chat, context --------------------------------------------------------------------------

    def action_preset(self, delta: int) -> None:
        self.set_preset(self.catalog.neighbour(base_name(self.preset.name), delta))

    def change_temperature(self, delta: float) -> None:
        temp = next((s for s in self.preset.samplers if s.name in ("temp", "temp_ext")), None)
        current = float(temp.params.get("t", 0.8)) if temp else 1.0
        new_t = round(max(0.0, current + delta), 2)
        preset = self.preset.with_param(temp.name if temp else "temp", "t", new_t)
        self.set_preset(dataclasses.replace(preset, name=f"{base_name(self.preset.name)} T={new_t:g}"))

    def set_preset(self, preset: Any, *, remember: bool = True, quiet: bool = False) -> None:
        """The preset the next runs use (the running one switches too, unless it is an API request's)."""
        self.preset = preset
        if self.controller is not None:
            if self.running and not self.serving_request:
                self.controller.send(SetPreset(preset))
            else:
                self.controller.preset = preset
        if remember and preset.source != "edited":
            save_state(preset=base_name(preset.name))
        if not quiet:
            self.notify(f"preset {preset.name}: {preset.describe()}", timeout=3)
        self._repaint_status()

    # -- the rest of the app ------------------------------------------------------------------------------

    def action_record(self) -> None:
        self.recorder.toggle()

    def action_serve(self) -> None:
        self.api.toggle()

    def notify(self, message: str, *, title: str = "", severity: Any = "information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Notifications carry model text, paths and error messages: plain text unless asked, and
        always through the one sanitiser (control characters visible)."""
        super().notify(visible_lines(message), title=visible(title), severity=severity, timeout=timeout,
                       markup=markup)

    async def action_quit(self) -> None:
        if self.controller is not None and self.running:
            self.controller.stop()
            deadline = time.monotonic() + 2.0
            while self.running and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self, self.keymap)

    def on_unmount(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.api.stop()
        self.rag.close()


def run_app(**kwargs: Any) -> int:
    app = LlmTuiApp(**kwargs)
    app.run()
    # models are freed by the process exit; a run still finishing must not lose its engine under it
    return 0
