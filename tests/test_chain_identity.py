"""Token for token: llmtui's chain and seed generate what llama.cpp's native chain generates."""

from __future__ import annotations

import pytest

from tui.engine import Generation, StopReason
from tui.engine.oracle import native_chain, native_sample
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "<|im_start|>user\nTell me a story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"
N_TOKENS = 256


def native_generate(engine, preset, seed: int, tokens: list[int], n: int) -> list[int]:
    """llama.cpp samples: llama_sampler_chain_init + the same llama_sampler_init_* + llama_sampler_sample."""
    ctx = engine.build_context(seed)
    chain = native_chain(engine, preset.native_specs(ctx))
    engine.clear()
    engine.decode(tokens)
    out: list[int] = []
    for _ in range(n):
        tok = native_sample(engine, chain)  # also accepts the token into the chain
        out.append(tok)
        if engine.is_eog(tok) or len(out) == n:
            break
        engine.decode([tok])
    chain.close()
    return out


def python_generate(engine, preset, seed: int, tokens: list[int], n: int) -> list[int]:
    engine.clear()
    gen = Generation(engine, tokens, preset.build(engine.build_context(seed)), max_tokens=n)
    steps = list(gen)
    assert gen.stats.stop_reason in (StopReason.EOG, StopReason.MAX_TOKENS)
    return [s.token for s in steps]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 42, 20251125])
@pytest.mark.parametrize("name", ["llama.cpp-default", "creative", "mirostat"])
def test_same_tokens_as_llama_cpp(engine, name: str, seed: int) -> None:
    preset = BUILTIN_PRESETS[name]
    tokens = engine.tokenize(PROMPT, parse_special=True)
    reference = native_generate(engine, preset, seed, tokens, N_TOKENS)
    ours = python_generate(engine, preset, seed, tokens, N_TOKENS)
    assert len(reference) > 20  # a real generation, not an immediate end of turn
    first_diff = next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b), None)
    assert first_diff is None and len(ours) == len(reference), (
        f"first difference at step {first_diff}: {b''.join(engine.piece(t) for t in ours[:first_diff or 0])!r}"
    )


def test_same_seed_same_tokens_and_other_seed_other_text(engine) -> None:
    preset = BUILTIN_PRESETS["balanced"]
    tokens = engine.tokenize("Once upon a time")
    a = python_generate(engine, preset, 7, tokens, 48)
    b = python_generate(engine, preset, 7, tokens, 48)
    c = python_generate(engine, preset, 8, tokens, 48)
    assert a == b
    assert a != c
