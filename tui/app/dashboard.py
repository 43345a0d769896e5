"""The dashboard screen: the panels, the run model they show, selection, and the keys that drive a run.

Events reach it through :meth:`Dashboard.post_events` (any thread: the engine's
runs, the API server); a timer folds them into the :class:`~tui.run.RunModel`
at a bounded rate (``REFRESH_HZ``) whatever the token rate, and state changes
(started, prompt done, finished, a pending step) fold at once. The per-step
panels redraw at ``PANEL_HZ`` while tokens pour in, at once in step mode or on
a selection. The screen's ``phase`` is reactive: the status line follows it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, TypeVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import Worker, WorkerState

from ..engine.controller import Advance, Resample, SetStepMode, StepEvent
from ..engine.errors import EngineError
from ..run import Phase, RunModel, Update
from ..run.waiters import RunWaiters
from .branches import Branches
from .messages import EngineNotice
from .metrics import LiveMetrics
from .modes import footer_shows, footer_state
from .rag_host import retrieved_span
from .remote_host import recorded_remote_notes
from .status import status_line
from .widgets.graphs import MemoryGraph, ThroughputGraph
from .widgets.panels import ChainTrace, KvGauge, RetrievedChunks, StatusLine, TopKHistogram
from .widgets.safe import SafeInput
from .widgets.token_stream import TokenStream

W = TypeVar("W")
REFRESH_HZ = 8  # the token stream
PANEL_HZ = 2  # histogram, trace, gauge while tokens pour in (at once in step mode or on selection)


class Dashboard(Branches, Screen):
    """The live dashboard: what the app's engine generates (dashboard runs and API requests); its branch
    actions (choose a candidate, insert text, the tree) come from :class:`~tui.app.branches.Branches`."""

    class Ready(Message):
        """The dashboard's panels exist (the app starts loading the model then)."""

        def __init__(self, dashboard: "Dashboard") -> None:
            super().__init__()
            self.dashboard = dashboard

    phase: reactive[Phase] = reactive(Phase.LOADING, init=False)

    def __init__(self, prompt: str, *, live_metrics: bool = True) -> None:
        super().__init__()
        self.model = RunModel()
        self.initial_prompt = prompt
        self.live_metrics = live_metrics  # off for snapshot tests: RSS and wall times vary run to run
        self._inbox: deque[tuple[int, object]] = deque()
        self._panels: dict[type, Any] = {}
        self._panels_at = 0.0
        self._shown_run = -1  # the run whose step the panels show
        self.metrics = LiveMetrics(self)
        self.waiters = RunWaiters()

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            with Vertical(id="left"):
                yield SafeInput(self.initial_prompt, placeholder="prompt — Enter to generate", id="prompt")
                yield TokenStream(id="stream")
            with Vertical(id="right"):
                yield TopKHistogram(id="hist")
                yield ChainTrace(id="trace")
                yield RetrievedChunks(id="chunks")  # in the trace's place while retrieval is on
        with Horizontal(id="bottom"):
            yield KvGauge(id="kv")
            yield MemoryGraph(id="mem")
            yield ThroughputGraph(id="tput")
        yield Static("", id="learnbar")
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        for selector, title in (("#stream", "tokens"), ("#hist", "top-10 next tokens"), ("#trace", "sampler chain"),
                                ("#kv", "KV cache"), ("#mem", "memory"), ("#tput", "throughput"),
                                ("#chunks", "retrieved chunks")):
            self.query_one(selector).border_title = title
        self.query_one(TopKHistogram).clear(self.WAITING)
        self.query_one(ChainTrace).clear()
        self._refresh_timer = self.set_interval(1 / REFRESH_HZ, self.fold, pause=True)
        self.metrics.start()
        self._apply_size_classes()
        self.update_status()
        self.app.post_message(self.Ready(self))

    WAITING = "loading the model…"  # what the histogram says before the first step

    @on(events.Resize)
    def _apply_size_classes(self, event: events.Resize | None = None) -> None:
        w, h = event.size if event is not None else self.app.size
        self.set_class(h < 32, "-short")
        self.set_class(w < 100, "-narrow")
        self.set_class(w < 60 or h < 16, "-tiny")

    def panel(self, kind: type[W]) -> W | None:
        """This screen's panel of type ``kind``, cached: a DOM query per refresh costs more than the panel's
        own update (None while the screen goes away)."""
        widget = self._panels.get(kind)
        if widget is None or not widget.is_attached:
            found = self.query(kind)
            widget = found.first() if found else None
            if widget is None:
                self._panels.pop(kind, None)
                return None
            self._panels[kind] = widget
        return widget

    # -- what this screen shows of the app ---------------------------------------------------------

    @property
    def engine(self) -> Any:
        """Where pieces and the KV layout come from (the app's engine; a replay's own)."""
        return self.app.engine

    @property
    def preset_name(self) -> str:
        """The preset the status line names: the one the next run will use (what the keys change)."""
        return self.app.preset.name

    @property
    def trace_preset(self) -> str:
        """The preset the sampler-chain trace names: the shown run's own (an API request's, an
        experiment's), else the status line's."""
        return self.model.preset or self.preset_name

    def identity(self) -> tuple[str, int, int]:
        """(model label, seed, threads) for the status line."""
        return self.app.model_label, self.app.settings.seed, self.app.settings.threads

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:  # this screen's workers (re-sample, a replay's fork)
            self.app.worker_failed(event.worker)

    def watch_phase(self, phase: Phase) -> None:
        self.update_status()
        self.refresh_footer()

    def sync_phase(self) -> None:
        self.phase = self.model.phase
        self.update_status()
        self.refresh_footer()

    def refresh_footer(self) -> None:
        """The footer lists the keys of the mode you are in: redrawn when that changes."""
        state = footer_state(self.model, self.app.step_mode)
        if state != getattr(self, "_footer_was", None):
            self._footer_was = state
            self.refresh_bindings()

    @property
    def active_bindings(self) -> dict[str, Any]:
        """What the footer lists (keys are dispatched without this: a hidden key still answers)."""
        state = footer_state(self.model, self.app.step_mode)
        return {key: b for key, b in super().active_bindings.items()
                if footer_shows(b.binding.action.removeprefix("screen."), state)}


    def update_status(self) -> None:
        status = self.panel(StatusLine)
        if status is not None:
            status.set_text(status_line(self.app, self))

    # -- runs: the inbox, folded into the model -----------------------------------------------------

    def post_events(self, run_id: int, event: object) -> None:
        """Any thread: queue an event; state changes wake the UI at once, streamed steps wait for the timer."""
        self._inbox.append((run_id, event))
        if not (isinstance(event, StepEvent) and not event.pending):
            self.app.post_message(EngineNotice())

    def new_run(self, prompt: str, phase: Phase = Phase.PROMPT, detail: str = "", label: str = "") -> int:
        """Clear what the panels know of the last run for a new one; returns the run id its events carry."""
        run_id = self.reset_run(phase, detail, label)
        stream = self.query_one(TokenStream)
        stream.set_prompt(prompt)
        stream.select(None)
        stream.follow = True
        self._refresh_timer.resume()
        self.update_kv()
        self.sync_phase()
        return run_id

    def reset_run(self, phase: Phase, detail: str = "", label: str = "") -> int:
        """The one way the model starts another run: whoever waited for the last one gets it as it stood,
        what it still had queued is dropped (its events carry the old id)."""
        self.waiters.release(self.model)
        self._inbox.clear()
        if phase in (Phase.IDLE, Phase.LOADING):  # an empty dashboard, another model: the tree is gone
            self.model.forget_tree()
        return self.model.new_run(phase, detail, label)

    def fold(self) -> None:
        """Fold the queued events into the model and redraw what changed."""
        if not self._inbox:
            return
        stream = self.panel(TokenStream)
        if stream is None:  # the screen is going away
            self._inbox.clear()
            return
        inbox = self._inbox
        events_ = [inbox.popleft() for _ in range(len(inbox))]  # what a thread appends meanwhile waits
        up = self.model.apply(events_)
        with self.app.batch_update():
            self._draw(up, stream)

    def _draw(self, up: Update, stream: TokenStream) -> None:
        m = self.model
        if up.prompt is not None:
            if self.app.chat_mode:  # the conversation, rendered by the chat template; retrieved chunks shaded
                stream.set_prompt(up.prompt, retrieved_span(up.prompt, m.retrieved))
            if self.app.rag.on:
                self.app.rag.show_panel(self)  # the chunks this turn carries
        if up.appended:
            stream.append_many(up.appended)  # the final view is laid out from every token, however batched
        for index, text, prob in up.replaced:
            stream.replace(index, text, prob)
        if up.pending is not None:
            stream.set_pending(up.pending.index)
        elif up.pending_cleared:
            stream.set_pending(None)
        if m.prompt_tps:
            self.panel(ThroughputGraph).prompt_tps = m.prompt_tps
        elif up.new_steps and getattr(self.engine, "is_remote", False):  # a server that did not count its prompt
            self.panel(ThroughputGraph).prompt_tps = None
        if up.finished is not None:
            self._refresh_timer.pause()
            self._panels_at = 0.0  # the final state shows at once
            if stream.follow:
                stream.follow_latest()  # the same final view however the tokens arrived
        for message, severity in up.notices:
            self.app.notify(message, severity=severity, timeout={"error": 10, "warning": 8}.get(severity, 3))
        if up.tree:
            self.refresh_tree_view()
        now = time.perf_counter()
        urgent = m.pending is not None or not self.app.running
        first = up.show is not None and self._shown_run != m.run_id  # a run's first step: at once
        if urgent or first or now - self._panels_at >= 1 / PANEL_HZ:
            self._panels_at = now
            if up.show is not None and m.selected is None:
                self.show_step(up.show, pending=up.show is m.pending)
            elif m.selected is None and m.steps:
                self.show_step(m.steps[-1])
            if up.new_steps or urgent:
                self.update_kv()
            self.sync_phase()
        if up.new_steps and m.steps:
            self.metrics.add_throughput()
        self.waiters.wake(m, finished=up.finished is not None)

    def show_step(self, step: Any, *, pending: bool = False) -> None:
        if self.engine is None:  # between two models
            return
        piece = self.engine.piece
        self._shown_run = self.model.run_id
        self.panel(TopKHistogram).show(step, piece, pending=pending)
        self.panel(ChainTrace).show(step, piece, self.trace_preset)

    def update_kv(self) -> None:
        gauge = self.panel(KvGauge)
        if self.engine is None or gauge is None:
            return
        app = self.app
        if getattr(self.engine, "is_remote", False):
            app.remote.show_kv(gauge, self.model, self.engine)
            return
        n_keep = None
        if app.context_policy == "shift":
            n_keep = self.model.n_prompt + self.model.n_reused if app.n_keep < 0 else app.n_keep
        view = self.model.kv_view(self.engine.kv_layout(), self.engine.n_ctx, getattr(self.engine, "n_past", None),
                                  n_keep)
        cost = app.rag.cost_for(self, view.bytes_per_token)  # a retrieval-augmented turn's chunks
        gauge.show(n_ctx=view.n_ctx, n_past=view.n_past, n_prompt=view.n_prompt, n_reused=view.n_reused,
                   n_keep=view.n_keep, shifts=view.shifts, bytes_per_token=view.bytes_per_token,
                   allocated=view.allocated, type_k=view.type_k, type_v=view.type_v,
                   notes=recorded_remote_notes(self.engine), shared=view.shared,
                   retrieved=cost.lines() if cost is not None else ())

    def fail_run(self, error: str) -> None:
        """The run's worker failed outside the controller (a bug): say so, and release whoever waits."""
        self.model.set_phase(Phase.ERROR, error)
        self._refresh_timer.pause()
        self.waiters.release(self.model)
        self.sync_phase()

    def clear_run(self, message: str) -> None:
        """An empty dashboard (a new session, a recreated context)."""
        self.reset_run(Phase.IDLE)
        self.query_one(TokenStream).clear()
        self.query_one(TopKHistogram).clear(message)
        self.query_one(ChainTrace).clear()
        self.update_kv()
        self.sync_phase()

    # -- selection ----------------------------------------------------------------------------------------

    def select_step(self, index: int) -> None:
        step = self.model.select(index)
        if step is None:
            return
        stream = self.query_one(TokenStream)
        stream.follow = False
        stream.select(index)
        self.show_step(step)
        self.update_status()

    def action_select(self, delta: int) -> None:
        index = self.model.neighbour(delta)
        if index is not None:
            self.select_step(index)

    def action_follow(self) -> None:
        step = self.model.select(None)
        stream = self.query_one(TokenStream)
        stream.select(None)
        stream.follow_latest()
        if step is not None:
            self.show_step(step, pending=step is self.model.pending)
        self.update_status()

    @on(TokenStream.Selected)
    def _clicked(self, event: TokenStream.Selected) -> None:
        self.select_step(event.index)

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    # -- a live run's keys ------------------------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        self.submit(event.value)

    def submit(self, prompt: str) -> None:
        """The prompt's Enter: generate from it (in chat with retrieval on: retrieve first, then the turn)."""
        if self.app.rag.active:
            self.app.rag.ask(prompt)
        else:
            self.app.start_generation(prompt)

    def action_stop(self) -> None:
        app = self.app
        if self.focused is self.query_one("#prompt"):
            self.query_one(TokenStream).focus()
            return
        if app.running:
            app.controller.stop()
            self.model.set_phase(Phase.STOPPING)
            self.sync_phase()
        elif self.model.selected is not None:
            self.action_follow()

    def action_step_mode(self) -> None:
        app = self.app
        app.step_mode = not app.step_mode
        if app.running and not app.serving_request:  # an API request is never paused
            app.controller.send(SetStepMode(app.step_mode))
        app.notify("step mode on: space accepts one token" if app.step_mode else "step mode off", timeout=2)

    def action_step(self) -> None:
        app = self.app
        if app.running and self.model.pending is not None:
            app.controller.send(Advance())
        elif not app.running and app.controller is not None:
            app.start_generation(self.query_one("#prompt", Input).value, step_mode=True)

    def action_temperature(self, delta: float) -> None:
        self.app.change_temperature(delta)

    def action_resample(self) -> None:
        app = self.app
        if app.controller is None:
            return
        if self.model.selected is not None:  # a past step: a fresh draw there, on a new branch
            self.resample_at(self.model.selected)
        elif not app.running and self.model.steps and hasattr(app.engine, "attach") \
                and app.controller.last.last_logits is None:
            self.resample_at(self.model.steps[-1].index)  # a switched-to branch: its last logits are not kept
        elif app.running:
            if self.model.pending is None:
                app.notify("re-sampling needs a paused step: press s (step mode) first", severity="warning")
                return
            app.controller.send(Resample(app.preset))
        elif self.model.steps:
            self._resample_last(app.preset, self.model.steps[-1])
        else:
            app.notify("nothing to re-sample yet", severity="warning")

    @work(thread=True, exclusive=True, group="resample", exit_on_error=False)
    def _resample_last(self, preset: Any, last: Any) -> None:
        from ..engine.thread import engine_thread

        ctl = self.app.controller
        try:  # on the engine thread: the re-sample forks the token tree, which only that thread changes
            engine_thread().call(ctl.resample_last, preset, last)
        except EngineError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="warning")

    def action_chat(self) -> None:
        self.app.toggle_chat()

    def action_new_session(self) -> None:
        """Clear everything: the run, the chat conversation (a new one starts), the Learn bar."""
        app = self.app
        if app.running:
            app.controller.stop()
        if app.chat_mode:
            app.set_chat(True)  # a fresh conversation: the next turn reuses nothing
        app.leave_learn()
        self.clear_run("new session: type a prompt and press Enter" if app.controller is not None else app.NO_MODEL)
        self.query_one("#prompt", Input).focus()

    def _replay_only(self) -> None:
        self.app.notify("jump (g) and fork (f) work on a replay: open one with b (sessions)", severity="warning")

    action_jump = action_fork = _replay_only
