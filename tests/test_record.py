"""Recordings: write, read back (even damaged), replay in the app, verify, fork, export."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from markdown_it import MarkdownIt
from textual.widgets import DataTable

from tests.conftest import make_app, ready, until
from tui.app.app import LlmTuiApp
from tui.app.screens.sessions import JumpScreen, SessionsScreen
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings
from tui.engine.controller import Controller, Finished, Resample, SetStepMode, StepEvent
from tui.engine.errors import EngineError
from tui.engine.fake import FakeEngine
from tui.record import (
    RecordError,
    RecordingExists,
    SessionFileError,
    SessionWriter,
    append_event,
    read_session,
)
from tui.record.recorder import Recorder, RecordingFailed
from tui.record.replay import ReplayEngine
from tui.record.tools import export, export_html, export_markdown, fork_prefix, verify
from tui.sampling.presets import BUILTIN_PRESETS, load_presets


def cli(*args: str, home: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMTUI_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A real SmolLM2 session: 120 steps, balanced, seed 11."""
    home = tmp_path_factory.mktemp("rec-home")
    path = home / "story.jsonl"
    out = cli("generate", "Once upon a time", "--raw", "-n", "120", "--ignore-eos", "--preset", "balanced", "--seed", "11",
              "--record", str(path), home=home)
    assert out.returncode == 0, out.stderr
    return path


def test_recording_round_trip(recorded: Path) -> None:
    s = read_session(recorded)
    assert s.problems == [] and s.complete and len(s.steps) == 120
    assert [st.index for st in s.steps] == list(range(120))
    assert s.header["preset"]["name"] == "balanced" and s.header["seed"] == 11
    assert s.header["model"]["quant"] == "Q4_1" and len(s.header["model"]["fingerprint"]) == 64
    step = s.steps[5]
    assert step.trace.top_ids.shape == (10,) and [st.name for st in step.trace.stages][0] == "penalties"
    assert all(t in s.pieces for t in step.trace.top_ids.tolist())
    assert s.footer["stop_reason"] == "max_tokens" and s.text == s.footer["text"]


def test_verify_matches_and_points_at_a_changed_token(recorded: Path, tmp_path: Path) -> None:
    out = cli("replay", str(recorded), "--verify", home=tmp_path)
    assert out.returncode == 0 and "all 120 steps match" in out.stdout
    lines = recorded.read_text().splitlines()
    for i, line in enumerate(lines):
        obj = json.loads(line)
        if obj["type"] == "step" and obj["i"] == 57:
            obj["token"] += 1
            lines[i] = json.dumps(obj)
    bad = tmp_path / "changed.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = cli("replay", str(bad), "--verify", home=tmp_path)
    assert out.returncode == 1 and "first difference at step 57 of 120" in out.stdout


async def test_replay_in_the_app_shows_what_was_live(recorded: Path) -> None:
    session = read_session(recorded)
    engine = ReplayEngine(session)
    app = LlmTuiApp(engine_factory=lambda: engine, model_label="replay", settings=engine.settings,
                    preset=BUILTIN_PRESETS["balanced"], catalog=load_presets(None), replay=session,
                    live_metrics=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.current.state_text == "replay")
        stream = app.screen.query_one(TokenStream)  # the replay screen, over the live dashboard
        footer = {b.binding.description for b in app.screen.active_bindings.values() if b.binding.show}
        assert {"Play/Pause", "Faster", "Jump", "Fork"} <= footer and not footer & {"Step mode", "Re-sample"}
        await pilot.press("right", "right", "right")
        assert app.screen.position == 3 and stream.token_count == 3
        hist = app.screen.query_one("#hist")._build(70)
        assert hist[0][0][0].startswith("step 2")
        chosen = [row for row in hist[2:] if row[0][0].startswith("▶")]
        assert chosen and session.piece(session.steps[2].token).decode().replace(" ", "␣") in chosen[0][1][0]
        await pilot.press("left")
        assert app.screen.position == 2 and stream.token_count == 2
        for _ in range(4):
            await pilot.press("plus")  # faster
        await pilot.press("space")  # play
        await until(pilot, lambda: app.screen.position == 120, timeout=20)
        assert stream.text() == session.text
        assert app.current.state_text.startswith("replay: end")
        assert app.screen.query_one("#kv")._build(40)[0][0][0].startswith(f"{4 + 120} / 2,048 cells")
        app.screen.action_jump()
        await until(pilot, lambda: isinstance(app.screen, JumpScreen) and getattr(app.focused, "id", None) == "step")
        app.screen.query_one("Input").value = "40"
        await pilot.press("enter")
        assert app.screen.position == 40 and stream.token_count == 40
        live_run = app.dashboard.model.run_id
        app.screen.query_one("#prompt").focus()  # Enter on the replay's prompt generates nothing
        await pilot.press("enter")
        assert not app.running and app.screen.position == 40 and app.dashboard.model.run_id == live_run


def test_killed_recording_reads_up_to_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    env = {**os.environ, "LLMTUI_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "generate", "Once upon a time", "--raw", "-n", "3000",
                             "--ignore-eos", "--record", str(path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b'{"type":"step"') >= 40:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    raw = path.read_bytes()
    complete_steps = sum(1 for line in raw.split(b"\n")[:-1] if line.startswith(b'{"type":"step"'))
    s = read_session(path)
    assert complete_steps >= 40
    assert len(s.steps) == complete_steps and not s.complete
    assert [st.index for st in s.steps] == list(range(complete_steps))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_garbage_files_give_clear_messages_and_keep_the_rest(recorded: Path, tmp_path: Path) -> None:
    lines = _lines(recorded)
    # truncated mid-line
    cut = tmp_path / "cut.jsonl"
    text = "\n".join(lines[:30]) + "\n" + lines[30][: len(lines[30]) // 2]
    cut.write_text(text)
    s = read_session(cut)
    assert any("line 31: truncated last line" in p for p in s.problems)
    assert len(s.steps) == sum(1 for ln in lines[:30] if ln.startswith('{"type":"step"'))
    # random bytes in the middle
    noisy = tmp_path / "noisy.jsonl"
    noisy.write_bytes("\n".join(lines[:20]).encode() + b"\n\x89\xfe\x00garbage\xff\n" + "\n".join(lines[20:]).encode() + b"\n")
    s = read_session(noisy)
    assert len(s.problems) == 1 and s.problems[0].startswith("line 21:")
    assert len(s.steps) == 120 and s.complete
    # wrong version, empty, not ours
    header = json.loads(lines[0])
    header["version"] = 99
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps(header) + "\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(SessionFileError, match="line 1: format version 99, this llmtui reads version 1"):
        read_session(wrong)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SessionFileError, match="empty file"):
        read_session(empty)
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(SessionFileError, match="not an llmtui recording"):
        read_session(other)
    # the CLI says so in one line
    out = cli("replay", str(wrong), "--verify", home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "version 99" in out.stderr


def test_unwritable_place_is_one_error_and_generation_goes_on(tmp_path: Path, monkeypatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # running as root: make the target a file's child instead
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "s.jsonl"
    else:
        target = ro / "s.jsonl"
    with pytest.raises(RecordError, match="cannot record to"):
        SessionWriter(target, {"model": {}}, lambda t: b"")
    # disk full mid-way: the steps written so far stay, the generation finishes
    events: list[object] = []
    eng = FakeEngine(EngineSettings(n_ctx=512, seed=1))
    ctl = Controller(eng, BUILTIN_PRESETS["balanced"], seed=1, emit=events.append, max_tokens=30)
    path = tmp_path / "full.jsonl"
    ctl.listeners.append(Recorder(eng, lambda header: SessionWriter(path, header, eng.piece), events.append))
    real_write = os.write
    calls = {"n": 0}

    def flaky(fd, data):
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky)
    stats = ctl.run("the cat")
    monkeypatch.setattr(os, "write", real_write)
    assert stats.generated == 30
    failed = [e for e in events if isinstance(e, RecordingFailed)]
    assert len(failed) == 1 and "No space left on device" in failed[0].message
    assert sum(isinstance(e, StepEvent) for e in events) == 30 and isinstance(events[-1], Finished)
    s = read_session(path)
    assert 0 < len(s.steps) < 30 and s.problems == []


def test_a_step_mode_resample_is_recorded_and_switching_recording_off_mid_run_finishes_the_file(
        tmp_path: Path) -> None:
    eng = FakeEngine(EngineSettings(n_ctx=512, seed=1))
    path = tmp_path / "s.jsonl"
    opened: list[str] = []

    def factory(header: dict) -> SessionWriter:
        opened.append(header["prompt"])
        return SessionWriter(path, header, eng.piece)

    recorder = Recorder(eng, factory)
    creative = BUILTIN_PRESETS["creative"]

    def emit(ev: object) -> None:  # on the run's thread, before the controller waits for a command
        if isinstance(ev, StepEvent) and ev.pending and ev.step.index == 0:
            recorder.enabled = False  # off mid-run: from the next run on
            ctl.send(Resample(creative))
            ctl.send(SetStepMode(False))

    ctl = Controller(eng, BUILTIN_PRESETS["greedy"], seed=1, emit=emit, max_tokens=5)
    ctl.listeners.append(recorder)
    stats = ctl.run("the cat", step_mode=True)
    s = read_session(path)
    assert s.complete and s.problems == [] and s.tokens == ctl.last.history and len(s.steps) == 5
    assert s.text == stats.text
    resampled = [e for e in s.events if e["kind"] == "resampled"]
    assert len(resampled) == 1 and resampled[0]["preset"]["name"] == "creative"
    assert resampled[0]["token"] == s.steps[0].token  # the accepted step is the re-sampled one
    assert s.footer["stop_reason"] == "max_tokens" and "error" not in s.footer
    ctl.run("another run")  # recording is off now: no file is opened
    assert opened == ["the cat"]


def test_fork_names_its_parent_and_verifies(recorded: Path, tmp_path: Path) -> None:
    fork = tmp_path / "fork.jsonl"
    out = cli("replay", str(recorded), "--fork", "50", "--preset", "creative", "--seed", "5", "--max-tokens", "30",
              "--record", str(fork), home=tmp_path)
    assert out.returncode == 0, out.stderr
    parent = read_session(recorded)
    s = read_session(fork)
    assert s.header["parent"] == {"file": str(recorded), "fork_step": 50}
    assert s.header["prompt_tokens"] == parent.header["prompt_tokens"] + parent.tokens[:50]
    assert s.header["preset"]["name"] == "creative" and s.header["seed"] == 5 and len(s.steps) == 30
    assert cli("replay", str(fork), "--verify", home=tmp_path).returncode == 0


def test_export_markdown_and_html(recorded: Path) -> None:
    s = read_session(recorded)
    md = export_markdown(s)
    assert md.startswith("# llmtui session") and md.count("### step ") == 120
    assert "| rank | token | logit | p before | p after |" in md
    page = export_html(s)
    assert page.startswith("<!doctype html>") and page.count('class="t"') == 120


async def test_record_toggle_sessions_browser_replay_and_delete(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    app = make_app(max_tokens=25)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("ctrl+r")
        assert app.recorder.on and "● REC" in app.query_one("#status").text
        app.start_generation("the cat sat")
        await until(pilot, lambda: app.current.state_text.startswith("stopped"))
        await until(pilot, lambda: bool(app.current.record_path))
        path = Path(app.current.record_path)
        assert path.parent == tmp_path / "data" / "sessions"
        assert len(read_session(path).steps) == 25
        app.query_one(TokenStream).focus()
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[3] == "25"
        await pilot.press("enter")  # replay it
        await until(pilot, lambda: app.current.state_text == "replay")
        await pilot.press("right", "right")
        assert app.screen.position == 2
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await pilot.press("d")
        assert path.exists()  # asks first
        await pilot.press("d")
        assert not path.exists()


async def test_fork_from_a_replay_in_the_app(recorded: Path, smollm2_path: Path, tmp_path: Path, monkeypatch) -> None:
    from tui.app.status import status_line
    from tui.engine.llama import LlamaEngine
    from tui.engine.pool import Loaded

    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    session = read_session(recorded)
    engine = ReplayEngine(session)
    app = LlmTuiApp(engine_factory=lambda: engine, model_label="replay", settings=engine.settings.with_(seed=3),
                    preset=BUILTIN_PRESETS["creative"], catalog=load_presets(None), replay=session,
                    live_metrics=False, max_tokens=20,
                    fork_load=lambda s: Loaded(LlamaEngine(smollm2_path, EngineSettings(n_ctx=1024)), True, 1.0))
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.current.state_text == "replay")
        app.screen.goto(10)
        await pilot.press("f")
        await until(pilot, lambda: app.current.state_text.startswith("stopped"), timeout=60)
        assert len(app.current.steps) == 20
        await until(pilot, lambda: bool(app.current.record_path))
        fork = read_session(app.current.record_path)
        assert fork.header["parent"] == {"file": str(recorded), "fork_step": 10}
        assert fork.header["prompt_tokens"] == session.header["prompt_tokens"] + session.tokens[:10]
        assert fork.header["preset"]["name"] == "creative" and len(fork.steps) == 20
        assert app.model_label == fork.header["model"]["name"] and app.model_label in status_line(app, app.dashboard)


def test_the_dashboard_forks_with_the_recorded_model_not_the_one_it_runs(recorded: Path, tmp_path: Path,
                                                                         monkeypatch) -> None:
    from tui.cli import build_parser
    from tui.cli.recorded import load_recorded_model, recorded_model

    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))
    session = read_session(recorded)
    args = build_parser().parse_args(["--model", str(tmp_path / "another.gguf")])
    found = recorded_model(args, session, by_arg=False)  # the dashboard's: found by the recording's fingerprint
    assert str(found.path) == session.header["model"]["path"]
    named = recorded_model(args, session)  # `llmtui replay --model`: the file named is the recorded model's
    assert named.path == str(tmp_path / "another.gguf") and not named.usable
    session.header["model"] = {**session.header["model"], "fingerprint": "0" * 16, "path": str(tmp_path / "gone")}
    with pytest.raises(EngineError, match="not available here"):
        load_recorded_model(args, session, by_arg=False)  # one line for the fork's notice


# -- recordings are untrusted input -----------------------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _changed(src: Path, dst: Path, change: Callable[[list[dict]], object]) -> Path:
    records = _records(src)
    change(records)
    return _write(dst, records)


def _step(records: list[dict], i: int) -> dict:
    return next(r for r in records if r["type"] == "step" and r["i"] == i)


def _line_of_step(records: list[dict], i: int) -> int:
    return 1 + next(n for n, r in enumerate(records) if r["type"] == "step" and r["i"] == i)


def _usable(s) -> None:
    """What every reader of a Session does works, and every token id is the model's."""
    ReplayEngine(s)
    export_markdown(s)
    export_html(s)
    n_vocab = s.header["model"]["n_vocab"]
    for step in s.steps:
        ids = [step.token, *step.trace.top_ids.tolist(), *(t for st in step.trace.stages for t in st.top_ids)]
        assert all(0 <= t < n_vocab for t in ids)
    assert all(0 <= t < n_vocab for t in [*s.pieces, *s.header["prompt_tokens"], *s.header.get("history", [])])


def test_token_ids_outside_the_vocabulary_are_skipped_with_their_line(recorded: Path, tmp_path: Path) -> None:
    n_vocab = read_session(recorded).header["model"]["n_vocab"]

    def change(records: list[dict]) -> None:
        _step(records, 10)["token"] = n_vocab
        _step(records, 11)["top"]["token"][3] = -1
        _step(records, 12)["stages"][1][4][0] = 10**12
        _step(records, 13)["top"]["token"][0] = 2**64  # too large even for numpy
        records.insert(1, {"type": "pieces", "map": {str(n_vocab + 7): "eA=="}})

    path = _changed(recorded, tmp_path / "ids.jsonl", change)
    records = _records(path)
    s = read_session(path)
    assert [st.index for st in s.steps] == [*range(10), *range(14, 120)]
    lines = [2] + [_line_of_step(records, i) for i in (10, 11, 12, 13)]
    assert [p.split(":")[0] for p in s.problems if "is not a token id" in p] == [f"line {n}" for n in lines]
    assert f"line {lines[1]}: bad step record: token: {n_vocab} is not a token id of this model (0..49,151); " \
           "skipped" in s.problems
    assert any(p.startswith(f"line {lines[2]}: bad step record: top.token[3]: -1 ") for p in s.problems)
    assert any(p.startswith(f"line {lines[3]}: bad step record: stages[1].ids[0]: 1000000000000 ") for p in s.problems)
    assert any("step 14 follows step 9: steps 10..13 missing" in p for p in s.problems)
    _usable(s)


def test_verify_of_a_token_outside_the_vocabulary_is_an_error_not_an_abort(recorded: Path, tmp_path: Path) -> None:
    """llama.cpp aborted the process (SIGABRT) on the recorded id when it printed the difference."""
    bad = _changed(recorded, tmp_path / "outside.jsonl", lambda r: _step(r, 57).__setitem__("token", 49152 + 5))
    out = cli("replay", str(bad), "--verify", home=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is not a token id of this model (0..49,151); skipped" in out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith("step 57 is missing (a damaged line): cannot verify the "
                                                         "steps after it")


HEADER_DAMAGE = [
    ("n_ctx", lambda h: h.__setitem__("n_ctx", "big"), "n_ctx: expected a whole number in 1..4,194,304, got 'big'"),
    ("engine.n_ctx", lambda h: h["engine"].__setitem__("n_ctx", "big"), "engine.n_ctx: expected a whole number"),
    ("engine", lambda h: h.__setitem__("engine", [1]), "engine: expected an object, got [1]"),
    ("model", lambda h: h.__setitem__("model", "SmolLM2"), "model: expected an object, got 'SmolLM2'"),
    ("model.n_vocab", lambda h: h["model"].pop("n_vocab"), "model.n_vocab: missing"),
    ("model.n_vocab bool", lambda h: h["model"].__setitem__("n_vocab", True), "model.n_vocab: expected a whole"),
    ("preset", lambda h: h.__setitem__("preset", None), "preset: expected an object, got None"),
    ("preset.samplers", lambda h: h["preset"].__setitem__("samplers", [{"type": "temp", "t": float("nan")}]),
     "preset: samplers[0].t: expected a finite number"),
    ("seed", lambda h: h.__setitem__("seed", "11"), "seed: expected a whole number in -1..4,294,967,295, got '11'"),
    ("seed bool", lambda h: h.__setitem__("seed", False), "seed: expected a whole number"),
    ("prompt", lambda h: h.__setitem__("prompt", 5), "prompt: expected text, got 5"),
    ("prompt_tokens", lambda h: h["prompt_tokens"].append(49152),
     "prompt_tokens[4]: 49152 is not a token id of this model (0..49,151)"),
    ("history", lambda h: h.__setitem__("history", [3, -1]), "history[1]: -1 is not a token id of this model"),
    ("parent", lambda h: h.__setitem__("parent", {"file": "x", "fork_step": "50"}), "parent.fork_step: expected"),
    ("kv", lambda h: h["kv"].__setitem__("type_k", "q1"), "kv.type_k: expected one of f32, f16"),
]


@pytest.mark.parametrize("change, message", [case[1:] for case in HEADER_DAMAGE], ids=[c[0] for c in HEADER_DAMAGE])
def test_a_bad_header_is_one_error_naming_the_field(recorded: Path, tmp_path: Path, change, message: str) -> None:
    path = _changed(recorded, tmp_path / "header.jsonl", lambda records: change(records[0]))
    with pytest.raises(SessionFileError) as err:
        read_session(path)
    assert str(err.value).startswith(f"{path}: line 1: bad header: {message}")
    assert "\n" not in str(err.value)


def test_a_bad_header_in_the_cli_is_one_line(recorded: Path, tmp_path: Path) -> None:
    """`"n_ctx": "big"` ended the replay with a traceback."""
    path = _changed(recorded, tmp_path / "big.jsonl", lambda records: records[0].__setitem__("n_ctx", "big"))
    for args in (("replay", str(path), "--verify"), ("export", str(path))):
        out = cli(*args, home=tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert "line 1: bad header: n_ctx: expected a whole number" in out.stderr


STEP_DAMAGE = [
    ("prob text", lambda r: r.__setitem__("prob", "high"), "prob: expected a probability (0..1), got 'high'"),
    ("prob NaN", lambda r: r.__setitem__("prob", float("nan")), "prob: expected a probability (0..1), got nan"),
    ("prob > 1", lambda r: r.__setitem__("prob", 7.0), "prob: expected a probability (0..1), got 7.0"),
    ("entropy inf", lambda r: r.__setitem__("entropy", float("inf")), "entropy: expected a number ≥ 0"),
    ("i bool", lambda r: r.__setitem__("i", True), "i: expected a whole number"),
    ("i float", lambda r: r.__setitem__("i", 5.0), "i: expected a whole number"),
    ("eog text", lambda r: r.__setitem__("eog", "yes"), "eog: expected true or false, got 'yes'"),
    ("token missing", lambda r: r.pop("token"), "token: missing"),
    ("top not an object", lambda r: r.__setitem__("top", [1, 2]), "top: expected an object"),
    ("top lengths", lambda r: r["top"]["p"].pop(), "top: lists of different lengths (10, 10, 9, 10)"),
    ("top id float", lambda r: r["top"]["token"].__setitem__(2, 1.5), "top.token[2]: 1.5 is not a token id"),
    ("top id huge", lambda r: r["top"]["token"].__setitem__(2, 10**30), f"top.token[2]: {10**30} is not a token"),
    ("logit NaN", lambda r: r["top"]["logit"].__setitem__(4, float("nan")), "top.logit[4]: expected a number"),
    ("logit huge int", lambda r: r["top"]["logit"].__setitem__(4, 10**400), "top.logit[4]: expected a number"),
    ("p_after negative", lambda r: r["top"]["p_after"].__setitem__(0, -0.5),
     "top.p_after[0]: expected a probability (0..1), got -0.5"),
    ("stage too short", lambda r: r["stages"].__setitem__(0, ["top_k", 1, 2]), "stages[0]: expected [name, n_in"),
    ("stage probs", lambda r: r["stages"][1].__setitem__(5, ["x"]),
     "stages[1].probs[0]: expected a probability (0..1), got 'x'"),
    ("stage lengths", lambda r: r["stages"][1][5].append(0.5), "stages[1].probs: 5 ids but 6 probabilities"),
    ("stage n_in", lambda r: r["stages"][1].__setitem__(1, -3), "stages[1].n_in: expected a whole number"),
    ("stages not a list", lambda r: r.__setitem__("stages", "none"), "stages: expected a list"),
    ("piece", lambda r: r.__setitem__("piece", "!!not base64"), "piece: not base64"),
    ("text", lambda r: r.__setitem__("text", 5), "text: expected text, got 5"),
    ("n_past", lambda r: r.__setitem__("n_past", -1), "n_past: expected a whole number in 0..4,194,304"),
    ("decode_ms", lambda r: r.__setitem__("decode_ms", float("-inf")), "decode_ms: expected a number ≥ 0"),
    ("draw", lambda r: r.__setitem__("draw", 2.0), "draw: expected a probability (0..1), got 2.0"),
    ("rss", lambda r: r.__setitem__("rss", 2**70), "rss: expected a whole number"),
]


@pytest.mark.parametrize("change, message", [case[1:] for case in STEP_DAMAGE], ids=[c[0] for c in STEP_DAMAGE])
def test_a_bad_step_is_skipped_naming_its_line_and_field(recorded: Path, tmp_path: Path, change, message: str) -> None:
    path = _changed(recorded, tmp_path / "step.jsonl", lambda records: change(_step(records, 30)))
    line = _line_of_step(_records(recorded), 30)
    s = read_session(path)
    assert len(s.problems) == 2, s.problems
    assert s.problems[0].startswith(f"line {line}: bad step record: {message}") and s.problems[0].endswith("; skipped")
    assert s.problems[1] == f"line {_line_of_step(_records(path), 31)}: step 31 follows step 29: step 30 missing"
    assert len(s.steps) == 119 and len(s.metrics) == 119
    _usable(s)


def test_repeated_and_missing_steps(recorded: Path, tmp_path: Path) -> None:
    lines = _lines(recorded)
    records = _records(recorded)
    at = _line_of_step(records, 40) - 1
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("\n".join(lines[: at + 1] + [lines[at]] + lines[at + 1:]) + "\n")
    s = read_session(doubled)
    assert [st.index for st in s.steps] == list(range(120))
    assert s.problems == [f"line {at + 2}: bad step record: i: step 40 again after step 40 (a repeated line?); skipped"]
    holed = tmp_path / "holed.jsonl"
    holed.write_text("\n".join(lines[:at] + lines[at + 1:]) + "\n")
    s = read_session(holed)
    assert len(s.steps) == 119 and s.first_missing == 40 and "step 41 follows step 39: step 40 missing" in s.problems[0]
    assert fork_prefix(s, 40)[1] == s.tokens[:40]
    with pytest.raises(EngineError, match="step 40 is missing from the recording .*: fork at step 40 or before"):
        fork_prefix(s, 41)
    with pytest.raises(EngineError, match="step 40 is missing"):
        verify(s, SimpleNamespace(n_vocab=49152))  # refused before the model is used


def test_verify_and_fork_refuse_a_model_with_another_vocabulary(recorded: Path) -> None:
    s = read_session(recorded)
    other = FakeEngine()  # 64 tokens: the recording's ids would be out of range
    with pytest.raises(EngineError, match="recorded with a vocabulary of 49,152 tokens, this model has 64: cannot "
                                          "verify it with another model"):
        verify(s, other)
    with pytest.raises(EngineError, match="cannot fork it with another model"):
        fork_prefix(s, 10, other)


def test_bad_pieces_events_and_footers_are_skipped(recorded: Path, tmp_path: Path) -> None:
    def change(records: list[dict]) -> None:
        records.insert(1, {"type": "pieces", "map": {"1_2": "eA=="}})
        records.insert(1, {"type": "pieces", "map": {"12": "not base64!"}})
        records.append({"type": "event", "kind": "resampled", "at_step": 5, "token": -4})
        records.append({"type": "event", "kind": "preset_changed", "at_step": "5", "preset": {}})
        records.append({"type": "footer", "steps": 120, "stop_reason": ["\x1b[2J"]})
        records.append({"type": "header", "format": "llmtui-session", "version": 1})

    s = read_session(_changed(recorded, tmp_path / "other.jsonl", change))
    n = len(_records(recorded)) + 2
    assert s.problems == [
        "line 2: bad pieces record: map[12]: not base64: 'not base64!'; skipped",
        "line 3: bad pieces record: map: '1_2' is not a token id of this model (0..49,151); skipped",
        f"line {n + 1}: bad event record: token: -4 is not a token id of this model (0..49,151); skipped",
        f"line {n + 2}: bad event record: at_step: expected a whole number in 0..2,147,483,647, got '5'; skipped",
        f"line {n + 3}: bad footer record: stop_reason: expected text, got ['\\x1b[2J']; skipped",
        f"line {n + 4}: a second header (two sessions in one file?); skipped",
    ]
    assert s.complete and s.footer["stop_reason"] == "max_tokens"
    _usable(s)


def test_the_writer_never_appends_overwrites_or_follows_a_symlink(tmp_path: Path) -> None:
    """A second session appended to a file was read back merged with the first."""
    header = {"model": {"name": "m"}, "prompt": "hi"}
    existing = tmp_path / "old.jsonl"
    existing.write_text("precious\n")
    with pytest.raises(RecordingExists) as err:
        SessionWriter(existing, header, lambda t: b"")
    assert str(err.value) == (f"{existing} exists: a recording never overwrites or appends to a file; "
                              "choose another name")
    assert existing.read_text() == "precious\n"
    link = tmp_path / "link.jsonl"
    link.symlink_to(existing)
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    for path in (link, dangling):
        with pytest.raises(RecordError, match="choose another name"):
            SessionWriter(path, header, lambda t: b"")
    assert existing.read_text() == "precious\n" and not (tmp_path / "nowhere.jsonl").exists()
    # append_event adds only to the file itself, never through a symlink put there since
    rec = tmp_path / "rec.jsonl"
    SessionWriter(rec, header, lambda t: b"").footer()
    append_event(rec, "lab", 0, lab="perf", result={})
    assert _records(rec)[-1] == {"type": "event", "kind": "lab", "at_step": 0, "lab": "perf", "result": {}}
    with pytest.raises(RecordError, match="it is a symbolic link"):
        append_event(link, "lab", 0, lab="perf", result={})
    assert existing.read_text() == "precious\n"
    # a prompt with undecodable command-line bytes (a lone surrogate) is recorded and read back as it was
    odd = tmp_path / "odd.jsonl"
    SessionWriter(odd, {**header, "prompt": "caf\udce9"}, lambda t: b"").footer()
    assert _records(odd)[0]["prompt"] == "caf\udce9"


def test_recordings_in_a_directory_take_their_names_race_free(tmp_path: Path) -> None:
    header = {"model": {"name": "m"}}
    writers: list[SessionWriter] = []
    errors: list[Exception] = []

    def start() -> None:
        try:
            writers.append(SessionWriter.new_in(tmp_path, "Smol/LM2", header, lambda t: b""))
        except RecordError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({w.path for w in writers}) == 24
    for w in writers:
        w.footer()
        assert w.path.parent == tmp_path and "Smol_LM2" in w.path.name
        assert [r["type"] for r in _records(w.path)] == ["header", "footer"]


def _rendered(md: str) -> str:
    """The Markdown as a renderer that lets HTML through (GitHub's, most editors') shows it."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(md)


def test_exports_escape_what_came_from_the_file(recorded: Path, tmp_path: Path) -> None:
    """The Markdown export wrote the file's <script> as it was, and a backtick in a token broke its code span."""
    nasty = "<script>alert(1)</script>\x1b]0;owned\x07"

    def change(records: list[dict]) -> None:
        head = records[0]
        head["model"]["name"] = nasty
        head["preset"]["name"] = "**bold** <img src=x onerror=alert(1)>"
        head["prompt"] = "`rm -rf` | " + nasty
        head["created"] = "<script>"
        first = _step(records, 0)
        first["text"] = nasty
        token_bytes = _b64(b"`<script>`|\x1b")  # a backtick and a | in a table cell's code span
        records.insert(records.index(first), {"type": "pieces", "map": {str(first["token"]): token_bytes}})

    s = read_session(_changed(recorded, tmp_path / "nasty.jsonl", change))
    assert s.problems == []
    md = export_markdown(s)
    html = _rendered(md)
    assert "\x1b" not in md and "<script" not in html.lower() and "<img" not in html
    assert html.count("<h3>") == 120  # every step's heading, and only those
    assert html.count("<td") == 5 * sum(len(st.trace.top_ids) for st in s.steps)  # no table cell broken by a |
    assert "<code>`&lt;script&gt;`|␛</code>" in html  # the token, whole, in one code span
    page = export_html(s)
    assert "\x1b" not in page and "<script" not in page.lower() and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;␛]0;owned␇" in page


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_export_to_a_directory_or_unwritable_place_is_one_error(recorded: Path, tmp_path: Path) -> None:
    s = read_session(recorded)
    with pytest.raises(EngineError, match=f"^{tmp_path}: cannot write the export: Is a directory$"):
        export(s, "md", tmp_path)
    out = cli("export", str(recorded), "--format", "html", "-o", str(tmp_path / "no" / "such" / "dir.html"),
              home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "cannot write the export: No such file or directory" in out.stderr
