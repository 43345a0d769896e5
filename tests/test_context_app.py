"""Context features in the dashboard: chat mode with reuse, KV cell map and shift, tokenizer, settings."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select

from tests.conftest import llama_pool, make_app, ready, real_app, until
from tui.app.screens.settings import SettingsScreen
from tui.app.screens.tokenizer import TokenizerScreen
from tui.app.widgets.token_stream import TokenStream
from tui.engine.models import describe_file


async def test_chat_mode_reuses_the_cache_and_says_so(smollm2_path: Path) -> None:
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool, system="Answer in one sentence.")
    app.max_tokens = 24
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        app.query_one(TokenStream).focus()
        await pilot.press("c")
        assert app.chat_mode and "CHAT" in app.query_one("#status").text
        for i, question in enumerate(["Hi!", "What is a cat?"]):
            app.query_one("#prompt", Input).value = question
            app.query_one("#prompt", Input).focus()
            await pilot.press("enter")
            await until(pilot, lambda: app.current.state_text.startswith("stopped"), timeout=60)
            if i == 0:
                assert app.current.n_reused == 0
        # the second turn reused the first turn's tokens
        assert app.current.n_reused > 20 and "reused" in app.query_one("#status").text
        conversation = app.query_one(TokenStream)._tokens[0].text
        assert "<|im_start|>user" in conversation and "Hi!" in conversation and "What is a cat?" in conversation
        kv = app.query_one("#kv")._build(60)
        assert any("reused" in text for text, _ in kv[2])
    pool.close_all()


async def test_shift_policy_in_the_app_shows_shifts() -> None:
    app = make_app(max_tokens=1000)
    app.context_policy = "shift"
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one("#prompt", Input).value = "the cat"
        app.query_one("#prompt", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.current.state_text.startswith("stopped"), timeout=30)
        assert len(app.current.steps) == 1000 and app.current.state_text == "stopped: max tokens reached"
        assert len(app.current.shifts) >= 2
        lines = app.query_one("#kv")._build(60)
        assert any("shifted ×" in text for text, _ in lines[-1])
        assert any(cls == "kv--keep" for _text, cls in lines[1])  # n_keep marked on the cell strip


async def test_tokenizer_inspector_on_the_real_model(smollm2_path: Path) -> None:
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        app.query_one("#prompt", Input).value = "The capital of France is"
        app.query_one(TokenStream).focus()
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, TokenizerScreen))
        table = app.screen.query_one("#compare", DataTable)
        await until(pilot, lambda: table.row_count == 4, timeout=30)
        labels = [str(table.get_row_at(i)[0]) for i in range(4)]
        assert labels[0].startswith("with BOS") and labels[1].startswith("without BOS")
        with_bos, without = table.get_row_at(0)[1:], table.get_row_at(1)[1:]
        assert with_bos != without  # BOS changes the next-token distribution
        chips = str(app.screen.query_one("#chips").render())
        assert "France" in chips and "5 tokens" in chips
    pool.close_all()


async def test_settings_recreate_the_context(smollm2_path: Path) -> None:
    pool = llama_pool()
    app = real_app([describe_file(smollm2_path, source="embedded")], pool)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.controller is not None, timeout=30)
        engine = app.engine
        app.query_one(TokenStream).focus()
        await pilot.press("comma")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#n_ctx", Input).value = "1000"
        app.screen.query_one("#type_k", Select).value = "q8_0"
        app.screen.query_one("#policy", Select).value = "shift"
        await pilot.click("#apply")
        await until(pilot, lambda: "context recreated" in app.load_info, timeout=30)
        assert app.engine is engine  # the same model, still mapped
        assert engine.n_ctx == 1024 and engine.settings.type_k == "q8_0" and app.context_policy == "shift"
        kv = engine.kv_layout()
        assert kv.type_k == "q8_0" and kv.allocated < 1024 * 23040  # q8_0 keys are smaller than f16
        await pilot.press("comma")
        await until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#n_ctx", Input).value = "4000000"
        await pilot.click("#apply")
        await until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await pilot.pause(0.5)
        assert engine.n_ctx == 1024  # refused by the memory guard; the working context stays
    pool.close_all()
