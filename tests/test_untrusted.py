"""Untrusted input (issue 15): arguments, config, presets, themes, model files and model output never
crash llmtui, never reach the terminal raw, and errors are one line. Fuzzed where a rule covers a
space of values (hypothesis, bounded and derandomized), one regression test per reported case."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run
from tui.cli import (
    build_parser,
    config_or_defaults,
    engine_settings,
    keymap_problems,
    main,
)
from tui.config import Config, ConfigError, load_config
from tui.engine import EngineError, EngineSettings
from tui.engine.settings import max_threads
from tui.safe_text import json_text, markdown_code, markdown_text, visible
from tui.sampling.errors import NonFiniteLogits, SamplingError
from tui.sampling.presets import (
    BUILTIN_PRESETS,
    BuildContext,
    PresetError,
    load_preset_file,
)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ESC_TEXT = "Hi \x1b]2;PWNED\x07 \x1b[2J\x9b31m \u202eevil"


# -- the sanitiser ---------------------------------------------------------------------------------------


@given(st.text())
def test_visible_leaves_no_control_character(text: str) -> None:
    shown = visible(text)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in shown)
    assert visible(shown) == shown  # idempotent: sanitising twice changes nothing
    assert json.loads(json_text({"t": text})) == {"t": text}  # JSON output: same data, nothing raw


def test_visible_shows_what_was_there() -> None:
    assert visible("a\x1b[2Jb\x07\x9b\x7f") == "a␛[2Jb␇\\x9b␡"
    assert visible("l1\nl2\t", keep="\n\t") == "l1\nl2\t"
    assert visible("caf\udce9") == "caf\\xe9"  # an undecodable byte of a command line
    assert "\x9b" not in json_text({"x": "\x9b\u202e"}) and "\u202e" not in json_text({"x": "\u202e"})


def test_markdown_escapes_html_and_markup() -> None:
    assert "<script>" not in markdown_text("<script>alert(1)</script>")
    assert markdown_text("**b** [x](y)") == "\\*\\*b\\*\\* \\[x\\](y)"
    code = markdown_code("a`b|c")
    assert code.startswith("``") and "\\|" in code and "\x1b" not in markdown_code("\x1b")


# -- command-line arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("args, flag", [
    (["generate", "hi", "--temp", "nan"], "--temp"),
    (["generate", "hi", "--top-p", "inf"], "--top-p"),
    (["generate", "hi", "--n-ctx", "1024.5"], "--n-ctx"),
    (["generate", "hi", "--seed", "abc"], "--seed"),
    (["generate", "hi", "--seed", str(2**40)], "--seed"),
    (["generate", "hi", "--threads", "100000"], "--threads"),
    (["--threads", "10000"], "--threads"),  # the dashboard: refused before a thread starts
    (["bench", "--reps", "100000"], "--reps"),
    (["serve", "--port", "70000"], "--port"),
])
def test_bad_argument_values_are_one_line_errors(args: list[str], flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and flag in err and "usage:" not in err, err


def test_threads_beyond_the_machine_never_reach_llama_cpp(tmp_path: Path) -> None:
    """--threads 100000 crashed llama.cpp (exit 139) and 10000 hung the machine: refused at the argument."""
    out = run("generate", "hi", "--threads", "100000", home=tmp_path, timeout=60)
    assert out.returncode == 2 and f"0..{max_threads()}" in out.stderr and "at most 4 per" in out.stderr, out.stderr
    with pytest.raises(EngineError, match="more than this machine"):
        EngineSettings(n_threads=max_threads() + 1)


_NUMERIC_FLAGS = ["--n-ctx", "--threads", "--threads-batch", "--batch", "--n-gpu-layers", "--seed", "--temp",
                  "--top-k", "--top-p", "--min-p", "--max-tokens", "--n-keep"]


@FUZZ
@given(flag=st.sampled_from(_NUMERIC_FLAGS),
       value=st.one_of(st.integers(-2**70, 2**70).map(str), st.floats().map(repr), st.text(max_size=12),
                       st.sampled_from(["nan", "-inf", "1e999", "0x10", " 7 ", "１２", "-0", "1_000"])))
def test_any_argument_value_parses_to_valid_settings_or_a_one_line_error(flag: str, value: str) -> None:
    """Whatever a user types for a number, argparse takes a value the engine accepts, or one line says no."""
    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args([f"{flag}={value}"])
    except SystemExit as exc:
        assert exc.code == 2 and err.getvalue().count("\n") == 1 and flag in err.getvalue(), err.getvalue()
        return
    settings_ = engine_settings(args, Config())  # raises CliError only; here it must pass
    assert settings_.threads <= max_threads()
    for name in ("temp", "top_p", "min_p"):
        v = getattr(args, name, None)
        assert v is None or math.isfinite(v)


def test_an_invalid_utf8_prompt_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "LLMTUI_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "generate", b"caf\xe9 au lait"], capture_output=True,
                         env=env, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 2 and "not valid UTF-8" in err and "0xe9" in err and err.count("\n") == 1, err


def test_the_tokenizer_refuses_text_that_is_not_utf8(engine) -> None:
    with pytest.raises(EngineError, match="not valid UTF-8"):
        engine.tokenize("caf\udce9")


# -- config files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ("models.default = 42", "models.default"),
    ('[ui]\npreset = ["x"]', "ui.preset"),
    ("[engine]\nn_ctx = nan", "n_ctx"),
    ("[engine]\nn_ctx = 1024.5", "n_ctx"),
    ('[engine]\nseed = "abc"', "seed"),
    ('[engine]\nn_gpu_layers = "all"', "n_gpu_layers"),
    ('[engine]\nuse_mmap = "no"', "use_mmap"),
    ('[engine]\nn_ctx = "big"', "n_ctx"),
    ("[engine]\nn_threads = 100000", "n_threads"),
    ('[keys]\n"gen.stop" = 5', "keys"),
])
def test_config_values_of_the_wrong_type_name_the_file_and_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(body + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and field in str(err.value) and "\n" not in str(err.value)


def test_a_malformed_config_starts_the_dashboard_with_defaults_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[engine\nn_ctx = 4")
    notices: list[str] = []
    args = build_parser().parse_args(["--config", str(path)])
    assert config_or_defaults(args, notices) == Config()
    assert len(notices) == 1 and "invalid TOML" in notices[0] and "default settings" in notices[0]


def test_unknown_key_binding_ids_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[keys]\n"gen.stop" = "x"\n"gen.stpo" = "y"\n')
    problems = keymap_problems(load_config(path))
    assert len(problems) == 1 and "gen.stpo" in problems[0] and "gen.stop," not in problems[0]


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON strings are TOML basic strings (a lone surrogate makes invalid TOML)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"


_scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=6)
_CONFIG_KEYS = {"models": ["dirs", "default", "scan_hf_cache", "keep_loaded", "bogus"],
                "engine": ["n_ctx", "n_threads", "n_batch", "use_mmap", "type_k", "flash_attn", "seed", "swa_full"],
                "ui": ["theme", "preset"], "keys": ["gen.stop", "app.quit", "nope"]}


@st.composite
def toml_documents(draw, sections: dict[str, list[str]]) -> str:
    lines = []
    for section, keys in sections.items():
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))
        if not chosen and draw(st.booleans()):
            continue
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(k)} = {_toml_value(draw(_values))}" for k in chosen]
    return "\n".join(lines) + "\n"


@FUZZ
@given(doc=st.one_of(toml_documents(_CONFIG_KEYS), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_config_fuzz_loads_valid_settings_or_one_line_error(tmp_path_factory, doc: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    EngineSettings.from_dict(config.engine, strict=True)  # what the loader accepted, the engine accepts
    assert all(isinstance(v, str) for v in config.keys.values())
    assert config.model is None or isinstance(config.model, str)


# -- presets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ('[[samplers]]\ntype = "temp"\nt = nan', "samplers[0].t"),
    ('[[samplers]]\ntype = "penalties"\nrepeat = 0.0', "samplers[0].repeat"),
    ('[[samplers]]\ntype = "top_k"\nk = 99999999999', "samplers[0].k"),
    ('name = "a\\u001b[2J"\n[[samplers]]\ntype = "greedy"', "name"),
    ('[[samplers]]\ntype = "logit_bias"\nbias = { "-3" = 1.0 }', "samplers[0].bias"),
])
def test_preset_values_that_would_break_sampling_are_refused(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(body + "\n")
    with pytest.raises(PresetError) as err:
        load_preset_file(path)
    assert field in str(err.value) and str(path) in str(err.value)


_PRESET_TYPES = ["temp", "top_k", "top_p", "min_p", "penalties", "typical", "xtc", "dist", "greedy", "logit_bias",
                 "mirostat_v2", "dry", "top_n_sigma", "temp_ext", "bogus"]
_PARAM_NAMES = ["t", "k", "p", "repeat", "frequency", "presence", "last_n", "min_keep", "probability", "threshold",
                "tau", "eta", "bias", "n", "delta", "exponent", "multiplier", "sequence_breakers", "zzz"]


@st.composite
def preset_documents(draw) -> str:
    lines = [f"name = {_toml_value(draw(st.text(max_size=10)))}"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 4))):
        lines += ["[[samplers]]", f'type = "{draw(st.sampled_from(_PRESET_TYPES))}"']
        for key in draw(st.lists(st.sampled_from(_PARAM_NAMES), unique=True, max_size=3)):
            lines.append(f"{key} = {_toml_value(draw(_values))}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(doc=preset_documents(), seed=st.integers(0, 2**32 - 1))
def test_preset_fuzz_loads_a_chain_that_never_gives_nan(tmp_path_factory, doc: str, seed: int) -> None:
    path = tmp_path_factory.mktemp("preset") / "p.toml"
    path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    try:
        preset = load_preset_file(path)
    except PresetError as exc:
        assert "\n" not in str(exc)
        return
    logits = np.random.default_rng(seed).standard_normal(500).astype(np.float32) * 5
    chain = preset.build(BuildContext(n_vocab=500, seed=seed, n_ctx=256), seen=[1, 2, 3, 2, 1])
    for _ in range(3):
        trace = chain.sample(logits)
        assert math.isfinite(trace.prob) and 0 <= trace.token < 500
        chain.accept(trace.token)


def test_a_temperature_so_small_it_overflows_keeps_the_best_token() -> None:
    """C divides the logits by T and overflows to inf (then NaN probabilities); the T -> 0 limit instead."""
    chain = BUILTIN_PRESETS["balanced"].with_param("temp", "t", 1e-40).build(BuildContext(n_vocab=100, seed=1))
    logits = np.linspace(-3, 30, 100).astype(np.float32)
    trace = chain.sample(logits)
    assert trace.token == 99 and trace.prob == 1.0


@given(st.lists(st.sampled_from([0.0, 1.5, -2.0, float("nan"), float("inf"), float("-inf")]), min_size=2,
                max_size=40))
def test_non_finite_logits_are_one_error_never_a_nan_probability(values: list[float]) -> None:
    logits = np.asarray(values, dtype=np.float32)
    chain = BUILTIN_PRESETS["llama.cpp-default"].build(BuildContext(n_vocab=len(values), seed=3))
    bad = np.isnan(logits).any() or np.isposinf(logits).any() or np.isneginf(logits).all()
    try:
        trace = chain.sample(logits)
    except NonFiniteLogits as exc:
        assert bad and "NaN/inf logits" in str(exc)
        return
    except SamplingError:
        raise
    assert not bad and math.isfinite(trace.prob)


# -- themes --------------------------------------------------------------------------------------------------


def test_a_theme_with_a_number_for_a_colour_is_skipped_with_its_field(tmp_path: Path) -> None:
    from tui.app.themes import load_themes

    (tmp_path / "bad.toml").write_text('name = "bad"\nprimary = 123\n')
    (tmp_path / "good.toml").write_text('name = "good"\nprimary = "#336699"\n')
    themes = load_themes(tmp_path)
    assert [t.name for t in themes.themes] == ["good"]
    assert len(themes.errors) == 1 and "bad.toml" in themes.errors[0] and "primary" in themes.errors[0]


_THEME_KEYS = ["name", "primary", "secondary", "background", "dark", "luminosity_spread", "text_alpha", "variables",
               "bogus"]
_colours = st.sampled_from(["#336699", "red", "rgb(1,2,3)", "#ggg", "", "hsl(10,50%,50%)"])


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(_THEME_KEYS), st.one_of(_colours, _values), max_size=5))
def test_theme_fuzz_registers_or_reports(tmp_path_factory, fields: dict) -> None:
    from tui.app.themes import ThemeFileError, load_theme_file

    path = tmp_path_factory.mktemp("theme") / "t.toml"
    path.write_text("\n".join(f"{k} = {_toml_value(v)}" for k, v in fields.items()) + "\n", encoding="utf-8",
                    errors="surrogatepass")
    try:
        theme = load_theme_file(path)
    except ThemeFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert theme.name and visible(theme.name) == theme.name
    theme.to_color_system().generate()


# -- model files: names and data from a crafted or damaged GGUF ------------------------------------------------


def _patched_copy(src: Path, dst: Path, edits: list[tuple[int, bytes]]) -> Path:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        for offset, data in edits:
            fh.seek(offset)
            fh.write(data)
    return dst


@pytest.fixture(scope="module")
def crafted_models(smollm2_path: Path, tmp_path_factory) -> dict[str, Path]:
    """Three copies of SmolLM2: an ESC-laden general.name, an unknown architecture, NaN weights."""
    from tui.engine.gguf_header import read_header

    data = smollm2_path.read_bytes()
    where = tmp_path_factory.mktemp("crafted")
    # general.name: same length, so the file stays valid GGUF
    key = data.find(b"general.name")
    length = struct.unpack_from("<Q", data, key + len(b"general.name") + 4)[0]
    value_at = key + len(b"general.name") + 12
    evil = (b"\x1b]2;PWNED\x07\x1b[2J" + b"x" * length)[:length]
    arch_at = data.find(b"llama", data.find(b"general.architecture") + 20)
    # NaN into output_norm.weight (f32): every logit becomes NaN
    header = read_header(smollm2_path)
    norm = next(t for t in header.tensors if t.name == "output_norm.weight")
    nan = struct.pack("<f", float("nan")) * (norm.n_bytes // 4)
    return {
        "evil-name": _patched_copy(smollm2_path, where / "evil.gguf", [(value_at, evil)]),
        "unknown-arch": _patched_copy(smollm2_path, where / "arch.gguf", [(arch_at, b"lxama")]),
        "nan": _patched_copy(smollm2_path, where / "nan.gguf", [(header.data_offset + norm.offset, nan)]),
    }


def test_a_crafted_model_name_never_reaches_the_terminal_raw(crafted_models: dict[str, Path], tmp_path: Path) -> None:
    path = str(crafted_models["evil-name"])
    out = run("inspect", path, home=tmp_path, timeout=120)
    assert out.returncode == 0 and "\x1b" not in out.stdout and "␛]2;PWNED" in out.stdout, out.stdout[:300]
    out = run("models", "--json", path, home=tmp_path, timeout=120)  # names are file names there
    assert out.returncode == 0 and "\x1b" not in out.stdout and "evil" in out.stdout
    from tui.engine.llama import LlamaEngine

    with LlamaEngine(path, EngineSettings(n_ctx=64)) as eng:
        assert eng.info.name == "evil" and eng.info.general_name.startswith("␛]2;PWNED")


def test_an_unknown_architecture_is_named_in_the_error(crafted_models: dict[str, Path], tmp_path: Path) -> None:
    out = run("generate", "hi", "--model", str(crafted_models["unknown-arch"]), home=tmp_path, timeout=60)
    assert out.returncode == 2 and "unknown model architecture: 'lxama'" in out.stderr, out.stderr


def test_nan_logits_are_a_one_line_error_in_the_cli(crafted_models: dict[str, Path], tmp_path: Path) -> None:
    out = run("generate", "hi", "-n", "4", "--json", "--model", str(crafted_models["nan"]), home=tmp_path, timeout=60)
    assert out.returncode == 2 and "NaN/inf logits" in out.stderr and "Traceback" not in out.stderr, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 1 and "NaN/inf logits" in lines[0]["summary"]["error"]  # no step, no NaN printed


def test_nan_logits_are_a_500_with_the_reason_in_the_api(crafted_models: dict[str, Path], caplog) -> None:
    from tui.engine.llama import LlamaEngine
    from tui.engine.models import describe_file
    from tui.sampling.presets import load_presets
    from tui.server import start_local

    entry = describe_file(crafted_models["nan"])
    with LlamaEngine(entry.path, EngineSettings(n_ctx=256)) as eng:
        srv = start_local(eng, entry, catalog=load_presets(None), preset=BUILTIN_PRESETS["greedy"], seed=1, port=0)
        try:
            body = json.dumps({"model": entry.name, "prompt": "hi", "max_tokens": 4}).encode()
            req = urllib.request.Request(f"{srv.url}/completions", body, {"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=60)
            reply = json.loads(err.value.read())
            assert err.value.code == 500 and "NaN/inf logits" in reply["error"]["message"]
        finally:
            srv.stop()
    assert any("NaN/inf logits" in r.getMessage() for r in caplog.records if r.name == "llmtui.server")


async def test_nan_logits_stop_the_dashboard_run_with_the_reason(crafted_models: dict[str, Path]) -> None:
    from tests.conftest import llama_pool, real_app, until
    from tui.engine.models import describe_file

    entries = [describe_file(crafted_models["nan"])]
    app = real_app(entries, llama_pool(capacity=1))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=60)
        app.start_generation("hello")
        await until(pilot, lambda: "error" in app.current.state_text or "NaN" in app.current.state_text, timeout=30)
        await until(pilot, lambda: any("NaN/inf logits" in str(n.message) for n in app._notifications), timeout=10)
        assert app.screen is app.screen_stack[0]  # still running, nothing crashed


# -- recordings, through the CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    path = home / "rec.jsonl"
    out = run("generate", "Hello there", "-n", "6", "--preset", "greedy", "--record", str(path), home=home)
    assert out.returncode == 0, out.stderr
    return path


def test_generate_records_the_real_rss(recording: Path) -> None:
    steps = [json.loads(line) for line in recording.read_text().splitlines() if '"type":"step"' in line]
    assert steps and all(s["rss"] > 10 * 2**20 for s in steps)  # the process with a model: tens of MiB


def test_record_never_appends_to_an_existing_file(recording: Path, tmp_path: Path) -> None:
    before = recording.read_bytes()
    out = run("generate", "hi", "-n", "2", "--record", str(recording), home=tmp_path)
    assert out.returncode == 2 and "exists" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "target.jsonl")
    out = run("generate", "hi", "-n", "2", "--record", str(link), home=tmp_path)
    assert out.returncode == 2 and not (tmp_path / "target.jsonl").exists(), out.stderr
    assert recording.read_bytes() == before


def _rewrite(src: Path, dst: Path, change) -> Path:
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    dst.write_text("\n".join(json.dumps(change(o)) for o in lines) + "\n")
    return dst


def test_a_token_id_outside_the_vocabulary_never_aborts_verify(recording: Path, tmp_path: Path) -> None:
    """It made llama.cpp throw std::out_of_range: SIGABRT, exit 134."""
    def oov(o: dict) -> dict:
        if o.get("type") == "step" and o["i"] == 2:
            o["token"] = 999_999
        return o

    bad = _rewrite(recording, tmp_path / "oov.jsonl", oov)
    out = run("replay", str(bad), "--verify", home=tmp_path, timeout=120)
    assert out.returncode in (0, 1, 2) and "Traceback" not in out.stderr, (out.returncode, out.stderr)
    assert "line" in out.stderr and "999999" in out.stderr.replace(",", "")


def test_a_fork_that_fails_at_decode_exits_non_zero_with_the_reason(recording: Path, monkeypatch, capsys) -> None:
    from tui.engine.llama import LlamaEngine

    real = LlamaEngine.decode
    calls = {"n": 0}

    def failing(self, tokens, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise EngineError("llama_decode failed with code -3: injected")
        return real(self, tokens, **kw)

    monkeypatch.setattr(LlamaEngine, "decode", failing)
    rc = main(["replay", str(recording), "--fork", "2", "--max-tokens", "6",
               "--record", str(recording.parent / "fork-fail.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "injected" in err and "fork stopped" in err, err


def test_export_to_a_directory_is_one_line(recording: Path, tmp_path: Path, capsys) -> None:
    rc = main(["export", str(recording), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_single_chat_message_that_does_not_fit_suggests_what_generate_accepts(tmp_path: Path) -> None:
    out = run("generate", "word " * 200, "--chat", "--n-ctx", "128", home=tmp_path, timeout=60)
    assert out.returncode == 2 and "--n-ctx" in out.stderr and "drop-oldest-turns" not in out.stderr, out.stderr


# -- the dashboard, as the terminal sees it ---------------------------------------------------------------------


def test_a_hostile_piece_key_or_header_is_a_problem_not_a_crash(recording: Path, tmp_path: Path) -> None:
    from tui.app.screens.sessions import summarize
    from tui.record import read_session

    lines = recording.read_text().splitlines()
    long_key = json.dumps({"type": "pieces", "map": {"9" * 5000: "eA=="}})
    bad = tmp_path / "long-key.jsonl"
    bad.write_text("\n".join([lines[0], long_key, *lines[1:]]) + "\n")
    session = read_session(bad)  # int() of a 5,000-digit key raised ValueError
    assert any("not a token id" in p for p in session.problems) and session.steps
    header = json.loads(lines[0])
    for name, first_line in (("parent", json.dumps({**header, "parent": [1]})), ("deep", "[" * 100_000)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(first_line + "\n")
        assert summarize(path)["state"] == "unreadable"  # the sessions browser crashed on these


def _evil_recording(recording: Path, dst: Path) -> Path:
    def evil(o: dict) -> dict:
        if o.get("type") == "header":
            o["prompt"] = ESC_TEXT
            o["model"]["name"] = "Evil\x1b]2;PWNED-MODEL\x07"
            o["preset"]["name"] = "p\x1b[2J[/b]"
        return o

    return _rewrite(recording, dst, evil)


async def test_a_replayed_recording_shows_escape_sequences_as_text(recording: Path, tmp_path: Path) -> None:
    from tests.conftest import until
    from tui.app.app import LlmTuiApp
    from tui.app.replay import Replay
    from tui.record import read_session
    from tui.record.replay import ReplayEngine
    from tui.record.tools import preset_from
    from tui.sampling.presets import load_presets

    session = read_session(_evil_recording(recording, tmp_path / "evil.jsonl"))
    engine = ReplayEngine(session)
    app = LlmTuiApp(engine_factory=lambda: engine, model_label=f"replay · {session.header['model']['name']}",
                    settings=engine.settings, preset=preset_from(session.header["preset"], "rec"),
                    catalog=load_presets(None),
                    prompt=session.header["prompt"], replay=session, live_metrics=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, Replay) and app.current.state_text == "replay", timeout=10)
        first = app.export_screenshot()
        app.screen.goto(4)  # steps shown: the chain panel names the recorded preset and its stages
        await pilot.pause(0.3)
        stepped = app.export_screenshot()
    for screen in (first, stepped):
        assert "\x1b" not in screen and "\x9b" not in screen and "\u202e" not in screen
    assert "␛]2;PWNED" in first and "␛[2J" in stepped


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")
def test_replaying_a_hostile_recording_in_a_real_terminal_changes_nothing(recording: Path, tmp_path: Path) -> None:
    """Before: the terminal's title became PWNED-MODEL and the screen was cleared."""
    from tests.conftest import capture, tmux, wait_for

    evil = _evil_recording(recording, tmp_path / "evil.jsonl")
    session = f"llmtui-evil-{os.getpid()}"
    cmd = (f"env -u COLUMNS -u LINES LLMTUI_HOME={tmp_path} TERM=xterm-256color {sys.executable} -m tui.cli "
           f"replay {evil}; sleep 30")
    tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "40", "-c", str(Path(__file__).parents[1]), cmd)
    try:
        title = tmux("display", "-p", "-t", session, "#{pane_title}").strip()
        screen = wait_for(session, "REPLAY", timeout=60)
        time.sleep(0.5)
        assert "PWNED" not in tmux("display", "-p", "-t", session, "#{pane_title}")
        assert tmux("display", "-p", "-t", session, "#{pane_title}").strip() == title
        screen = capture(session)
        assert "␛]2;PWNED" in screen and "tokens" in screen  # shown as text, the panels intact
    finally:
        tmux("kill-session", "-t", session)
