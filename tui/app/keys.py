"""The key table: the single source of the bindings, the help screen, the command palette and the ids a
config's ``[keys]`` table may remap.

An action prefixed ``screen.`` runs on the current screen: the dashboard (live runs) and the replay
player each implement it their own way (space steps a live run, plays a replay); on another screen
(a modal) it does nothing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any

from textual.app import SystemCommand
from textual.binding import Binding

# (binding id, keys, action, description, shown in the footer)
KEYS: list[tuple[str, str, str, str, bool]] = [
    ("gen.stop", "escape", "screen.stop", "Stop", True),
    ("gen.step_mode", "s", "screen.step_mode", "Step mode", True),
    ("gen.step", "space,n", "screen.step", "Step", True),
    ("gen.resample", "r", "screen.resample", "Re-sample", True),
    ("preset.next", "p", "preset(1)", "Preset", True),
    ("preset.prev", "P", "preset(-1)", "Prev preset", False),
    ("temp.up", "plus,equals_sign", "screen.temperature(0.1)", "Temp+", True),
    ("temp.down", "minus,underscore", "screen.temperature(-0.1)", "Temp-", False),
    ("select.prev", "left,left_square_bracket", "screen.select(-1)", "Prev token", False),
    ("select.next", "right,right_square_bracket", "screen.select(1)", "Next token", False),
    ("select.live", "end", "screen.follow", "Live", False),
    ("prompt.focus", "i,slash", "screen.focus_prompt", "Prompt", False),
    ("model.pick", "m", "models", "Models", True),
    ("model.anatomy", "a", "anatomy", "Anatomy", False),
    ("preset.pick", "e", "presets", "Presets", True),
    ("theme.next", "t", "next_theme", "Theme", False),
    ("session.new", "ctrl+n", "screen.new_session", "New", False),
    ("record.toggle", "ctrl+r", "record", "Record", True),
    ("chat.toggle", "c", "screen.chat", "Chat", True),
    ("tokenizer.open", "k", "tokenizer", "Tokenizer", False),
    ("settings.open", "comma", "settings", "Settings", False),
    ("lab.quant", "Q", "quant_lab", "Quant lab", False),
    ("lab.perf", "B", "perf_lab", "Perf lab", False),
    ("rag.open", "R", "rag('lab')", "RAG lab", False),
    ("rag.toggle", "U", "rag('toggle')", "Retrieval on/off", False),
    ("session.browse", "b", "sessions", "Sessions", False),
    ("replay.jump", "g", "screen.jump", "Jump", False),
    ("replay.fork", "f", "screen.fork", "Fork", False),
    ("branch.choose", "enter", "screen.candidates", "Choose a candidate", False),
    ("branch.insert", "x", "screen.insert_text", "Insert text", False),
    ("branch.tree", "T", "screen.branches", "Tree", False),
    ("branch.prev", "left_curly_bracket", "screen.branch(-1)", "Prev branch", False),
    ("branch.next", "right_curly_bracket", "screen.branch(1)", "Next branch", False),
    ("ab.open", "A", "ab", "A/B", False),
    ("learn.open", "L", "learn", "Learn", True),
    ("api.serve", "S", "serve", "API server", False),
    ("remote.probe", "o", "probe", "Probe mode", False),
    ("remote.fleet", "F", "fleet", "Fleet", False),
    ("learn.try1", "1", "learn_try(1)", "Try next 1", False),
    ("learn.try2", "2", "learn_try(2)", "Try next 2", False),
    ("app.help", "question_mark,f1", "help", "Help", True),
    ("app.quit", "q,ctrl+q", "quit", "Quit", True),
]

BINDINGS = [Binding(keys, action, desc, show=show, id=bid) for bid, keys, action, desc, show in KEYS]


def screen_binding(bid: str, action: str, description: str = "", *, show: bool = True) -> Binding:
    """A screen's own meaning for a key of the table (the replay's space plays): the same id and keys, so a
    ``[keys]`` remap moves both."""
    keys = next(k for b, k, *_ in KEYS if b == bid)
    return Binding(keys, action, description, show=show, id=bid)


def help_rows(keymap: dict[str, str]) -> list[tuple[str, str, str]]:
    """(keys as configured, what they do, binding id) for the help screen."""
    return [(keymap.get(bid, keys), desc, bid) for bid, keys, _a, desc, _s in KEYS]


def palette_commands(app: Any, keymap: dict[str, str]) -> Iterable[SystemCommand]:
    """Everything bound to a key is also in the command palette."""
    for bid, keys, action, desc, _show in KEYS:
        yield SystemCommand(f"{desc} [{keymap.get(bid, keys)}]", f"{bid}: {action}",
                            lambda a=action: app.run_action(a))


def all_bindings() -> Iterable[Binding]:
    """The app's bindings and every screen's and widget's."""
    from . import screens, widgets

    yield from BINDINGS
    for package in (screens, widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for cls in vars(module).values():
                bindings = getattr(cls, "BINDINGS", None) if isinstance(cls, type) else None
                yield from (b for b in bindings or () if isinstance(b, Binding))


def known_binding_ids() -> set[str]:
    """Every binding id a config's [keys] table may remap."""
    return {b.id for b in all_bindings() if b.id}


BROWSER_KEEPS = frozenset({"ctrl+n", "ctrl+t", "ctrl+w"})
"""Chords a browser keeps for itself (new window, new tab, close tab): a page — llmtui web's terminal —
never receives them."""
WEB_KEYS = {"session.new": "ctrl+l,ctrl+n", "raglab.use": "ctrl+g,ctrl+t"}
"""In a browser, those bindings also answer a key the page does receive, written first (the status line and
the footer show a binding's first key) — and one that a focused text input does not take for itself."""


def web_keymap(keymap: dict[str, str]) -> dict[str, str]:
    """The keymap of a session in a browser: :data:`WEB_KEYS` added, the user's own remaps kept."""
    return {**WEB_KEYS, **keymap}
