"""Learn mode without the dashboard: ``llmtui learn QUESTION --run`` and the :class:`HeadlessHost` behind it,
on the real SmolLM2 (shortened experiments). The figures it prints come from the run, not from constants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run
from tui.engine import EngineSettings
from tui.learn import find
from tui.learn.headless import HeadlessHost, report, report_lines
from tui.learn.headless_views import QUANT_LAB_TYPES, QuantLab
from tui.learn.host import LearnError
from tui.run import Phase
from tui.safe_text import json_text, piece_label
from tui.sampling.presets import BUILTIN_PRESETS, load_presets
from tui.units import human_bytes

# -- the command line --------------------------------------------------------------------------------------


def test_cli_kv_cache_headline_is_derived_from_the_run(tmp_path: Path, engine) -> None:
    out = run("learn", "2.1", "--run", "--json", "--quick", "--n-ctx", "768", "--guess", "100", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    mib = data["values"]["bytes_per_token"] * 8192 / 2**20  # predict, then run: the guess beside the measurement
    assert data["prediction"].startswith(f"you guessed 100 MiB; measured {mib:g} MiB — ✗ off by {mib - 100:g}")
    assert (data["question"], data["number"], data["variant"]) == ("s2-kv-cache", "2.1", 0)
    v = data["values"]
    # the cells: the prompt as the model reads it, plus the generated tokens the cache holds (the last drawn
    # one is decoded only by the next step)
    assert v["n_prompt"] == len(engine.tokenize("Once upon a time"))
    assert 0 < v["generated"] <= 12 and v["generated_in_cache"] in (v["generated"] - 1, v["generated"])
    assert v["n_past"] == v["n_prompt"] + v["generated_in_cache"]
    # bytes per cell from the model's dimensions: K and V, every layer, every KV head, f16 (2 bytes) each
    info = engine.info
    per_token = 2 * info.n_layer * info.n_head_kv * (info.n_embd // info.n_head) * 2
    assert v["bytes_per_token"] == per_token == engine.kv_layout().bytes_per_token
    assert v["used"] == v["n_past"] * per_token and v["n_ctx"] == 768  # the context this run was given
    headline = data["headline"]
    assert headline.startswith(f"{v['n_past']} cells ({v['n_prompt']} prompt + {v['generated_in_cache']} ")
    assert f"× {human_bytes(per_token)} = {human_bytes(v['used'])} used" in headline and "n_ctx 768" in headline
    assert data["marks"] == [{"target": "kv", "part": None,
                              "text": f"{human_bytes(v['used'])} = {v['n_past']} × {human_bytes(per_token)}"}]


def test_cli_resamples_the_pending_step_with_another_preset(tmp_path: Path, engine) -> None:
    out = run("learn", "1.3", "--run", "--variant", "2", "--json", "--quick", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["variant"] == 2 and data["number"] == "1.3"
    v = data["values"]
    engine.clear()
    engine.decode(engine.tokenize("The capital of France is"))
    greedy = int(engine.logits().argmax())
    engine.clear()
    assert v["greedy_token"] == greedy  # step mode paused at the model's own first step (greedy)
    assert 0.0 <= v["draw"] < 1.0 and v["draws"] >= 1
    assert piece_label(engine.piece(greedy)) in data["headline"]
    # the re-sample went through the controller (same logits, no new decode): the run said so for each draw
    resampled = [n["message"] for n in data["notices"] if n["message"].startswith("re-sampled step 0 with wild")]
    assert len(resampled) == v["draws"]
    assert [m["target"] for m in data["marks"]] == ["trace", "hist"]


def test_cli_refusals_are_one_line(tmp_path: Path) -> None:
    for args, said in ((("nope", "--run"), "no question 'nope'"),
                       (("1.3", "--run", "--variant", "5"), "1.3 has no variation 5"),
                       (("2.1", "--variant", "1"), "--variant needs --run"),
                       (("--run",), "--run needs a QUESTION")):
        out = run("learn", *args, home=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert said in out.stderr and len(out.stderr.strip().splitlines()) == 1 and not out.stdout, args


def test_headless_modules_do_not_import_textual() -> None:
    code = ("import sys, tui.learn.headless, tui.learn.headless_views, tui.cli.dashboard; "
            "print('textual' in sys.modules, 'rich' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


# -- the host itself, in process: several experiments on one model -----------------------------------------------


async def test_headless_host_runs_experiments_as_the_dashboard_does(smollm2_path: Path, tmp_path: Path) -> None:
    from tui.engine.models import describe_file
    from tui.record import read_session

    entries = [describe_file(smollm2_path, source="embedded")]
    host = HeadlessHost.load(smollm2_path, EngineSettings(n_ctx=512, seed=1), preset=BUILTIN_PRESETS["balanced"],
                             catalog=load_presets(None), discover=lambda: entries, quick=True)
    try:
        # step mode: the run stays paused at its first pending step
        f = await host.run_question(find("s1-next-token"))
        now = host.current()
        assert now.phase is Phase.PAUSED and now.pending is not None and now.pending.token == f.values["token"]
        assert f.values["draw"] is None and f.values["rank"] == 1
        assert [m[0] for m in host.marks] == ["hist", "trace"]

        # the next run stops it first; use_settings recreates the context (q8_0 cache)
        question = find("s2-kv-cache")
        f = await host.run_question(question, 1)
        now = host.current()
        assert now.phase is Phase.STOPPED and now.n_prompt == f.values["n_prompt"] and now.pending is None
        assert host.engine.settings.type_k == "q8_0" and f.values["type"] == "q8_0/q8_0"
        assert 0.45 < f.values["bytes_per_token"] / f.values["base"] < 0.6
        data = json.loads(json_text(report(host, question, f)))
        assert data["values"]["n_past"] == host.engine.n_past and data["marks"][0]["target"] == "kv"
        lines = report_lines(host, question, f)
        assert lines[0].startswith("Learn 2.1 ") and "variation 1" in lines[0] and lines[1] == f"headline: {f.headline}"
        assert f"  n_past: {host.engine.n_past}" in lines and "marks:" in lines

        # the tokenizer view: what the screen shows, as tables
        question = find("s1-tokens")
        f = await host.run_question(question, 1)
        assert f.values["n_control"] == 1 and f.values["n_plain"] > f.values["n_special_parse"]
        assert host.marks[0][:2] == ("tokenizer", "#chips")
        tokens, compare = report(host, question, f)["tables"]
        assert len(tokens["rows"]) == f.values["n_special_parse"] and len(compare["rows"]) == 4
        assert tokens["rows"][0][1:] == ["<|im_start|>", "12", "BOS"]  # SmolLM2's BOS is <|im_start|>

        # chat and recording: a session file per turn, recording back off after
        f = await host.run_question(find("s5-chat"), 1)
        assert len(f.values["files"]) == 2 and all(Path(p).exists() for p in f.values["files"])
        assert not await host.recording(False) and host.chat_turns() == 5  # system + 2 × (user, assistant)
        header = read_session(f.values["files"][-1]).header
        prompt = "".join(host.engine.piece(t).decode("utf-8", "replace") for t in header["prompt_tokens"])
        assert "My name is Ada" in prompt and "And what is a dog?" in prompt  # the whole conversation

        # a remote server's view (llmtui's own server on this engine, over HTTP) against the full distribution
        f = await host.run_question(find("s5-remote"))
        v = f.values
        assert v["k"] == 10 and v["n_vocab"] == 49152  # our server's logprobs cap, the model's vocabulary
        assert 0 < v["covered"] < 1 and 0 < v["entropy_bound_bits"] < v["entropy_bits"]  # a bound, and below
        assert v["text"] and v["text"] == v["greedy_here"]  # the server's greedy text is the engine's
        assert f"{v['covered']:.1%}" in f.headline and host.views[-1].tables()[0].rows[2][1].startswith("≥")
        f = await host.run_question(find("s5-remote"), 1)
        assert f.values["requests"] == 6 and len(f.values["reused"]) == 6  # quick: 6 tokens, one request each
        assert f.values["same_text"] or f.values["retokenized_at"] is not None  # equal, or it says where not

        # the model picker's figures (a headless run cannot pick one)
        f = await host.run_question(find("s1-load"), 1)
        assert (f.values["n_models"], f.values["loaded"]) == (1, 1)
        assert host.views[0].name == "models" and host.views[0].tables()[0].rows[0][-1] == "loaded"

        with pytest.raises(LearnError, match="no variation 3"):
            await host.run_question(find("s1-load"), 3)
    finally:
        await host.aclose()


async def test_lab_views_report_what_stopped_them(tmp_path: Path) -> None:
    from tui.app.screens.labs import QuantLab as QuantLabScreen

    assert QUANT_LAB_TYPES == QuantLabScreen.TYPES  # the same variants as the screen makes

    lab = QuantLab(str(tmp_path / "model.Q4_1.gguf"), lambda job: job(), tmp_path)
    assert not lab.variants_exist() and await lab.compare() is None and lab.tables() == []
