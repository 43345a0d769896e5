"""KV-cache accounting, the memory guard, context shift, chat prefix reuse, the tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tui.config import app_dirs
from tui.engine import ContextError, EngineSettings, Generation, StopReason
from tui.engine.chat import ChatSession
from tui.engine.kv import computed_allocation
from tui.engine.models import gemma_model_path
from tui.sampling import Chain, Greedy
from tui.sampling.presets import BUILTIN_PRESETS


def models(smollm2_path: Path) -> list[Path]:
    gemma = gemma_model_path(app_dirs().models, assemble=False)  # only when the gemma extra was installed and assembled
    return [smollm2_path] + ([gemma] if gemma else [])


@pytest.mark.parametrize("n_ctx", [256, 1000, 4096])
@pytest.mark.parametrize(("type_k", "type_v"), [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "f16")])
def test_kv_bytes_equal_llama_cpp_log(smollm2_path: Path, n_ctx: int, type_k: str, type_v: str) -> None:
    from tui.engine.llama import LlamaEngine

    for path in models(smollm2_path):
        for swa_full in (True, False):
            with LlamaEngine(path, EngineSettings(n_ctx=n_ctx, type_k=type_k, type_v=type_v,
                                                   swa_full=swa_full)) as eng:
                dims = eng.dims
                ours, _full, _swa = computed_allocation(
                    arch=dims.arch, n_layer=dims.n_layer, n_head_kv=dims.n_head_kv,
                    head_dim_k=dims.head_k, head_dim_v=dims.head_v, type_k=type_k, type_v=type_v,
                    n_ctx=n_ctx, n_swa=dims.n_swa, swa_full=swa_full)
                logged = [float(m) * 2**20 for m in re.findall(
                    r"llama_kv_cache: size = +([\d.]+) MiB", "\n".join(eng._context_log))]
                assert logged, "llama.cpp logged no KV cache size"
                # the log prints MiB with two decimals (±0.005 MiB per cache)
                assert abs(ours - sum(logged)) <= 0.006 * 2**20 * len(logged), (path.name, ours, logged)
                assert eng.n_ctx == -(-n_ctx // 256) * 256  # llama.cpp pads n_ctx to 256


def test_memory_guard_refuses_and_names_the_largest_fitting_n_ctx(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    with pytest.raises(ContextError) as err:
        LlamaEngine(smollm2_path, EngineSettings(n_ctx=4_000_000))
    msg = str(err.value)
    assert "KV cache" in msg and "the largest n_ctx that fits is about" in msg
    largest = int(msg.rsplit("about ", 1)[1].replace(",", ""))
    assert 1024 <= largest < 4_000_000
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=16384)) as eng:  # beyond training: a warning
        assert any("beyond the model's training context" in w for w in eng.warnings)


def _coherent(text: str) -> bool:
    words = text.split()
    alpha = [w for w in words if re.fullmatch(r"[A-Za-z][A-Za-z'’,.!?;:\-\"]*", w)]
    return len(words) > 40 and len(alpha) / len(words) > 0.7 and len(set(words)) / len(words) > 0.3


@pytest.mark.slow
def test_shift_keeps_generating_past_the_context(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    for path in models(smollm2_path):
        with LlamaEngine(path, EngineSettings(n_ctx=256)) as eng:
            assert eng.can_shift()
            gen = Generation(eng, eng.tokenize("Once upon a time"), BUILTIN_PRESETS["balanced"].build(
                eng.build_context(3)), max_tokens=1000, ignore_eos=True, eog_tokens=eng.eog_tokens(),
                context_policy="shift")
            steps = list(gen)
            assert len(steps) == 1000 and gen.stats.stop_reason is StopReason.MAX_TOKENS
            assert max(s.n_past for s in steps) <= eng.n_ctx == 256
            shifted = [s for s in steps if s.shift is not None]
            assert len(shifted) >= 5 and [s.index for s in shifted] == [i for i, _k, _d in gen.shifts]
            after_first = "".join(s.text for s in steps if s.index > shifted[0].index)
            assert _coherent(after_first), after_first[:400]


def test_stop_policy_says_why(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)) as eng:
        gen = Generation(eng, eng.tokenize("Once upon a time"), Chain([Greedy()]), max_tokens=1000,
                         ignore_eos=True, eog_tokens=eng.eog_tokens())
        list(gen)
        assert gen.stats.stop_reason is StopReason.CONTEXT_FULL and "--context-policy shift" in gen.stats.error


def _answer(eng, tokens: list[int], n: int = 40) -> list[int]:
    gen = Generation(eng, tokens, Chain([Greedy()]), max_tokens=n)
    return [s.token for s in gen]


def test_three_turn_chat_evaluates_only_new_tokens(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=2048)) as eng:
        chat = ChatSession(eng, system="You are a concise assistant.")
        for turn, question in enumerate(["Name a colour.", "Name an animal.", "Name a country."]):
            plan = chat.prepare(question)
            before = len(eng.held)
            gen = Generation(eng, plan.evaluate, Chain([Greedy()]), max_tokens=40)
            steps = list(gen)
            assert gen.stats.prompt_tokens == len(plan.tokens) - plan.reused
            if turn == 0:
                assert plan.reused == 0
            else:
                # everything the cache held that the new rendering shares is reused
                assert plan.reused >= before - 3 and plan.reused > len(plan.tokens) // 2
                assert gen.stats.prompt_tokens < len(plan.tokens) - before + 4
            answer = [s.token for s in steps]
            chat.finish(gen.stats.text)
            held = list(eng.held)
            # the same answer as evaluating the whole history from scratch
            eng.clear()
            assert _answer(eng, plan.tokens) == answer
            eng.clear()
            eng.decode(held)  # restore the conversation's cache


def test_chat_drops_oldest_turns_when_full(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=512)) as eng:
        chat = ChatSession(eng, system="Be brief.", policy="drop-oldest-turns", reserve=64)
        long = "Tell me about the sea. " * 12
        dropped = 0
        for _ in range(6):
            plan = chat.prepare(long)
            dropped += plan.dropped_turns
            gen = Generation(eng, plan.evaluate, Chain([Greedy()]), max_tokens=48)
            assert list(gen), "every turn answers"
            chat.finish(gen.stats.text)
            assert eng.n_past <= eng.n_ctx  # what was dropped made room
        assert dropped >= 1 and chat.messages[0]["role"] == "system"
        strict = ChatSession(eng, system="Be brief.")
        with pytest.raises(ContextError, match="no longer fits"):
            for _ in range(6):
                strict.prepare(long)
                strict.finish("ok")


def test_tokenizer_matches_llama_cpp_and_bos_changes_the_first_id(smollm2_path: Path) -> None:
    import llama_cpp

    from tui.engine.llama import LlamaEngine

    text = "The quick brown fox, naïve café, 你好 🙂 <|im_start|>"
    ref = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)) as eng:
        for special in (False, True):
            assert eng.tokenize(text, add_bos=False, parse_special=special) == ref.tokenize(
                text.encode(), add_bos=False, special=special)
        with_bos = eng.tokenize(text, add_bos=True)
        without = eng.tokenize(text, add_bos=False)
        assert with_bos[0] == eng.info.bos != without[0] and with_bos[1:] == without
        # and the next-token distribution changes with it
        eng.clear()
        eng.decode(with_bos)
        top_bos = Chain([Greedy()]).sample(eng.logits()).top_ids.tolist()
        eng.clear()
        eng.decode(without)
        top_plain = Chain([Greedy()]).sample(eng.logits()).top_ids.tolist()
        assert top_bos != top_plain
    ref.close()


def test_chat_reuses_only_what_the_cache_still_holds() -> None:
    from tui.engine.fake import FakeEngine

    eng = FakeEngine(EngineSettings(n_ctx=512))
    chat = ChatSession(eng, system="be brief")
    plan = chat.prepare("hello there")
    list(Generation(eng, plan.evaluate, Chain([Greedy()]), max_tokens=5))
    chat.finish("an answer")
    second = chat.prepare("and again")
    assert second.reused > 0  # the first turn is still in the cache
    eng.clear()  # something else used the engine (an experiment, another run)
    chat.messages.pop()
    third = chat.prepare("and again")
    assert third.reused == 0 and third.evaluate == third.tokens  # nothing may be taken as cached


def test_shift_keeps_the_whole_prompt_when_part_of_it_was_reused() -> None:
    from tui.engine.fake import FakeEngine

    eng = FakeEngine(EngineSettings(n_ctx=64))
    eng.decode(list(range(1, 21)))  # 20 tokens already in the cache (a previous turn)
    gen = Generation(eng, [21, 22, 23, 24, 25], Chain([Greedy()]), max_tokens=80, ignore_eos=True,
                     context_policy="shift")
    steps = list(gen)
    assert gen.shifts and all(n_keep == 25 for _, n_keep, _ in gen.shifts)
    assert eng.held[:25] == list(range(1, 26)) and len(steps) == 80
