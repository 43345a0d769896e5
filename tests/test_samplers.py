"""Every sampler against llama.cpp's own, on the same logits.

llama.cpp is reached through its C API (``llama_sampler_init_*`` +
``llama_sampler_apply`` on a ``llama_token_data_array``). Several of its
samplers mask candidates with a -inf logit instead of removing them, or leave
probabilities uncomputed, so we compare the survivors (finite logits) and the
softmax over them. Where equal logits straddle a cut, llama.cpp's choice among
them follows ``std::partial_sort``/``std::sort``, which leave the order of
equal elements unspecified: there we compare the multiset of surviving logits
and require the same ids only above the tied value.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tui.engine.oracle import native_chain
from tui.sampling import (
    XTC,
    AdaptiveP,
    Candidates,
    Dist,
    Dry,
    DryVocab,
    Greedy,
    LogitBias,
    MinP,
    Mirostat,
    MirostatV2,
    Penalties,
    Temp,
    TempExt,
    TopK,
    TopNSigma,
    TopP,
    Typical,
)
from tui.sampling.rng import Mt19937

F32 = np.float32
PROB_TOL = 1e-5


# -- logits generators ------------------------------------------------------------------


@st.composite
def logits_arrays(draw, max_size: int = 300_000) -> np.ndarray:
    size = draw(st.one_of(
        st.integers(1, 64),
        st.integers(65, 2000),
        st.sampled_from([4097, 49_152, 262_144, min(max_size, 300_000)]),
    ))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.01, 1.0, 3.0, 10.0, 100.0, 1000.0]))
    kind = draw(st.sampled_from(["normal", "ties", "ninf", "peaked"]))
    rng = np.random.default_rng(seed)
    lg = (rng.standard_normal(size) * scale).astype(F32)
    if kind == "ties":
        # few distinct values: many exact ties, also across any cut
        lg = np.round(lg / scale * 2).astype(F32) * F32(scale / 2)
    elif kind == "ninf" and size > 1:
        mask = rng.random(size) < 0.3
        mask[rng.integers(size)] = False  # keep at least one finite
        lg[mask] = -np.inf
    elif kind == "peaked":
        lg[rng.integers(size)] += F32(20 * max(scale, 1.0))
    return lg


def ours(sampler, logits: np.ndarray, ids: np.ndarray | None = None, sorted: bool = False) -> Candidates:
    if ids is None:
        cur = Candidates.from_logits(logits)
    else:
        cur = Candidates.from_arrays(ids, logits, sorted=sorted)
    sampler.apply(cur)
    return cur


def theirs(native, logits: np.ndarray, ids: np.ndarray | None = None, sorted: bool = False) -> dict:
    if ids is None:
        ids = np.arange(len(logits), dtype=np.int32)
    return native.apply(ids, logits, sorted=sorted)


def softmax64(lg: np.ndarray) -> np.ndarray:
    lg = lg.astype(np.float64)
    ex = np.exp(lg - lg.max())
    return ex / ex.sum()


def assert_same_survivors(mine: Candidates, ref: dict, *, ordered: bool = False) -> None:
    """Same surviving candidates (finite logits), same logits, same softmax over them.

    Candidates with equal logits are interchangeable for every sampler, and
    llama.cpp's sorts leave their order unspecified: a surviving id may differ
    from llama.cpp's only when another id with exactly the same logit took its
    place (checked per logit value).
    """
    m_fin = np.isfinite(mine.logits)
    r_fin = np.isfinite(ref["logits"])
    m_ids, m_lg = mine.ids[m_fin], mine.logits[m_fin]
    r_ids, r_lg = ref["ids"][r_fin], ref["logits"][r_fin]
    assert len(m_ids) == len(r_ids), (len(m_ids), len(r_ids))
    if len(m_ids) == 0:
        return
    scale = max(1.0, float(np.abs(r_lg).max()))
    np.testing.assert_allclose(np.sort(m_lg), np.sort(r_lg), rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(np.sort(softmax64(m_lg)), np.sort(softmax64(r_lg)), atol=PROB_TOL)
    by_value_m: dict[float, list[int]] = {}
    by_value_r: dict[float, list[int]] = {}
    for t, v in zip(m_ids.tolist(), m_lg.tolist()):
        by_value_m.setdefault(v, []).append(t)
    for t, v in zip(r_ids.tolist(), r_lg.tolist()):
        by_value_r.setdefault(v, []).append(t)
    swapped = 0
    for v, r_tokens in by_value_r.items():
        m_tokens = by_value_m.get(v)
        if m_tokens is None:  # float noise: the sorted values matched within tolerance above
            continue
        if sorted(m_tokens) != sorted(r_tokens):
            swapped += 1
            assert len(m_tokens) == len(r_tokens), f"different tokens for logit {v}"
    if ordered and swapped == 0 and len(by_value_r) == len(r_ids):
        assert m_ids.tolist() == r_ids.tolist()


def assert_no_untied_swap(mine: Candidates, ref: dict, source: np.ndarray) -> None:
    """Where the ids differ, the logit they share must be tied in the source candidates."""
    values, counts = np.unique(source[np.isfinite(source)], return_counts=True)
    tied = set(values[counts > 1].tolist())
    m = dict(zip(mine.ids.tolist(), mine.logits.tolist()))
    r = dict(zip(ref["ids"].tolist(), ref["logits"].tolist()))
    for t in set(m) ^ set(r):
        v = m.get(t, r.get(t))
        if np.isfinite(v):
            assert source[t] in tied or v in tied, f"token {t} differs without a tie"


@pytest.fixture(scope="module")
def native(engine):
    """Build a one-sampler llama.cpp chain."""
    made = []

    def make(name: str, **params):
        s = native_chain(engine, [(name, params)])
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the RNG -----------------------------------------------------------------------------


def test_mt19937_matches_std_mt19937() -> None:
    # std::mt19937 default-seeded (5489): the 10000th output is 4123659995 (C++ standard, [rand.predef])
    rng = Mt19937(5489)
    for _ in range(9999):
        rng.word()
    assert rng.word() == 4123659995


def test_uniform_double_uses_two_words() -> None:
    a, b = Mt19937(1234), Mt19937(1234)
    u = a.uniform_double()
    w1, w2 = b.word(), b.word()
    assert u == (w1 + w2 * 2.0**32) / 2.0**64
    assert a.draws == 2


# -- one sampler at a time -------------------------------------------------------------


@HYP
@given(lg=logits_arrays())
def test_greedy(native, lg) -> None:
    mine = ours(Greedy(), lg)
    ref = theirs(native("greedy"), lg)
    assert mine.ids[mine.selected] == ref["ids"][ref["selected"]]


@HYP
@given(lg=logits_arrays(), k=st.integers(-1, 300))
def test_top_k(native, lg, k) -> None:
    a, b = ours(TopK(k), lg), theirs(native("top_k", k=k), lg)
    assert_same_survivors(a, b, ordered=True)
    assert_no_untied_swap(a, b, lg)


@HYP
@given(lg=logits_arrays(), p=st.floats(0.0, 1.0), min_keep=st.integers(0, 50))
def test_top_p(native, lg, p, min_keep) -> None:
    assert_same_survivors(ours(TopP(p, min_keep), lg), theirs(native("top_p", p=p, min_keep=min_keep), lg), ordered=True)


@HYP
@given(lg=logits_arrays(), p=st.floats(0.0, 1.0), min_keep=st.integers(0, 50))
def test_min_p(native, lg, p, min_keep) -> None:
    assert_same_survivors(ours(MinP(p, min_keep), lg), theirs(native("min_p", p=p, min_keep=min_keep), lg), ordered=True)


@HYP
@given(lg=logits_arrays(max_size=49_152), p=st.floats(0.05, 1.0), min_keep=st.integers(0, 20))
def test_typical(native, lg, p, min_keep) -> None:
    # A zero probability (a -inf logit, or exp underflow) makes llama.cpp's entropy
    # NaN (0 * log 0) and its order undefined; see Typical. Not comparable.
    ex = np.exp((lg - lg.max()).astype(np.float64)).astype(F32)
    assume(bool(np.all(ex > 0)))
    a, b = ours(Typical(p, min_keep), lg), theirs(native("typical", p=p, min_keep=min_keep), lg)
    differ = set(a.ids.tolist()) ^ set(b["ids"].tolist())
    if not differ:
        assert_same_survivors(a, b)
        return
    # Near-uniform logits put many tokens' scores |-log p - H| within float32
    # noise (expf/logf last bits) of the cut; only such tokens may differ.
    p64 = softmax64(lg)
    h64 = -(p64[p64 > 0] * np.log(p64[p64 > 0])).sum()
    score = np.abs(-np.log(p64) - h64)
    cut = score[b["ids"]].max()
    # With exactly equal logits, llama.cpp's sort order among them is unspecified, and its
    # float32 entropy sum runs in that order: the entropy (so every score) can move by up to
    # ~n * eps * H. Without ties only expf/logf last-bit noise remains.
    largest_tie_group = int(np.unique(lg, return_counts=True)[1].max())
    has_ties = largest_tie_group > 1
    tol = len(lg) * 2e-7 * h64 if has_ties else 1e-5
    assert abs(len(a.ids) - len(b["ids"])) <= max(1, largest_tie_group)
    for t in differ:
        assert abs(score[t] - cut) < tol, (t, score[t], cut, tol)


@HYP
@given(lg=logits_arrays(), t=st.sampled_from([-1.0, 0.0, 0.1, 0.5, 0.8, 1.0, 1.5, 10.0]))
def test_temp(native, lg, t) -> None:
    assert_same_survivors(ours(Temp(t), lg), theirs(native("temp", t=t), lg), ordered=True)


@HYP
@given(lg=logits_arrays(max_size=49_152), t=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
       delta=st.sampled_from([0.0, 0.3, 1.0]), exponent=st.sampled_from([0.5, 1.0, 2.0]))
def test_temp_ext(native, lg, t, delta, exponent) -> None:
    assert_same_or_t0_limit(ours(TempExt(t, delta, exponent), lg),
                            theirs(native("temp_ext", t=t, delta=delta, exponent=exponent), lg), lg)


def assert_same_or_t0_limit(mine: Candidates, ref: dict, lg: np.ndarray) -> None:
    """llama.cpp's result where it is finite; where its temperature is so small that the best logit / T
    overflows float32 (it returns +inf logits, then NaN probabilities), ours is the T -> 0 limit: only
    the best candidate is left, with its logit (a chain never produces NaN)."""
    if np.isfinite(ref["logits"]).all() or not np.isposinf(ref["logits"]).any():
        assert_same_survivors(mine, ref)
        return
    alive = mine.ids[mine.logits != -np.inf]
    assert len(alive) == 1 and lg[alive[0]] == lg.max(), (alive, lg.max())
    assert np.isfinite(mine.logits).sum() == 1


@HYP
@given(lg=logits_arrays(), n=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0]))
def test_top_n_sigma(native, lg, n) -> None:
    a, b = ours(TopNSigma(n), lg), theirs(native("top_n_sigma", n=n), lg)
    kept_a = set(a.ids[np.isfinite(a.logits)].tolist())
    kept_b = set(b["ids"][np.isfinite(b["logits"])].tolist())
    if kept_a == kept_b:
        assert_same_survivors(a, b, ordered=True)
        return
    # llama.cpp accumulates the variance as `float acc += pow(double)`: a sequential
    # float rounding we do not replay; over 262k logits the cut moves by float noise.
    # Only tokens within that noise of the cut may differ.
    valid = lg[lg != -np.inf].astype(np.float64)
    cut = valid.max() - n * valid.std()
    # a sequential float32 sum over N terms drifts by ~sqrt(N) ulps: bound the cut's noise by it
    tol = max(1e-5 * max(1.0, abs(cut)), n * valid.std() * np.sqrt(len(valid)) * 6e-8 * 4)
    for t in kept_a ^ kept_b:
        assert abs(float(lg[t]) - cut) < tol, (t, float(lg[t]), cut, tol)


@HYP
@given(lg=logits_arrays(max_size=49_152), prob=st.sampled_from([0.0, 0.5, 1.0]),
       threshold=st.sampled_from([0.05, 0.1, 0.3, 0.6]), min_keep=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_xtc_over_a_sequence(native, lg, prob, threshold, min_keep, seed) -> None:
    mine = XTC(prob, threshold, min_keep, seed)
    ref = native("xtc", probability=prob, threshold=threshold, min_keep=min_keep, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(4):  # the generator advances identically
        step = (lg + rng.standard_normal(len(lg)).astype(F32)).astype(F32)
        assert_same_survivors(ours(mine, step), theirs(ref, step), ordered=True)


@HYP
@given(lg=logits_arrays(), seed=st.integers(0, 2**32 - 2))
def test_dist_over_a_sequence(native, lg, seed) -> None:
    mine, ref = Dist(seed), native("dist", seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        step = (lg + rng.standard_normal(len(lg)).astype(F32)).astype(F32)
        a, b = ours(mine, step), theirs(ref, step)
        assert a.ids[a.selected] == b["ids"][b["selected"]]
        np.testing.assert_allclose(a.probs, b["probs"], atol=PROB_TOL)


@HYP
@given(lg=logits_arrays(max_size=49_152), seed=st.integers(0, 2**32 - 2),
       tau=st.sampled_from([1.0, 3.0, 5.0, 8.0]), eta=st.sampled_from([0.1, 0.5]))
def test_mirostat_v2_over_a_sequence(native, lg, seed, tau, eta) -> None:
    mine, ref = MirostatV2(seed, tau, eta), native("mirostat_v2", seed=seed, tau=tau, eta=eta)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        step = (lg + rng.standard_normal(len(lg)).astype(F32)).astype(F32)
        a, b = ours(mine, step), theirs(ref, step)
        assert a.ids[a.selected] == b["ids"][b["selected"]]
        assert_same_survivors(a, b)


@HYP
@given(lg=logits_arrays(max_size=49_152), seed=st.integers(0, 2**32 - 2),
       tau=st.sampled_from([1.0, 3.0, 5.0, 8.0]), eta=st.sampled_from([0.1, 0.5]), m=st.sampled_from([2, 10, 100]))
def test_mirostat_over_a_sequence(native, engine, lg, seed, tau, eta, m) -> None:
    n_vocab = len(lg)
    mine = Mirostat(n_vocab, seed, tau, eta, m)
    ref = native_chain(engine, [("mirostat", {"seed": seed, "tau": tau, "eta": eta, "m": m})])
    ref.n_vocab = n_vocab
    # llama.cpp's mirostat takes n_vocab from the model; build ours with the model's too
    mine.n_vocab = engine.n_vocab
    rng = np.random.default_rng(seed)
    for _ in range(6):
        step = (lg + rng.standard_normal(len(lg)).astype(F32)).astype(F32)
        a, b = ours(mine, step), theirs(ref, step)
        assert a.ids[a.selected] == b["ids"][b["selected"]]
        assert_same_survivors(a, b)
    ref.close()


@HYP
@given(lg=logits_arrays(max_size=49_152), seed=st.integers(0, 2**32 - 2),
       target=st.sampled_from([-1.0, 0.1, 0.5, 0.9]), decay=st.sampled_from([0.0, 0.5, 0.9]))
def test_adaptive_p_over_a_sequence(native, lg, seed, target, decay) -> None:
    mine, ref = AdaptiveP(target, decay, seed), native("adaptive_p", target=target, decay=decay, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        step = (lg + rng.standard_normal(len(lg)).astype(F32)).astype(F32)
        a, b = ours(mine, step), theirs(ref, step)
        tok = int(a.ids[a.selected])
        assert tok == b["ids"][b["selected"]]
        assert_same_survivors(a, b)
        mine.accept(tok)
        ref.accept(tok)


@HYP
@given(lg=logits_arrays(), data=st.data())
def test_logit_bias(native, lg, data) -> None:
    n = len(lg)
    toks = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8, unique=True))
    vals = data.draw(st.lists(st.sampled_from([-np.inf, -5.0, -0.5, 0.5, 5.0]), min_size=len(toks), max_size=len(toks)))
    bias = dict(zip(toks, vals))
    assert_same_survivors(ours(LogitBias(bias), lg), theirs(native("logit_bias", bias=bias), lg), ordered=True)


@HYP
@given(lg=logits_arrays(max_size=49_152), data=st.data(), last_n=st.sampled_from([0, 1, 8, 64]),
       repeat=st.sampled_from([1.0, 1.1, 1.5]), freq=st.sampled_from([0.0, 0.3]), presence=st.sampled_from([0.0, 0.5]))
def test_penalties_over_accepted_tokens(native, lg, data, last_n, repeat, freq, presence) -> None:
    n = len(lg)
    history = data.draw(st.lists(st.integers(0, min(n - 1, 50)), min_size=0, max_size=120))
    mine = Penalties(last_n, repeat, freq, presence)
    ref = native("penalties", last_n=last_n, repeat=repeat, frequency=freq, presence=presence)
    for i, tok in enumerate(history):
        mine.accept(tok)
        ref.accept(tok)
        if i % 17 == 0:
            assert_same_survivors(ours(mine, lg), theirs(ref, lg), ordered=True)
    assert_same_survivors(ours(mine, lg), theirs(ref, lg), ordered=True)


# -- samplers on candidates that are already truncated / sorted --------------------------


@HYP
@given(lg=logits_arrays(max_size=5000), data=st.data())
def test_samplers_on_a_shuffled_subset(native, lg, data) -> None:
    """Candidates not in id order (as after typical) and not the full vocabulary."""
    rng = np.random.default_rng(len(lg))
    ids = rng.permutation(len(lg)).astype(np.int32)[: max(1, len(lg) // 2)]
    sub = lg[ids]
    name, mine, params = data.draw(st.sampled_from([
        ("top_k", TopK(7), {"k": 7}),
        ("top_p", TopP(0.8), {"p": 0.8}),
        ("min_p", MinP(0.1), {"p": 0.1}),
        ("temp", Temp(0.7), {"t": 0.7}),
        ("logit_bias", LogitBias({int(ids[0]): -3.0}), {"bias": {int(ids[0]): -3.0}}),
    ]))
    assert_same_survivors(ours(mine, sub, ids), theirs(native(name, **params), sub, ids), ordered=True)


def test_sorted_input_skips_sorting_like_llama_cpp(native) -> None:
    # a 'sorted' array that is not actually sorted: llama.cpp trusts the flag, so must we
    ids = np.array([5, 3, 9, 1], dtype=np.int32)
    lg = np.array([1.0, 3.0, 2.0, 0.5], dtype=F32)
    assert_same_survivors(ours(TopK(2), lg, ids, sorted=True), theirs(native("top_k", k=2), lg, ids, sorted=True),
                          ordered=True)
    a = ours(MinP(0.5), lg, ids, sorted=True)
    b = theirs(native("min_p", p=0.5), lg, ids, sorted=True)
    assert a.ids.tolist() == b["ids"].tolist()


# -- DRY needs the model's vocabulary -----------------------------------------------------


@pytest.fixture(scope="module")
def dry_vocab(engine) -> DryVocab:
    return DryVocab(engine.n_vocab, engine.piece, lambda s: engine.tokenize(s, add_bos=False))


@pytest.mark.parametrize("allowed_length", [1, 2, 3])
@pytest.mark.parametrize("last_n", [16, 64])
def test_dry_over_a_repetitive_sequence(engine, native, dry_vocab, allowed_length, last_n) -> None:
    text = "The cat sat on the mat. The cat sat on the mat. The cat sat on the: mat\n The cat sat"
    history = engine.tokenize(text)
    mine = Dry(dry_vocab, multiplier=0.8, base=1.75, allowed_length=allowed_length, penalty_last_n=last_n)
    ref = native("dry", multiplier=0.8, base=1.75, allowed_length=allowed_length, penalty_last_n=last_n)
    lg = np.random.default_rng(7).standard_normal(engine.n_vocab).astype(F32)
    changed = False
    for tok in history:
        a, b = ours(mine, lg), theirs(ref, lg)
        assert_same_survivors(a, b, ordered=True)
        changed |= a.logits is not lg
        mine.accept(tok)
        ref.accept(tok)
    assert changed  # the repetition really triggered penalties


# -- real model logits -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_logits(engine) -> list[np.ndarray]:
    engine.clear()
    out = []
    for prompt in ("Once upon a time", "The capital of France is", "def fibonacci(n):", "你好"):
        engine.clear()
        engine.decode(engine.tokenize(prompt))
        out.append(engine.logits().copy())
    return out


@pytest.mark.parametrize(
    ("name", "factory", "params"),
    [
        ("top_k", lambda: TopK(40), {"k": 40}),
        ("top_p", lambda: TopP(0.9), {"p": 0.9}),
        ("min_p", lambda: MinP(0.05), {"p": 0.05}),
        ("typical", lambda: Typical(0.9), {"p": 0.9}),
        ("temp", lambda: Temp(0.7), {"t": 0.7}),
        ("temp_ext", lambda: TempExt(0.8, 0.5, 1.0), {"t": 0.8, "delta": 0.5, "exponent": 1.0}),
        ("top_n_sigma", lambda: TopNSigma(1.5), {"n": 1.5}),
        ("xtc", lambda: XTC(1.0, 0.05, 1, 3), {"probability": 1.0, "threshold": 0.05, "min_keep": 1, "seed": 3}),
        ("dist", lambda: Dist(11), {"seed": 11}),
        ("mirostat_v2", lambda: MirostatV2(11, 5.0, 0.1), {"seed": 11, "tau": 5.0, "eta": 0.1}),
        ("greedy", Greedy, {}),
    ],
)
def test_on_real_smollm2_logits(native, real_logits, name, factory, params) -> None:
    mine, ref = factory(), native(name, **params)
    for lg in real_logits:
        a, b = ours(mine, lg), theirs(ref, lg)
        assert_same_survivors(a, b, ordered=name not in ("typical",))
        if b["selected"] >= 0:
            assert a.ids[a.selected] == b["ids"][b["selected"]]


def test_samplers_never_write_into_their_input(real_logits, dry_vocab) -> None:
    """Samplers assign new arrays to the candidates and never write into the ones they were given: the
    logits start as a zero-copy view of llama.cpp's buffer, and the chain keeps each stage's arrays for
    its trace."""
    lg = real_logits[0]
    history = [int(t) for t in np.argsort(lg)[-3:]] * 3  # a repetition: penalties and DRY both act
    penalties, dry = Penalties(64, 1.3, 0.1, 0.1), Dry(dry_vocab, allowed_length=1)
    for tok in history:
        penalties.accept(tok)
        dry.accept(tok)
    for s in [TopK(40), TopP(0.9), MinP(0.05), Typical(0.9), Temp(0.5), TempExt(0.8, 0.5), TopNSigma(1.0),
              XTC(1.0, 0.05, 1, 1), Dist(1), MirostatV2(1), Mirostat(len(lg), 1), LogitBias({1: 2.0}),
              AdaptiveP(0.5, 0.9, 1), Greedy(), penalties, dry]:
        cur = Candidates.from_logits(lg.copy())
        cur.softmax()  # probabilities too, as an earlier stage leaves them
        given = {"ids": cur.ids, "logits": cur.logits, "probs": cur.probs}
        before = {k: a.copy() for k, a in given.items()}
        s.apply(cur)
        for k, a in given.items():
            np.testing.assert_array_equal(a, before[k], err_msg=f"{s.name} wrote into the {k} it was given")
        assert len(cur) > 0
        if s.changes_logits and not s.selects:
            assert cur.logits is not given["logits"], f"{s.name} changed nothing"
        if s.selects:
            assert 0 <= cur.selected < len(cur), s.name
