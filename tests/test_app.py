"""The dashboard driven by Pilot on the deterministic fake engine.

(The same app on the real SmolLM2 model is driven through tmux in
``test_app_tmux.py``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import FAKE_SETTINGS as SETTINGS
from tests.conftest import generate, make_app, ready, until
from tui.app.app import LlmTuiApp
from tui.app.screens.help import HelpScreen
from tui.app.screens.models import ModelPicker
from tui.app.themes import load_themes, shipped_theme_dir
from tui.app.widgets.token_stream import TokenStream
from tui.engine import Generation
from tui.engine.fake import FakeEngine
from tui.engine.models import ModelEntry
from tui.sampling.presets import BUILTIN_PRESETS, load_presets


def headless_tokens(prompt: str, preset: str, n: int) -> list[int]:
    eng = FakeEngine(SETTINGS)
    gen = Generation(eng, eng.tokenize(prompt), BUILTIN_PRESETS[preset].build(eng.build_context(SETTINGS.seed)),
                     max_tokens=n)
    return [s.token for s in gen]


async def test_generate_and_ui_matches_step_records() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        assert app.current.state_text == "stopped: max tokens reached"
        assert [s.token for s in app.current.steps] == headless_tokens("the cat sat", "balanced", 40)
        stream = app.query_one(TokenStream)
        assert stream.token_count == 40
        assert stream.text() == "".join(s.text for s in app.current.steps)
        # the panels show the last step
        hist_lines = app.query_one("#hist")._build(60)
        assert hist_lines[0][0][0].startswith(f"step {app.current.steps[-1].index}")
        trace_lines = app.query_one("#trace")._build(60)
        stage_names = [line[0][0].strip() for line in trace_lines[1:7]]
        assert stage_names == ["penalties", "top_k", "top_p", "min_p", "temp", "dist"]
        kv_lines = app.query_one("#kv")._build(40)
        # 3 prompt tokens + 40 generated, less the last one: sampled, never decoded
        assert kv_lines[0][0][0].startswith(f"{3 + 40 - 1} / 512 cells")


async def test_stop_mid_generation() -> None:
    app = make_app(delay_s=0.01, max_tokens=400)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: len(app.current.steps) >= 5)
        await pilot.press("escape")
        await until(pilot, lambda: not app.running)
        await pilot.pause(0.1)
        assert app.current.state_text == "stopped: stopped by user"
        assert 5 <= len(app.current.steps) < 400


async def test_step_mode_advances_one_token_per_press() -> None:
    app = make_app(max_tokens=50)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("s")
        assert app.step_mode
        await pilot.press("space")  # starts a run in step mode: the first token is pending
        await until(pilot, lambda: app.current.pending is not None)
        assert len(app.current.steps) == 0 and app.current.pending.index == 0
        for expected in range(1, 6):
            await pilot.press("space")
            await until(pilot, lambda: app.current.pending is not None and app.current.pending.index == expected)
            assert len(app.current.steps) == expected
        assert "pending" in app.query_one("#hist")._build(60)[0][0][0]
        await pilot.press("s")  # step mode off: it runs to the end
        await until(pilot, lambda: not app.running)
        assert len(app.current.steps) == 50
        assert [s.token for s in app.current.steps] == headless_tokens("Once upon a time", "balanced", 50)


async def test_resample_pending_step_with_another_preset() -> None:
    app = make_app(max_tokens=20)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("s", "space")
        await until(pilot, lambda: app.current.pending is not None)
        await pilot.press("space", "space")
        await until(pilot, lambda: app.current.pending is not None and app.current.pending.index == 2)
        before = app.current.pending
        await pilot.press("p")  # next preset: creative
        assert app.preset.name == "creative"
        await pilot.press("r")
        await until(pilot, lambda: app.current.pending is not before)
        after = app.current.pending
        assert after.index == before.index == 2
        assert [s.name for s in after.trace.stages] == [s.name for s in BUILTIN_PRESETS["creative"].samplers]
        assert app.query_one(TokenStream).text().endswith(after.text)


async def test_resample_last_step_after_a_run() -> None:
    app = make_app(max_tokens=10, preset="balanced")
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        last = app.current.steps[-1]
        app.query_one(TokenStream).focus()
        await pilot.press("P", "P", "P")  # back to greedy
        assert app.preset.name == "greedy"
        await pilot.press("r")
        await until(pilot, lambda: app.current.steps[-1] is not last)
        new = app.current.steps[-1]
        assert new.index == last.index and [s.name for s in new.trace.stages] == ["greedy"]
        assert new.token == int(new.trace.top_ids[0])  # greedy took the best


async def test_preset_keys_and_temperature_live() -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        names = list(load_presets(None).presets)
        await pilot.press("p")
        assert app.preset.name == names[(names.index("balanced") + 1) % len(names)]
        await pilot.press("P")
        assert app.preset.name == "balanced"
        await pilot.press("plus", "plus")
        assert app.preset.name == "balanced T=0.9"
        assert next(s for s in app.preset.samplers if s.name == "temp").params["t"] == pytest.approx(0.9)
        await pilot.press("minus")
        assert next(s for s in app.preset.samplers if s.name == "temp").params["t"] == pytest.approx(0.8)
        assert "preset balanced T=0.8" in app.query_one("#status").text


async def test_temperature_change_applies_mid_generation() -> None:
    app = make_app(delay_s=0.01, max_tokens=300)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: len(app.current.steps) >= 3)
        app.query_one(TokenStream).focus()
        await pilot.press("p")  # creative, while generating
        await until(pilot, lambda: len(app.current.steps) >= 30)
        await pilot.press("escape")
        await until(pilot, lambda: not app.running)
        late = app.current.steps[-1]
        assert [s.name for s in late.trace.stages] == [s.name for s in BUILTIN_PRESETS["creative"].samplers]


async def test_select_past_tokens_with_keys_and_mouse() -> None:
    app = make_app(max_tokens=30)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("left", "left")
        assert app.current.selected == 28
        assert app.query_one("#hist")._build(60)[0][0][0].startswith("step 28")
        assert "viewing step 28" in app.query_one("#status").text
        await pilot.press("end")
        assert app.current.selected is None
        # the prompt "the cat sat" fills the first 11 cells of line 0; the first tokens follow
        await pilot.click(TokenStream, offset=(2 + 13, 1))
        await pilot.pause(0.05)
        assert app.current.selected is not None and app.current.selected < 5


async def test_models_key_lists_models() -> None:
    entries = [ModelEntry(name="fake", path="/x/fake.gguf", source="embedded", arch="fake", quant="F32",
                          n_params=10**6, size=4_000_000, n_ctx_train=4096, n_vocab=64),
               ModelEntry(name="broken", path="/x/broken.gguf", source="dir", error="not a GGUF file")]
    app = make_app(discover=lambda: entries)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ModelPicker))
        table = app.screen.query_one("DataTable")
        assert table.row_count == 2
        await pilot.press("b", "r", "o")  # type to filter
        await until(pilot, lambda: table.row_count == 1)
        await pilot.press("escape")
        assert not isinstance(app.screen, ModelPicker)


async def test_theme_key_cycles_and_persists(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert app.theme == "llmtui-dark"
        app.query_one(TokenStream).focus()
        await pilot.press("t")
        assert app.theme == "llmtui-high-contrast"
        state = json.loads((tmp_path / "state" / "state.json").read_text())
        assert state["theme"] == "llmtui-high-contrast"


async def test_new_session_help_and_quit_mid_generation() -> None:
    app = make_app(delay_s=0.01, max_tokens=500)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: len(app.current.steps) >= 3)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: not app.running)
        await pilot.pause(0.1)
        assert app.current.steps == [] and app.query_one(TokenStream).token_count == 0
        await pilot.press("f1")  # the prompt box has focus, so "?" would be typed; F1 works anywhere
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("enter")  # prompt box is focused again after ctrl+n
        await until(pilot, lambda: len(app.current.steps) >= 3)
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_value == 0 and not app.controller.running


async def test_keymap_remaps_a_binding() -> None:
    app = make_app(keymap={"preset.next": "x"})
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("x")
        assert app.preset.name != "balanced"


async def test_resize_keeps_panels_and_survives_tiny() -> None:
    app = make_app(max_tokens=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        for size, classes in [((80, 24), {"-short", "-narrow"}), ((40, 12), {"-tiny"}), ((120, 40), set())]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.1)
            assert app.query_one(TokenStream).token_count == 60
            assert classes <= set(app.screen.classes) and (classes or not app.screen.classes)
            assert app.query_one(TokenStream).size.height >= 3
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        for wid in ("#stream", "#hist", "#trace", "#kv"):
            w = app.query_one(wid)
            assert w.display and w.size.height >= 3 and w.size.width >= 20, wid


async def test_bad_model_keeps_the_app_running() -> None:
    from tui.engine.errors import ModelFileError

    def boom():
        raise ModelFileError("/models/x.gguf", "not a GGUF file")

    app = LlmTuiApp(engine_factory=boom, model_label="x", settings=SETTINGS, preset=BUILTIN_PRESETS["greedy"],
                    catalog=load_presets(None), live_metrics=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.current.state_text.startswith("error"))
        assert "not a GGUF file" in app.current.state_text
        await pilot.press("enter")  # generating without a model is refused politely
        assert app.is_running


def test_bad_theme_file_is_reported_and_skipped(tmp_path: Path) -> None:
    (tmp_path / "ok.toml").write_text('name = "ok"\nprimary = "#123456"\n')
    (tmp_path / "bad.toml").write_text('name = "bad"\nprimary = "not-a-colour"\n')
    (tmp_path / "worse.toml").write_text("primary = [")
    themes = load_themes(tmp_path)
    assert [t.name for t in themes.themes] == ["ok"]
    assert any("bad.toml: primary: not a colour" in e for e in themes.errors)
    assert any("worse.toml: invalid TOML" in e for e in themes.errors)


def test_shipped_themes_exist() -> None:
    names = {t.name for t in load_themes(shipped_theme_dir()).themes}
    assert {"llmtui-dark", "llmtui-light", "llmtui-high-contrast"} <= names
    assert os.path.isdir(shipped_theme_dir())
