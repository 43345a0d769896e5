"""The A/B split view: two sampler presets on one model, or two models, on one prompt in lockstep
(:mod:`tui.engine.ab`).

Two token streams side by side (each token shaded by its probability, like the dashboard's stream; the step
where the sides parted is marked, and with two models every step whose top-1 tokens disagree), a per-step
plot (KL between the two distributions and each side's entropy) and the run's summary from its
``ABFinished``. ``p``/``P`` cycle B's preset, ``a`` A's, ``m``/``M`` B's model; Enter or ``r`` runs, Esc stops
a run, then closes.

The run itself is the caller's ``run_ab(request, emit, cancel)``, called from a thread worker: it runs the
lockstep on the engine thread (:func:`engine_runner` builds one from the app's controller and engine) and
passes each event to ``emit``. Events come back as messages (immutable) into a pending list that a 0.1 s
timer folds into the widgets: the worker never touches a widget.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static
from textual_plotext import PlotextPlot

from ...engine.ab import ABFinished, ABStarted, ABStep
from ...engine.errors import EngineError
from ...sampling.errors import SamplingError
from ...sampling.trace import prob_bucket
from ..widgets.panels import escape
from ..widgets.safe import SafeInput, plain
from ..widgets.token_stream import display_text


@dataclass(frozen=True, slots=True)
class ABRequest:
    """One A/B run as the screen asks for it."""

    prompt: str
    preset_a: Any  # Preset
    preset_b: Any
    model_b: Any = None  # side B's model (a ModelEntry: .name, .path); None: both sides on the loaded model
    label_a: str = "A"
    label_b: str = "B"
    max_tokens: int = 64
    seed: int = 42
    chat: bool = False  # the prompt is a user turn in the model's chat template


RunAB = Callable[[ABRequest, Callable[[object], None], threading.Event], Any]


def engine_runner(controller: Any, engine: Any, load_engine: Callable[[str], Any],
                  record: Callable[[ABRequest, Any, Any], Callable[[object], None] | None] | None = None) -> RunAB:
    """``run_ab`` for :class:`ABScreen` on the app's engine: a generation in progress is stopped, then the
    lockstep runs on the engine thread while no run uses the engine (``controller.exclusive``; the cache no
    longer holds the dashboard's last run afterwards). ``load_engine(path)``: side B's model (e.g. the
    app's engine pool); it is called on the engine thread and must leave ``engine`` loaded (a pool of one
    would close it). The path of the loaded model itself means two presets on it. ``record(request, engine,
    engine_b)``: a listener that records the run (the app's recording is on), or None."""
    from ...engine.ab import ABRun
    from ...engine.chat import prompt_tokens
    from ...engine.thread import engine_thread

    def job(request: ABRequest, emit: Callable[[object], None], cancel: threading.Event) -> Any:
        engine_b = load_engine(request.model_b.path) if request.model_b is not None else None
        if engine_b is engine:  # the loaded model itself: two presets on it
            engine_b = None
        if request.chat and not engine.info.has_chat_template:
            raise EngineError(f"{engine.info.name} has no chat template: A/B it as raw completion")
        text, tokens = prompt_tokens(engine, request.prompt, chat=request.chat)
        chain_a = request.preset_a.build(engine.build_context(request.seed))
        chain_b = request.preset_b.build((engine_b or engine).build_context(request.seed))
        listener = record(request, engine, engine_b) if record is not None else None

        def both(event: object) -> None:
            if listener is not None:
                listener(event)
            emit(event)

        return ABRun(engine, chain_a, chain_b, engine_b=engine_b, max_tokens=request.max_tokens, cancel=cancel,
                     emit=both, label_a=request.label_a, label_b=request.label_b).run(tokens, text)

    def run_ab(request: ABRequest, emit: Callable[[object], None], cancel: threading.Event) -> Any:
        if controller is None:
            return engine_thread().call(job, request, emit, cancel)
        controller.stop()
        return engine_thread().call(lambda: controller.exclusive(lambda: job(request, emit, cancel)))

    return run_ab


class ABEvent(Message):
    """An event of run ``run`` (ABStarted, ABStep, ABFinished; an error's text; or None: the run is over)."""

    def __init__(self, run: int, event: object) -> None:
        super().__init__()
        self.run = run
        self.event = event


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str


@dataclass(frozen=True, slots=True)
class _Tok:
    index: int
    text: str
    prob: float
    eog: bool
    disagree: bool  # the two distributions' top-1 tokens differ at this step


class ABStream(Widget):
    """One side's generated tokens, each shaded by its probability; ``diverged_at`` marked; with two models
    each step whose top-1 tokens disagree underlined."""

    COMPONENT_CLASSES = {"ab-stream--p0", "ab-stream--p1", "ab-stream--p2", "ab-stream--p3", "ab-stream--p4",
                         "ab-stream--diverged", "ab-stream--disagree", "ab-stream--end"}
    DEFAULT_CSS = """
    ABStream { height: auto; }
    ABStream > .ab-stream--p0 { color: $error; }
    ABStream > .ab-stream--p1 { color: $warning; }
    ABStream > .ab-stream--p2 { color: $foreground; }
    ABStream > .ab-stream--p3 { color: $primary; }
    ABStream > .ab-stream--p4 { color: $success; }
    ABStream > .ab-stream--diverged { background: $accent; color: $background; text-style: bold; }
    ABStream > .ab-stream--disagree { text-style: underline; }
    ABStream > .ab-stream--end { color: $text-disabled; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tokens: list[_Tok] = []
        self.diverged_at: int | None = None

    def reset(self) -> None:
        self.tokens = []
        self.diverged_at = None
        self.refresh(layout=True)

    def add(self, tokens: Sequence[_Tok], diverged_at: int | None) -> None:
        self.tokens.extend(tokens)
        self.diverged_at = diverged_at
        self.refresh(layout=True)

    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    def styled(self) -> Text:
        out = Text()
        style = self.get_component_rich_style
        for t in self.tokens:
            look = style(f"ab-stream--p{prob_bucket(t.prob) if math.isfinite(t.prob) else 2}")
            if t.disagree:
                look += style("ab-stream--disagree")
            if t.index == self.diverged_at:
                look += style("ab-stream--diverged")
            out.append("∎" if t.eog else display_text(t.text), style=look if not t.eog else style("ab-stream--end"))
        return out

    def render(self) -> Text:
        return self.styled()


class ABScreen(Screen[None]):
    """The A/B split view (see the module's doc)."""

    MODE = "lab"  # tui.app.modes: esc closes it
    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop / close", id="ab.close"),
        Binding("r,enter", "run", "Run", id="ab.run"),
        Binding("p", "b_preset(1)", "B preset", id="ab.b_preset_next"),
        Binding("P", "b_preset(-1)", "B preset back", show=False, id="ab.b_preset_prev"),
        Binding("a", "a_preset(1)", "A preset", id="ab.a_preset_next"),
        Binding("m", "b_model(1)", "B model", id="ab.b_model_next"),
        Binding("M", "b_model(-1)", "B model back", show=False, id="ab.b_model_prev"),
        Binding("i", "edit_prompt", "Prompt", id="ab.prompt"),
    ]
    DEFAULT_CSS = """
    ABScreen > Vertical { padding: 0 1; }
    ABScreen #ab-header { height: auto; }
    ABScreen #ab-prompt { margin: 0 0; }
    ABScreen #ab-streams { height: 1fr; }
    ABScreen .ab-side { width: 1fr; height: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    ABScreen .ab-side:focus { border: round $primary; }
    ABScreen #ab-plot { height: 12; }
    ABScreen #ab-summary { height: auto; }
    """

    def __init__(self, prompt: str, run_ab: RunAB, presets: Mapping[str, Any], preset_a: Any,
                 models: Sequence[Any] = (), *, model_label: str = "", max_tokens: int = 64, seed: int = 42,
                 chat: bool = False, n_vocab: int | None = None) -> None:
        super().__init__()
        self.prompt = prompt
        self.run_ab = run_ab
        self.presets = dict(presets)
        names = list(self.presets)
        self.preset_a = preset_a
        a_at = names.index(preset_a.name) if preset_a.name in names else -1
        self.preset_b = self.presets[names[(a_at + 1) % len(names)]] if names else preset_a  # another one
        # side B's model: the loaded model's variants (another vocabulary cannot be compared step by step)
        self.models = [m for m in models if n_vocab is None or not getattr(m, "n_vocab", 0)
                       or m.n_vocab == n_vocab]
        self.model_b: Any = None  # None: two presets on the loaded model
        self.model_label = model_label
        self.max_tokens, self.seed, self.chat = max_tokens, seed, chat
        self.running = False
        self.run_id = 0
        self.cancel = threading.Event()
        self.pending: list[object] = []
        self.steps: list[ABStep] = []  # the run shown
        self.diverged_at: int | None = None  # the step where its sides parted, once they have
        self.mode = "presets"
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self._plotted = 0

    # -- layout ------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="ab-header")
            yield SafeInput(self.prompt, placeholder="the prompt both sides continue", id="ab-prompt")
            with Horizontal(id="ab-streams"):
                with VerticalScroll(id="ab-side-a", classes="ab-side", can_focus=True):
                    yield ABStream(id="ab-a")
                with VerticalScroll(id="ab-side-b", classes="ab-side", can_focus=True):
                    yield ABStream(id="ab-b")
            yield PlotextPlot(id="ab-plot")
            yield Static("", id="ab-summary")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.1, self.flush)
        self._show_choice()
        self._replot()
        self.query_one("#ab-summary", Static).update("r or Enter runs A and B in lockstep · Esc closes")
        self.query_one("#ab-side-a").focus()

    def on_unmount(self) -> None:
        self.cancel.set()  # a run in progress stops at its next step

    def labels(self) -> tuple[str, str]:
        if self.model_b is None:
            return self.preset_a.name, self.preset_b.name
        model_a = self.model_label or "loaded model"
        return f"{self.preset_a.name} · {model_a}", f"{self.preset_b.name} · {self.model_b.name}"

    def _show_choice(self) -> None:
        a, b = self.labels()
        mode = "two presets, one model: one llama_decode per step" if self.model_b is None else \
            "two models: KL(A‖B) on A's text"
        models = f"m: B's model ({len(self.models)} variant{'s' if len(self.models) != 1 else ''})" if self.models \
            else "no other variant of this model to pick"
        header = Text.assemble(("A/B", "bold"), f" · {mode}\n", ("A ", "bold"), plain(a), "   ", ("B ", "bold"),
                               plain(b), f"\n[p/P] B's preset · [a] A's preset · {models} · [i] prompt · "
                               "[r/Enter] run · [Esc] stop, close")
        self.query_one("#ab-header", Static).update(header)
        self.border_titles(a, b)

    def border_titles(self, a: str, b: str) -> None:
        self.query_one("#ab-side-a").border_title = f"A · {escape(a)}"
        self.query_one("#ab-side-b").border_title = f"B · {escape(b)}"

    # -- choosing -----------------------------------------------------------------------------------------

    def _cycle(self, current: Any, step: int) -> Any:
        names = list(self.presets)
        at = names.index(current.name) if current.name in names else -1
        return self.presets[names[(at + step) % len(names)]]

    def action_b_preset(self, step: int) -> None:
        if not self.running and self.presets:
            self.preset_b = self._cycle(self.preset_b, step)
            self._show_choice()

    def action_a_preset(self, step: int) -> None:
        if not self.running and self.presets:
            self.preset_a = self._cycle(self.preset_a, step)
            self._show_choice()

    def action_b_model(self, step: int) -> None:
        """None (the loaded model: two presets), then each variant in turn."""
        if self.running or not self.models:
            return
        choices = [None, *self.models]
        at = choices.index(self.model_b) if self.model_b in choices else 0
        self.model_b = choices[(at + step) % len(choices)]
        if self.model_b is not None:
            self.preset_b = self.preset_a  # two models: the same sampling on both sides (p changes it)
        self._show_choice()

    def action_edit_prompt(self) -> None:
        self.query_one("#ab-prompt", Input).focus()

    # -- running ------------------------------------------------------------------------------------------

    def request(self) -> ABRequest:
        a, b = self.labels()
        return ABRequest(self.query_one("#ab-prompt", Input).value, self.preset_a, self.preset_b, self.model_b,
                         a, b, self.max_tokens, self.seed, self.chat)

    @on(Input.Submitted, "#ab-prompt")
    def _submitted(self) -> None:
        self.query_one("#ab-side-a").focus()
        self.action_run()

    def action_run(self) -> None:
        if self.running:
            self.notify("an A/B run is going on: Esc stops it", severity="warning")
            return
        request = self.request()
        if not request.prompt.strip():
            self.query_one("#ab-summary", Static).update("type a prompt first (i)")
            return
        self.run_id += 1
        self.cancel = threading.Event()
        self.running = True
        self.pending.clear()
        self.query_one("#ab-summary", Static).update("starting…")
        self._run(request, self.run_id, self.cancel)

    @work(thread=True, exclusive=True, group="ab", exit_on_error=False)
    def _run(self, request: ABRequest, run: int, cancel: threading.Event) -> None:
        try:
            self.run_ab(request, lambda event: self.post_message(ABEvent(run, event)), cancel)
        except (EngineError, SamplingError) as exc:
            self.post_message(ABEvent(run, _Failed(str(exc))))
        except Exception as exc:  # a bug: said on screen, and the worker keeps it (exit_on_error=False)
            self.post_message(ABEvent(run, _Failed(f"internal error: {type(exc).__name__}: {exc}")))
            raise
        finally:
            self.post_message(ABEvent(run, None))

    def action_stop_or_close(self) -> None:
        if self.running:
            self.cancel.set()
            self.query_one("#ab-summary", Static).update("stopping…")
        elif isinstance(self.focused, Input):
            self.query_one("#ab-side-a").focus()
        else:
            self.dismiss()

    @on(ABEvent)
    def _queue(self, message: ABEvent) -> None:
        if message.run == self.run_id:
            self.pending.append(message.event)

    # -- folding the events in (on a 0.1 s timer) ----------------------------------------------------------

    def flush(self) -> None:
        if not self.pending:
            return
        events, self.pending = self.pending, []
        new_a: list[_Tok] = []
        new_b: list[_Tok] = []
        finished = False
        for event in events:
            if isinstance(event, ABStarted):
                self._start(event)
                new_a, new_b = [], []
            elif isinstance(event, ABStep):
                self.steps.append(event)
                if event.diverged and self.diverged_at is None:
                    self.diverged_at = event.index
                disagree = self.mode == "models" and event.top1_agree is False
                for side, out in ((event.a, new_a), (event.b, new_b)):
                    if side is not None:
                        out.append(_Tok(event.index, side.text, side.prob, side.is_eog, disagree))
            elif isinstance(event, ABFinished):
                self.summary = event.summary
            elif isinstance(event, _Failed):
                self.error = event.message
            elif event is None:
                self.running = False
                finished = True
        with self.app.batch_update():
            for sid, toks in (("a", new_a), ("b", new_b)):
                stream = self.query_one(f"#ab-{sid}", ABStream)
                stream.add(toks, self.diverged_at)
                if toks:
                    self.query_one(f"#ab-side-{sid}", VerticalScroll).scroll_end(animate=False)
            self._show_summary()
            if finished or len(self.steps) - self._plotted >= 4:
                self._replot()

    def _start(self, event: ABStarted) -> None:
        self.mode = event.mode
        self.steps = []
        self.diverged_at = None
        self.summary = None
        self.error = None
        self._plotted = 0
        self.query_one("#ab-a", ABStream).reset()
        self.query_one("#ab-b", ABStream).reset()
        self.border_titles(event.label_a, event.label_b)

    def _show_summary(self) -> None:
        widget = self.query_one("#ab-summary", Static)
        if self.error is not None:
            widget.update(Text.assemble(("A/B failed: ", "bold red"), plain(self.error)))
        elif self.summary is not None:
            widget.update(summary_text(self.summary))
        elif self.steps:
            last, diverged = self.steps[-1], self.diverged_at
            widget.update(f"running… step {last.index + 1}/{self.max_tokens}"
                          + (f" · diverged at step {diverged}" if diverged is not None else " · not diverged yet"))

    def _replot(self) -> None:
        """KL (right axis) and each side's entropy per step; the divergence step as a vertical line."""
        self._plotted = len(self.steps)
        plot = self.query_one("#ab-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("per step: entropy of A and B (nats, left) · KL(A‖B) (nats, right)")
        for name, values, side in (("H(A)", [s.entropy_a for s in self.steps], "left"),
                                   ("H(B)", [s.entropy_b for s in self.steps], "left"),
                                   ("KL", [s.kl for s in self.steps], "right")):
            xs = [s.index for s, v in zip(self.steps, values) if v is not None and math.isfinite(v)]
            ys = [v for v in values if v is not None and math.isfinite(v)]
            if xs:  # (plotext cannot draw a legend without data)
                plt.plot(xs, ys, label=name, marker="braille", yside=side)
        if self.diverged_at is not None:
            plt.vline(self.diverged_at)
        plt.xlabel("step")
        plot.refresh()

    def stream_text(self, side: str) -> str:
        return self.query_one(f"#ab-{side}", ABStream).text()


def summary_text(summary: Mapping[str, Any]) -> Text:
    """The run's figures, all from its ABFinished: steps/s, decode calls, divergence, KL, agreement."""
    at = summary.get("diverged_at")
    kl = summary.get("kl_mean")
    agreement = summary.get("top1_agreement")
    parts = [f"{summary['steps']} steps at {summary['steps_per_s']:.1f} steps/s",
             f"{summary['decode_calls']} llama_decode calls",
             "never diverged" if at is None else f"diverged at step {at}",
             "mean KL –" if kl is None or not math.isfinite(kl) else f"mean KL {kl:.4f} nats",
             "top-1 agreement –" if agreement is None else f"top-1 agreement {agreement:.1%}",
             f"stop: {summary['stop_reason']}"]
    out = Text.assemble(("A/B done: ", "bold"), " · ".join(parts))
    if summary.get("error"):
        out.append(" · ")
        out.append_text(plain(summary["error"]))
    return out
