"""The Learn screen (the study roadmap's questions, English with the original Chinese, each with an
explanation and an experiment) and the results screen that side-by-side experiments land on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

from ...learn import STAGES, Question
from ...learn.links import link_sources
from ...safe_text import visible
from ...units import shorten
from ..widgets.safe import SafeInput
from .base import WideModal


def question_markdown(q: Question, finding: Any = None, verdict: str = "") -> str:
    parts = [f"# {q.number} {q.title}", f"*{q.title_zh}*", q.explanation, "## What to look at", q.look_at]
    if q.try_next:
        parts += ["## Try next (press the number)", "\n".join(f"- **{t.split(':', 1)[0]}**:{t.split(':', 1)[1]}"
                                                             for t in q.try_next)]
    if q.command_line:
        parts += ["## On the command line", "\n".join(f"- {c}" for c in q.command_line)]
    parts = [link_sources(part) for part in parts]  # the question's own text; not a run's headline or a guess
    if finding is not None:
        parts.insert(2, f"> **Last run:** {finding.headline}")
        if verdict:
            parts.insert(3, f"> **Your prediction:** {verdict}")
    return "\n\n".join(parts)


class LearnScreen(WideModal[tuple[str, int] | None]):
    """Pick a question; Enter (or the button) runs its experiment, 1 / 2 its variations."""

    MODE = "learn"  # tui.app.modes: esc closes it

    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="learn.close"),
        Binding("enter", "run(0)", "Run the experiment", id="learn.run", priority=True),
        Binding("1", "run(1)", "Try 1", id="learn.try1"),
        Binding("2", "run(2)", "Try 2", id="learn.try2"),
    ]
    DEFAULT_CSS = """
    LearnScreen #intro { height: auto; }
    LearnScreen #body { height: 1fr; }
    LearnScreen #questions { width: 46; min-width: 30; height: 1fr; }
    LearnScreen #right { width: 1fr; }
    LearnScreen #doc { height: 1fr; border: round $panel-lighten-2; }
    LearnScreen #actions { height: 3; }
    LearnScreen #actions Button { margin-right: 1; }
    """

    def __init__(self, questions: Sequence[Question], current: str | None = None,
                 findings: dict[str, Any] | None = None, verdicts: dict[str, str] | None = None) -> None:
        super().__init__()
        self.questions = questions
        self.current = current or questions[0].id
        self.findings = findings or {}
        self.verdicts = verdicts or {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]Learn[/b] — the llama.cpp study roadmap, one live experiment per question. "
                "↑/↓ choose · [b]Enter[/b] runs the experiment · [b]1[/b] / [b]2[/b] run a variation · "
                "[b]L[/b] comes back here · Esc closes", id="intro")
            with Horizontal(id="body"):
                options: list[Option | None] = []
                stage = 0
                for q in self.questions:
                    if q.stage != stage:
                        stage = q.stage
                        en, zh = STAGES[stage]
                        if options:
                            options.append(None)
                        options.append(Option(Text.assemble((f"Stage {stage}: {en}", "bold"), "\n",
                                                            (zh, "italic")), disabled=True))
                    done = " ✓" if q.id in self.findings else ""
                    options.append(Option(Text.assemble((f"{q.number} ", "bold"), q.title, (done, "green"), "\n",
                                                        (f"    {q.title_zh}", "dim")), id=q.id))
                yield OptionList(*options, id="questions")
                with Vertical(id="right"):
                    with VerticalScroll(id="doc"):
                        yield Markdown("", id="text")
                    with Horizontal(id="actions"):
                        yield Button("▶ Run the experiment (Enter)", id="run0", variant="primary")
                        yield Button("1", id="run1")
                        yield Button("2", id="run2")

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.highlighted = ol.get_option_index(self.current)
        ol.focus()
        self._show(self.current)

    @property
    def question(self) -> Question:
        return next(q for q in self.questions if q.id == self.current)

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id:
            self._show(event.option.id)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.current = event.option.id
            self.action_run(0)

    def _show(self, question_id: str) -> None:
        self.current = question_id
        q = self.question
        self.query_one("#text", Markdown).update(question_markdown(q, self.findings.get(q.id),
                                                                   self.verdicts.get(q.id, "")))
        self.query_one("#doc").scroll_home(animate=False)
        for n in (1, 2):
            button = self.query_one(f"#run{n}", Button)
            button.display = len(q.try_next) >= n
            if button.display:
                button.label = f"{n}: " + shorten(q.try_next[n - 1].split(":", 1)[1], 24)

    def action_run(self, variant: int) -> None:
        if variant and variant > len(self.question.try_next):
            self.notify(f"{self.question.number} has no variation {variant}", severity="warning", timeout=3)
            return
        self.dismiss((self.current, variant))

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id and event.button.id.startswith("run"):
            self.action_run(int(event.button.id[3:]))


class GuessScreen(ModalScreen[str | None]):
    """Predict, then run: the question's guess before its experiment (Esc runs it without one)."""

    BINDINGS = [Binding("escape", "skip", "Run without a guess", id="guess.skip")]
    DEFAULT_CSS = """
    GuessScreen { align: center middle; }
    GuessScreen > Vertical { width: 80%; max-width: 100; height: auto; border: round $accent;
                             background: $surface; padding: 0 1; }
    GuessScreen #ask { height: auto; margin-bottom: 1; }
    """

    def __init__(self, number: str, prediction: Any) -> None:
        super().__init__()
        self.number = number
        self.prediction = prediction

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble((f"Learn {self.number} · predict, then run\n", "bold"),
                                       visible(self.prediction.ask), "\n",
                                       ("Enter runs the experiment and sets your guess beside the measurement · "
                                        "Esc runs it without a guess", "dim")), id="ask")
            yield SafeInput(placeholder="your guess", id="guess")

    def on_mount(self) -> None:
        self.query_one("#guess", Input).focus()

    @on(Input.Submitted, "#guess")
    def _submitted(self, event: Input.Submitted) -> None:
        from ...learn.predict import GuessError, parse_guess

        try:
            parse_guess(self.prediction, event.value)
        except GuessError as exc:
            self.app.notify(f"the guess should be {exc}", severity="warning", timeout=4)
            return
        self.dismiss(event.value)

    def action_skip(self) -> None:
        self.dismiss(None)


class ResultsScreen(WideModal[None]):
    """A side-by-side table an experiment produced (sampler runs, load times, build capabilities)."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close", id="results.close"),
                Binding("1", "app.learn_try(1)", "Try 1", id="results.try1"),
                Binding("2", "app.learn_try(2)", "Try 2", id="results.try2")]
    DEFAULT_CSS = """
    ResultsScreen #title { height: auto; }
    ResultsScreen #table { height: 1fr; }
    ResultsScreen #notes { height: auto; max-height: 12; margin-top: 1; }
    """

    def __init__(self, title: str, columns: list[str], rows: list[list[str]], notes: str = "",
                 mark_row: int | None = None, widths: dict[int, int] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.columns = columns
        self.rows = rows
        self.notes = notes
        self.mark_row = mark_row
        self.widths = widths or {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text.assemble((visible(self.title_text), "bold"), "   ",
                                       ("(Esc closes · L back to the question · 1 / 2 the variations)", "dim")),
                         id="title")
            table: DataTable[Any] = DataTable(id="table", zebra_stripes=True, cursor_type="row")
            for i, c in enumerate(self.columns):
                table.add_column(c, width=self.widths.get(i))
            for i, row in enumerate(self.rows):
                # the cells hold model output: plain text, never markup; line breaks are the recipe's own
                style = "bold" if i == self.mark_row else ""
                cells: list[Any] = [Text(visible(str(c), "\n"), style=style) for c in row]
                table.add_row(*cells, height=None)
            yield table
            with VerticalScroll(id="notes"):
                yield Static(self.notes, id="notes-text")

    def on_mount(self) -> None:
        if self.mark_row is not None:
            self.query_one(DataTable).move_cursor(row=self.mark_row)
