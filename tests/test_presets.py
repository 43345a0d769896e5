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


# -- every sampler is declared once, on its class -------------------------------------------------------


def _sampler_classes() -> list[type]:
    from tui.sampling import samplers
    from tui.sampling.base import Sampler

    return [c for c in vars(samplers).values()
            if isinstance(c, type) and issubclass(c, Sampler) and c.__module__.startswith(samplers.__name__ + ".")]


def test_every_sampler_class_is_registered_with_its_declarations() -> None:
    from tui.sampling.presets import SAMPLER_TYPES
    from tui.sampling.samplers import SAMPLERS

    assert sorted(SAMPLERS) == sorted(c.name for c in _sampler_classes())
    assert list(SAMPLER_TYPES) == list(SAMPLERS)
    for name, t in SAMPLER_TYPES.items():
        cls = SAMPLERS[name]
        assert t.params is cls.schema and t.help == cls.help and t.help
        assert (t.selects, t.seeded) == (cls.selects, cls.seeded)
        for key, p in cls.schema.items():
            assert p.kind in (int, float, list, dict), (name, key)
            assert p.lo is None or p.hi is None or p.lo <= p.default <= p.hi or p.default == -1, (name, key)


def test_constructor_defaults_are_the_declared_ones() -> None:
    """A class built without arguments is the sampler a preset gets without parameters."""
    import inspect

    def plain(default):  # an immutable default stands for the declared list; None for an empty table
        return list(default) if isinstance(default, tuple) else {} if default is None else default

    for cls in _sampler_classes():
        sig = inspect.signature(cls.__init__).parameters
        for key, p in cls.schema.items():
            assert key in sig, f"{cls.name}: the constructor takes no {key!r}"
            assert plain(sig[key].default) == p.default, (cls.name, key, sig[key].default, p.default)


def test_native_declarations_match_llama_cpp_signatures() -> None:
    from tui.engine.binding import ll

    for cls in _sampler_classes():
        assert cls.native is not None, cls.name
        fn = getattr(ll, f"llama_sampler_init_{cls.native.init}")
        assert len(fn.argtypes) == len(cls.native.args), cls.name
        for arg in cls.native.args:
            inner = arg[4:-1] if arg.startswith("len(") else arg
            known = inner in cls.schema or inner in ("vocab", "n_vocab") or (inner == "seed" and cls.seeded)
            assert known, f"{cls.name}: native argument {arg!r} is neither a parameter nor the run's"
        assert not cls.seeded or "seed" in cls.native.args, cls.name


def test_native_specs_resolve_the_context_size_and_seed() -> None:
    ctx = BuildContext(n_vocab=1000, seed=77, n_ctx=333)
    preset = BUILTIN_PRESETS["creative"].with_param("penalties", "last_n", -1).with_param("dry", "penalty_last_n", -1)
    specs = dict(preset.native_specs(ctx))
    assert specs["penalties"]["last_n"] == 333 and specs["dry"]["penalty_last_n"] == 333
    assert specs["xtc"]["seed"] == 77 and specs["dist"]["seed"] == 77
    assert specs["dry"]["base"] == 1.75  # a declared default fills what the preset leaves out
    chain = preset.build(ctx)
    by_name = {s.name: s for s in chain.samplers}
    assert by_name["penalties"].last_n == 333 and by_name["dry"].penalty_last_n == 333
