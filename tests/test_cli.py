"""The command line, as a user runs it (subprocesses, real model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run
from tui import __version__


def test_version(tmp_path: Path) -> None:
    out = run("--version", home=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"llmtui {__version__}"


def test_generate_streams_real_text(tmp_path: Path) -> None:
    out = run("generate", "Once upon a time", "--raw", "--max-tokens", "64", "--preset", "greedy", home=tmp_path)
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert len(words) > 20 and out.stderr == ""


def test_generate_json_steps_and_summary(tmp_path: Path) -> None:
    out = run("generate", "The capital of France is", "--raw", "-n", "12", "--json", "--seed", "3", home=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert len(steps) == summary["generated_tokens"] == 12
    assert [s["index"] for s in steps] == list(range(12))
    assert [s["n_past"] for s in steps] == list(range(steps[0]["n_past"], steps[0]["n_past"] + 12))
    first = steps[0]
    assert {"token", "piece", "text", "prob", "entropy", "top", "stages", "draw", "decode_ms"} <= set(first)
    assert [st[0] for st in first["stages"]] == ["penalties", "top_k", "top_p", "min_p", "temp", "dist"]
    top = first["top"]
    assert len(top["token"]) == len(top["piece"]) == len(top["p"]) == len(top["p_after"]) == 10
    assert top["p"][0] >= top["p"][1] and top["logit"][0] >= top["logit"][1]
    assert summary["stop_reason"] == "max_tokens" and summary["preset"] == "balanced"
    assert summary["prompt_tokens"] > 0 and summary["generation_tok_per_s"] > 0
    assert "".join(s["text"] for s in steps).strip()


@pytest.mark.parametrize("kind", ["missing", "text", "truncated"])
def test_bad_model_file_is_one_line_exit_2(tmp_path: Path, smollm2_path: Path, kind: str) -> None:
    bad = tmp_path / "model.gguf"
    if kind == "text":
        bad.write_text("just some notes\n")
    elif kind == "truncated":
        bad.write_bytes(smollm2_path.read_bytes()[:40_000_000])
    out = run("generate", "hi", "--model", str(bad), home=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert str(bad) in out.stderr
    assert {"missing": "no such file", "text": "not a GGUF file", "truncated": "truncated GGUF"}[kind] in out.stderr


def test_impossible_settings_are_one_line(tmp_path: Path) -> None:
    for args in (["--n-ctx", "2"], ["--cache-type-k", "q9_9"], ["--threads", "-3"]):
        out = run("generate", "hi", *args, home=tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, (args, out.stderr)


def test_models_lists_embedded_and_bad_files(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "notes.gguf").write_text("not a model")
    out = run("models", "--json", "--models-dir", str(models), home=tmp_path)
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    emb = next(e for e in entries if e["source"] == "embedded")
    assert (emb["arch"], emb["quant"], emb["n_vocab"], emb["has_chat_template"]) == ("llama", "Q4_1", 49152, True)
    bad = next(e for e in entries if e["name"] == "notes")
    assert "not a GGUF file" in bad["error"]
