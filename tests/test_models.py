"""Switching models (LRU pool, picker), model anatomy and `llmtui inspect`, discovery of bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from textual.widgets import DataTable

from tests.conftest import llama_pool, real_app, until
from tui.app.screens.anatomy import AnatomyScreen
from tui.app.screens.models import ModelPicker
from tui.app.screens.presets import PresetScreen
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings, Generation
from tui.engine.anatomy import read_anatomy
from tui.engine.models import describe_file, discover
from tui.sampling import Chain, Greedy
from tui.sampling.presets import load_preset_file


async def pick(pilot, row: int) -> None:
    app = pilot.app
    await pilot.press("m")
    await until(pilot, lambda: isinstance(app.screen, ModelPicker), timeout=30)
    app.screen.query_one(DataTable).focus()
    app.screen.query_one(DataTable).move_cursor(row=row)
    await pilot.press("enter")


async def test_switch_model_in_the_picker_and_back_warm(smollm2_path, smollm2_q8_path) -> None:
    entries = [describe_file(smollm2_path, source="embedded"), describe_file(smollm2_q8_path, source="dir")]
    pool = llama_pool()
    app = real_app(entries, pool)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        cold_first = app.load_info
        # generating when we switch: it stops cleanly and goes on, on the new model
        app.start_generation("Once upon a time")
        await until(pilot, lambda: len(app.current.steps) >= 5, timeout=30)
        app.query_one(TokenStream).focus()
        await pick(pilot, 1)
        await until(pilot, lambda: app.engine is not None and app.engine.path == smollm2_q8_path, timeout=60)
        assert "(cold)" in app.load_info and "Q8_0" in app.query_one("#status").text
        assert "SmolLM2-135M-Instruct.Q8_0" in app.query_one("#status").text
        await until(pilot, lambda: len(app.current.steps) >= 5, timeout=60)  # the generation resumed on Q8_0
        assert app.controller.engine.info.quant == "Q8_0"
        cold_ms = float(app.load_info.split()[2].replace(",", ""))
        # back to the first one: still in the pool -> warm, and much faster than a cold load
        app.controller.stop()
        await until(pilot, lambda: not app.running, timeout=30)
        app.query_one(TokenStream).focus()
        await pick(pilot, 0)
        await until(pilot, lambda: app.engine is not None and app.engine.path == smollm2_path, timeout=60)
        assert "(warm)" in app.load_info
        warm_ms = float(app.load_info.split()[2].replace(",", ""))
        assert warm_ms < cold_ms / 5
        assert "cold" in cold_first
    pool.close_all()


def test_closing_a_model_that_is_not_kept_returns_memory(smollm2_path, smollm2_q8_path) -> None:
    proc = psutil.Process()
    pool = llama_pool(capacity=1, settings=EngineSettings(n_ctx=512, use_mmap=False))
    first = pool.get(str(smollm2_path))
    assert first.cold
    second = pool.get(str(smollm2_q8_path))  # evicts (closes) the first
    assert first.engine.closed and not second.engine.closed
    gen = Generation(second.engine, second.engine.tokenize("Hello"), Chain([Greedy()]), max_tokens=8)
    list(gen)
    before = proc.memory_info().rss
    pool.close_all()
    after = proc.memory_info().rss
    assert before - after > 100 * 2**20, (before, after)  # the Q8_0 model is ~138 MiB


def test_directory_with_bad_files_lists_them_and_the_good_ones(tmp_path: Path, smollm2_path, smollm2_q8_path) -> None:
    d = tmp_path / "models"
    d.mkdir()
    (d / "notes.gguf").write_text("these are notes, not weights\n")
    (d / "cut.gguf").write_bytes(smollm2_path.read_bytes()[:30_000_000])
    os.symlink(smollm2_q8_path, d / "good.gguf")
    entries = {e.name: e for e in discover([d], include_embedded=False, scan_hf_cache=False)}
    assert "not a GGUF file" in entries["notes"].error
    assert "truncated GGUF file" in entries["cut"].error
    assert entries["good"].usable and entries["good"].quant == "Q8_0"


def test_inspect_totals_and_numbers_match_llama_cpp(smollm2_path) -> None:
    from tui.engine.llama import LlamaEngine

    a = read_anatomy(smollm2_path)
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)) as eng:
        info = eng.info
        assert a.total_bytes == info.size_bytes  # llama_model_size
        assert a.total_elements == info.n_params  # llama_model_n_params
    assert a.total_bytes <= a.file_size - a.data_offset
    hyper = a.hyper
    assert (hyper["layers"], hyper["attention heads"], hyper["KV heads"], hyper["embedding size"]) == (
        info.n_layer, info.n_head, info.n_head_kv, info.n_embd)
    assert sum(len(t) for t in a.by_layer().values()) == len(a.tensors) == 272
    assert sum(r["bytes"] for r in a.by_type().values()) == a.total_bytes
    out = subprocess.run([sys.executable, "-m", "tui.cli", "inspect", str(smollm2_path), "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LLMTUI_HOME": os.environ["LLMTUI_HOME"]})
    data = json.loads(out.stdout)
    assert data["total_bytes"] == info.size_bytes and data["hyper"]["layers"] == info.n_layer
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "inspect", "/no/such.gguf"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


async def test_anatomy_screen_on_the_real_model(smollm2_path) -> None:
    entries = [describe_file(smollm2_path, source="embedded")]
    pool = llama_pool()
    app = real_app(entries, pool)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        app.query_one(TokenStream).focus()
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AnatomyScreen), timeout=60)
        hyper = app.screen.query_one("#hyper", DataTable)
        rows = {str(hyper.get_row_at(i)[0]): str(hyper.get_row_at(i)[1]) for i in range(hyper.row_count)}
        assert rows["layers"] == "30" and rows["KV heads"] == "3"
        assert app.screen.query_one("#tensors", DataTable).row_count == 272 + 31  # tensors + group rows
    pool.close_all()


async def test_preset_screen_pick_edit_resample_and_save(tmp_path: Path, monkeypatch) -> None:
    from tests.conftest import generate, make_app, ready

    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    app = make_app(max_tokens=12)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        last = app.current.steps[-1]
        app.query_one(TokenStream).focus()
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, PresetScreen))
        screen = app.screen
        # edit balanced's temperature: params rows are (sampler index, sampler, param, value)
        params = screen.query_one("#params", DataTable)
        temp_row = next(i for i in range(params.row_count) if params.get_row_at(i)[2] == "t")
        params.focus()
        params.move_cursor(row=temp_row)
        await pilot.press("enter")
        screen.query_one("#edit").value = "0.05"
        await pilot.press("enter")
        await until(pilot, lambda: app.preset.name == "balanced*")
        assert next(s for s in app.preset.samplers if s.name == "temp").params["t"] == pytest.approx(0.05)
        await until(pilot, lambda: app.current.steps[-1] is not last)  # re-sampled at once with the edit
        assert [s.name for s in app.current.steps[-1].trace.stages][-2:] == ["temp", "dist"]
        await pilot.press("ctrl+s")
        screen.query_one("#edit").value = "cold-story"
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, PresetScreen))
        saved = tmp_path / "config" / "presets" / "cold-story.toml"
        assert saved.exists() and load_preset_file(saved).samplers[-2].params["t"] == pytest.approx(0.05)
        assert app.preset.name == "cold-story" and "cold-story" in app.catalog.presets
        # pick another preset by name from the list
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, PresetScreen))
        table = app.screen.query_one("#presets", DataTable)
        row = next(i for i in range(table.row_count) if str(table.get_row_at(i)[0]) == "mirostat")
        table.move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: app.preset.name == "mirostat")
