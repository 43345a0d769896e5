"""Quantization and performance labs on the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui.engine import EngineSettings, Generation
from tui.engine.gguf_header import read_header
from tui.engine.lab import compare_models, quantize_model
from tui.sampling import Chain, Greedy


@pytest.fixture(scope="module")
def variants(smollm2_path: Path, tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("lab")
    f16 = quantize_model(smollm2_path, "f16", d / "smol.F16.gguf")
    out = {"f16": f16.output}
    for q in ("q8_0", "q4_0"):
        out[q] = quantize_model(f16.output, q, d / f"smol.{q.upper()}.gguf").output
    return out


def test_quantized_models_are_valid_and_generate(variants: dict[str, str]) -> None:
    from tui.engine.llama import LlamaEngine

    for qtype, path in variants.items():
        header = read_header(path)  # a complete, valid GGUF
        assert header.tensors
        with LlamaEngine(path, EngineSettings(n_ctx=256)) as eng:
            assert eng.info.quant.lower().startswith(qtype.split("_")[0]) or qtype == "f16"
            steps = list(Generation(eng, eng.tokenize("Once upon a time"), Chain([Greedy()]), max_tokens=8))
            assert len(steps) == 8 and "".join(s.text for s in steps).strip()


def test_compare_orders_quantizations_and_self_is_zero(variants: dict[str, str]) -> None:
    result = compare_models([variants["f16"], variants["f16"], variants["q8_0"], variants["q4_0"]], max_tokens=160,
                            gen_tokens=4)
    ref, self_, q8, q4 = result.scores
    assert self_.kl_mean == pytest.approx(0.0, abs=1e-9) and self_.top1_agreement == 1.0
    assert 0 < q8.kl_mean < q4.kl_mean
    assert q8.top1_agreement > q4.top1_agreement
    assert q8.bits_per_weight > q4.bits_per_weight and q8.file_size > q4.file_size
    assert ref.perplexity > 1 and all(s.prompt_tps > 0 and s.gen_tps > 0 for s in result.scores)


def run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMTUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_bench_json_has_pp_and_tg_per_configuration(tmp_path: Path) -> None:
    out = run("bench", "--threads", "1,2", "--pp", "64", "--tg", "8", "--reps", "2", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["threads"] for r in data["rows"]] == [1, 2]
    for r in data["rows"]:
        assert r["pp_tps"] > 0 and r["tg_tps"] > 0 and r["load_cold_ms"] > 0 and r["bandwidth_gbs"] > 0
    assert data["gpu_offload"] in (True, False)


def _rss_split() -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of this process, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"]


def test_mmap_off_reads_the_whole_file_mmap_on_maps_it(smollm2_path: Path) -> None:
    """mmap off: the weights are read into the process's own (anonymous) memory. mmap on: they are
    mapped from the page cache (llama.cpp prefetches the mapping, so they show as file-backed pages:
    shared, reclaimable, and a second load finds them already there)."""
    from tui.engine.lab import drop_page_cache
    from tui.engine.llama import LlamaEngine

    size = smollm2_path.stat().st_size
    drop_page_cache(smollm2_path)
    anon0, file0 = _rss_split()
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256, use_mmap=True)):
        anon1, file1 = _rss_split()
    mapped_anon, mapped_file = anon1 - anon0, file1 - file0
    anon0, file0 = _rss_split()
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256, use_mmap=False)):
        anon1, _ = _rss_split()
    read_anon = anon1 - anon0
    assert read_anon > 0.7 * size, (read_anon, size)
    assert read_anon - mapped_anon > 0.6 * size, (read_anon, mapped_anon)
    assert mapped_file > 0.5 * size, (mapped_file, size)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--type", "q9_9"], "unsupported --type 'q9_9'"),
        (["--type", "q8_0", "--out", "{existing}"], "already exists (use --force to overwrite)"),
        (["--type", "q8_0", "--out", "{unwritable}"], "cannot create the output directory"),
    ],
)
def test_quantize_bad_inputs_are_one_error(tmp_path: Path, args: list[str], needle: str) -> None:
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"x")
    (tmp_path / "afile").write_text("x")
    args = [a.format(existing=existing, unwritable=tmp_path / "afile" / "sub" / "o.gguf") for a in args]
    out = run("quantize", "smol", *args, home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr


def test_quantize_non_gguf_input_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("not weights")
    out = run("quantize", str(bad), "--type", "q8_0", home=tmp_path)
    assert out.returncode == 2 and "not a GGUF file" in out.stderr and out.stderr.count("\n") == 1


async def test_quant_and_perf_lab_screens(smollm2_path: Path, tmp_path: Path, monkeypatch) -> None:
    from textual.widgets import DataTable

    from tests.conftest import llama_pool, real_app, until
    from tui.app.screens.labs import PerfLab, QuantLab
    from tui.app.widgets.token_stream import TokenStream
    from tui.engine.models import describe_file

    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool, record="")  # recording on
    async with app.run_test(size=(140, 45)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        app.query_one(TokenStream).focus()
        await pilot.press("Q")
        await until(pilot, lambda: isinstance(app.screen, QuantLab))
        lab = app.screen
        await pilot.click("#make")
        await until(pilot, lambda: "Q2_K" in str(lab.query_one("#status").render()), timeout=120)
        assert (tmp_path / "data" / "models" / "SmolLM2-135M-Instruct.Q4_0.gguf").exists()
        await pilot.click("#compare")
        await until(pilot, lambda: lab.result is not None, timeout=240)
        table = lab.query_one("#scores", DataTable)
        assert table.row_count == 6
        names = [str(table.get_row_at(i)[0]) for i in range(6)]
        assert names[0].endswith("F16") and names[-1] == "SmolLM2-135M-Instruct.Q4_1"
        lab.show_position(5)
        assert lab.query_one("#flip", DataTable).row_count == 5
        await pilot.click("#save")
        assert list((tmp_path / "data" / "labs").glob("*-quant.md"))
        await pilot.press("escape")
        await pilot.press("B")
        await until(pilot, lambda: isinstance(app.screen, PerfLab))
        perf = app.screen
        await pilot.click("#run")
        await until(pilot, lambda: bool(perf.rows), timeout=300)
        rows = perf.query_one("#rows", DataTable)
        assert rows.row_count == len(perf.rows) >= 4
        assert any(not r.mmap for r in perf.rows) and all(r.tg_tps > 0 for r in perf.rows)
        record_path = app.current.record_path
    pool.close_all()
    # with recording on, both labs' results are part of the session recording (nothing generated yet:
    # a session of its own), readable like any other
    from tui.record import read_session

    session = read_session(record_path)
    labs = {e["lab"]: e["result"] for e in session.events if e["kind"] == "lab"}
    assert set(labs) == {"quant", "perf"} and not session.problems
    assert len(labs["quant"]["models"]) == 6 and len(labs["perf"]["rows"]) == len(perf.rows)
