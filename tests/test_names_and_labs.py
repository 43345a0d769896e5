"""Issue 16: one display name per model; `--model smol` once the quant lab has written variants; the Learn
4.1 highlight shows its figures; closing a lab an experiment opened leaves the prompt alone; Learn 2.1's
token count says what the cache holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widgets import Input, Static

from tests.conftest import llama_pool, real_app, until
from tui.app.learn_host import run_experiment
from tui.app.screens.labs import QuantLab
from tui.app.screens.learn import LearnScreen
from tui.engine import EngineSettings
from tui.engine import models as model_discovery
from tui.engine.errors import EngineError
from tui.engine.models import describe_file, discover, resolve_model
from tui.engine.pool import EnginePool
from tui.record.writer import session_header
from tui.sampling.presets import BUILTIN_PRESETS

SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture
def no_gemma(monkeypatch) -> None:
    """Discovery as without the gemma extra (it would assemble Gemma into each test's data dir)."""
    monkeypatch.setattr(model_discovery, "GEMMA_PACKAGE", "no_such_gemma_package")


# -- 1. one display name --------------------------------------------------------------------------------------


def test_an_engine_goes_by_its_catalog_name_everywhere(smollm2_path: Path, tmp_path: Path, monkeypatch,
                                                       no_gemma) -> None:
    from tui.engine.llama import LlamaEngine

    # a model in the Hugging Face hub cache goes by Org/Repo/stem, as the catalog names it
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / smollm2_path.name).symlink_to(smollm2_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = discover(include_embedded=False)
    assert [e.name for e in hub] == [f"HuggingFaceTB/SmolLM2-135M/{SMOLLM2_NAME}"]
    embedded = next(e for e in discover(scan_hf_cache=False) if e.source == "embedded")
    assert embedded.name == SMOLLM2_NAME
    pool = EnginePool(lambda path, progress: LlamaEngine(path, EngineSettings(n_ctx=128), on_progress=progress))
    try:
        for entry in (embedded, hub[0]):
            engine = pool.get(entry.path).engine
            assert engine.info.name == entry.name  # the status line, a fork, the quant lab, the recordings
            assert engine.info.general_name == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # kept, as metadata
            header = session_header(engine, BUILTIN_PRESETS["greedy"], 1, "hi", [1, 2], max_tokens=4)
            assert header["model"]["name"] == entry.name
    finally:
        pool.close_all()
    bare = tmp_path / "my-model.gguf"
    bare.symlink_to(smollm2_path)
    with LlamaEngine(bare, EngineSettings(n_ctx=64)) as engine:
        assert engine.info.name == "my-model" == describe_file(bare).name  # a bare path: the file's stem


# -- 2. --model smol with lab variants -----------------------------------------------------------------------------


def test_a_name_that_also_matches_lab_variants_picks_the_installed_model(smollm2_path: Path, tmp_path: Path,
                                                                          no_gemma) -> None:
    from tui.engine.lab import quantize_model

    made = tmp_path / "data" / "models"  # where the quant lab writes (app_dirs().models)
    variant = quantize_model(smollm2_path, "q8_0", models_dir=made)
    entries = discover(data_models=made, scan_hf_cache=False)
    assert resolve_model("smol", entries).source == "embedded"  # was: "'smol' matches several models"
    assert {(e.name, e.source) for e in entries} == {(SMOLLM2_NAME, "embedded"),
                                                     ("SmolLM2-135M-Instruct.Q8_0", "lab")}
    assert resolve_model("SMOL", entries).source == "embedded"
    assert resolve_model("Q8_0", entries).path == variant.output  # a unique match may be a variant
    assert resolve_model("smollm2-135m-instruct.q8_0", entries).path == variant.output  # a name in any case
    # two models that are not variants: the error names them and says how to pick, in one line
    both = [dataclasses.replace(e, source="dir") for e in entries]
    with pytest.raises(EngineError) as err:
        resolve_model("smol", both)
    message = str(err.value)
    assert "matches 2 models" in message and SMOLLM2_NAME in message and "full name" in message
    assert "\n" not in message


# -- 3. and 4. the labs an experiment opens ------------------------------------------------------------------------


def _app(smollm2_path: Path, **kw):
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool, **kw)
    app.learn_quick = True
    return app, pool


def rendered(widget) -> str:
    """What the widget shows, its border included."""
    width, height = widget.outer_size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, width, height)))


async def test_the_highlighted_quant_lab_report_shows_its_figures(smollm2_path: Path) -> None:
    app, pool = _app(smollm2_path)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: app.controller is not None, timeout=30)
            finding = await run_experiment(app, "s4-quant-types", 1)
            assert finding is not None, str(app.query_one("#learnbar").content)
            await pilot.pause()
            assert isinstance(app.screen, QuantLab)
            status = app.screen.query_one("#status", Static)
            assert "-learn" in status.classes
            text = rendered(status)
            assert "★ bits per weight and fallbacks" in text
            for output, bits, _fallback in finding.values["made"]:
                assert f"{Path(output).name}: " in text and f"{bits:.2f} bits/weight" in text, text
    finally:
        pool.close_all()


async def test_closing_a_lab_an_experiment_opened_leaves_the_prompt_alone(smollm2_path: Path) -> None:
    app, pool = _app(smollm2_path, learn="s4-threads")
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, LearnScreen), timeout=30)
            await pilot.pause()
            prompt = app.dashboard.query_one("#prompt", Input)
            before = prompt.value
            await pilot.press("enter")  # runs 4.3: its results screen
            await until(pilot, lambda: "s4-threads" in app.learn_findings, timeout=120)
            await pilot.pause()
            assert type(app.screen).__name__ == "ResultsScreen"
            await pilot.press("escape")
            await pilot.pause()
            assert app.focused is not prompt
            await pilot.press("L")  # what the Learn bar advertises
            await until(pilot, lambda: isinstance(app.screen, LearnScreen))
            assert prompt.value == before  # no "L" typed into it, for the next Enter to generate from
    finally:
        pool.close_all()


# -- 5. Learn 2.1's figures -----------------------------------------------------------------------------------------


async def test_kv_cache_headline_says_what_the_cache_holds_of_the_run(smollm2_path: Path) -> None:
    app, pool = _app(smollm2_path)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: app.controller is not None, timeout=30)
            finding = await run_experiment(app, "s2-kv-cache", 0)
            assert finding is not None
            await pilot.pause()
            run = app.dashboard.model.snapshot()
            drawn, n_past = len(run.steps), app.engine.n_past
            in_cache = n_past - run.n_prompt
            # the run drew 12 tokens (48 in the full run); the last is sampled, never decoded
            assert (drawn, in_cache) == (12, 11)
            assert f"{n_past} cells ({run.n_prompt} prompt + {in_cache} of the {drawn} generated" in finding.headline
            kv = "".join(text for line in app.query_one("#kv")._build(80) for text, _cls in line)
            assert f"generated {in_cache}" in kv and f"{n_past} / " in kv  # the panel's own figures
            assert finding.values["generated"] == drawn and finding.values["generated_in_cache"] == in_cache
    finally:
        pool.close_all()
