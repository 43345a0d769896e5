"""The llmtui dashboard.

Generation runs in a Textual thread worker through :class:`Controller`; the
worker never touches a widget. It hands immutable events to the UI: per-token
steps go into an inbox that a timer drains at a bounded rate (``REFRESH_HZ``)
whatever the token rate, and state changes (started, prompt done, finished,
pending step) also post a message so they show at once. Plots re-plot at
``PLOT_HZ``.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psutil
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from ..config import save_state
from ..engine.controller import (
    Advance,
    ChatTurn,
    Controller,
    Finished,
    PresetChanged,
    PromptDone,
    Resample,
    Resampled,
    SetPreset,
    SetStepMode,
    Started,
    StepEvent,
)
from ..engine.errors import EngineError
from ..engine.thread import engine_thread
from ..record.recorder import RecordingFailed, RecordingStarted
from ..safe_text import visible, visible_lines
from .screens.anatomy import AnatomyScreen
from .screens.help import HelpScreen
from .screens.models import ModelPicker
from .screens.presets import PresetScreen
from .themes import DEFAULT_THEME
from .widgets.graphs import MemoryGraph, ThroughputGraph
from .widgets.panels import ChainTrace, KvGauge, StatusLine, TopKHistogram
from .widgets.safe import SafeInput
from .widgets.token_stream import TokenStream

W = TypeVar("W")
REFRESH_HZ = 8  # the token stream
PANEL_HZ = 2  # histogram, trace, gauge while tokens pour in (at once in step mode or on selection)
PLOT_HZ = 1.0
SWITCH_INTERVAL = 0.0005
SAMPLE_HZ = 2  # RSS / KV samples for the memory graph


class EngineNotice(Message):
    """Wakes the UI to drain the inbox now (state changes, step-mode steps)."""


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


# (binding id, keys, action, description, shown in the footer)
KEYS: list[tuple[str, str, str, str, bool]] = [
    ("gen.stop", "escape", "stop", "Stop", True),
    ("gen.step_mode", "s", "step_mode", "Step mode", True),
    ("gen.step", "space,n", "step", "Step", True),
    ("gen.resample", "r", "resample", "Re-sample", True),
    ("preset.next", "p", "preset(1)", "Preset", True),
    ("preset.prev", "P", "preset(-1)", "Prev preset", False),
    ("temp.up", "plus,equals_sign", "temperature(0.1)", "Temp+", True),
    ("temp.down", "minus,underscore", "temperature(-0.1)", "Temp-", False),
    ("select.prev", "left,left_square_bracket", "select(-1)", "Prev token", False),
    ("select.next", "right,right_square_bracket", "select(1)", "Next token", False),
    ("select.live", "end", "follow", "Live", False),
    ("prompt.focus", "i,slash", "focus_prompt", "Prompt", False),
    ("model.pick", "m", "models", "Models", True),
    ("model.anatomy", "a", "anatomy", "Anatomy", False),
    ("preset.pick", "e", "presets", "Presets", True),
    ("theme.next", "t", "next_theme", "Theme", False),
    ("session.new", "ctrl+n", "new_session", "New", False),
    ("record.toggle", "ctrl+r", "record", "Record", True),
    ("chat.toggle", "c", "chat", "Chat", True),
    ("tokenizer.open", "k", "tokenizer", "Tokenizer", False),
    ("settings.open", "comma", "settings", "Settings", False),
    ("lab.quant", "Q", "quant_lab", "Quant lab", False),
    ("lab.perf", "B", "perf_lab", "Perf lab", False),
    ("session.browse", "b", "sessions", "Sessions", False),
    ("replay.jump", "g", "jump", "Jump", False),
    ("replay.fork", "f", "fork", "Fork", False),
    ("learn.open", "L", "learn", "Learn", True),
    ("api.serve", "S", "serve", "API server", False),
    ("learn.try1", "1", "learn_try(1)", "Try next 1", False),
    ("learn.try2", "2", "learn_try(2)", "Try next 2", False),
    ("app.help", "question_mark,f1", "help", "Help", True),
    ("app.quit", "q,ctrl+q", "quit", "Quit", True),
]


class LlmTuiApp(App[int]):
    TITLE = "llmtui"
    CSS_PATH = "app.tcss"
    BINDINGS = [Binding(keys, action, desc, show=show, id=bid) for bid, keys, action, desc, show in KEYS]
    ENABLE_COMMAND_PALETTE = True

    def __init__(
        self,
        *,
        engine_factory: Callable[[], Any] | None = None,
        load: Callable[[Any, Callable[[float], None] | None], Any] | None = None,
        entry: Any = None,
        loaded_paths: Callable[[], list[str]] = list,
        model_label: str,
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
    ) -> None:
        super().__init__()
        if load is None:
            if engine_factory is None:
                raise ValueError("give load= or engine_factory=")
            factory = engine_factory

            def load(_entry: Any, _progress: Any) -> Any:
                from ..engine.pool import Loaded

                t0 = time.perf_counter()
                engine = factory()
                return Loaded(engine, True, (time.perf_counter() - t0) * 1000.0)

        self.load = load
        self._loaded_paths = loaded_paths
        self.entry = entry
        self.model_label = visible(model_label)  # a GGUF's general.name or a recording's: untrusted
        self.load_info = ""
        self.settings = settings
        self.base_settings = settings  # what experiments start from
        self.preset = preset
        self.catalog = catalog
        self.initial_prompt = prompt if prompt is not None else "Once upon a time"
        self.max_tokens = max_tokens
        self._extra_themes = list(themes)
        self._start_theme = theme
        self._keymap = dict(keymap or {})
        self._discover = discover
        self._notices = list(notices)
        self.live_metrics = live_metrics  # off for snapshot tests: RSS and wall times vary run to run
        # recording: None = off; "" = on, into the sessions directory; a path = on, first session there
        self.recording = record is not None
        self._record_next: str | None = record or None
        self.record_path = ""
        # replay mode: a recorded Session played back instead of a model
        self.replay = replay
        self.replay_pos = 0
        self.replay_playing = False
        self.replay_speed = 20.0  # tokens per second
        self._replay_due = 0.0
        self._fork_load = fork_load
        if replay is not None:
            self.live_metrics = False
        # context: what happens when it is full, and chat mode (prefix reuse)
        self.context_policy = context_policy
        self.n_keep = n_keep
        self.system = system
        self.chat_mode = False
        self.chat_info = ""
        self.n_reused = 0
        self.shifts: list[tuple[int, int, int]] = []
        self.engine: Any = None
        self.controller: Controller | None = None
        self.state = "loading model"
        self.step_mode = False
        # what the UI knows about the current run
        self.steps: list[Any] = []
        self.pending: Any = None
        self.selected: int | None = None
        self.n_prompt = 0
        self.prompt_tps = 0.0
        self._inbox: deque[object] = deque()
        self._token_times: deque[float] = deque(maxlen=64)
        self._t0 = time.perf_counter()
        self._proc = psutil.Process()
        self._dirty_plots = False
        self._gc_frozen = False  # gc.freeze once, after the first model loads
        self._panels_at = 0.0
        self._panels: dict[type, Any] = {}
        self._shown_run = -1  # the run whose step the panels show
        self.generation_count = 0
        self.last_summary: dict[str, Any] = {}  # of the last finished run
        self.chat_turn: ChatTurn | None = None  # the last chat turn's reuse figures
        # learn mode: the question whose experiment ran last, and what each one found
        self.learn_open_at = learn  # open the Learn screen at this question once the model is loaded
        self.learn_question: str | None = None
        self.learn_findings: dict[str, Any] = {}
        self.learn_quick = False  # shortened experiments (tests)
        self.learn_marked: list[Any] = []
        # the OpenAI-compatible API server running inside the dashboard (--serve, S)
        self.serve_at = serve or ("127.0.0.1", 8000)
        self._serve_on_load = serve is not None
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.api: Any = None  # tui.server.LocalServer-like: .service, .http
        self.api_job: Any = None  # the request shown in the panels
        self._api_closing = False

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            with Vertical(id="left"):
                yield SafeInput(self.initial_prompt, placeholder="prompt — Enter to generate", id="prompt")
                yield TokenStream(id="stream")
            with Vertical(id="right"):
                yield TopKHistogram(id="hist")
                yield ChainTrace(id="trace")
        with Horizontal(id="bottom"):
            yield KvGauge(id="kv")
            yield MemoryGraph(id="mem")
            yield ThroughputGraph(id="tput")
        yield Static("", id="learnbar")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)  # the worker waits less for the GIL between tokens
        for theme in self._extra_themes:
            self.register_theme(theme)
        wanted = self._start_theme or DEFAULT_THEME
        for name in (wanted, DEFAULT_THEME, "textual-dark"):
            if name in self.available_themes:
                self.theme = name
                break
        if self._keymap:
            self.set_keymap(self._keymap)
        self.query_one("#stream").border_title = "tokens"
        self.query_one("#hist").border_title = "top-10 next tokens"
        self.query_one("#trace").border_title = "sampler chain"
        self.query_one("#kv").border_title = "KV cache"
        self.query_one("#mem").border_title = "memory"
        self.query_one("#tput").border_title = "throughput"
        self.query_one(TopKHistogram).clear("loading the model…")
        self.query_one(ChainTrace).clear()
        self._refresh_timer = self.set_interval(1 / REFRESH_HZ, self._drain_inbox, pause=True)
        self.set_interval(1 / SAMPLE_HZ, self._sample_memory)
        self.set_interval(1 / PLOT_HZ, self._replot)
        self._replay_timer = self.set_interval(1 / 30, self._replay_tick, pause=True)
        self._dirty_plots = True
        self.call_after_refresh(self._replot)  # empty graphs with their titles, at once
        for notice in self._notices:
            self.notify(notice, severity="warning", timeout=8)
        self._apply_size_classes()
        self._update_status()
        self._load_engine()

    @on(events.Resize)
    def _resized(self, event: events.Resize) -> None:
        self.call_after_refresh(self._apply_size_classes)

    def _apply_size_classes(self) -> None:
        w, h = self.size
        self.screen.set_class(h < 32, "-short")
        self.screen.set_class(w < 100, "-narrow")
        self.screen.set_class(w < 60 or h < 16, "-tiny")

    # -- engine lifecycle ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load_engine(self, entry: Any = None, resume: str | None = None) -> None:
        old = self.controller
        if old is not None:
            old.stop()
            with old._lock:  # wait until its run has finished with the old engine
                pass
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
        self.state = f"loading {message.fraction:.0%}"
        self._update_status()

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        if message.error:
            self.state = "error: " + message.error
            self.query_one(TopKHistogram).clear(message.error)
            self.notify(message.error, severity="error", timeout=15)
            self._update_status()
            return
        self.engine = message.engine
        if message.entry is not None:
            self.entry = message.entry
            self.model_label = message.entry.name
        self.load_info = f"loaded in {message.ms:,.0f} ms ({'cold' if message.cold else 'warm'})"
        self.controller = Controller(self.engine, self.preset, seed=self.settings.seed, emit=self._emit,
                                     max_tokens=self.max_tokens,
                                     context_policy=self._loop_policy,
                                     n_keep=self.n_keep)
        self.sync_recorder()
        self.chat_mode = False
        for warning in getattr(self.engine, "warnings", []):
            self.notify(warning, severity="warning", timeout=8)
        self.state = "idle"
        self._reset_run_state()
        if not self._gc_frozen:
            # Start-up objects (widgets, styles, the first model's records) live as long as the
            # app: freezing them once keeps the collector's full passes off them while tokens stream.
            self._gc_frozen = True
            self.call_after_refresh(gc.freeze)
        self.query_one(TopKHistogram).clear()
        self.query_one(MemoryGraph).model_bytes = getattr(self.engine.info, "file_size", 0)
        self._update_kv()
        self._update_status()
        if self._serve_on_load and not getattr(self.engine, "replay", False):
            self._serve_on_load = False
            self.start_api()
        if getattr(self.engine, "replay", False):
            self._replay_start()
        elif self.learn_open_at is not None:
            current, self.learn_open_at = self.learn_open_at, None
            self.action_learn(current)
        elif message.resume:
            self.start_generation(message.resume)
        else:
            self.query_one("#prompt", Input).focus()

    def switch_model(self, entry: Any) -> None:
        """Stop what runs, then load ``entry`` (warm if it is still in the pool)."""
        if self.entry is not None and entry.path == self.entry.path and self.engine is not None:
            self.notify(f"{entry.name} is already loaded", timeout=3)
            return
        resume = self.query_one("#prompt", Input).value if self.running else None
        if self.controller is not None:
            self.controller.stop()
        self.generation_count += 1  # drop whatever the old run still sends
        self._inbox.clear()
        self.state = f"loading {entry.name}"
        self.model_label = entry.name
        self.engine = None
        self._update_status()
        self._load_engine(entry, resume)

    # -- worker -> UI ------------------------------------------------------------------------------

    def _emit(self, event: object) -> None:
        """Called from the worker thread: never touches widgets."""
        self._inbox.append((self.controller.run_id if self.controller else 0, event))
        if not (isinstance(event, StepEvent) and not event.pending):
            self.post_message(EngineNotice())

    def on_engine_notice(self, _: EngineNotice) -> None:
        self._drain_inbox()

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        if not inbox:
            return
        stream = self._panel(TokenStream)
        if stream is None:  # the app is shutting down
            inbox.clear()
            return
        new_steps = False
        show: Any = None
        appended: list[tuple[int, str, float]] = []
        with self.batch_update():
            while inbox:
                run_id, ev = inbox.popleft()
                if run_id != self.generation_count:
                    continue  # from a run that was stopped or cleared away
                if isinstance(ev, StepEvent):
                    step = ev.step
                    if ev.pending:
                        self.pending = step
                        self.state = "step mode: space accepts, r re-samples"
                        stream.append(step.index, step.text, step.prob)
                        stream.set_pending(step.index)
                        show = step
                        new_steps = True
                    else:
                        if self.pending is not None and self.pending.index == step.index:
                            self.pending = None
                            stream.set_pending(None)
                        else:
                            appended.append((step.index, step.text, step.prob))
                        self.steps.append(step)
                        self._token_times.append(step.t)
                        new_steps = True
                        show = step
                        if step.shift is not None:
                            self.shifts.append((step.index, *step.shift))
                            self.notify(f"context shift at step {step.index}: kept {step.shift[0]}, "
                                        f"dropped {step.shift[1]} tokens", timeout=3)
                elif isinstance(ev, Resampled):
                    self._apply_resampled(ev)
                    show = ev.step
                elif isinstance(ev, PromptDone):
                    self.n_prompt = ev.n_tokens
                    self.prompt_tps = ev.tokens_per_s
                    self._panel(ThroughputGraph).prompt_tps = ev.tokens_per_s
                    self.state = "generating" if self.api_job is None else f"API #{self.api_job.id} generating"
                    new_steps = True
                elif isinstance(ev, Started):
                    self.state = "prompt"
                    if self.chat_mode:
                        stream.set_prompt(ev.prompt)  # the conversation, rendered by the chat template
                elif isinstance(ev, ChatTurn):
                    self.chat_turn = ev
                    self.n_reused = ev.reused
                    self.chat_info = (f"reused {ev.reused:,}, evaluated {ev.evaluated:,}, saved ~{ev.saved_ms:.0f} ms"
                                      + (f", dropped {ev.dropped_turns} old turn(s)" if ev.dropped_turns else ""))
                elif isinstance(ev, PresetChanged):
                    self.notify(f"preset: {ev.preset}", timeout=2)
                elif isinstance(ev, Finished):
                    if appended:  # the final view is laid out from every token, however they were batched
                        stream.append_many(appended)
                        appended = []
                    self._finished(ev)
                elif isinstance(ev, RecordingStarted):
                    self.record_path = ev.path
                elif isinstance(ev, RecordingFailed):
                    self.notify(ev.message, severity="error", timeout=10)
                    self.record_path = ""
            if appended:
                stream.append_many(appended)
            now = time.perf_counter()
            urgent = self.pending is not None or not self.running
            first = show is not None and self._shown_run != self.generation_count  # a run's first step: at once
            if urgent or first or now - self._panels_at >= 1 / PANEL_HZ:
                self._panels_at = now
                if show is not None and self.selected is None:
                    self._show_step(show, pending=show is self.pending)
                elif self.selected is None and self.steps:
                    self._show_step(self.steps[-1])
                if new_steps or urgent:
                    self._update_kv()
                self._update_status()
            if new_steps and self.steps:
                self._add_throughput_sample()

    def _apply_resampled(self, ev: Resampled) -> None:
        step = ev.step
        stream = self.query_one(TokenStream)
        if ev.pending:
            self.pending = step
        elif self.steps and self.steps[-1].index == step.index:
            self.steps[-1] = step
        stream.replace(step.index, step.text, step.prob)
        if ev.pending:
            stream.set_pending(step.index)
        self.notify(f"re-sampled step {step.index} with {ev.preset}: {step.piece!r}", timeout=3)

    def _finished(self, ev: Finished) -> None:
        self.last_summary = dict(ev.summary or {})
        self._refresh_timer.pause()
        self._panels_at = 0.0  # the final state shows at once
        stream = self.query_one(TokenStream)
        if stream.follow:
            stream.follow_latest()  # the same final view however the tokens arrived
        reason = ev.reason.describe() if ev.reason else "?"
        self.state = f"stopped: {reason}" + (f" ({ev.error})" if ev.error else "")
        if self.api_job is not None:
            self.state = f"API #{self.api_job.id} {self.state}"
        if self.pending is not None:
            self.query_one(TokenStream).set_pending(None)
            self.pending = None
        self._update_kv()
        if ev.error:
            self.notify(ev.error, severity="error", timeout=10)

    def _panel(self, kind: type[W]) -> W | None:
        """The main screen's panel of type ``kind``, cached: a DOM query per refresh costs more than the
        panel's own update (None while the app shuts down)."""
        widget = self._panels.get(kind)
        if widget is None or not widget.is_attached:
            found = self.screen_stack[0].query(kind) if self.screen_stack else None
            widget = found.first() if found else None
            if widget is None:
                self._panels.pop(kind, None)
                return None
            self._panels[kind] = widget
        return widget

    def _show_step(self, step: Any, *, pending: bool = False) -> None:
        if self.engine is None:  # between two models
            return
        piece = self.engine.piece
        self._shown_run = self.generation_count
        # an API request samples with its own preset (its fields over the server's default)
        preset = self.api_job.request.preset.name if self.api_job is not None else self.preset.name
        self._panel(TopKHistogram).show(step, piece, pending=pending)
        self._panel(ChainTrace).show(step, piece, preset)

    def _add_throughput_sample(self) -> None:
        if not self.live_metrics:
            return
        times = self._token_times
        if len(times) >= 2:
            span = times[-1] - times[0]
            tps = (len(times) - 1) / span if span > 0 else 0.0
            last = self.steps[-1]
            self._panel(ThroughputGraph).add(time.perf_counter() - self._t0, tps, last.decode_ms + last.sample_ms)
            self._dirty_plots = True

    def _sample_memory(self) -> None:
        if self.engine is None or not self.live_metrics:
            return
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        kv = self.engine.kv_layout()
        n_past = self.n_prompt + len(self.steps)
        graph = self._panel(MemoryGraph)
        if graph is not None:  # absent while the app shuts down
            graph.add(time.perf_counter() - self._t0, rss, kv.used(n_past))
            self._dirty_plots = True

    def _replot(self) -> None:
        if not self._dirty_plots:
            return
        self._dirty_plots = False
        for graph in (self._panel(MemoryGraph), self._panel(ThroughputGraph)):
            if graph is not None and graph.display and graph.size.width > 10:
                graph.replot()

    def _update_kv(self) -> None:
        gauge = self._panel(KvGauge)
        if self.engine is None or gauge is None:
            return
        kv = self.engine.kv_layout()
        last = self.pending or (self.steps[-1] if self.steps else None)
        n_prompt = self.n_prompt
        if self.shifts:  # after a shift only n_keep prompt tokens remain at the front
            n_prompt = min(n_prompt, self.shifts[-1][1])
        if last is None:
            n_past = self.n_prompt + self.n_reused
        elif self.state.startswith("stopped") and self.pending is None and hasattr(self.engine, "n_past"):
            n_past = self.engine.n_past  # what the cache holds: the last sampled token was never decoded
        else:
            n_past = last.n_past + 1  # the token being decoded now
        gauge.show(
            n_ctx=self.engine.n_ctx, n_past=n_past, n_prompt=n_prompt + self.n_reused if not self.shifts else n_prompt,
            n_reused=self.n_reused, n_keep=self._n_keep_cells(), shifts=tuple(self.shifts),
            bytes_per_token=kv.bytes_per_token, allocated=kv.allocated, type_k=kv.type_k, type_v=kv.type_v,
        )

    def _n_keep_cells(self) -> int | None:
        if self.context_policy != "shift":
            return None
        return self.n_prompt + self.n_reused if self.n_keep < 0 else self.n_keep

    def _update_status(self) -> None:
        info = getattr(self.engine, "info", None)
        model = f"{self.model_label} · {info.arch} · {info.quant}" if info else self.model_label
        # wall-clock figures are left out in deterministic (snapshot) mode
        loaded = f" │ {self.load_info}" if self.load_info and self.live_metrics else ""
        n_ctx = getattr(self.engine, "n_ctx", self.settings.n_ctx)
        mode = " │ STEP MODE" if self.step_mode else ""
        if self.chat_mode:
            mode += " │ CHAT" + (f" ({self.chat_info})" if self.chat_info else "")
        if self.context_policy == "shift":
            mode += " │ shift"
        if self.recording:
            mode += " │ ● REC"
        if self.replay is not None and getattr(self.engine, "replay", False):
            mode += (f" │ REPLAY {self.replay_pos}/{len(self.replay.steps)} "
                     f"{'▶' if self.replay_playing else '⏸'} {self.replay_speed:g} tok/s")
        api = ""
        if self.api is not None:  # before the state: the long state line is what a narrow terminal cuts
            svc = self.api.service
            api = f" │ API :{self.api.http.port} ({svc.started} request{'s' if svc.started != 1 else ''}" + (
                f", {svc.queue_length} waiting)" if svc.queue_length else ")")
        sel = f" │ viewing step {self.selected}" if self.selected is not None else ""
        status = self._panel(StatusLine)
        if status is None:
            return
        status.set_text(
            f"{model} │ preset {self.preset.name} │ seed {self.settings.seed} │ threads {self.settings.threads}"
            f" │ n_ctx {n_ctx:,}{api} │ {self.state}{mode}{sel}{loaded}"
        )

    # -- actions ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.controller is not None and self.controller.running

    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        self.start_generation(event.value)

    def start_generation(self, prompt: str, *, step_mode: bool | None = None) -> None:
        if getattr(self.engine, "replay", False):
            self.notify("this is a replay: press f to fork it and generate with the model", severity="warning")
            return
        if self.controller is None:
            self.notify("the model is still loading", severity="warning")
            return
        if not prompt.strip():
            self.notify("type a prompt first", severity="warning")
            return
        if self.serving_request:
            self.notify("an API request is running: wait for it, or esc to stop it", severity="warning")
            return
        if self.running:
            self.controller.stop()
        if step_mode is not None:
            self.step_mode = step_mode
        self._new_run(prompt, "prompt").focus()
        self._generate(prompt, self.generation_count, step_mode=self.step_mode)

    def _reset_run_state(self) -> None:
        """Forget the last run: its steps, selection, and the prompt/reuse/shift figures the KV gauge shows."""
        self.steps = []
        self.pending = None
        self.selected = None
        self.n_prompt = 0
        self.n_reused = 0
        self.shifts = []
        self._token_times.clear()

    def _new_run(self, prompt: str, state: str) -> TokenStream:
        """Clear what the panels know of the last run for a new one (its events carry the new run id)."""
        self.api_job = None
        self._reset_run_state()
        stream = self.query_one(TokenStream)
        stream.set_prompt(prompt)
        stream.select(None)
        stream.follow = True
        self.state = state
        self.generation_count += 1
        self._refresh_timer.resume()
        self._update_kv()
        self._update_status()
        return stream

    @work(thread=True, group="gen", exit_on_error=False)
    def _generate(self, prompt: str, run_id: int, **run: Any) -> None:
        """A dashboard run on the engine thread (``run``: Controller.run's options)."""
        assert self.controller is not None
        engine_thread().call(self.controller.run, prompt, run_id=run_id, **run)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group in ("gen", "load", "resample"):
            error = event.worker.error
            self.state = f"error: {error}"
            self.notify(f"{type(error).__name__}: {error}", severity="error", timeout=15)
            self._update_status()
        elif event.state == WorkerState.ERROR and event.worker.group == "learn":
            error = event.worker.error
            self.notify(f"the experiment failed: {type(error).__name__}: {error}", severity="error", timeout=15)

    # -- chat, tokenizer, settings --------------------------------------------------------------

    def action_chat(self) -> None:
        if self.controller is None or self._replaying():
            return
        if self.running:
            self.notify("stop the generation first (esc)", severity="warning")
            return
        self.set_chat(not self.chat_mode)
        self.notify("chat mode: each prompt is a user turn; only new tokens are evaluated" if self.chat_mode
                    else "chat mode off", timeout=4)
        self._update_status()
        self.query_one("#prompt", Input).focus()

    @property
    def _loop_policy(self) -> str:
        """What a generation does when the context fills (the loop knows stop and shift)."""
        return "shift" if self.context_policy == "shift" else "stop"

    @property
    def _chat_policy(self) -> str:
        """What a chat turn does when the conversation no longer fits."""
        return "drop-oldest-turns" if self.context_policy == "drop-oldest-turns" else "stop"

    def set_context_policy(self, policy: str, n_keep: int) -> None:
        """stop, shift or drop-oldest-turns, for the generation loop and the chat alike."""
        self.context_policy, self.n_keep = policy, n_keep
        if self.controller is not None:
            self.controller.context_policy = self._loop_policy
            self.controller.n_keep = n_keep
            if self.controller.chat is not None:
                self.controller.chat.policy = self._chat_policy
        self._update_status()

    def set_chat(self, on: bool, system: str | None = None) -> None:
        """Chat mode on (a fresh conversation, with ``system`` if given) or off."""
        from ..engine.chat import ChatSession

        if system is not None:
            self.system = system
        self.chat_mode = on
        self.controller.chat = ChatSession(self.engine, system=self.system, policy=self._chat_policy) if on else None
        self.chat_info = ""
        self.chat_turn = None
        self._update_status()

    def action_tokenizer(self) -> None:
        if self.engine is None or self._replaying():
            return
        from .screens.tokenizer import TokenizerScreen

        self.push_screen(TokenizerScreen(self.query_one("#prompt", Input).value, self._tokenizer_job))

    def _tokenizer_job(self, text: str, add_bos: bool | None, special: bool, done: Callable[[Any], None]) -> None:
        """Tokenize and compare next-token top-k for text variants, in the engine's thread."""
        if self.running:
            done(EngineError("stop the generation first: the inspector uses the model"))
            return
        self._run_tokenizer(text, add_bos, special, done)

    @work(thread=True, exclusive=True, group="tokenizer", exit_on_error=False)
    def _run_tokenizer(self, text: str, add_bos: bool | None, special: bool, done: Callable[[Any], None]) -> None:
        from ..engine.inspect_tokens import inspect_text

        controller = self.controller

        def inspect() -> Any:
            with controller._lock:  # not while a generation runs
                result = inspect_text(self.engine, text, add_bos=add_bos, parse_special=special)
                controller.last = type(controller.last)()  # the cache no longer holds the last run
                return result

        try:
            result = engine_thread().call(inspect)
        except EngineError as exc:
            result = exc
        self.call_from_thread(done, result)

    def action_settings(self) -> None:
        if self.engine is None or self._replaying():
            return
        from .screens.settings import SettingsScreen

        self.push_screen(SettingsScreen(self.settings, self.context_policy, self.n_keep), self._settings_chosen)

    def _settings_chosen(self, result: Any) -> None:
        if result is None:
            return
        settings, policy, n_keep = result
        self.set_context_policy(policy, n_keep)
        if settings != self.settings:
            self._apply_settings(settings)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _apply_settings(self, settings: Any) -> None:
        """Recreate the context with new settings; the model stays loaded (and mapped)."""
        controller = self.controller
        controller.stop()
        t0 = time.perf_counter()
        try:
            with controller._lock:
                self.engine.recreate_context(settings)
                controller.last = type(controller.last)()
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        ms = (time.perf_counter() - t0) * 1000.0
        self.settings = settings
        self.call_from_thread(self._settings_applied, ms)

    def _settings_applied(self, ms: float) -> None:
        self.load_info = f"context recreated in {ms:,.0f} ms"
        self._reset_run_state()
        self._update_kv()
        self._update_status()
        self.notify(f"new context: n_ctx {self.engine.n_ctx:,}, KV {self.settings.type_k}/{self.settings.type_v}, "
                    f"threads {self.settings.threads}", timeout=4)

    # -- labs ------------------------------------------------------------------------------------

    def _run_guarded(self, job: Callable[[], Any]) -> Any:
        """Run a lab job (in a worker thread) while no generation uses the CPU or the engine."""
        controller = self.controller
        if controller is None:
            return engine_thread().call(job)
        controller.stop()

        def locked() -> Any:
            with controller._lock:
                return job()

        return engine_thread().call(locked)

    def model_file(self) -> str | None:
        """The loaded model's GGUF file, if there is one on disk (a replay or a fake engine has none)."""
        path = getattr(self.engine, "path", None)
        if path is None or self._replaying() or not str(path).endswith(".gguf") or not os.path.exists(path):
            return None
        return str(path)

    def _lab_model(self) -> str | None:
        path = self.model_file()
        if path is None:
            self.notify("the labs need a loaded model", severity="warning")
        return path

    def action_quant_lab(self) -> None:
        path = self._lab_model()
        if path:
            from .screens.labs import QuantLab

            self.push_screen(QuantLab(path, self._run_guarded))

    def action_perf_lab(self) -> None:
        path = self._lab_model()
        if path:
            from ..engine.lab import gpu_offload_available
            from ..engine.settings import default_threads
            from .screens.labs import PerfLab

            self.push_screen(PerfLab(path, default_threads(), self._run_guarded, gpu_offload_available()))

    # -- recording -----------------------------------------------------------------------------

    def sync_recorder(self) -> None:
        """A Recorder listens to the controller's runs while recording is on (and only then)."""
        from ..record.recorder import Recorder

        ctl = self.controller
        if ctl is None:
            return
        ctl.listeners[:] = [listen for listen in ctl.listeners if not isinstance(listen, Recorder)]
        if self.recording:
            ctl.listeners.append(Recorder(self.engine, self._new_recording, self._emit))

    def _new_recording(self, header: dict) -> Any:
        """Called in the worker at the start of each run (recording on)."""
        from ..config import app_dirs
        from ..record import SessionWriter

        path, self._record_next = self._record_next, None
        if path:
            return SessionWriter(path, header, self.engine.piece)
        return SessionWriter.new_in(app_dirs().sessions, self.model_label, header, self.engine.piece)

    def record_lab(self, lab: str, data: dict[str, Any]) -> None:
        """A lab run from the UI while recording: its results become an event of the session recording
        (the current one, or a session of its own when nothing was generated yet)."""
        if not self.recording or self.engine is None or self._replaying():
            return
        from ..record import RecordError, append_event
        from ..record.session import session_header

        try:
            if self.record_path and os.path.exists(self.record_path):
                append_event(self.record_path, "lab", len(self.steps), lab=lab, result=data)
                where = self.record_path
            else:
                writer = self._new_recording(session_header(self.engine, self.preset, self.settings.seed, "", [],
                                                            max_tokens=self.max_tokens))
                writer.event("lab", 0, lab=lab, result=data)
                writer.footer(stop_reason="lab", summary={})
                where = self.record_path = str(writer.path)
        except RecordError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.notify(f"{lab} lab results recorded in {os.path.basename(where)}", timeout=4)

    def action_record(self) -> None:
        if getattr(self.engine, "replay", False):
            self.notify("a replay is already a recording", severity="warning")
            return
        self.recording = not self.recording
        self.sync_recorder()
        self.notify("recording from the next generation on" if self.recording else "recording off", timeout=3)
        self._update_status()

    def action_sessions(self) -> None:
        from ..config import app_dirs
        from .screens.sessions import SessionsScreen

        self.push_screen(SessionsScreen(app_dirs().sessions), self._session_chosen)

    def _session_chosen(self, path: Any) -> None:
        if path is None:
            return
        from ..record import SessionFileError, read_session
        from ..record.replay import ReplayEngine

        try:
            session = read_session(path)
        except SessionFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        for problem in session.problems:
            self.notify(f"{path}: {problem}", severity="warning", timeout=8)
        if self.controller is not None:
            self.controller.stop()
        self.replay = session
        self.live_metrics = False
        self.model_label = f"replay · {session.header['model']['name']}"
        self.on_engine_loaded(EngineLoaded(ReplayEngine(session), None, cold=False))

    # -- replay ------------------------------------------------------------------------------------

    def _replay_start(self) -> None:
        session = self.replay
        self._reset_run_state()
        self.replay_pos = 0
        self.replay_playing = False
        self.n_prompt = len(session.header.get("prompt_tokens", []))
        stream = self.query_one(TokenStream)
        stream.set_prompt(session.header.get("prompt", ""))
        stream.focus()
        self.query_one(TopKHistogram).clear("replay: space plays, → steps, g jumps, f forks")
        self.state = "replay"
        self._replay_timer.pause()
        self._update_kv()
        self._update_status()

    def _replay_tick(self) -> None:
        if not self.replay_playing:
            return
        self._replay_due += self.replay_speed / 30
        n = int(self._replay_due)
        if n:
            self._replay_due -= n
            self.replay_goto(self.replay_pos + n)

    def replay_goto(self, position: int) -> None:
        """Show the first ``position`` recorded steps (forwards or backwards)."""
        session = self.replay
        position = min(max(position, 0), len(session.steps))
        stream = self.query_one(TokenStream)
        if position < self.replay_pos:
            del self.steps[position:]
            stream.truncate_to(position)
        elif position > self.replay_pos:
            new = session.steps[self.replay_pos:position]
            self.steps.extend(new)
            stream.append_many([(s.index, s.text, s.prob) for s in new])
            memory, throughput = self._panel(MemoryGraph), self._panel(ThroughputGraph)
            for s, (rss, kv) in zip(new, session.metrics[self.replay_pos:position]):
                memory.add(s.index, rss, kv)
                throughput.add(s.index, 1000.0 / max(1e-3, s.decode_ms + s.sample_ms), s.decode_ms + s.sample_ms)
            self._dirty_plots = True  # redrawn by the PLOT_HZ timer
        self.replay_pos = position
        if position >= len(session.steps) and self.replay_playing:
            self.replay_playing = False
            self._replay_timer.pause()
            self.state = "replay: end" + (f" ({session.footer.get('stop_reason')})" if session.footer else
                                          " (the recording was cut off)")
        if self.steps:
            self._show_step(self.steps[-1])
        else:
            self.query_one(TopKHistogram).clear("replay: space plays, → steps, g jumps, f forks")
            self.query_one(ChainTrace).clear()
        self._update_kv()
        self._update_status()

    def _replaying(self) -> bool:
        return self.replay is not None and getattr(self.engine, "replay", False)

    def action_jump(self) -> None:
        if not self._replaying():
            return
        from .screens.sessions import JumpScreen

        self.push_screen(JumpScreen(len(self.replay.steps)), lambda n: n is not None and self.replay_goto(n))

    def action_fork(self) -> None:
        if not self._replaying():
            self.notify("fork works on a replay: open one with b (sessions)", severity="warning")
            return
        if self._fork_load is None:
            self.notify("forking needs the model: run `llmtui replay FILE` where the model is installed",
                        severity="warning")
            return
        self.replay_playing = False
        self._fork(self.replay_pos)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _fork(self, at_step: int) -> None:
        from ..record.tools import fork_prefix

        session = self.replay
        try:
            loaded = self._fork_load(session)
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        try:
            prefix, kept = fork_prefix(session, at_step, loaded.engine)
        except EngineError as exc:
            loaded.engine.close()
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.call_from_thread(self._forked, loaded, session, at_step, prefix, kept)

    def _forked(self, loaded: Any, session: Any, at_step: int, prefix: list[int], kept: list[int]) -> None:
        self.replay = None
        self.live_metrics = True
        self.on_engine_loaded(EngineLoaded(loaded.engine, None, cold=loaded.cold, ms=loaded.ms))
        # the fork is a new recording that names its parent
        self.recording = True
        self.sync_recorder()
        kept_steps = session.steps[:at_step]
        shown = session.header.get("prompt", "") + "".join(s.text for s in kept_steps) + "⟨fork⟩"
        self._new_run(shown, "prompt").focus()
        parent = {"file": str(session.path), "fork_step": at_step}
        self._generate(session.header.get("prompt", ""), self.generation_count, prefix=prefix, history=kept,
                       parent=parent)
        self.notify(f"forked at step {at_step} with {self.preset.name}, seed {self.settings.seed}", timeout=4)

    def action_stop(self) -> None:
        if self._replaying():
            self.replay_playing = False
            self._replay_timer.pause()
            self._update_status()
            return
        if self.focused is self.query_one("#prompt"):
            self.query_one(TokenStream).focus()
            return
        if self.running:
            self.controller.stop()  # type: ignore[union-attr]
            self.state = "stopping"
            self._update_status()
        elif self.selected is not None:
            self.action_follow()

    def action_step_mode(self) -> None:
        self.step_mode = not self.step_mode
        if self.running and not self.serving_request:  # an API request is never paused
            self.controller.send(SetStepMode(self.step_mode))  # type: ignore[union-attr]
        self.notify("step mode on: space accepts one token" if self.step_mode else "step mode off", timeout=2)
        self._update_status()

    def action_step(self) -> None:
        if self._replaying():  # play / pause
            self.replay_playing = not self.replay_playing
            if self.replay_playing:
                if self.replay_pos >= len(self.replay.steps):
                    self.replay_goto(0)
                self._replay_timer.resume()
            else:
                self._replay_timer.pause()
            self._update_status()
            return
        if self.running and self.pending is not None:
            self.controller.send(Advance())  # type: ignore[union-attr]
        elif not self.running and self.controller is not None:
            self.start_generation(self.query_one("#prompt", Input).value, step_mode=True)

    def action_preset(self, delta: int) -> None:
        base = self.catalog.neighbour(self._base_name(self.preset.name), delta)
        self._set_preset(base)

    def action_temperature(self, delta: float) -> None:
        if self._replaying():  # + / - change the replay speed
            self.replay_speed = min(400.0, self.replay_speed * 2) if delta > 0 else max(1.0, self.replay_speed / 2)
            self._update_status()
            return
        self._set_temperature(delta)

    def _set_temperature(self, delta: float) -> None:
        temp = next((s for s in self.preset.samplers if s.name in ("temp", "temp_ext")), None)
        current = float(temp.params.get("t", 0.8)) if temp else 1.0
        new_t = round(max(0.0, current + delta), 2)
        preset = self.preset.with_param(temp.name if temp else "temp", "t", new_t)
        preset = dataclasses.replace(preset, name=f"{self._base_name(self.preset.name)} T={new_t:g}")
        self._set_preset(preset)

    @staticmethod
    def _base_name(name: str) -> str:
        return name.split(" T=")[0]

    @property
    def serving_request(self) -> bool:
        """An API client's request is running: the dashboard's controls wait for the next run."""
        return self.api_job is not None and self.running

    def _set_preset(self, preset: Any) -> None:
        self.preset = preset
        if self.controller is not None:
            if self.running and not self.serving_request:
                self.controller.send(SetPreset(preset))
            else:
                self.controller.preset = preset
        if preset.source != "edited":
            save_state(preset=self._base_name(preset.name))
        self.notify(f"preset {preset.name}: {preset.describe()}", timeout=3)
        self._update_status()

    def action_resample(self) -> None:
        if self.controller is None or self._replaying():
            return
        if self.running:
            if self.pending is None:
                self.notify("re-sampling needs a paused step: press s (step mode) first", severity="warning")
                return
            self.controller.send(Resample(self.preset))
        elif self.steps:
            self._resample_last(self.preset, self.steps[-1])
        else:
            self.notify("nothing to re-sample yet", severity="warning")

    @work(thread=True, exclusive=True, group="resample", exit_on_error=False)
    def _resample_last(self, preset: Any, last: Any) -> None:
        try:
            self.controller.resample_last(preset, last)  # type: ignore[union-attr]
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="warning")

    def action_select(self, delta: int) -> None:
        if self._replaying():  # ← / → step back / forward
            self.replay_playing = False
            self._replay_timer.pause()
            self.replay_goto(self.replay_pos + delta)
            return
        if not self.steps:
            return
        current = self.selected if self.selected is not None else len(self.steps)
        index = min(max(current + delta, 0), len(self.steps) - 1)
        self.select_step(index)

    def select_step(self, index: int) -> None:
        if not 0 <= index < len(self.steps):
            return
        self.selected = index
        stream = self.query_one(TokenStream)
        stream.follow = False
        stream.select(index)
        self._show_step(self.steps[index])
        self._update_status()

    def action_follow(self) -> None:
        self.selected = None
        stream = self.query_one(TokenStream)
        stream.select(None)
        stream.follow_latest()
        if self.pending is not None:
            self._show_step(self.pending, pending=True)
        elif self.steps:
            self._show_step(self.steps[-1])
        self._update_status()

    @on(TokenStream.Selected)
    def _clicked(self, event: TokenStream.Selected) -> None:
        self.select_step(event.index)

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def action_models(self) -> None:
        if self._discover is None:
            self.notify("model discovery is not available here", severity="warning")
            return
        self._find_models()

    @work(thread=True, exclusive=True, group="models", exit_on_error=False)
    def _find_models(self) -> None:
        entries = self._discover()  # type: ignore[misc]
        loaded = self._loaded_paths()
        self.call_from_thread(self.push_screen, ModelPicker(entries, self.model_label, loaded), self._picked)

    def _picked(self, entry: Any) -> None:
        if entry is not None:
            self.switch_model(entry)

    def action_anatomy(self) -> None:
        path = self.model_file()
        if path is None:
            self.notify("no model file to inspect", severity="warning")
            return
        self.notify("reading the model's tensors…", timeout=2)
        self._read_anatomy(path)

    @work(thread=True, exclusive=True, group="anatomy", exit_on_error=False)
    def _read_anatomy(self, path: str) -> None:
        from ..config import app_dirs
        from ..engine.anatomy import read_anatomy

        try:
            anatomy = read_anatomy(path, app_dirs().cache)
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self.push_screen, AnatomyScreen(anatomy))

    def action_presets(self) -> None:
        self.push_screen(PresetScreen(self.catalog, self.preset, self._preset_edited, self._save_preset),
                         self._preset_picked)

    def _preset_picked(self, preset: Any) -> None:
        if preset is not None and preset is not self.preset:
            self._set_preset(preset)

    def _preset_edited(self, preset: Any) -> None:
        """A parameter changed in the editor: use it now and re-sample the current step."""
        self._set_preset(preset)
        if (self.running and self.pending is not None) or (not self.running and self.steps):
            self.action_resample()

    def _save_preset(self, preset: Any) -> str:
        from ..config import app_dirs
        from ..sampling.presets import load_presets, save_preset

        path = save_preset(preset, app_dirs().presets)
        self.catalog = load_presets(app_dirs().presets)
        return str(path)

    def action_next_theme(self) -> None:
        names = [t.name for t in self._extra_themes] or sorted(self.available_themes)
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        save_state(theme=self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_new_session(self) -> None:
        if self.running:
            self.controller.stop()  # type: ignore[union-attr]
        self.generation_count += 1  # whatever the old run still sends is dropped
        self._inbox.clear()
        self._reset_run_state()
        self.query_one(TokenStream).clear()
        self.query_one(TopKHistogram).clear("new session: type a prompt and press Enter")
        self.query_one(ChainTrace).clear()
        self.state = "idle"
        self._update_kv()
        self._update_status()
        self.query_one("#prompt", Input).focus()

    # -- learn mode --------------------------------------------------------------------------------

    def action_learn(self, question: str | None = None) -> None:
        from ..learn import load_questions
        from .screens.learn import LearnScreen

        questions = load_questions()
        current = question or self.learn_question
        if current is not None and all(current != q.id for q in questions):
            from ..learn import find

            try:
                current = find(current).id
            except KeyError as exc:
                self.notify(str(exc.args[0]), severity="error", timeout=8)
                current = None
        self.push_screen(LearnScreen(questions, current, self.learn_findings), self._learn_chosen)

    def _learn_chosen(self, choice: tuple[str, int] | None) -> None:
        if choice is not None:
            self.run_experiment(*choice)

    def action_learn_try(self, variant: int) -> None:
        if self.learn_question is None:
            self.notify("no experiment yet: press L (Learn) and run one", severity="warning", timeout=4)
            return
        from ..learn import find

        q = find(self.learn_question)
        if variant > len(q.try_next):
            self.notify(f"{q.number} has no variation {variant}", severity="warning", timeout=3)
            return
        self.run_experiment(q.id, variant)

    def run_experiment(self, question_id: str, variant: int = 0) -> Worker[Any]:
        from .experiments import run_experiment

        return self.run_worker(run_experiment(self, question_id, variant), group="learn", exclusive=True,
                               exit_on_error=False)

    def show_finding(self, finding: Any) -> None:
        self.learn_question = finding.question
        self.learn_findings[finding.question] = finding
        bar = self.query_one("#learnbar", Static)
        bar.update(finding.bar_text())
        bar.display = True

    def action_help(self) -> None:
        rows = [(self._key_for(bid, keys), desc, bid) for bid, keys, _a, desc, _s in KEYS]
        self.push_screen(HelpScreen(rows))

    def _key_for(self, binding_id: str, default: str) -> str:
        return self._keymap.get(binding_id, default)

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
                await self._sleep(0.01)
        self.exit(0)

    @staticmethod
    async def _sleep(seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for bid, keys, action, desc, _show in KEYS:
            yield SystemCommand(f"{desc} [{self._key_for(bid, keys)}]", f"{bid}: {action}",
                                lambda a=action: self.run_action(a))

    def on_unmount(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.stop_api()

    # -- the API server inside the dashboard ---------------------------------------------------------

    def action_serve(self) -> None:
        if self.api is not None:
            self.stop_api()
            self.notify("API server stopped", timeout=3)
        else:
            self.start_api()
        self._update_status()

    def start_api(self) -> None:
        """Serve the loaded model on the OpenAI API; every request shows up in the panels."""
        if self.api is not None:
            return
        if self.controller is None or self._replaying():
            self.notify("load a model first (a replay cannot serve requests)", severity="warning")
            return
        try:
            from ..server import LocalServer, Service
            from ..server.http import ServerConfig, ServerThread, create_app
        except ImportError as exc:  # fastapi / uvicorn missing from a partial install
            self.notify(f"the API server needs fastapi and uvicorn: {exc}", severity="error", timeout=10)
            return
        service = Service(lambda: None if self._replaying() or self.engine is None else self.controller,
                          begin=self._api_begin).start()
        config = ServerConfig(
            catalog=self.catalog, default_preset=lambda: self.preset, seed=self.settings.seed,
            max_tokens=self.max_tokens, api_key=self.api_key, loaded=self._api_model,
            max_body_bytes=self.max_body_bytes,
            models=lambda: self._discover() if self._discover is not None else [e for e in [self._api_model()] if e],
        )
        host, port = self.serve_at
        _log_server_errors_to_file()
        try:
            http = ServerThread(create_app(service, config), host, port).start()
        except OSError as exc:
            service.close()
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.api = LocalServer(service, http, None)
        self.serve_at = (host, http.port)
        self.notify(f"OpenAI-compatible API on {http.url}" + (" (API key required)" if self.api_key else "")
                    + " — requests show up here live", timeout=8)
        self._update_status()

    def _api_model(self) -> Any:
        """The loaded model as the API names it (None while loading or replaying)."""
        if self.engine is None or self._replaying():
            return None
        if self.entry is not None:
            return self.entry
        from ..engine.models import ModelEntry

        return ModelEntry(name=self.model_label, path=str(getattr(self.engine, "path", "")), source="path")

    def stop_api(self) -> None:
        api, self.api = self.api, None
        if api is not None:
            self._api_closing = True  # the worker no longer waits for this thread
            try:
                api.stop()
            finally:
                self._api_closing = False

    def _api_begin(self, job: Any) -> int:
        """Worker thread: a request is about to run; the panels switch to it. Returns its run id
        (-1: not shown, when the UI does not answer within 2 s — it is closing)."""
        if self._api_closing:
            return -1
        done = threading.Event()
        run_id = [-1]

        def show() -> None:
            try:
                run_id[0] = self._api_show(job)
            finally:
                done.set()

        try:
            self.call_later(show)  # posts a message: safe from any thread
        except Exception:
            return -1
        done.wait(2.0)
        return run_id[0]

    def _api_show(self, job: Any) -> int:
        self._new_run(job.shown, f"API #{job.id} {job.label}")
        self.api_job = job
        return self.generation_count


def _log_server_errors_to_file() -> None:
    """The API server's error log (a 500's traceback) cannot go to the terminal the dashboard draws on:
    it goes to ``api-errors.log`` in the cache directory (once per process)."""
    import logging

    from ..config import app_dirs

    logger = logging.getLogger("llmtui.server")
    if any(getattr(h, "llmtui_file", False) for h in logger.handlers):
        return
    path = app_dirs().cache / "api-errors.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return
    handler.llmtui_file = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


def known_binding_ids() -> set[str]:
    """Every binding id a config's [keys] table may remap: the app's and every screen's and widget's."""
    import importlib
    import pkgutil

    from textual.binding import Binding as _Binding

    from . import screens, widgets

    ids = {bid for bid, *_ in KEYS}
    for package in (screens, widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for cls in vars(module).values():
                bindings = getattr(cls, "BINDINGS", None) if isinstance(cls, type) else None
                ids.update(b.id for b in bindings or () if isinstance(b, _Binding) and b.id)
    return ids


def run_app(**kwargs: Any) -> int:
    app = LlmTuiApp(**kwargs)
    app.run()
    # models are freed by the process exit; a run still finishing must not lose its engine under it
    return 0
