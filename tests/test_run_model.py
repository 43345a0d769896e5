"""The run model without Textual: events of any source folded into what the panels show."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import pytest

from tui.engine import EngineSettings, Generation, StopReason
from tui.engine.controller import (
    ChatTurn,
    Controller,
    Finished,
    PresetChanged,
    PromptDone,
    Resampled,
    Started,
    StepEvent,
)
from tui.engine.fake import FakeEngine
from tui.engine.kv import KvLayout
from tui.record.recorder import RecordingFailed, RecordingStarted
from tui.run import Phase, RunModel, Update
from tui.run.waiters import RunWaiters
from tui.sampling.presets import BUILTIN_PRESETS


@pytest.fixture(scope="module")
def steps() -> list:
    """Real steps from the deterministic fake engine (greedy)."""
    eng = FakeEngine(EngineSettings(n_ctx=512))
    gen = Generation(eng, eng.tokenize("the cat"), BUILTIN_PRESETS["greedy"].build(eng.build_context(1)),
                     max_tokens=6)
    return list(gen)


def run_events(model: RunModel, events: list[object], run_id: int | None = None):
    rid = model.run_id if run_id is None else run_id
    return model.apply([(rid, ev) for ev in events])


def started() -> Started:
    return Started("the cat", (1, 2), "greedy", 1, False)


def test_a_run_folds_into_steps_phase_and_figures(steps) -> None:
    m = RunModel()
    m.new_run()
    assert m.phase is Phase.PROMPT and m.state_text == "prompt"
    up = run_events(m, [started(), PromptDone(2, 4.0)])
    assert up.prompt == "the cat" and m.phase is Phase.GENERATING and m.n_prompt == 2 and m.prompt_tps == 500.0
    up = run_events(m, [StepEvent(s) for s in steps[:3]])
    assert [s.index for s in m.steps] == [0, 1, 2] and [a[0] for a in up.appended] == [0, 1, 2]
    assert up.show is steps[2] and up.new_steps
    up = run_events(m, [Finished(StopReason.MAX_TOKENS, None, {"stop_reason": "max_tokens"}, "x")])
    assert m.phase is Phase.STOPPED and m.state_text == "stopped: max tokens reached"
    assert up.finished is not None and m.summary["stop_reason"] == "max_tokens"


def test_events_of_another_run_are_dropped(steps) -> None:
    m = RunModel()
    old = m.new_run()
    m.new_run()
    up = run_events(m, [StepEvent(steps[0]), Finished(StopReason.EOG, None, {}, "")], run_id=old)
    assert up == Update() and m.steps == [] and m.phase is Phase.PROMPT


def test_step_mode_pending_then_accepted_is_one_step(steps) -> None:
    m = RunModel()
    m.new_run()
    up = run_events(m, [StepEvent(steps[0], pending=True)])
    assert m.pending is steps[0] and m.phase is Phase.PAUSED and up.pending is steps[0]
    assert m.state_text == "step mode: space accepts, r re-samples" and m.steps == []
    other = dataclasses.replace(steps[0], token=steps[1].token)
    up = run_events(m, [Resampled(other, "wild", pending=True)])
    assert m.pending is other and up.replaced == [(0, other.text, other.prob)] and m.preset == "wild"
    up = run_events(m, [StepEvent(other)])
    assert m.pending is None and up.pending_cleared and up.appended == [] and m.steps == [other]


def test_a_resample_after_the_run_replaces_the_last_step(steps) -> None:
    m = RunModel()
    m.new_run()
    run_events(m, [StepEvent(s) for s in steps[:2]])
    new = dataclasses.replace(steps[1], token=5)
    up = run_events(m, [Resampled(new, "creative", pending=False)])
    assert m.steps[-1] is new and up.notices and "re-sampled step 1 with creative" in up.notices[0][0]


def test_shifts_chat_presets_and_recording_become_figures_and_notices(steps) -> None:
    m = RunModel()
    m.new_run()
    shifted = dataclasses.replace(steps[3], shift=(4, 100))
    up = run_events(m, [ChatTurn(30, 5, 1, 12.0), PresetChanged("precise", None, 2), StepEvent(shifted),
                        RecordingStarted("/tmp/x.jsonl"), RecordingFailed("disk full")])
    assert m.shifts == [(3, 4, 100)] and m.n_reused == 30 and m.chat_turn.dropped_turns == 1
    assert m.preset == "precise" and m.record_path == ""
    texts = [n for n, _ in up.notices]
    assert any("context shift at step 3: kept 4, dropped 100" in t for t in texts)
    assert ("disk full", "error") in up.notices


def test_a_failed_run_says_why(steps) -> None:
    m = RunModel()
    m.new_run(label="API #3")
    up = run_events(m, [StepEvent(steps[0], pending=True), Finished(StopReason.ERROR, "NaN logits", {}, "")])
    assert m.state_text == "API #3 stopped: error (NaN logits)" and m.pending is None and up.pending_cleared
    assert ("NaN logits", "error") in up.notices


def test_a_replay_is_a_source_of_steps_like_any_other(steps) -> None:
    m = RunModel()
    m.new_run(Phase.REPLAY)
    up = m.show_steps(steps[:4])
    assert [a[0] for a in up.appended] == [0, 1, 2, 3] and up.show is steps[3]
    up = m.show_steps(steps[:2])  # backwards: nothing appended, the last two gone
    assert up.appended == [] and m.steps == steps[:2] and up.show is steps[1]
    up = m.show_steps(steps[:3])
    assert [a[0] for a in up.appended] == [2]


def test_selection_and_neighbours(steps) -> None:
    m = RunModel()
    m.new_run()
    run_events(m, [StepEvent(s) for s in steps[:4]])
    assert m.neighbour(-1) == 3 and m.select(3) is steps[3] and m.selected == 3
    assert m.neighbour(-5) == 0 and m.neighbour(+9) == 3
    assert m.select(99) is None and m.selected == 3  # out of range: the selection stays
    assert m.select(None) is steps[3] and m.selected is None


def test_kv_figures_follow_the_run(steps) -> None:
    kv = KvLayout(n_layer=2, n_head_kv=2, head_dim_k=8, head_dim_v=8, type_k="f16", type_v="f16", n_ctx=256)
    m = RunModel()
    m.new_run()
    run_events(m, [PromptDone(2, 1.0)])
    assert m.kv_view(kv, 256, 0, None).n_past == 2  # before any step: the prompt
    run_events(m, [StepEvent(s) for s in steps[:3]])
    assert m.kv_view(kv, 256, 0, None).n_past == steps[2].n_past + 1  # the token being decoded
    run_events(m, [Finished(StopReason.MAX_TOKENS, None, {}, "")])
    assert m.kv_view(kv, 256, 41, None).n_past == 41  # stopped: what the cache holds
    shifted = RunModel()
    shifted.new_run()
    run_events(shifted, [PromptDone(20, 1.0), StepEvent(dataclasses.replace(steps[0], shift=(4, 8)))])
    view = shifted.kv_view(kv, 256, 0, 4)
    assert view.n_prompt == 4 and view.shifts == ((0, 4, 8),) and view.n_keep == 4


def test_waiters_resolve_when_the_run_ends_pauses_or_is_replaced(steps) -> None:
    async def scenario() -> None:
        m = RunModel()
        waiters = RunWaiters()
        first = m.new_run()
        end = waiters.add(first)
        paused = waiters.add(first, pending=True)
        run_events(m, [StepEvent(steps[0], pending=True)])
        waiters.wake(m)
        assert paused.done() and not end.done() and paused.result().pending is steps[0]
        waiters.release(m)  # another run takes the panels: the first one's waiter learns how far it got
        assert end.done() and end.result().run_id == first and end.result().phase is Phase.PAUSED
        assert end.result().pending is steps[0]
        m.new_run()
        late = waiters.add(first)  # a waiter for a run that is already gone is resolved at the next fold
        waiters.wake(m)
        assert late.done() and late.result().run_id == first + 1

    asyncio.run(scenario())


def test_the_controller_and_the_model_agree_on_a_real_run() -> None:
    """The model folds exactly what a controller emits: the same steps, the same end."""
    from tui.engine.controller import Accepted

    eng = FakeEngine(EngineSettings(n_ctx=512))
    events: list[object] = []
    accepted: list[int] = []
    ctl = Controller(eng, BUILTIN_PRESETS["balanced"], seed=3, emit=events.append, max_tokens=12)
    ctl.listeners.append(lambda ev: accepted.append(ev.step.token) if isinstance(ev, Accepted) else None)
    stats = ctl.run("the lighthouse keeper")
    m = RunModel()
    m.new_run()
    run_events(m, events)
    assert [s.token for s in m.steps] == accepted and len(accepted) == stats.generated == 12
    assert m.phase is Phase.STOPPED and m.preset == "balanced" and m.snapshot().text == stats.text


def test_the_run_model_imports_no_textual() -> None:
    code = "import sys, tui.run, tui.run.waiters; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the app as a front end of runs: what a caller that waits is told -------------------------------------


async def test_a_bug_while_loading_is_one_line_a_crash_log_and_no_endless_wait(tmp_path, monkeypatch) -> None:
    from tests.conftest import make_app, until
    from tui.app.app import LlmTuiApp
    from tui.app.learn_host import AppHost
    from tui.learn.host import LearnError

    monkeypatch.setenv("LLMTUI_HOME", str(tmp_path))

    def broken() -> FakeEngine:
        raise RuntimeError("a bug in the loader")

    app: LlmTuiApp = make_app()
    app.load = lambda entry, progress: broken()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, app.engine_settled.is_set)
        with pytest.raises(LearnError, match="a bug in the loader"):
            await AppHost(app).ready()  # settled: the model is not coming, said at once
        assert app.current.phase is Phase.ERROR
        notices = [n.message for n in app._notifications]
        assert any("loading failed: RuntimeError: a bug in the loader" in n for n in notices)
        assert "RuntimeError: a bug in the loader" in (tmp_path / "cache" / "crash.log").read_text()


async def test_a_run_cut_short_by_another_tells_its_waiter_how_far_it_got() -> None:
    from tests.conftest import make_app, ready, until
    from tui.app.learn_host import AppHost
    from tui.learn.host import LearnError

    app = make_app(delay_s=0.02, max_tokens=400)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        host = AppHost(app)
        first = asyncio.ensure_future(host.generate("the cat sat", 400))
        await until(pilot, lambda: len(app.current.steps) >= 3)
        first_id = app.current.run_id
        app.start_generation("another prompt")  # a key press: this run takes the panels
        with pytest.raises(LearnError, match="cut short by another"):
            await first
        await until(pilot, lambda: app.current.run_id == first_id + 1 and not app.running, timeout=30)


def test_a_paused_step_accepted_with_step_mode_off_says_generating_again(steps) -> None:
    m = RunModel()
    m.new_run()
    run_events(m, [started(), PromptDone(2, 4.0), StepEvent(steps[0], pending=True)])
    assert m.phase is Phase.PAUSED
    run_events(m, [StepEvent(steps[0]), StepEvent(steps[1])])  # step mode switched off: the run goes on
    assert m.phase is Phase.GENERATING and m.state_text == "generating"


async def test_events_and_notices_after_the_app_closed_its_screens_are_dropped() -> None:
    """A run's last events (from the engine thread) and a notice still queued can come after the app has closed
    its screens (seen once in CI as an IndexError at shutdown): they are dropped, not a crash."""
    from tests.conftest import make_app, ready
    from tui.app.messages import EngineNotice

    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
    assert not app.screen_stack
    app.on_engine_notice(EngineNotice())
    app.emit(object())
