"""A new user's first hour in tmux (issue 16): numbers formatted once and readably, no Python reprs on
screen, preset descriptions that stay true, a help screen that scrolls, a model picker that picks, and
config errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from tests.conftest import run
from tui.app.keys import help_rows
from tui.engine.lab import BenchRow
from tui.engine.models import ModelEntry
from tui.sampling.presets import (
    BUILTIN_PRESETS,
    load_preset_file,
    load_presets,
    save_preset,
)


class Host(App[None]):
    """A bare app that opens one screen: what the screen draws, without the dashboard around it."""

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.opened = screen
        self.dismissed: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.opened, self.dismissed.append)


def screen_text(app: App[Any]) -> str:
    """The terminal as the user sees it, one string per line."""
    return "\n".join("".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips())


# -- 1. numbers formatted once, readably ---------------------------------------------------------------------


def test_inspect_shows_the_rms_epsilon_as_the_float32_it_is(smollm2_path: Path, tmp_path: Path) -> None:
    out = run("inspect", str(smollm2_path), home=tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if "RMS norm epsilon" in x)
    assert line.split()[-1] == "1e-05" and "e-06" not in out.stdout


async def test_anatomy_screen_shows_short_numbers(smollm2_path: Path, tmp_path: Path) -> None:
    from tui.app.screens.anatomy import AnatomyScreen
    from tui.engine.anatomy import read_anatomy

    anatomy = read_anatomy(smollm2_path, tmp_path)
    app = Host(AnatomyScreen(anatomy))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#hyper", DataTable)
        values = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert values["RMS norm epsilon"] == "1e-05" and values["RoPE base frequency"] == "100000"
        assert "135M parameters" in str(app.screen.query_one("#summary", Static).render())


def _bench_row(threads: int, batch: int = 64, tg: float = 10.0) -> BenchRow:
    return BenchRow(threads=threads, batch=batch, mmap=True, cache_type="f16", n_gpu_layers=0, pp_tps=100.0 + batch,
                    pp_std=1.0, tg_tps=tg, tg_std=0.5, load_cold_ms=10.0, load_warm_ms=5.0, rss_after_load=0,
                    rss_after_run=0, bandwidth_gbs=1.0)


async def test_perf_lab_axes_of_threads_and_batch_sizes_have_whole_number_ticks() -> None:
    from tui.app.screens.labs import PerfLab

    app = Host(PerfLab("model.gguf", 3, lambda job: job(), False, quick=True))
    async with app.run_test(size=(100, 44)) as pilot:
        await pilot.pause()
        app.screen._show([_bench_row(1, tg=10), _bench_row(2, tg=18), _bench_row(3, tg=25),
                          _bench_row(3, batch=32), _bench_row(3, batch=128)])
        await pilot.pause()
        text = screen_text(app)
    lines = text.splitlines()
    axis = next(i for i, line in enumerate(lines) if "└" in line)  # both plots' x axes, side by side
    ticks = lines[axis + 1].replace("│", " ").split()
    assert ticks == ["1", "2", "3", "32", "64", "128"], ticks


def test_the_number_helpers() -> None:
    from tui.units import human_count, short_number

    assert short_number(9.999999747378752e-06) == "1e-05" and short_number(10000.0) == "10000"
    assert short_number([0.5, 2]) == "0.5, 2" and short_number("a\x1bb") == "a␛b"
    assert human_count(134_515_008) == "135M" and human_count(1_710_000_000) == "1.7B" and human_count(999) == "999"


# -- 2. no Python reprs on screen ------------------------------------------------------------------------------


def test_tokenize_prints_a_partial_utf8_piece_as_hex_without_quotes(tmp_path: Path) -> None:
    out = run("tokenize", "東京", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "\\xe6\\x9d" in out.stdout  # the first two bytes of 東, one backslash each
    assert "\\\\x" not in out.stdout and "'" not in out.stdout


async def test_tokenizer_screen_top5_shows_pieces_not_reprs() -> None:
    from tui.app.screens.tokenizer import TokenizerScreen

    result = {"tokens": [{"id": 1, "piece": "\\xe6\\x9d", "bytes": 2, "bos": False, "eos": False, "special": False}],
              "variants": {"with BOS": 2}, "top": {"with BOS": [("\\xe6\\x9d", 0.5), (" Paris", 0.25)]}}
    app = Host(TokenizerScreen("東", lambda text, bos, special, show: show(result)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        row = [str(c) for c in app.screen.query_one("#compare", DataTable).get_row_at(0)]
    assert row[1:3] == ["\\xe6\\x9d 50.0%", "␣Paris 25.0%"]


async def test_quant_lab_top5_shows_pieces_not_reprs() -> None:
    from tui.app.screens.labs import QuantLab

    lab = QuantLab("model.gguf", lambda job: job())
    app = Host(lab)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        score = SimpleNamespace(topk=[[(5, 0.5)]])
        lab.result = SimpleNamespace(scores=[score, score], pieces={5: " Paris\n"})
        lab.shown = 1
        lab.show_position(0)
        row = [str(c) for c in lab.query_one("#flip", DataTable).get_row_at(0)]
    assert row == ["1", "␣Paris\\n 50.0%", "␣Paris\\n 50.0%"]


# -- 3. presets: descriptions that fit and stay true -------------------------------------------------------------


def test_an_edited_preset_says_what_changed(tmp_path: Path) -> None:
    edited = BUILTIN_PRESETS["balanced"].with_param("temp", "t", 1.5)
    assert "moderate temperature" not in edited.description
    assert edited.description == "balanced with temp t=1.5 (was 0.7)"
    twice = edited.with_param("top_k", "k", 60)
    assert twice.description == "balanced with top_k k=60 (was 40), temp t=1.5 (was 0.7)"
    assert twice.with_param("top_k", "k", 40).with_param("temp", "t", 0.7).description == \
        BUILTIN_PRESETS["balanced"].description  # changed back: the original words are true again
    again = load_preset_file(save_preset(twice, tmp_path))
    assert again.description == twice.description


async def test_presets_screen_shows_whole_descriptions_and_saves_a_true_one(tmp_path: Path) -> None:
    from tui.app.screens.presets import PresetScreen

    saved: list[Path] = []
    screen = PresetScreen(load_presets(None), BUILTIN_PRESETS["balanced"], lambda p: None,
                          lambda p: saved.append(save_preset(p, tmp_path)) or str(saved[-1]))
    app = Host(screen)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.pause()
        text = " ".join(" ".join(screen_text(app).split()).split("│"))
        for preset in BUILTIN_PRESETS.values():  # every word of every description is on screen
            for word in preset.description.split():
                assert word in text, (preset.name, word)
        assert "…" not in text
        params = screen.query_one("#params", DataTable)
        params.focus()
        params.move_cursor(row=params.get_row_index("4:t"))
        await pilot.press("enter")
        screen.query_one("#edit", Input).value = "1.5"
        await pilot.press("enter")
        await pilot.pause()
        presets = screen.query_one("#presets", DataTable)
        assert str(presets.get_row("balanced*")[1]) == "balanced with temp t=1.5 (was 0.7)"
        await pilot.press("ctrl+s")
        screen.query_one("#edit", Input).value = "hot"
        await pilot.press("enter")
        await pilot.pause()
    assert load_preset_file(saved[0]).description == "balanced with temp t=1.5 (was 0.7)"


# -- 4. the help screen ------------------------------------------------------------------------------------------


async def test_help_scrolls_at_once_with_the_keys_and_reaches_the_last_binding() -> None:
    from tui.app.screens.help import HelpScreen

    app = Host(HelpScreen(help_rows({})))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        first = screen_text(app)
        assert "app.quit" not in first  # taller than the terminal
        await pilot.press("down")
        await pilot.pause()
        assert screen_text(app) != first  # ↓ scrolls the view itself, not a cursor inside it
        await pilot.press("pagedown", "pagedown", "pagedown")
        await pilot.pause()
        assert "app.quit" in screen_text(app)
        await pilot.press("pageup", "pageup", "pageup", "up")
        await pilot.pause()
        assert screen_text(app) == first


@pytest.mark.parametrize("keymap", [{}, {"gen.resample": "d"}])
async def test_help_remap_example_names_a_free_key(keymap: dict[str, str]) -> None:
    import re

    from tui.app.screens.help import HelpScreen

    rows = help_rows(keymap)
    app = Host(HelpScreen(rows))
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.pause()
        text = str(app.screen.query_one(Static).render())
    binding_id, key = re.search(r'([\w.]+) = "([^"]+)"', text).groups()
    taken = {k for keys, _, _ in rows for k in keys.split(",")}
    assert binding_id in {bid for *_, bid in rows} and key not in taken


# -- 5. the model picker -----------------------------------------------------------------------------------------


def _entries() -> list[ModelEntry]:
    return [ModelEntry("SmolLM2-135M-Instruct", "/m/a.gguf", "embedded", arch="llama", quant="Q4_K_M"),
            ModelEntry("SmolLM2-135M-Instruct.Q8_0", "/m/b.gguf", "dir", arch="llama", quant="Q8_0"),
            ModelEntry("gemma-3-270m", "/m/c.gguf", "dir", arch="gemma3", quant="Q8_0")]


async def test_enter_in_the_model_filter_picks_the_only_match() -> None:
    from tui.app.screens.models import ModelPicker

    app = Host(ModelPicker(_entries(), "SmolLM2-135M-Instruct", []))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"gemma", "enter")
        await pilot.pause()
    assert [e.name for e in app.dismissed] == ["gemma-3-270m"]


async def test_enter_in_the_model_filter_with_several_matches_goes_to_the_list() -> None:
    from tui.app.screens.models import ModelPicker

    app = Host(ModelPicker(_entries(), "SmolLM2-135M-Instruct", []))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"smol", "enter")
        await pilot.pause()
        assert app.dismissed == [] and isinstance(app.focused, DataTable)
        await pilot.press("down", "enter")
        await pilot.pause()
    assert [e.name for e in app.dismissed] == ["SmolLM2-135M-Instruct.Q8_0"]


# -- 6. config errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, problem", [
    ('[engine]\nn_ctx = "big"', "engine.n_ctx: expected a whole number, got 'big'"),
    ('n_ctx = "big"', "n_ctx: not a top-level setting: it belongs in the [engine] table"),
    ('[models]\nkeep_loaded = "big"', "models.keep_loaded: expected an integer, got 'big'"),
    ("[models]\nkeep_loaded = 99", "models.keep_loaded: must be at most 16, got 99"),
    ("[models]\ndirs = [1]", "models.dirs[0]: expected a string, got 1"),
    ('[keys]\n"gen.stop" = 5', 'keys."gen.stop": expected a string, got 5'),
])
def test_a_config_error_is_one_line_naming_the_file_and_the_field(tmp_path: Path, body: str, problem: str) -> None:
    from tui.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text(body + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"config {path}: {problem}"


def test_the_cli_says_which_config_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('[engine]\nn_ctx = "big"\n')
    out = run("models", home=tmp_path)
    assert out.returncode != 0
    assert out.stderr.strip() == (f"llmtui: error: config {tmp_path / 'config' / 'config.toml'}: engine.n_ctx: "
                                  "expected a whole number, got 'big'")


def test_a_preset_error_quotes_the_value_without_python_escapes(tmp_path: Path) -> None:
    from tui.sampling.presets import PresetError

    path = tmp_path / "p.toml"
    path.write_text("[[samplers]]\ntype = 'top_p'\np = 'C:\\high'\n")
    with pytest.raises(PresetError) as err:
        load_preset_file(path)
    assert str(err.value).endswith("samplers[0].p: expected a number, got 'C:\\high'")  # one backslash, as written


async def test_settings_screen_names_the_field_of_a_bad_number() -> None:
    from textual.widgets import Button

    from tui.app.screens.settings import SettingsScreen
    from tui.engine import EngineSettings

    app = Host(SettingsScreen(EngineSettings(), "stop", -1))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        app.screen.query_one("#n_ctx", Input).value = ""
        app.screen.query_one("#apply", Button).press()
        await pilot.pause()
        error = str(app.screen.query_one("#error", Static).render())
    assert error == "n_ctx: expected a whole number, got ''" and app.dismissed == []
