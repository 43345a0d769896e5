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


# -- a token tree whose branches share the KV cache ---------------------------------------------------------------


class DecodeCount:
    """Counts the tokens (and llama_decode calls) the engine is given, whatever path they take."""

    def __init__(self, engine) -> None:
        self.engine, self.tokens, self.calls = engine, 0, 0
        self._chunk, self._rows = engine._decode_chunk, engine.decode_rows

    def __enter__(self) -> "DecodeCount":
        def chunk(tokens):
            self.tokens += len(tokens)
            self.calls += 1
            return self._chunk(tokens)

        def rows(rows):
            self.tokens += len(rows)
            self.calls += 1
            return self._rows(rows)

        self.engine._decode_chunk, self.engine.decode_rows = chunk, rows
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine._decode_chunk, self.engine.decode_rows = self._chunk, self._rows


FORK = 3


@pytest.fixture(scope="module")
def tree_run(engine):
    """A greedy run of N tokens (branch 0), then a branch from step FORK with " London" forced (branch 1)."""
    from tui.engine.branching import BranchStart

    events: list[Any] = []
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=events.append, max_tokens=N)
    ctl.run(PROMPT)
    london = engine.tokenize(" London", add_bos=False)[0]
    with DecodeCount(engine) as count:
        ctl.run("", branch=BranchStart(parent=0, at=FORK, tokens=(london,)))
    return ctl, events, london, count.tokens


def test_a_branch_from_a_past_step_is_llama_cpps_greedy_continuation_and_decodes_only_after_the_fork(
        engine, tree_run) -> None:
    ctl, _events, london, decoded = tree_run
    tree = ctl.tree_view()
    assert [(b.id, b.parent, b.fork, b.origin) for b in tree.branches] == [(0, None, 0, "run"), (1, 0, FORK, "forced")]
    root, branch = tree.path(0), tree.path(1)
    assert branch[:FORK] == root[:FORK]  # the same Step records: the path before the fork is shared
    assert branch[FORK].token == london and branch[FORK].forced and branch[FORK].index == FORK
    prompt = engine.tokenize(PROMPT)
    before = [s.token for s in root[:FORK]]
    # the branch's prompt phase decoded one token (the last of the shared prefix, for its logits), then one per step
    assert decoded == 1 + (len(branch) - FORK - 1)
    native = native_greedy(engine, prompt + before + [london], N - 1)
    assert [s.token for s in branch[FORK + 1:]] == native
    assert tree.branch(1).logprob < tree.branch(0).logprob  # " London" was less likely than the model's own path


def test_branches_are_sequences_that_really_share_cells(engine, tree_run) -> None:
    ctl, *_ = tree_run
    engine.clear()  # other tests use this engine too: start from an empty cache
    ctl.switch_branch(0)
    ctl.switch_branch(1)
    tree = ctl.tree_view()
    seqs = engine.seqs
    owner = {key[1]: seq for seq, key in seqs.keys.items() if isinstance(key, tuple)}
    assert set(owner) == {0, 1} and owner[0] != owner[1]
    n_prompt = len(tree.prompt_tokens)
    shared = n_prompt + FORK
    for bid, seq in owner.items():  # llama.cpp's own answer: the last position each sequence holds
        assert engine.seq_pos_max(seq) == len(seqs.tokens[seq]) - 1
        assert seqs.tokens[seq][:shared] == list(tree.prompt_tokens) + [s.token for s in tree.path(bid)[:FORK]]
    use = engine.cell_use()
    assert use.saved == shared  # the common prefix is held once
    # the bytes llama.cpp's state takes grow with the cells in use: the two sequences together take less than each alone
    per_cell = engine.state_bytes(owner[0]) / len(seqs.tokens[owner[0]])
    alone = engine.state_bytes(owner[0]) + engine.state_bytes(owner[1])
    together = engine.state_bytes()
    assert together < alone
    assert abs((alone - together) - shared * per_cell) < 0.1 * shared * per_cell + 4096  # ~ the shared cells' bytes


def test_switching_to_an_evicted_branch_decodes_only_the_tokens_after_the_shared_prefix(engine, tree_run) -> None:
    ctl, *_ = tree_run
    engine.clear()
    ctl.switch_branch(0)
    ctl.switch_branch(1)  # branch 0 is now the least recently viewed
    evicted = engine.seqs.evict_one()
    assert evicted == ctl._key(0)
    tree = ctl.tree_view()
    with DecodeCount(engine) as count:
        switched = ctl.switch_branch(0)
    n_prompt = len(tree.prompt_tokens)
    total = n_prompt + len(tree.path(0))
    assert switched.reused == n_prompt + FORK  # taken from branch 1's sequence: the shared prefix
    assert count.tokens == switched.evaluated == total - (n_prompt + FORK)
    with DecodeCount(engine) as count:
        again = ctl.switch_branch(1)  # both resident: nothing but the last token
    assert count.tokens == again.evaluated == 1


def test_a_full_cache_evicts_the_least_recently_viewed_branch_and_says_so(smollm2_path) -> None:
    from tui.engine import EngineSettings
    from tui.engine.branching import BranchesEvicted, BranchStart
    from tui.engine.llama import LlamaEngine

    events: list[Any] = []
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)) as small:  # llama.cpp's smallest cache
        assert small.n_ctx == 256
        ctl = Controller(small, BUILTIN_PRESETS["greedy"], seed=1, emit=events.append, max_tokens=130,
                         ignore_eos=True)
        ctl.run(PROMPT)  # branch 0: 134 cells of 256
        assert len(ctl.tree_view().path(0)) == 130
        a_token = small.tokenize(" a", add_bos=False)[0]
        ctl.run("", branch=BranchStart(parent=0, at=1, tokens=(a_token,)))  # branch 1 needs 130 more: 0 goes
        gone = [e for e in events if isinstance(e, BranchesEvicted)]
        assert gone and gone[0].branches == (0,)
        assert small.cell_use().used <= small.n_ctx
        switched = ctl.switch_branch(0)  # visited again: re-evaluated after what branch 1 still shares
        assert switched.evaluated > 1


# -- A/B lockstep ---------------------------------------------------------------------------------------------------


def test_ab_of_two_presets_decodes_once_per_step_and_leaves_side_a_as_it_would_run_alone(engine) -> None:
    from tui.engine.ab import ABRun

    ctx = engine.build_context(3)
    chain_a = BUILTIN_PRESETS["greedy"].build(ctx)
    chain_b = BUILTIN_PRESETS["creative"].build(ctx)
    prompt = engine.tokenize("Once upon a time")
    with DecodeCount(engine) as count:
        result = ABRun(engine, chain_a, chain_b, max_tokens=16).run(prompt)
    steps = result.steps
    assert len(steps) == 16 and result.summary["diverged_at"] is not None
    assert count.calls == 1 + 15  # the prompt, then one llama_decode per step (the last step's token is not decoded)
    assert all(s.decodes == 1 for s in steps[1:])
    d = result.summary["diverged_at"]
    for s in steps[:d + 1]:  # both chains read the same logits until the stories part
        assert list(s.a.trace.top_ids) == list(s.b.trace.top_ids) and s.kl == 0.0
    assert [s.a.token for s in steps] == native_greedy(engine, prompt, 16)  # B's sequence did not disturb A's
    assert steps[d].a.token != steps[d].b.token


def test_ab_of_two_models_reports_the_kl_llmtui_compare_reports_on_the_same_text(engine, smollm2_path,
                                                                                  smollm2_q8_path) -> None:
    from tui.engine import EngineSettings
    from tui.engine.ab import ABRun
    from tui.engine.lab import compare_models
    from tui.engine.llama import LlamaEngine

    n = 12
    with LlamaEngine(smollm2_q8_path, EngineSettings(n_ctx=1024)) as other:
        ctx = engine.build_context(1)
        chain_a = BUILTIN_PRESETS["greedy"].build(ctx)
        chain_b = BUILTIN_PRESETS["creative"].build(other.build_context(1))  # B tells its own story
        prompt = engine.tokenize(PROMPT)
        result = ABRun(engine, chain_a, chain_b, engine_b=other, max_tokens=n).run(prompt)
    text_a = PROMPT + result.summary["text_a"]
    cmp = compare_models([str(smollm2_path), str(smollm2_q8_path)], text_a, settings=EngineSettings(n_ctx=1024))
    a_tokens = [s.a.token for s in result.steps]
    assert cmp.tokens[:len(prompt) + n] == prompt + a_tokens  # compare read the same tokens
    reference = cmp.scores[1].per_token_kl[len(prompt) - 1:len(prompt) - 1 + n]
    ours = [s.kl for s in result.steps]
    assert all(k is not None and k >= 0 for k in ours) and max(ours) > 0
    for mine, theirs in zip(ours, reference):
        assert mine == pytest.approx(theirs, rel=0.05, abs=2e-3)
    agree = [s.top1_agree for s in result.steps]
    top1_ref = cmp.scores[1].top1[len(prompt) - 1:len(prompt) - 1 + n]
    top1_a = cmp.scores[0].top1[len(prompt) - 1:len(prompt) - 1 + n]
    assert agree == [x == y for x, y in zip(top1_a, top1_ref)]


# -- the tree's bookkeeping on the fake engine (what the review found) -----------------------------------------------


def fake_controller(**kw: Any) -> tuple[Controller, list[Any]]:
    from tui.engine import EngineSettings
    from tui.engine.fake import FakeEngine

    events: list[Any] = []
    return Controller(FakeEngine(EngineSettings(n_ctx=512, seed=7)), BUILTIN_PRESETS["greedy"], seed=1,
                      emit=events.append, **kw), events


def test_second_choices_at_one_step_are_siblings_not_a_chain() -> None:
    from tui.engine.branching import BranchStart

    ctl, _ = fake_controller(max_tokens=6)
    ctl.run("the cat sat")
    for token in (5, 6, 7):
        ctl.run("", branch=BranchStart(parent=ctl.branch_id, at=2, tokens=(token,)))
    tree = ctl.tree_view()
    assert [(b.id, b.parent, b.fork) for b in tree.branches] == [(0, None, 0), (1, 0, 2), (2, 0, 2), (3, 0, 2)]
    assert [tree.path(b)[2].token for b in (1, 2, 3)] == [5, 6, 7]


def test_a_refused_branch_run_leaves_no_branch_behind() -> None:
    from tui.engine.branching import BranchStart

    ctl, events = fake_controller(max_tokens=4)
    ctl.run("the cat sat")
    stats = ctl.run("", branch=BranchStart(parent=0, at=99, tokens=(5,)))
    assert stats.error and "no step 99" in stats.error
    assert [b.id for b in ctl.tree_view().branches] == [0]


def test_resampling_the_last_step_after_an_api_request_leaves_the_tree_alone() -> None:
    ctl, events = fake_controller(max_tokens=4)
    ctl.run("the cat sat")
    api_events: list[Any] = []
    ctl.run("a dog ran", listener=api_events.append)  # an API request: not a tree run
    last = [e.step for e in api_events if isinstance(e, StepEvent)][-1]
    ctl.resample_last(BUILTIN_PRESETS["wild"], last)
    tree = ctl.tree_view()
    assert [b.id for b in tree.branches] == [0]  # the request's token is not a branch of the tree
    ctl.run("the cat sat")
    mine = [e.step for e in events if isinstance(e, StepEvent)][-1]
    ctl.resample_last(BUILTIN_PRESETS["wild"], mine)
    assert [(b.id, b.origin) for b in ctl.tree_view().branches] == [(0, "run"), (1, "resampled")]


def test_in_chat_mode_the_branch_shown_becomes_the_conversations_answer() -> None:
    from tui.engine.branching import BranchStart
    from tui.engine.chat import ChatSession

    ctl, _ = fake_controller(max_tokens=5)
    ctl.chat = ChatSession(ctl.engine)
    ctl.run("hello there")
    first = ctl.chat.messages[-1]["content"]
    ctl.run("", branch=BranchStart(parent=0, at=1, tokens=(9,)))
    branch_text = "".join(s.text for s in ctl.tree_view().path(1))
    assert branch_text != first and ctl.chat.messages[-1] == {"role": "assistant", "content": branch_text}
    ctl.switch_branch(0)
    assert ctl.chat.messages[-1]["content"] == first
    assert [m["role"] for m in ctl.chat.messages] == ["user", "assistant"]


def test_ab_with_ignore_eos_never_samples_an_end_of_generation_token(engine) -> None:
    from tui.engine.ab import ABRun

    ctx = engine.build_context(5)
    run = ABRun(engine, BUILTIN_PRESETS["greedy"].build(ctx), BUILTIN_PRESETS["wild"].build(ctx), max_tokens=24,
                ignore_eos=True)
    result = run.run(engine.tokenize("Hi."))
    eog = set(engine.eog_tokens())
    assert len(result.steps) == 24
    assert not any(s.a.token in eog or s.b.token in eog for s in result.steps)
    assert result.steps[0].decodes == 1 and sum(s.decodes for s in result.steps) == result.summary["decode_calls"]
