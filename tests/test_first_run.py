"""The first ten minutes (issue 16): a question gets an answer, every mode has a way out and a footer of its
own keys, re-sampling draws anew, and nothing on screen is stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from tests.conftest import generate, llama_pool, make_app, ready, real_app, run, until
from tui.app.modes import EXITS, Mode, active_modes, mode_label
from tui.app.widgets.token_stream import TokenStream
from tui.engine.models import describe_file
from tui.record import read_session

TEMPLATE = "{{ messages }}"  # the fake engine renders chats itself; any template makes chat possible


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def footer(screen) -> set[str]:
    return {b.binding.description for b in screen.active_bindings.values() if b.binding.show}


# -- a question gets an answer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_entries(smollm2_path: Path):
    return [describe_file(smollm2_path, source="embedded")]


async def test_a_model_with_a_chat_template_starts_in_chat_and_a_question_gets_an_answer(smol_entries) -> None:
    app = real_app(smol_entries, llama_pool(1), chat=None)  # the rule users get: chat when the model can
    app.max_tokens = 24
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=60)
        prompt = app.query_one("#prompt", Input)
        assert app.chat_mode and prompt.value == "" and "user turn" in prompt.placeholder
        assert "CHAT (c: raw completion)" in app.query_one("#status").text
        prompt.value = "Name three colors."
        prompt.focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.current.phase.value == "stopped", timeout=60)
        assert app.query_one(TokenStream).text().strip(), app.current.state_text
        await pilot.press("escape", "c")  # raw completion is one key away, and says what it is
        assert not app.chat_mode and "RAW (c: chat)" in app.query_one("#status").text
        assert any("raw completion: the model continues your text" in n for n in notes(app))


async def test_raw_completion_of_a_bare_question_says_why_it_ended_and_how_to_get_an_answer(smol_entries) -> None:
    app = real_app(smol_entries, llama_pool(1), chat=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=60)
        app.set_preset(app.catalog.presets["greedy"], remember=False, quiet=True)
        await generate(pilot, "What is the capital of France?")
        assert app.current.steps and not app.current.steps[0].text  # <|im_end|> at once
        hint = [n for n in notes(app) if "ended at once" in n]
        assert hint and "press c for chat mode" in hint[0] and "<|im_end|>" in hint[0] and "b'" not in hint[0]


def test_cli_generate_answers_a_question_and_raw_says_why_it_did_not(tmp_path: Path) -> None:
    out = run("generate", "Name three colors.", "-n", "16", "--preset", "greedy", home=tmp_path)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr  # chat: the model's template
    raw = run("generate", "What is the capital of France?", "--raw", "-n", "16", "--preset", "greedy", home=tmp_path)
    assert raw.returncode == 0 and raw.stdout.strip() == ""
    assert "ended at once (<|im_end|>)" in raw.stderr and "without --raw" in raw.stderr
    assert len(raw.stderr.strip().splitlines()) == 1


# -- modes: each has a way out, the status line says it, the footer lists its keys ---------------------------


def test_every_mode_names_its_way_out() -> None:
    for mode in Mode:
        if mode is not Mode.LIVE:
            assert mode in EXITS and EXITS[mode].key in mode_label(mode)
    assert active_modes(step=True, chat=True, serving=True) == [Mode.STEP, Mode.CHAT, Mode.SERVING]
    assert active_modes(step=True, chat=True, serving=False, screen="replay") == [Mode.REPLAY]
    assert active_modes(step=False, chat=False, serving=False) == [Mode.LIVE]


async def test_the_footer_lists_the_keys_of_the_mode_you_are_in() -> None:
    app = make_app(max_tokens=30, delay_s=0.01)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        board = app.dashboard
        board.query_one(TokenStream).focus()  # in the prompt box, letters type (its footer lists fewer keys)
        await pilot.pause()
        idle = footer(board)
        assert "Stop" not in idle and "Step" not in idle and "Re-sample" not in idle and "Chat" in idle
        board.query_one(TokenStream).focus()
        await pilot.press("s")  # step mode: space steps, r re-samples
        await pilot.press("space")
        await until(pilot, lambda: app.current.pending is not None)
        stepping = footer(board)
        assert {"Step", "Re-sample", "Stop"} <= stepping
        assert "STEP (s: step mode off)" in app.query_one("#status").text
        await pilot.press("s")
        await until(pilot, lambda: not app.running)
        after = footer(board)
        assert "Re-sample" in after and "Step" not in after and "Stop" not in after


async def test_screens_opened_by_keys_each_close_with_escape() -> None:
    app = make_app(discover=list)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        for key in ("m", "e", "k", "comma", "b", "question_mark", "L"):  # (a: the anatomy needs a real file)
            await pilot.press(key)
            try:
                await until(pilot, lambda: len(app.screen_stack) > 1, timeout=3)
            except AssertionError:
                raise AssertionError(f"{key} opened nothing: {notes(app)[-1:]}") from None
            opened = type(app.screen).__name__
            await pilot.press("escape")
            await until(pilot, lambda: len(app.screen_stack) == 1, timeout=3)
            assert app.screen is app.dashboard, opened


async def test_escape_leaves_the_prompt_box_and_the_status_shows_the_state_first_at_80x24() -> None:
    app = make_app(chat_template=TEMPLATE)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await generate(pilot, "hello there")
        status = app.query_one("#status")
        assert status.text.startswith("stopped: max tokens reached │ CHAT (c: raw completion)")
        assert "turn: reused" in status.text  # the chat turn's figures come last: a narrow terminal cuts them
        app.query_one("#prompt").focus()
        await pilot.press("escape")
        assert app.focused is app.query_one(TokenStream)


# -- ctrl+n clears everything ---------------------------------------------------------------------------------


async def test_ctrl_n_starts_a_new_conversation_and_forgets_the_last_turn() -> None:
    app = make_app(chat_template=TEMPLATE)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        assert app.chat_mode  # the fake engine has a template here
        await generate(pilot, "hello there")
        assert len(app.controller.chat.messages) >= 2
        app.query_one(TokenStream).focus()
        await pilot.press("ctrl+n")
        assert app.chat_mode and [m for m in app.controller.chat.messages if m["role"] != "system"] == []
        assert "turn:" not in app.query_one("#status").text
        await generate(pilot, "hello again")
        turns = [m["content"] for m in app.controller.chat.messages if m["role"] != "system"]
        assert len(turns) == 2 and turns[0] == "hello again"  # the old turns are gone


# -- r draws a new random number ------------------------------------------------------------------------------


async def test_r_draws_a_new_random_number_each_time_and_says_which_draw() -> None:
    app = make_app(max_tokens=8, preset="creative")
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await generate(pilot)
        app.query_one(TokenStream).focus()
        draws = [app.current.steps[-1].trace.draw]
        for n in (2, 3, 4):
            last = app.current.steps[-1]
            await pilot.press("r")
            await until(pilot, lambda: app.current.steps[-1] is not last)
            step = app.current.steps[-1]
            assert step.draw == n
            draws.append(step.trace.draw)
        assert len(set(draws)) == 4, draws  # before: the same u at every press
        trace = " ".join(seg for line in app.query_one("#trace")._build(80) for seg, _ in line)
        assert "draw 4 at this step" in trace
        assert any("(draw 4, u=" in n for n in notes(app))


async def test_a_preset_change_mid_run_keeps_the_seeded_sequence() -> None:
    from tests.test_app import headless_tokens

    app = make_app(max_tokens=30)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("s", "space")
        await until(pilot, lambda: app.current.pending is not None)
        await pilot.press("space", "space")
        await until(pilot, lambda: app.current.pending is not None and app.current.pending.index == 2)
        await pilot.press("p", "P")  # another preset and back: the chain is rebuilt twice
        await pilot.press("s")
        await until(pilot, lambda: not app.running)
        assert [s.token for s in app.current.steps] == headless_tokens("Once upon a time", "balanced", 30)


# -- replays: every way out works, nothing stale ---------------------------------------------------------------


@pytest.fixture
async def fake_recording(tmp_path: Path) -> Path:
    path = tmp_path / "fake.jsonl"
    app = make_app(max_tokens=12, record=str(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        await until(pilot, lambda: bool(app.current.record_path))
    return path


async def test_a_replay_opened_in_the_app_has_a_way_out_of_each_kind(fake_recording: Path) -> None:
    session = read_session(fake_recording)
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.open_replay(session)
        await until(pilot, lambda: app.current.state_text == "replay")
        replay = app.screen
        replay.goto(5)
        status = replay.query_one("#status").text
        assert "REPLAY 5/12" in status and "esc: leave the replay" in status and "replay ·" not in status
        replay.query_one("#prompt").focus()
        await pilot.press("enter")
        assert any("esc leaves it" in n for n in notes(app))
        await pilot.press("escape")  # out of the prompt box first
        assert app.screen is replay and replay.focused is replay.query_one(TokenStream)
        await pilot.press("ctrl+n")  # clear everything: the replay too
        await until(pilot, lambda: app.screen is app.dashboard)
        assert "REPLAY" not in app.query_one("#status").text and not app.current.steps
        app.open_replay(session)
        await until(pilot, lambda: app.current.state_text == "replay")
        await pilot.pause()
        app.switch_model(describe_file(Path("fake-model.gguf")))  # a model picked: back to live
        await until(pilot, lambda: app.screen is app.dashboard and app.engine is not None)
        assert "REPLAY" not in app.query_one("#status").text


def test_a_rebuilt_chain_continues_each_generator_from_its_own_counterpart() -> None:
    import numpy as np

    from tui.engine.fake import FakeEngine
    from tui.sampling.presets import BUILTIN_PRESETS

    eng = FakeEngine()
    preset = BUILTIN_PRESETS["creative"]  # xtc and dist: two generators drawing at different rates
    chain = preset.build(eng.build_context(5))
    rng = np.random.default_rng(0)
    for _ in range(6):
        trace = chain.sample(rng.normal(size=64).astype(np.float32) * 3)
        chain.accept(trace.token)
    again = preset.build(eng.build_context(5)).continue_draws(chain)
    for old, new in zip(chain.samplers, again.samplers):
        if getattr(old, "seeded", False):
            assert new.rng.copy().uniform_double() == old.rng.copy().uniform_double(), old.name


async def test_ctrl_n_during_a_chat_answer_keeps_the_new_conversation_clean() -> None:
    app = make_app(chat_template=TEMPLATE, max_tokens=30)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.query_one("#prompt", Input).value = "hello there"
        app.query_one(TokenStream).focus()
        await pilot.press("space")  # a step-mode run: paused at its first token
        await until(pilot, lambda: app.current.pending is not None)
        await pilot.press("ctrl+n")  # a new conversation while the old answer is unfinished
        await until(pilot, lambda: not app.running)
        assert [m["role"] for m in app.controller.chat.messages if m["role"] != "system"] == []  # before: an answer


async def test_chat_asked_of_a_model_without_a_template_stays_raw_and_the_hint_says_why() -> None:
    from tui.run.model import first_token_hint

    app = make_app(chat=True)  # the fake engine has no chat template
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        assert not app.chat_mode and any("no chat template" in n for n in notes(app))
        assert "RAW" not in app.query_one("#status").text  # nothing to switch to
    said = first_token_hint(False, "</s>", can_chat=False)
    assert "no chat template" in said and "press c" not in said


def test_a_remapped_exit_key_is_the_one_the_status_line_names() -> None:
    assert mode_label(Mode.CHAT, keymap={"chat.toggle": "ctrl+t"}) == "CHAT (ctrl+t: raw completion)"
    assert mode_label(Mode.REPLAY, keymap={"gen.stop": "escape,q"}) == "REPLAY (esc: leave the replay)"
    assert mode_label(Mode.LIVE, keymap={"chat.toggle": "x"}) == "RAW (x: chat)"
