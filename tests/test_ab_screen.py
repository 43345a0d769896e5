"""The A/B split view on the fake engine (Pilot): a run fills both streams, marks where they parted (and, with
two models, each step whose top-1 tokens disagree), plots KL and entropies, and sums the run up from its
ABFinished; Esc stops a run, then closes."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import Static
from textual_plotext import PlotextPlot

from tests.conftest import FAKE_SETTINGS, until
from tui.app.screens.ab import ABScreen, ABStream, engine_runner
from tui.app.widgets.token_stream import display_text
from tui.engine.controller import Controller
from tui.engine.fake import FakeEngine
from tui.engine.models import ModelEntry
from tui.sampling.presets import BUILTIN_PRESETS

VARIANT = ModelEntry("fake-variant", "fake-variant.gguf", "lab", n_vocab=64)
OTHER_VOCAB = ModelEntry("other-tokenizer", "other.gguf", "path", n_vocab=1000)


class Host(App):
    """A bare app that opens the A/B screen on a controller of the fake engine (as the dashboard wires it)."""

    def __init__(self, *, delay_s: float = 0.0, max_tokens: int = 24) -> None:
        super().__init__()
        self.engine = FakeEngine(FAKE_SETTINGS, delay_s=delay_s)
        self.variant = FakeEngine(FAKE_SETTINGS, seed=5, delay_s=delay_s)  # other logits, the same vocabulary
        self.loaded: list[str] = []
        self.controller = Controller(self.engine, BUILTIN_PRESETS["greedy"], seed=7, emit=lambda e: None)
        self.closed = False
        self.max_tokens = max_tokens

    def load(self, path: str) -> FakeEngine:
        self.loaded.append(path)
        return self.variant

    def on_mount(self) -> None:
        screen = ABScreen("the cat sat", engine_runner(self.controller, self.engine, self.load), BUILTIN_PRESETS,
                          BUILTIN_PRESETS["greedy"], [VARIANT, OTHER_VOCAB], model_label="fake",
                          max_tokens=self.max_tokens, seed=7, n_vocab=self.engine.n_vocab)
        self.push_screen(screen, lambda _: setattr(self, "closed", True))


def token_styles(stream: ABStream) -> list:
    """The rich style each token of ``stream`` is drawn with, in order."""
    text = stream.styled()
    out, offset = [], 0
    for tok in stream.tokens:
        shown = "∎" if tok.eog else display_text(tok.text)
        out.append(text.get_style_at_offset(stream.app.console, offset))
        offset += len(shown)
    return out


async def run_and_wait(pilot) -> ABScreen:
    screen = pilot.app.screen
    await pilot.press("r")
    await until(pilot, lambda: screen.summary is not None and not screen.running and not screen.pending)
    return screen


async def test_two_presets_fill_both_streams_mark_the_divergence_plot_and_sum_up() -> None:
    app = Host()
    async with app.run_test(size=(140, 44)) as pilot:
        screen = app.screen
        assert isinstance(screen, ABScreen)
        assert screen.preset_b.name == "llama.cpp-default"  # B starts on the preset after A's
        await pilot.press("p", "p", "P", "P")
        assert screen.preset_b.name == "llama.cpp-default"
        assert "B llama.cpp-default" in str(screen.query_one("#ab-header", Static).content)
        screen = await run_and_wait(pilot)
        s = screen.summary
        assert s["mode"] == "presets" and s["steps"] == 24 and s["a"] == "greedy" and s["b"] == "llama.cpp-default"
        assert s["decode_calls"] == s["steps"]  # one decode per step (the prompt's included, the last step's not)
        a, b = screen.query_one("#ab-a", ABStream), screen.query_one("#ab-b", ABStream)
        assert len(a.tokens) == len(b.tokens) == 24
        assert screen.stream_text("a") == s["text_a"] and screen.stream_text("b") == s["text_b"]
        at = s["diverged_at"]
        assert at is not None and a.diverged_at == b.diverged_at == at
        assert a.tokens[at].text != b.tokens[at].text
        marked = a.get_component_rich_style("ab-stream--diverged").bgcolor
        for stream in (a, b):
            bg = [st.bgcolor for st in token_styles(stream)]
            assert [i for i, c in enumerate(bg) if c == marked] == [at]
        plot = screen.query_one("#ab-plot", PlotextPlot).render().plain
        assert "H(A)" in plot and "H(B)" in plot and "KL" in plot
        summary = str(screen.query_one("#ab-summary", Static).content)
        assert f"{s['steps']} steps at {s['steps_per_s']:.1f} steps/s" in summary
        assert f"{s['decode_calls']} llama_decode calls" in summary and f"diverged at step {at}" in summary
        assert f"mean KL {s['kl_mean']:.4f} nats" in summary
        assert f"top-1 agreement {s['top1_agreement']:.1%}" in summary
        assert app.loaded == []  # one model: nothing else loaded


async def test_two_models_mark_each_step_whose_top1_disagrees() -> None:
    app = Host()
    async with app.run_test(size=(140, 44)) as pilot:
        screen = app.screen
        assert screen.models == [VARIANT]  # another vocabulary cannot be compared step by step
        await pilot.press("m")
        assert screen.model_b is VARIANT and screen.preset_b is screen.preset_a
        header = str(screen.query_one("#ab-header", Static).content)
        assert "two models" in header and "fake-variant" in header
        screen = await run_and_wait(pilot)
        s = screen.summary
        assert s["mode"] == "models" and app.loaded == [VARIANT.path]
        assert s["decode_calls"] == 2 * s["steps"]  # model A on A's text, model B on it too
        disagree = [step.index for step in screen.steps if step.top1_agree is False]
        assert disagree, "the fake variant's logits never disagree: change its seed"
        a = screen.query_one("#ab-a", ABStream)
        underlined = [i for i, st in enumerate(token_styles(a)) if st.underline]
        assert underlined == disagree
        assert s["top1_agreement"] == pytest.approx(1 - len(disagree) / s["steps"])


async def test_escape_stops_a_run_then_closes() -> None:
    app = Host(delay_s=0.05, max_tokens=400)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = app.screen
        await pilot.press("P", "r")  # greedy against greedy: one sequence, each step a (slow) decode
        await until(pilot, lambda: len(screen.steps) >= 3)
        await pilot.press("escape")
        await until(pilot, lambda: screen.summary is not None and not screen.running)
        assert screen.summary["stop_reason"] == "cancelled" and screen.summary["steps"] < 400
        assert "stop: cancelled" in str(screen.query_one("#ab-summary", Static).content)
        await pilot.press("escape")
        await until(pilot, lambda: app.closed)
        assert not isinstance(app.screen, ABScreen)


async def test_A_on_the_dashboard_opens_the_split_view_on_the_loaded_model() -> None:
    from tests.conftest import make_app

    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_ab_and_run(app, pilot)
        assert screen.preset_a is app.preset and screen.preset_b is not app.preset
        assert screen.summary["steps"] > 0 and screen.summary["decode_calls"] == screen.summary["steps"]


async def open_ab_and_run(app, pilot):
    """A on the dashboard, then r on the split view: the screen once its run finished."""
    from tui.app.screens.ab import ABScreen

    await until(pilot, lambda: app.controller is not None)
    app.dashboard.query_one("#stream").focus()
    await pilot.press("A")
    await until(pilot, lambda: isinstance(app.screen, ABScreen))
    screen = app.screen
    await pilot.press("r")
    await until(pilot, lambda: screen.summary is not None, timeout=30)
    return screen


async def test_an_ab_run_is_recorded_while_recording_is_on(tmp_path) -> None:
    from tests.conftest import make_app
    from tui.record import read_session

    app = make_app(record=str(tmp_path))  # recording on (the A/B run goes to a new file in the sessions directory)
    async with app.run_test(size=(140, 44)) as pilot:
        screen = await open_ab_and_run(app, pilot)
        from tui.config import app_dirs

        files = sorted(app_dirs().sessions.glob("*ab-*.jsonl"))
        assert files, f"no A/B recording: {[n.message for n in app._notifications]}"
        target = files[-1]
    session = read_session(target)
    assert session.ab is not None and session.ab["mode"] == "presets"
    assert len(session.branches[0].steps) == screen.summary["steps"]
    if screen.summary["diverged_at"] is not None:
        assert session.branches[1].fork == screen.summary["diverged_at"] and session.branches[1].origin == "B"
