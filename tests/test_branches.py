"""Exploring the paths not taken (issue 21), first part: force a candidate at the pending step and go on.
On the real SmolLM2: forcing token X and continuing greedily is llama.cpp's own greedy continuation of
prompt + X."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.test_engine import native_greedy
from tui.engine.controller import Controller, Resampled, SetStepMode, StepEvent
from tui.engine.errors import EngineError
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "The capital of France is"
N = 10


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_forcing_a_candidate_then_greedy_is_llama_cpps_greedy_continuation_of_prompt_plus_it(engine) -> None:
    london = engine.tokenize(" London", add_bos=False)[0]
    prompt = engine.tokenize(PROMPT)
    events: list[Any] = []
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=events.append, max_tokens=N)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(ctl.run(PROMPT, step_mode=True)), daemon=True)
    worker.start()
    wait_for(lambda: any(isinstance(e, StepEvent) and e.pending for e in events))
    pending = next(e.step for e in events if isinstance(e, StepEvent) and e.pending)
    assert pending.token != london  # the model's own pick is " Paris": we choose another path
    ctl.force(london)
    wait_for(lambda: any(isinstance(e, Resampled) for e in events))
    (forced,) = [e.step for e in events if isinstance(e, Resampled)]
    assert forced.forced and forced.token == london and forced.index == 0
    assert 0 < forced.prob < pending.trace.top_p_before[0]  # the model's own probability of it, lower than Paris'
    ctl.send(SetStepMode(False))  # accept it and go on greedily
    worker.join(timeout=60)
    assert not worker.is_alive()
    accepted = [e.step.token for e in events if isinstance(e, StepEvent) and not e.pending]
    assert accepted[0] == london
    assert accepted == [london, *native_greedy(engine, prompt + [london], N - 1)]


def test_forcing_an_id_outside_the_vocabulary_is_refused_before_anything_is_sent(engine) -> None:
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda e: None, max_tokens=2)
    with pytest.raises(EngineError, match="not in this model's vocabulary"):
        ctl.force(engine.n_vocab)
    assert ctl.commands.empty()
