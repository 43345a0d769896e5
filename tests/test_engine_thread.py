"""One thread decodes: the engine thread, and what the KV cache holds (for prefix reuse)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import FAKE_SETTINGS as SETTINGS
from tests.conftest import make_app, ready, until
from tui.engine.controller import Controller
from tui.engine.fake import FakeEngine
from tui.engine.pool import Loaded
from tui.engine.thread import EngineThread, engine_thread
from tui.sampling.presets import BUILTIN_PRESETS


def test_calls_run_in_order_on_one_thread_and_errors_reach_the_caller() -> None:
    et = EngineThread(name="test-engine")
    names = [et.call(lambda: threading.current_thread().name) for _ in range(3)]
    assert names == ["test-engine"] * 3
    assert et.call(lambda: et.call(lambda: 41) + 1) == 42  # re-entrant: no deadlock
    with pytest.raises(ZeroDivisionError):
        et.call(lambda: 1 / 0)
    futures = [et.submit(lambda i=i: i) for i in range(20)]
    assert [f.result() for f in futures] == list(range(20))
    assert engine_thread() is engine_thread()


class _ThreadRecordingEngine(FakeEngine):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.decode_threads: set[str] = set()

    def decode(self, tokens, *, should_stop=None) -> float:
        self.decode_threads.add(threading.current_thread().name)
        return super().decode(tokens, should_stop=should_stop)


async def test_the_dashboard_decodes_only_on_the_engine_thread() -> None:
    engine = _ThreadRecordingEngine(SETTINGS)
    app = make_app(max_tokens=20)
    app.load = lambda _entry, _progress: Loaded(engine, True, 1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        for prompt in ("one", "two"):
            app.start_generation(prompt)
            await until(pilot, lambda: app.current.state_text.startswith("stopped"))
    assert engine.decode_threads == {"llmtui-engine"}


def test_the_engine_knows_what_its_cache_holds(engine) -> None:
    tokens = engine.tokenize("The quick brown fox jumps over the lazy dog")
    engine.clear()
    engine.decode(tokens)
    assert engine.held == tokens and engine.n_past == len(tokens)
    engine.decode([tokens[0]])
    assert engine.held == tokens + [tokens[0]]
    engine.truncate(5)
    assert engine.held == tokens[:5]
    engine.decode(tokens[5:])
    engine.shift(2, 3)
    assert engine.held == tokens[:2] + tokens[5:] and engine.n_past == len(tokens) - 3
    engine.clear()
    assert engine.held == []


def test_prefix_reuse_follows_the_engine_not_a_guess(engine) -> None:
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda ev: None, max_tokens=8)
    tokens = engine.tokenize("Once upon a time there was")
    ctl.run("", prefix=tokens, reuse=True)
    assert ctl.reusable_prefix(tokens + [42]) == len(tokens)
    first = engine.held[:]
    # something else used the cache meanwhile (the tokenizer inspector, an experiment)
    engine.clear()
    engine.decode(engine.tokenize("Something else entirely"))
    assert ctl.reusable_prefix(tokens) <= 1  # at most a shared BOS
    stats = ctl.run("", prefix=tokens, reuse=True)
    assert stats.prompt_tokens >= len(tokens) - 1
    assert engine.held[:len(first)] == first  # the same greedy continuation, recomputed
