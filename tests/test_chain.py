"""The chain's trace tells the truth about each stage."""

from __future__ import annotations

import numpy as np
import pytest

from tui.sampling import (
    Chain,
    Dist,
    Greedy,
    LogitBias,
    MinP,
    Penalties,
    Temp,
    TopK,
    TopNSigma,
    TopP,
)
from tui.sampling.errors import SamplingError
from tui.sampling.presets import BUILTIN_PRESETS


@pytest.fixture(scope="module")
def logits(engine) -> np.ndarray:
    engine.clear()
    engine.decode(engine.tokenize("The weather today is"))
    return engine.logits().copy()


def softmax64(lg: np.ndarray) -> np.ndarray:
    lg = lg.astype(np.float64)
    ex = np.exp(lg - lg[np.isfinite(lg)].max())
    return ex / ex.sum()


def test_raw_statistics(logits) -> None:
    tr = Chain([Greedy()]).sample(logits)
    p = softmax64(logits)
    entropy = -(p[p > 0] * np.log(p[p > 0])).sum()
    assert tr.entropy == pytest.approx(entropy, rel=1e-5)
    order = np.argsort(-logits, kind="stable")[:10]
    assert tr.top_ids.tolist() == order.tolist()
    np.testing.assert_allclose(tr.top_p_before, p[order], rtol=1e-5)
    assert tr.token == order[0] and tr.rank == 1
    assert tr.draw is None  # greedy draws nothing
    assert tr.prob == pytest.approx(p[order[0]], rel=1e-5)


def test_stage_trace_counts_and_mass(logits) -> None:
    chain = Chain([TopK(40), TopP(0.9), MinP(0.05), Temp(0.7), Dist(3)])
    tr = chain.sample(logits)
    names = [s.name for s in tr.stages]
    assert names == ["top_k", "top_p", "min_p", "temp", "dist"]
    top_k, top_p, min_p, temp, dist = tr.stages
    p = softmax64(logits)
    order = np.argsort(-logits, kind="stable")
    assert (top_k.n_in, top_k.n_out) == (len(logits), 40)
    assert top_k.mass_removed == pytest.approx(1 - p[order[:40]].sum(), abs=1e-6)
    assert top_k.top_ids == tuple(order[:5].tolist())
    # top_p keeps a prefix of the 40 whose (renormalised) mass reaches 0.9
    p40 = softmax64(logits[order[:40]])
    n_keep = int(np.searchsorted(np.cumsum(p40), 0.9) + 1)
    assert top_p.n_out == n_keep
    assert top_p.mass_removed == pytest.approx(1 - p40[:n_keep].sum(), abs=1e-5)
    assert min_p.n_out <= top_p.n_out and temp.n_out == min_p.n_out
    assert temp.mass_removed == 0.0 and dist.n_out == temp.n_out
    # the draw landed inside the chosen token's interval of the final distribution
    assert tr.draw is not None and tr.draw_lo - 1e-6 <= tr.draw <= tr.draw_hi + 1e-6
    assert tr.n_final == temp.n_out
    assert 0 < tr.prob <= 1
    # probabilities after the chain: 0 outside the survivors, and they sum to <= 1
    assert tr.top_p_after.sum() <= 1 + 1e-6
    assert all(pa == 0 for t, pa in zip(tr.top_ids, tr.top_p_after) if t not in order[: temp.n_out])


def test_masking_stage_counts_survivors(logits) -> None:
    tr = Chain([TopNSigma(1.0), Greedy()]).sample(logits)
    sigma = tr.stages[0]
    kept = logits >= logits.max() - 1.0 * logits.std()
    assert sigma.n_out == int(kept.sum())
    p = softmax64(logits)
    assert sigma.mass_removed == pytest.approx(1 - p[kept].sum(), abs=1e-4)


def test_full_vocab_stage_then_truncation(logits) -> None:
    pen = Penalties(64, 1.3, 0.0, 0.0)
    for t in np.argsort(-logits)[:3]:
        pen.accept(int(t))
    tr = Chain([pen, TopK(10), Greedy()]).sample(logits)
    assert tr.stages[0].n_out == len(logits) and tr.stages[0].mass_removed == 0.0
    assert tr.stages[1].n_out == 10 and 0 < tr.stages[1].mass_removed < 1


def test_clone_resamples_without_touching_state(logits) -> None:
    chain = BUILTIN_PRESETS["creative"].build(_ctx(len(logits), 5))
    twin = chain.clone()
    first = twin.sample(logits).token
    again = chain.sample(logits).token
    assert first == again  # the clone drew the same number: the original was untouched


def test_reset_replays_the_same_draws(logits) -> None:
    chain = BUILTIN_PRESETS["llama.cpp-default"].build(_ctx(len(logits), 9))
    a = [chain.sample(logits).token for _ in range(20)]
    chain.reset()
    b = [chain.sample(logits).token for _ in range(20)]
    assert a == b and len(set(a)) > 1


def test_chain_without_selector_is_an_error(logits) -> None:
    with pytest.raises(SamplingError, match="selected no token"):
        Chain([TopK(5)]).sample(logits)


def _ctx(n_vocab: int, seed: int):
    from tui.sampling.presets import BuildContext

    return BuildContext(n_vocab=n_vocab, seed=seed)


def test_consecutive_sparse_edits_keep_every_stage_intact(logits) -> None:
    # penalties then a logit bias then another bias: three edits of the full vocabulary in one
    # step share two reusable buffers; none may overwrite the array the next one reads
    raw = logits.copy()
    pen = Penalties(64, 1.3, 0.0, 0.0)
    best = np.argsort(-logits, kind="stable")[:6]
    for t in best[:3]:
        pen.accept(int(t))
    bias1 = LogitBias({int(best[3]): 2.0, int(best[4]): -np.inf})
    bias2 = LogitBias({int(best[5]): 3.0})
    chain = Chain([pen, bias1, bias2, TopK(10), Greedy()])
    for _ in range(3):  # the buffers are reused step after step
        tr = chain.sample(logits)
    np.testing.assert_array_equal(logits, raw)  # the caller's logits are never written
    expected = raw.copy()
    for t in best[:3]:
        expected[t] = expected[t] * np.float32(1.3) if expected[t] <= 0 else expected[t] / np.float32(1.3)
    after_penalties = expected.copy()
    expected[best[3]] += np.float32(2.0)
    expected[best[4]] = -np.inf
    expected[best[5]] += np.float32(3.0)
    order = np.argsort(-expected, kind="stable")
    assert tr.token == order[0]
    assert tr.stages[3].top_ids == tuple(order[:5].tolist())
    assert [s.n_out for s in tr.stages[:3]] == [len(raw), len(raw) - 1, len(raw) - 1]
    # the ban removes its token's mass under the distribution the bias stage received
    assert tr.stages[1].mass_removed == pytest.approx(softmax64(after_penalties)[best[4]], abs=1e-6)
