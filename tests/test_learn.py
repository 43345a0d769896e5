"""Learn mode: every roadmap question has an explanation and a runnable experiment, and each
experiment, run on the real SmolLM2 (shortened), lands on a panel that shows the expected figure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from textual.widgets import DataTable, Markdown, OptionList

from tests.conftest import llama_pool, real_app, run, until
from tui.app.learn_host import run_experiment
from tui.app.screens.anatomy import AnatomyScreen
from tui.app.screens.labs import QuantLab
from tui.app.screens.learn import LearnScreen, ResultsScreen
from tui.app.screens.models import ModelPicker
from tui.app.screens.tokenizer import TokenizerScreen
from tui.engine import memory
from tui.engine.models import describe_file
from tui.learn import STAGES, LearnFileError, _parse, find, load_questions
from tui.learn.experiments import EXPERIMENTS
from tui.units import human_bytes

CJK = re.compile(r"[\u4e00-\u9fff]")


# -- the questions -----------------------------------------------------------------------------------


def test_every_question_has_an_explanation_and_a_runnable_experiment() -> None:
    questions = load_questions()
    assert len(questions) >= 15
    assert len({q.id for q in questions}) == len(questions)
    assert {q.stage for q in questions} == set(STAGES)
    for q in questions:
        assert q.experiment in EXPERIMENTS, q.id
        assert len(q.explanation) > 300, f"{q.id}: explanation too short"
        assert q.look_at, f"{q.id}: no 'What to look at'"
        assert CJK.search(q.title_zh), f"{q.id}: no Chinese title"
        assert len(q.try_next) <= 2
        for n, item in enumerate(q.try_next, 1):
            assert item.startswith(f"{n}: "), f"{q.id}: variation {n} must start with its key"
    # the roadmap's topics are all there
    assert set(EXPERIMENTS) == {q.experiment for q in questions}
    # explanations name the llama.cpp functions a learner can look up
    cited = sum("`llama_" in q.body for q in questions)
    assert cited >= 10


def test_readme_learning_path_lists_every_question() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learning path", 1)[1].split("\n## ", 1)[0]
    for q in load_questions():
        assert f"`{q.number}` `{q.id}`" in section and q.title_zh in section, q.id
    for shot in ("learn.svg", "learn-kv-cache.svg", "learn-next-token.svg"):
        assert f"screenshots/{shot}" in section
        assert (Path(__file__).resolve().parents[1] / "screenshots" / shot).exists()


def test_find_by_id_number_or_prefix() -> None:
    assert find("s2-kv-cache").number == "2.1"
    assert find("2.1").id == "s2-kv-cache"
    assert find("s4-mm").id == "s4-mmap"
    with pytest.raises(KeyError, match="no question"):
        find("s4")  # ambiguous


def test_a_broken_question_file_is_reported() -> None:
    with pytest.raises(LearnFileError, match="missing front matter"):
        _parse("x.md", "no front matter")
    with pytest.raises(LearnFileError, match="missing experiment"):
        _parse("x.md", "---\nid: a\nstage: 1\ntitle: t\ntitle_zh: 中\n---\nbody")


def test_cli_lists_the_questions(tmp_path: Path) -> None:
    out = run("learn", "--list", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2.1  s2-kv-cache" in out.stdout and "模型如何載入到 RAM" in out.stdout
    data = json.loads(run("learn", "--list", "--json", home=tmp_path).stdout)
    assert [d["id"] for d in data] == [q.id for q in load_questions()]
    bad = run("learn", "no-such-question", home=tmp_path)
    assert bad.returncode == 2 and "no question 'no-such-question'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


# -- the screen ----------------------------------------------------------------------------------------


def _app(smollm2_path: Path, **kw):
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool, **kw)
    app.learn_quick = True
    return app, pool


async def test_learn_screen_opens_at_a_question_and_enter_runs_it(smollm2_path: Path) -> None:
    app, pool = _app(smollm2_path, learn="s2-kv-cache")
    async with app.run_test(size=(140, 44)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LearnScreen) and app.screen.query(Markdown), timeout=30)
        await pilot.pause()
        screen = app.screen
        assert screen.current == "s2-kv-cache"
        options = screen.query_one(OptionList)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any("2.1 How does llama_decode store the KV cache?" in t and "KV cache" in t for t in labels)
        assert any("深入 KV cache 與 context 管理" in t for t in labels)  # the stage, in Chinese too
        assert "llama_decode" in screen.query_one(Markdown).source
        await pilot.press("up")  # 1.4
        assert screen.current == "s1-prompt"
        await pilot.press("down", "enter")
        await until(pilot, lambda: type(app.screen).__name__ == "GuessScreen")  # predict first (or not: esc)
        await pilot.press("escape")
        await until(pilot, lambda: "s2-kv-cache" in app.learn_findings, timeout=60)
        assert not isinstance(app.screen, LearnScreen)
        assert "-learn" in app.query_one("#kv").classes
        assert "Learn 2.1" in str(app.query_one("#learnbar").content)
        # a variation is one key away, from the dashboard
        await pilot.press("1")
        await until(pilot, lambda: app.learn_findings["s2-kv-cache"].variant == 1, timeout=60)
        assert app.learn_findings["s2-kv-cache"].values["type"] == "q8_0/q8_0"
        # L goes back to the question, which shows the last run
        await pilot.press("L")
        await until(pilot, lambda: isinstance(app.screen, LearnScreen) and app.screen.query(Markdown))
        await pilot.pause()
        assert "Last run" in app.screen.query_one(Markdown).source
    pool.close_all()


# -- every experiment, on the real model ---------------------------------------------------------------


def panel_text(app, selector: str) -> str:
    return "".join(text for line in app.query_one(selector)._build(80) for text, _cls in line)


async def experiments(smollm2_path: Path, *runs, **kw) -> None:
    """Run (question, variant, check) in turn in one real app; ``check(app, finding)`` asserts."""
    app, pool = _app(smollm2_path, **kw)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: app.controller is not None, timeout=30)
            for question, variant, check in runs:
                finding = await run_experiment(app, question, variant)
                assert finding is not None, str(app.query_one("#learnbar").content)
                await pilot.pause()
                check(app, finding)
    finally:
        pool.close_all()


def marked(widget) -> bool:
    return "-learn" in widget.classes and str(widget.border_subtitle).startswith("★")


async def test_load_lands_on_the_anatomy(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert isinstance(app.screen, AnatomyScreen)
        assert f.values["n_tensors"] == len(app.screen.anatomy.tensors) > 100
        assert f.values["file_size"] == smollm2_path.stat().st_size
        assert marked(app.screen.query_one("#summary"))

    await experiments(smollm2_path, ("s1-load", 0, check))


async def test_tokens_counts_bytes_for_chinese_and_emoji(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        assert isinstance(app.screen, TokenizerScreen)
        text = "The capital of France is Paris. 你好 👋"
        assert f.values["n_tokens"] == len(app.engine.tokenize(text))
        assert f.values["n_other"] >= 3 and f.values["n_english"] + f.values["n_other"] == f.values["n_tokens"]
        assert marked(app.screen.query_one("#chips"))
        steps = f.values["bpe_steps"]  # the merges, replayed, end on the tokenizer's own pieces
        pieces = [app.engine.piece(t).decode() for t in app.engine.tokenize(f.values["bpe_word"], add_bos=False)]
        assert steps[-1].replace("␣", " ").split(" ", 1)[-1] == " ".join(pieces).split(" ", 1)[-1]
        assert f"in {len(steps) - 1} merges" in f.headline

    def check1(app, f) -> None:
        assert f.values["n_control"] == 1 and f.values["n_plain"] > f.values["n_special_parse"]

    await experiments(smollm2_path, ("s1-tokens", 0, check0), ("s1-tokens", 1, check1))


async def test_next_token_greedy_step_has_no_draw(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        assert app.current.pending is not None and app.step_mode  # paused in step mode, the step not yet accepted
        assert f.values["draw"] is None and f.values["rank"] == 1
        assert app.current.pending.trace.draw is None
        assert "greedy" in panel_text(app, "#trace") or "no random draw" in str(app.query_one("#trace").border_subtitle)
        assert marked(app.query_one("#hist")) and marked(app.query_one("#trace"))

    def check1(app, f) -> None:
        assert f.values["draw"] is not None and 0.0 <= f.values["draw"] < 1.0

    await experiments(smollm2_path, ("s1-next-token", 0, check0), ("s1-next-token", 1, check1))


async def test_prompt_form_compares_four_forms(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        assert set(f.values["top"]) == {"with BOS", "without BOS", "no trailing space", "trailing space"}
        assert f.values["top"]["no trailing space"] != f.values["top"]["trailing space"]
        table = app.screen.query_one("#compare", DataTable)
        assert table.row_count == 4 and marked(table)

    def check1(app, f) -> None:
        assert f.values["chat"] and "<|im_start|>user" in app.query_one("#stream")._tokens[0].text

    await experiments(smollm2_path, ("s1-prompt", 0, check0), ("s1-prompt", 2, check1))


async def test_kv_panel_shows_the_engines_bytes(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        kv = app.engine.kv_layout()
        n_past = app.engine.n_past
        assert f.values["used"] == kv.used(n_past) and f.values["n_past"] == n_past > 0
        text = panel_text(app, "#kv")
        assert f"{n_past:,} / {app.engine.n_ctx:,} cells" in text  # the panel counts what the cache holds
        assert human_bytes(kv.used(n_past)) in text and human_bytes(kv.bytes_per_token) in text
        assert marked(app.query_one("#kv"))

    def check_q8(app, f) -> None:
        assert app.engine.settings.type_k == "q8_0"
        assert 0.45 < f.values["bytes_per_token"] / f.values["base"] < 0.6

    await experiments(smollm2_path, ("s2-kv-cache", 0, check), ("s2-kv-cache", 1, check_q8))


async def test_new_tokens_reuses_the_cache(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert f.values["reused"] > 20 and 0 < f.values["evaluated"] < f.values["reused"]
        assert f"reused {f.values['reused']:,}" in app.query_one("#status").text
        assert any(f"reused {f.values['reused']:,}" in t for t in [panel_text(app, "#kv")])

    await experiments(smollm2_path, ("s2-new-tokens", 0, check))


async def test_long_context_is_refused_with_the_guards_numbers(smollm2_path: Path) -> None:
    seen: dict[str, int] = {}

    def check0(app, f) -> None:
        kv, _compute = memory.estimate_bytes(app.engine.dims, 4_000_000, app.engine.settings)
        assert f.values["kv_bytes"] == kv
        if f.values["message"] is not None:  # machines with < ~90 GiB free
            assert "largest n_ctx that fits" in f.values["message"] and 0 < f.values["largest"] < 4_000_000
        assert marked(app.query_one("#kv"))
        seen["f16"] = f.values["largest"]

    def check1(app, f) -> None:
        assert f.values["cache"] == "q8_0" and f.values["largest"] >= seen["f16"]
        assert app.engine.settings.type_k == "f16"  # the estimate left the context alone

    await experiments(smollm2_path, ("s2-long-context", 0, check0), ("s2-long-context", 1, check1))


async def test_shift_records_a_shift_event(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        assert app.engine.n_ctx == 256 and f.values["shifts"] >= 1 and f.values["steps"] > 256
        assert f.values["first_shift"] == app.current.shifts[0]
        assert "shifted ×" in panel_text(app, "#kv")

    def check1(app, f) -> None:
        assert f.values["stop_reason"] == "context_full" and f.values["shifts"] == 0 and f.values["steps"] < 256

    await experiments(smollm2_path, ("s2-shift-rope", 0, check0), ("s2-shift-rope", 1, check1))


async def test_samplers_side_by_side(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        runs = {r.preset: r for r in f.values["runs"]}
        assert list(runs) == ["greedy", "precise", "balanced", "wild"]
        assert runs["greedy"].draws == 0 and runs["greedy"].rank_mean == 1.0
        assert runs["wild"].draws == runs["wild"].n_tokens > 0
        assert [s.name for s in runs["balanced"].stages][-1] == "dist"
        assert isinstance(app.screen, ResultsScreen) and app.screen.query_one(DataTable).row_count == 4

    await experiments(smollm2_path, ("s3-samplers", 0, check))


async def test_stories_precise_vs_wild(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        precise, wild = f.values["runs"]
        assert (precise.preset, wild.preset) == ("precise", "wild")
        assert precise.text != wild.text and wild.rank_mean > precise.rank_mean
        table = app.screen.query_one(DataTable)
        kept = table.get_cell_at((0, len(table.columns) - 1))
        assert kept.plain.split("\n")[0].startswith(precise.stages[0].name)  # a stage per line
        assert kept.plain.count("\n") == len(precise.stages) - 1 and "␊" not in kept.plain

    await experiments(smollm2_path, ("s3-stories", 0, check))


async def test_quant_types_table(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert abs(f.values["bits_per_weight"]["Q4_1"] - 5.0) < 0.01  # 20 bytes per 32 weights
        assert abs(f.values["bits_per_weight"]["Q8_0"] - 8.5) < 0.01  # 34 bytes per 32 weights
        assert marked(app.screen.query_one("#types"))

    await experiments(smollm2_path, ("s4-quant-types", 0, check))


async def test_ptq_compare_in_the_quant_lab(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert isinstance(app.screen, QuantLab)
        kl = {Path(p).stem.split(".")[-1]: k for p, k, _agree in f.values["scores"][1:]}
        assert kl["Q8_0"] < kl["Q4_0"]
        assert app.screen.query_one("#scores", DataTable).row_count == len(f.values["scores"])

    await experiments(smollm2_path, ("s4-ptq", 0, check))


async def test_threads_in_the_perf_lab(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert type(app.screen).__name__ == "ResultsScreen"  # repeated runs: median and spread (not the lab's one)
        assert [t for t, _pp, _tg in f.values["rows"]][0] == 1 and all(tg > 0 for _t, _pp, tg in f.values["rows"])

    await experiments(smollm2_path, ("s4-threads", 0, check))


async def test_gpu_is_said_plainly(smollm2_path: Path) -> None:
    from tui.engine.binding import supports_gpu_offload
    def check(app, f) -> None:
        assert f.values["gpu"] == supports_gpu_offload()
        notes = str(app.screen.query_one("#notes-text").content)
        assert ("YES" if f.values["gpu"] else "NO") in notes and f.values["ratio"] > 0
        assert "runs per row: median (slowest–fastest)" in notes  # repeated, with their spread
        assert ("no measurable difference" in f.headline) == f.values["overlap"]

    await experiments(smollm2_path, ("s4-gpu", 0, check))


async def test_mmap_cold_and_warm(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        assert all(f.values[k] > 0 for k in ("mmap_cold", "mmap_warm", "read_cold", "read_warm"))
        assert app.screen.query_one(DataTable).row_count == 2

    def check1(app, f) -> None:
        assert isinstance(app.screen, ModelPicker) and f.values["n_models"] == 1

    await experiments(smollm2_path, ("s4-mmap", 0, check0), ("s4-mmap", 1, check1))


async def test_chat_three_turns_reuse_more_each_time(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        first, second, third = f.values["reused"]
        assert first == 0 < second < third
        assert "What is my name?" in app.query_one("#stream")._tokens[0].text

    await experiments(smollm2_path, ("s5-chat", 0, check))


async def test_chat_recorded_keeps_the_conversation(smollm2_path: Path) -> None:
    from tui.record import read_session
    def check(app, f) -> None:
        assert len(f.values["files"]) == 2 and not app.recorder.on  # recording is back to what it was
        last = read_session(f.values["files"][-1])
        text = "".join(app.engine.piece(t).decode("utf-8", "replace") for t in last.header["prompt_tokens"])
        assert "My name is Ada" in text and "And what is a dog?" in text

    await experiments(smollm2_path, ("s5-chat", 1, check))


async def test_the_tree_experiment_branches_where_the_model_hesitated(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        v = f.values
        k, branches, switched = v["fork"], v["branches"], v["switched"]
        assert [(b["id"], b["parent"], b["fork"]) for b in branches] == [(0, None, 0), (1, 0, k), (2, 0, k)]
        assert v["distinct"] == 3 and len({b["text"] for b in branches}) == 3
        assert max(branches, key=lambda b: b["logprob"])["id"] == v["most_likely"]
        n_prompt = len(app.engine.tokenize("The dragon opened its eyes and"))
        for sw in switched:  # the prompt and the steps before the fork were cached: only the last is decoded again
            assert sw.reused == n_prompt + k - 1 and sw.evaluated == 1
            assert sw.cells_saved >= sw.reused  # held once for all the branches that share them
        assert f"reused {switched[0].reused} cached cells" in f.headline
        assert isinstance(app.screen, ResultsScreen) and app.screen.query_one(DataTable).row_count == 3

    await experiments(smollm2_path, ("s3-tree", 0, check))
