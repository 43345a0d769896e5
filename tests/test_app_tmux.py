"""End to end: the real app on the real SmolLM2 model in a real terminal (tmux)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import tmux, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")


def start_llmtui(session: str, home: Path, options: str, width: int, height: int) -> None:
    """`llmtui OPTIONS` in a fresh tmux session of exactly width × height; it prints EXITED-<code> when done."""
    env = f"LLMTUI_HOME={home} HF_HUB_CACHE={home}/hf TERM=xterm-256color"
    cmd = f"env -u COLUMNS -u LINES {env} {sys.executable} -m tui.cli {options}; echo EXITED-$?; sleep 30"
    size = ("-x", str(width), "-y", str(height))
    tmux("new-session", "-d", "-s", session, *size, "-c", str(Path(__file__).parents[1]), cmd)
    tmux("set-option", "-t", session, "window-size", "manual")
    tmux("resize-window", "-t", session, *size)


def test_real_app_generates_in_tmux(tmp_path: Path) -> None:
    session = f"llmtui-test-{os.getpid()}"
    start_llmtui(session, tmp_path, "--raw --max-tokens 48 --seed 3", 120, 40)
    try:
        wait_for(session, "no step yet")  # the model is loaded
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for(session, "stopped:")
        # generated text in the stream, and every panel filled in
        assert "Once upon a time" in screen
        stream_text = "".join(line[1:70] for line in screen.splitlines()[5:20])
        assert len(stream_text.split()) > 15
        for needle in ("top-10 next tokens", "step 47", "bits", "penalties", "top_k", "draw u=",
                       "KV cache", "per token", "memory", "throughput", "SmolLM2".lower()[:5]):
            assert needle.lower() in screen.lower(), needle
        assert "preset balanced" in screen and "seed 3" in screen
        tmux("send-keys", "-t", session, "q")
        screen = wait_for(session, "EXITED-0", timeout=15)
        assert "Traceback" not in screen
    finally:
        tmux("kill-session", "-t", session)


def test_first_run_a_question_gets_an_answer_in_tmux(tmp_path: Path) -> None:
    """What a newcomer does first: launch with no options, type a question, press Enter, read an answer."""
    session = f"llmtui-first-{os.getpid()}"
    start_llmtui(session, tmp_path, "--max-tokens 24 --seed 3", 100, 30)  # no mode option: what a newcomer runs
    try:
        wait_for(session, "CHAT (c: raw completion)")  # loaded, in chat mode, and it says how to leave it
        tmux("send-keys", "-t", session, "-l", "Name three colors.")
        tmux("send-keys", "-t", session, "Enter")
        screen = wait_for(session, "stopped:")
        lines = screen.splitlines()
        start = next(i for i, line in enumerate(lines) if "<|im_start|>assistant" in line)
        answer = " ".join(line.strip("│ ").split("││")[0] for line in lines[start + 1:start + 4])
        assert len(answer.split()) >= 3, screen  # before: "stopped: end of generation token" and nothing
        assert screen.splitlines()[-2].lstrip().startswith("stopped:")  # the run's state comes first
        tmux("send-keys", "-t", session, "q")  # the token stream holds the focus after a run
        screen = wait_for(session, "EXITED-0", timeout=15)
        assert "Traceback" not in screen
    finally:
        tmux("kill-session", "-t", session)
