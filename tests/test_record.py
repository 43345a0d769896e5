"""Recordings: write, read back (even damaged), replay in the app, verify, fork, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from tests.test_app import make_app, ready, until
from tui.app.app import LlmTuiApp
from tui.app.screens.sessions import SessionsScreen
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings
from tui.engine.controller import Controller, Finished, RecordingFailed, StepEvent
from tui.engine.fake import FakeEngine
from tui.record import RecordError, SessionFileError, SessionWriter, read_session
from tui.record.replay import ReplayEngine
from tui.record.tools import export_html, export_markdown
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
    out = cli("generate", "Once upon a time", "-n", "120", "--ignore-eos", "--preset", "balanced", "--seed", "11",
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
        await until(pilot, lambda: app.state == "replay")
        stream = app.query_one(TokenStream)
        await pilot.press("right", "right", "right")
        assert app.replay_pos == 3 and stream.token_count == 3
        hist = app.query_one("#hist")._build(70)
        assert hist[0][0][0].startswith("step 2")
        chosen = [row for row in hist[2:] if row[0][0].startswith("▶")]
        assert chosen and session.piece(session.steps[2].token).decode().replace(" ", "␣") in chosen[0][1][0]
        await pilot.press("left")
        assert app.replay_pos == 2 and stream.token_count == 2
        for _ in range(4):
            await pilot.press("plus")  # faster
        await pilot.press("space")  # play
        await until(pilot, lambda: app.replay_pos == 120, timeout=20)
        assert stream.text() == session.text
        assert app.state.startswith("replay: end")
        assert app.query_one("#kv")._build(40)[0][0][0].startswith(f"{4 + 120} / 2,048 cells")
        app.action_jump()
        await pilot.pause(0.1)
        app.screen.query_one("Input").value = "40"
        await pilot.press("enter")
        assert app.replay_pos == 40 and stream.token_count == 40


def test_killed_recording_reads_up_to_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    env = {**os.environ, "LLMTUI_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "generate", "Once upon a time", "-n", "3000",
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
    ctl.recorder_factory = lambda header: SessionWriter(path, header, eng.piece)
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
        assert app.recording and "● REC" in app.query_one("#status").text
        app.start_generation("the cat sat")
        await until(pilot, lambda: app.state.startswith("stopped"))
        await until(pilot, lambda: bool(app.record_path))
        path = Path(app.record_path)
        assert path.parent == tmp_path / "data" / "sessions"
        assert len(read_session(path).steps) == 25
        app.query_one(TokenStream).focus()
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[3] == "25"
        await pilot.press("enter")  # replay it
        await until(pilot, lambda: app.state == "replay")
        await pilot.press("right", "right")
        assert app.replay_pos == 2
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await pilot.press("d")
        assert path.exists()  # asks first
        await pilot.press("d")
        assert not path.exists()


async def test_fork_from_a_replay_in_the_app(recorded: Path, smollm2_path: Path, tmp_path: Path, monkeypatch) -> None:
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
        await until(pilot, lambda: app.state == "replay")
        app.replay_goto(10)
        await pilot.press("f")
        await until(pilot, lambda: app.state.startswith("stopped"), timeout=60)
        assert len(app.steps) == 20
        await until(pilot, lambda: bool(app.record_path))
        fork = read_session(app.record_path)
        assert fork.header["parent"] == {"file": str(recorded), "fork_step": 10}
        assert fork.header["prompt_tokens"] == session.header["prompt_tokens"] + session.tokens[:10]
        assert fork.header["preset"]["name"] == "creative" and len(fork.steps) == 20
