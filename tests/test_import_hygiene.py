"""Layering: the domain packages never import Textual; only one module imports llama_cpp."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tui"


@pytest.mark.parametrize("module", ["tui.engine", "tui.engine.llama", "tui.engine.models", "tui.engine.controller",
                                    "tui.sampling", "tui.record", "tui.record.tools", "tui.config",
                                    "tui.learn", "tui.learn.runs", "tui.learn.host", "tui.learn.experiments", "tui.learn.headless",
                                    "tui.learn.headless_views", "tui.learn.predict", "tui.learn.links", "tui.run",
                                    "tui.run.waiters", "tui.record.recorder", "tui.server", "tui.server.http",
                                    "tui.cli.common", "tui.cli.generate", "tui.cli.remote", "tui.remote",
                                    "tui.remote.source", "tui.remote.controller", "tui.remote.entries", "tui.remote.metrics",
                                    "tui.remote.llama_server", "tui.remote.openai", "tui.engine.embed", "tui.rag",
                                    "tui.cli.embed", "tui.cli.rag", "tui.engine.ab", "tui.engine.branching"])
def test_domain_modules_do_not_import_textual(module: str) -> None:
    code = f"import sys, {module}; print('textual' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_the_api_service_imports_no_web_framework() -> None:
    code = "import sys, tui.server.service; print('fastapi' in sys.modules, 'starlette' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_only_one_module_imports_llama_cpp() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+llama_cpp\b", re.M)
    users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if pattern.search(p.read_text()))
    assert users == ["engine/binding.py"]


def test_sampling_does_not_import_llama_cpp() -> None:
    code = "import sys, tui.sampling; print('llama_cpp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
