"""Recordings are untrusted input: whatever a file holds, the reader lets through only what is usable.

The property, for random bytes, random lines and mutations of a real recording: ``read_session``
either raises SessionFileError (one line) or returns a Session that the replay engine and both
exports take; every token id in it is the model's; the problems are one terminal-safe line each;
and the exports hold no raw ESC and no ``<script`` that a renderer would run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from tui.engine.controller import Controller
from tui.record import SessionFileError, SessionWriter, read_session
from tui.record.recorder import Recorder
from tui.record.replay import ReplayEngine
from tui.record.tools import export_html, export_markdown
from tui.safe_text import visible
from tui.sampling.presets import BUILTIN_PRESETS


def fuzz(examples: int) -> settings:
    """Bounded: the whole file runs in well under 30 s on two cores (the profile is derandomized)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# Markdown as a renderer that lets HTML through (GitHub's, most editors') turns it into HTML
_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def real_lines(engine: Any, workdir: Path) -> list[str]:
    """A real recording, once per module: a short greedy generation on SmolLM2, as its lines."""
    path = workdir / "real.jsonl"
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda event: None, max_tokens=12)
    ctl.listeners.append(Recorder(engine, lambda header: SessionWriter(path, header, engine.piece)))
    stats = ctl.run("The capital of France is")
    assert stats.generated == 12
    lines = path.read_text(encoding="utf-8").splitlines()
    session = read_session(path)
    assert session.problems == [] and len(session.steps) == 12 and session.complete
    return lines


def check(path: Path) -> None:
    """The property every file must have."""
    try:
        session = read_session(path)
    except SessionFileError as exc:
        message = str(exc)
        assert "\n" not in message and visible(message) == message and len(message) < 500
        return
    assert all("\n" not in p and visible(p) == p and len(p) < 400 for p in session.problems)
    n_vocab = session.header["model"]["n_vocab"]
    assert type(n_vocab) is int and n_vocab > 0

    def ours(ids: Any) -> bool:
        return all(type(t) is int and 0 <= t < n_vocab for t in ids)

    for step in session.steps:
        assert ours([step.token, *step.trace.top_ids.tolist(), *(t for s in step.trace.stages for t in s.top_ids)])
        assert len(step.trace.top_ids) == len(step.trace.top_logits) == len(step.trace.top_p_before) \
            == len(step.trace.top_p_after)
    assert ours(session.pieces) and ours(session.header["prompt_tokens"]) and ours(session.header.get("history", []))
    assert ours(ev["token"] for ev in session.events if "token" in ev)
    assert [s.index for s in session.steps] == sorted({s.index for s in session.steps})  # no step twice
    assert len(session.metrics) == len(session.steps)
    ReplayEngine(session)
    md = export_markdown(session)
    page = export_html(session)
    assert "\x1b" not in md and "\x1b" not in page
    assert "<script" not in page.lower()
    assert "<script" not in _MARKDOWN.render(md).lower()


# -- values to plant: other types, edge and huge numbers, text a terminal or a browser would act on --

NASTY_TEXT = st.one_of(
    st.sampled_from(["<script>alert(1)</script>", "<SCRIPT src=x>", "`", "``|``", "\x1b[2J\x1b]0;t\x07", "\x9b31m",
                     "\u202eevil", "\ud800", "caf\udce9", "**", "[x](javascript:alert(1))", "|", "\n### step 0", ""]),
    st.text(alphabet=st.sampled_from(list("ab <>`|*_[]\\&#\n\t\x00\x1b\x07\x7f\x9b\u202e\ud800")), max_size=12),
)
NUMBERS = st.one_of(
    st.sampled_from([-1, 0, 1, 7, 49151, 49152, 2**31 - 1, 2**31, 2**63, 2**64, -2**63, 10**30, 10**400,
                     0.5, 1.0000001, -0.0, 1e308, -1e-9]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY_TEXT)
KEYS = st.one_of(st.sampled_from(["type", "token", "i", "top", "p", "map", "n_vocab", "12", "-1", "preset"]),
                 st.text(max_size=4))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                    max_leaves=8)
TYPES = st.sampled_from(["header", "pieces", "step", "event", "footer", "other"])


def _dump(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)  # NaN and Infinity as Python's json writes (and reads) them


# -- (a) random bytes, random lines ---------------------------------------------------------------


@fuzz(150)
@given(st.binary(max_size=600))
@example(b"")
@example(b"\n\n \n")
@example(b'{"type":"header","format":"llmtui-session","version":1}\n')
@example(b"[" * 100_000)
def test_random_bytes(workdir: Path, raw: bytes) -> None:
    path = workdir / "bytes.jsonl"
    path.write_bytes(raw)
    check(path)


@fuzz(150)
@given(lines=st.lists(st.one_of(st.binary(max_size=80), st.builds(lambda t, d: _dump({"type": t, **d}).encode(),
                                                                  TYPES, st.dictionaries(KEYS, JSON, max_size=6))),
                      max_size=8),
       newline_at_end=st.booleans())
def test_random_lines_after_a_real_header(real_lines: list[str], workdir: Path, lines: list[bytes],
                                          newline_at_end: bool) -> None:
    path = workdir / "lines.jsonl"
    path.write_bytes(b"\n".join([real_lines[0].encode(), *lines]) + (b"\n" if newline_at_end else b""))
    check(path)


# -- (b) mutations of a real recording ----------------------------------------------------------


def _walk_and_change(data: st.DataObject, obj: Any) -> None:
    """Replace (or drop) the value at a random path inside ``obj`` (a dict or list)."""
    node = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and data.draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = data.draw(JSON)
        return


MUTATIONS = ["delete", "duplicate", "truncate", "swap", "change", "change", "change", "change"]


@fuzz(300)
@given(data=st.data())
def test_mutated_real_recording(real_lines: list[str], workdir: Path, data: st.DataObject) -> None:
    lines = list(real_lines)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        if not lines:
            break
        op = data.draw(st.sampled_from(MUTATIONS), label="op")
        k = data.draw(st.integers(0, len(lines) - 1), label="line")
        if op == "delete":
            del lines[k]
        elif op == "duplicate":
            lines.insert(data.draw(st.integers(0, len(lines))), lines[k])
        elif op == "truncate":
            lines[k] = lines[k][: data.draw(st.integers(0, max(0, len(lines[k]) - 1)))]
        elif op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
        else:
            try:
                obj = json.loads(lines[k])
            except ValueError:
                continue
            _walk_and_change(data, obj)
            lines[k] = _dump(obj)
    path = workdir / "mutated.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass")
    check(path)
