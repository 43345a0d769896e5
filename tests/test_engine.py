"""The real engine on the real SmolLM2 model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from tui.engine import (
    ContextError,
    EngineSettings,
    Generation,
    ModelFileError,
    StopReason,
)
from tui.engine.oracle import (
    cache_pos_max,
    native_chain,
    native_sample,
    perf_counters,
    perf_reset,
)
from tui.sampling import Chain, Greedy, SampleTrace

PROMPT = "Once upon a time"


def native_greedy(engine, tokens: list[int], n: int) -> list[int]:
    """llama.cpp's own greedy generation: its sampler chain reads the logits in C."""
    engine.clear()
    engine.decode(tokens)
    smpl = native_chain(engine, [("greedy", {})])
    out = []
    for _ in range(n):
        tok = native_sample(engine, smpl)
        out.append(tok)
        engine.decode([tok])
    smpl.close()
    return out


def python_greedy(engine, tokens: list[int], n: int, **kw) -> Generation:
    engine.clear()
    gen = Generation(engine, tokens, Chain([Greedy()]), max_tokens=n, **kw)
    gen.steps = list(gen)  # type: ignore[attr-defined]
    return gen


def test_greedy_equals_llama_cpp_for_64_tokens(engine) -> None:
    tokens = engine.tokenize(PROMPT)
    reference = native_greedy(engine, tokens, 64)
    gen = python_greedy(engine, tokens, 64, ignore_eos=True, eog_tokens=engine.eog_tokens())
    assert [s.token for s in gen.steps] == reference
    assert gen.stats.stop_reason is StopReason.MAX_TOKENS
    assert len(gen.stats.text) > 100  # real text, not an empty loop


def test_n_past_grows_by_one_per_token(engine) -> None:
    tokens = engine.tokenize(PROMPT)
    gen = python_greedy(engine, tokens, 20)
    assert [s.n_past for s in gen.steps] == list(range(len(tokens), len(tokens) + len(gen.steps)))
    assert [s.index for s in gen.steps] == list(range(len(gen.steps)))
    # the KV cache holds the prompt and every generated token but the last (never decoded)
    assert engine.n_past == cache_pos_max(engine) + 1 == len(tokens) + len(gen.steps) - 1


class ScriptedSampler:
    """Forces a token sequence through the real loop (to exercise real pieces)."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = list(tokens)
        self.i = 0

    def sample(self, logits: np.ndarray) -> SampleTrace:
        tok = self.tokens[self.i]
        trace = Chain([Greedy()]).sample(logits)
        return SampleTrace(**{f: getattr(trace, f) for f in trace.__dataclass_fields__} | {"token": tok})

    def accept(self, token: int) -> None:
        self.i += 1


@pytest.mark.parametrize("text", ["你好，世界", "🙂 emoji", "日本語のテキスト"])
def test_multibyte_characters_split_across_tokens_decode(engine, text: str) -> None:
    target = engine.tokenize(text)
    pieces = [engine.piece(t) for t in target]
    # SmolLM2 really splits these characters: some pieces are not valid UTF-8 alone
    assert any(not _valid_utf8(p) for p in pieces)
    engine.clear()
    gen = Generation(engine, engine.tokenize("Say:"), ScriptedSampler(target), max_tokens=len(target))
    steps = list(gen)
    assert "".join(s.text for s in steps) == text
    assert b"".join(s.piece for s in steps) == text.encode()
    # a step that ends mid-character shows nothing yet, and nothing is ever garbled
    assert any(s.text == "" for s in steps)
    assert all("\ufffd" not in s.text for s in steps)


def _valid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_pieces_are_exact_bytes_not_padded(engine) -> None:
    # llama-cpp-python's token_to_piece helper returns a 32-byte NUL-padded buffer
    for tok in engine.tokenize(" Hello world, indubitably"):
        piece = engine.piece(tok)
        assert b"\x00" not in piece
        assert len(piece) < 32
    long_tok = max(range(engine.n_vocab), key=lambda t: len(engine.piece(t)))
    assert len(engine.piece(long_tok)) > 16  # long pieces come back whole


def test_cancel_stops_within_one_token(engine) -> None:
    cancel = threading.Event()
    engine.clear()
    gen = Generation(engine, engine.tokenize(PROMPT), Chain([Greedy()]), max_tokens=500, cancel=cancel,
                     ignore_eos=True, eog_tokens=engine.eog_tokens())
    seen_at_cancel = None
    count = 0
    for step in gen:
        count += 1
        if step.index == 9:
            # cancel from another thread, as the UI does
            t = threading.Thread(target=cancel.set)
            t.start()
            t.join()
            seen_at_cancel = count
    assert seen_at_cancel == 10
    assert count <= seen_at_cancel + 1
    assert gen.stats.stop_reason is StopReason.CANCELLED


def test_eog_stops_generation_on_chat_prompt(engine) -> None:
    prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    engine.clear()
    gen = Generation(engine, engine.tokenize(prompt, parse_special=True), Chain([Greedy()]), max_tokens=200)
    steps = list(gen)
    assert gen.stats.stop_reason is StopReason.EOG
    assert steps[-1].is_eog and engine.is_eog(steps[-1].token)
    assert steps[-1].text == ""  # the end-of-turn token is not part of the text


def test_ignore_eos_generates_past_end_of_turn(engine) -> None:
    prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
    engine.clear()
    gen = Generation(engine, engine.tokenize(prompt, parse_special=True), Chain([Greedy()]), max_tokens=60,
                     ignore_eos=True, eog_tokens=engine.eog_tokens())
    steps = list(gen)
    assert len(steps) == 60 and not any(s.is_eog for s in steps)


def test_context_full_stops_with_reason(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)) as eng:
        assert eng.n_ctx == 256
        gen = Generation(eng, eng.tokenize(PROMPT), Chain([Greedy()]), max_tokens=1000, ignore_eos=True,
                         eog_tokens=eng.eog_tokens())
        steps = list(gen)
        assert gen.stats.stop_reason is StopReason.CONTEXT_FULL
        assert max(s.n_past for s in steps) <= eng.n_ctx
        with pytest.raises(ContextError, match="does not fit"):
            list(Generation(eng, list(range(300)), Chain([Greedy()]), max_tokens=1))


def test_tokenize_options(engine) -> None:
    bos = engine.info.bos
    assert engine.info.add_bos is False  # SmolLM2 does not ask for BOS
    plain = engine.tokenize("Hello")
    assert plain[0] != bos
    assert engine.tokenize("Hello", add_bos=True) == [bos, *plain]
    special = engine.tokenize("<|im_start|>", parse_special=True)
    literal = engine.tokenize("<|im_start|>", parse_special=False)
    assert len(special) == 1 and len(literal) > 1
    assert engine.is_control(special[0])


def test_logits_are_a_zero_copy_view(engine) -> None:
    engine.clear()
    engine.decode(engine.tokenize(PROMPT))
    a = engine.logits()
    b = engine.logits()
    assert a.shape == (engine.n_vocab,) and a.dtype == np.float32
    assert np.shares_memory(a, b)
    assert a.ctypes.data == b.ctypes.data


def test_metadata_and_perf_counters(engine) -> None:
    info = engine.info
    assert (info.arch, info.quant, info.n_vocab, info.n_layer) == ("llama", "Q4_1", 49152, 30)
    assert (info.n_head, info.n_head_kv, info.n_embd, info.n_ctx_train) == (9, 3, 576, 8192)
    assert info.has_chat_template and "<|im_start|>" in info.chat_template
    assert 100e6 < info.n_params < 200e6
    assert engine.load_ms > 0
    engine.clear()
    perf_reset(engine)
    gen = python_greedy(engine, engine.tokenize(PROMPT), 8)
    perf = perf_counters(engine)
    assert perf.n_eval == len(gen.steps) - 1  # every sampled token but the last was decoded
    assert perf.n_prompt >= 1 and perf.t_eval_ms > 0


def test_llama_log_goes_to_the_ring_not_the_terminal(smollm2_path: Path, capfd) -> None:
    from tui.engine.binding import LOG
    from tui.engine.llama import LlamaEngine

    mark = LOG.mark
    with LlamaEngine(smollm2_path, EngineSettings(n_ctx=256)):
        pass
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert any("llama_model_loader" in line.text for line in LOG.since(mark))


def test_close_releases_memory(smollm2_path: Path) -> None:
    from tui.engine.llama import LlamaEngine

    proc = psutil.Process()
    eng = LlamaEngine(smollm2_path, EngineSettings(n_ctx=2048, use_mmap=False))
    eng.decode(eng.tokenize(PROMPT * 20))
    loaded = proc.memory_info().rss
    eng.close()
    released = proc.memory_info().rss
    assert eng.closed
    assert loaded - released > 50 * 2**20, (loaded, released)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        (b"this is a text file, not a model\n" * 10, "not a GGUF file"),
        ("truncate", "truncated GGUF file"),
        ("header", "truncated GGUF file"),
    ],
)
def test_bad_model_files_raise_one_line_errors(tmp_path: Path, smollm2_path: Path, content, problem) -> None:
    from tui.engine.llama import LlamaEngine

    bad = tmp_path / "bad.gguf"
    if content == "truncate":
        bad.write_bytes(smollm2_path.read_bytes()[: 50_000_000])
    elif content == "header":
        bad.write_bytes(smollm2_path.read_bytes()[:3000])
    elif content is not None:
        bad.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        LlamaEngine(bad)
    msg = str(err.value)
    assert problem in msg and str(bad) in msg and "\n" not in msg


def test_resample_pending_step_without_redecoding(engine) -> None:
    from tui.sampling.presets import BUILTIN_PRESETS

    engine.clear()
    balanced = BUILTIN_PRESETS["balanced"].build(engine.build_context(5))
    gen = Generation(engine, engine.tokenize(PROMPT), balanced, max_tokens=8)
    it = iter(gen)
    steps = [next(it) for _ in range(3)]
    n_past = engine.n_past
    greedy_step = gen.resample(Chain([Greedy()]))
    assert engine.n_past == n_past  # nothing was decoded again
    assert greedy_step.index == steps[-1].index
    assert greedy_step.token == int(np.argmax(engine.logits()))
    rest = list(it)
    assert gen.stats.generated == 8 and len(rest) == 5
    assert gen.stats.text.startswith("".join(s.text for s in steps[:2]) + greedy_step.text)
    assert gen.sampler.__class__ is Chain and gen.sampler.names == ["greedy"]
    # after the run the last step's logits are kept for re-sampling it later
    assert gen.last_logits is not None
    assert int(np.argmax(gen.last_logits)) == rest[-1].token
