"""Presets: built-ins, user TOML files, validation that names the file and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tui.sampling.presets import (
    BUILTIN_PRESETS,
    BuildContext,
    PresetError,
    load_preset_file,
    load_presets,
    save_preset,
)

REQUIRED = {"greedy", "llama.cpp-default", "precise", "balanced", "creative", "wild", "mirostat"}


def test_builtin_presets_exist_and_sample() -> None:
    assert REQUIRED <= set(BUILTIN_PRESETS)
    lg = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 3
    for p in BUILTIN_PRESETS.values():
        chain = p.build(BuildContext(n_vocab=1000, seed=1))
        tr = chain.sample(lg)
        assert 0 <= tr.token < 1000
        assert [s.name for s in tr.stages] == [s.name for s in p.samplers]


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_user_preset_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, "story.toml", """
description = "mine"
[[samplers]]
type = "top-k"
k = 60
[[samplers]]
type = "temperature"
t = 0.9
""")
    p = load_preset_file(path)
    assert p.name == "story" and [s.name for s in p.samplers] == ["top_k", "temp", "dist"]
    saved = save_preset(p.with_param("temp", "t", 1.3), tmp_path / "out")
    again = load_preset_file(saved)
    assert again.samplers[1].params["t"] == 1.3 and again.name == "story"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("samplers = [", "invalid TOML"),
        ("[[samplers]]\ntype = 'warp'", "samplers[0].type: unknown sampler 'warp'"),
        ("[[samplers]]\ntype = 'top_k'\nkay = 3", "samplers[0]: top_k has no parameter 'kay'"),
        ("[[samplers]]\ntype = 'top_p'\np = 'high'", "samplers[0].p: expected a number"),
        ("[[samplers]]\ntype = 'top_p'\np = 1.5", "samplers[0].p: 1.5 is above the maximum 1.0"),
        ("[[samplers]]\ntype = 'dist'\n[[samplers]]\ntype = 'top_k'", "samplers[0].type: dist selects the token"),
        ("[[samplers]]\nk = 3", "samplers[0]: missing 'type'"),
        ("samplers = []", "the chain is empty"),
        ("temperature = 3", "unknown key(s) temperature"),
    ],
)
def test_bad_preset_files_name_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(PresetError) as err:
        load_preset_file(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_a_bad_file_never_hides_the_others(tmp_path: Path) -> None:
    write(tmp_path, "good.toml", "[[samplers]]\ntype = 'greedy'\n")
    write(tmp_path, "broken.toml", "[[samplers]]\ntype = 'nope'\n")
    catalog = load_presets(tmp_path)
    assert "good" in catalog.presets and REQUIRED <= set(catalog.presets)
    assert len(catalog.errors) == 1 and "broken.toml" in catalog.errors[0]


def test_reorder_like_llama_cpp_samplers_flag() -> None:
    p = BUILTIN_PRESETS["llama.cpp-default"].reordered(["temp", "top_k"])
    assert [s.name for s in p.samplers] == ["temp", "top_k", "dist"]
    assert p.samplers[1].params["k"] == 40  # parameters carried over
    with pytest.raises(PresetError, match="unknown sampler"):
        BUILTIN_PRESETS["balanced"].reordered(["top_q"])


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "LLMTUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_presets_json_and_user_errors(tmp_path: Path) -> None:
    presets_dir = tmp_path / "config" / "presets"
    presets_dir.mkdir(parents=True)
    write(presets_dir, "mine.toml", "[[samplers]]\ntype = 'min_p'\np = 0.2\n")
    write(presets_dir, "oops.toml", "[[samplers]]\ntype = 'min_p'\np = 'x'\n")
    out = run_cli("presets", "--json", home=tmp_path)
    assert out.returncode == 0
    names = [p["name"] for p in json.loads(out.stdout)]
    assert REQUIRED <= set(names) and "mine" in names
    assert "oops.toml" in out.stderr and "samplers[0].p" in out.stderr


def test_cli_unknown_preset_is_one_line(tmp_path: Path) -> None:
    out = run_cli("generate", "hi", "--preset", "nope", home=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no preset named 'nope'" in out.stderr
