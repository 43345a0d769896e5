"""Runs the learning experiments need that the dashboard does not do by itself: the same prompt and
seed under several presets, one after the other, with a summary of what each chain did. Pure
engine + sampling code (no Textual); the caller holds the engine (no other run may use it)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..engine.loop import Generation, Step


@dataclass(frozen=True, slots=True)
class StageSummary:
    name: str
    note: str
    kept_mean: float  # candidates left after the stage, mean over steps
    mass_removed_mean: float  # probability the stage removed, mean over steps


@dataclass(frozen=True, slots=True)
class PresetRun:
    preset: str
    chain: str  # the preset's description (sampler → sampler …)
    text: str
    n_tokens: int
    stop_reason: str
    entropy_mean: float  # nats, of the raw distributions (the model's own uncertainty)
    chosen_p_mean: float  # raw probability of the chosen tokens: low = the chain took unlikely tokens
    final_p_mean: float  # the chosen tokens' probability after the chain (after temperature): what T changes
    rank_mean: float  # raw rank of the chosen tokens (1 = the most likely)
    draws: int  # steps decided by a random draw (0 for greedy)
    stages: tuple[StageSummary, ...]
    distinct_ratio: float  # distinct tokens / tokens: low = repetitive


def summarise(preset: Any, steps: Sequence[Step], stop_reason: str) -> PresetRun:
    text = "".join(s.text for s in steps)
    traces = [s.trace for s in steps]
    stages: list[StageSummary] = []
    if traces:
        for i, first in enumerate(traces[0].stages):
            same = [t.stages[i] for t in traces if len(t.stages) > i]
            stages.append(StageSummary(first.name, first.note, statistics.mean(st.n_out for st in same),
                                       statistics.mean(st.mass_removed for st in same)))
    ranks = [t.rank or len(t.top_ids) + 1 for t in traces]
    return PresetRun(
        preset=preset.name, chain=preset.describe(), text=text, n_tokens=len(steps), stop_reason=stop_reason,
        entropy_mean=statistics.mean(t.entropy for t in traces) if traces else 0.0,
        chosen_p_mean=statistics.mean(t.raw_p for t in traces) if traces else 0.0,
        final_p_mean=statistics.mean(s.prob for s in steps) if steps else 0.0,
        rank_mean=statistics.mean(ranks) if ranks else 0.0,
        draws=sum(t.draw is not None for t in traces), stages=tuple(stages),
        distinct_ratio=len({s.token for s in steps}) / len(steps) if steps else 0.0,
    )


def run_presets(engine: Any, prompt: str, presets: Sequence[Any], *, seed: int, max_tokens: int,
                on_progress: Any = None) -> list[PresetRun]:
    """Generate from the same prompt and seed with each preset (a fresh cache and chain each time)."""
    runs = []
    tokens = engine.tokenize(prompt)
    for preset in presets:
        if on_progress:
            on_progress(f"generating with {preset.name}…")
        engine.clear()
        chain = preset.build(engine.build_context(seed))
        gen = Generation(engine, tokens, chain, max_tokens=max_tokens)
        steps = list(gen)
        reason = gen.stats.stop_reason.value if gen.stats.stop_reason else "?"
        runs.append(summarise(preset, steps, reason))
    engine.clear()
    return runs


def next_token_distribution(engine: Any, messages: list[dict[str, str]], answer_start: str = "") -> np.ndarray:
    """The model's next-token probabilities after ``messages`` rendered with its chat template and the
    assistant's answer begun with ``answer_start`` (the cache is reused where it can be, then cut)."""
    from ..engine.chat import chat_prompt, reusable_prefix

    text, tokens = chat_prompt(engine, messages)
    if answer_start:
        tokens = tokens + engine.tokenize(answer_start, add_bos=False)
    keep = reusable_prefix(engine, tokens)
    engine.truncate(keep)
    engine.decode(tokens[keep:])
    return next_token_probs(engine)


def next_token_probs(engine: Any) -> np.ndarray:
    """The softmax of the engine's last logits (float64: small probabilities stay exact)."""
    from ..engine.lab import log_softmax

    return np.exp(log_softmax(engine.logits()[None])[0])


def word_probability(engine: Any, p: np.ndarray, words: Sequence[str]) -> float:
    """The probability that the next token starts one of ``words`` (each word's first token, counted once)."""
    ids = {engine.tokenize(w, add_bos=False)[0] for w in words if w}
    return float(sum(p[i] for i in ids))


def top_tokens(engine: Any, p: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens as (label, probability)."""
    from ..safe_text import piece_label

    best = np.argsort(p)[::-1][:k]
    return [(piece_label(engine.piece(int(i))), float(p[i])) for i in best]


def recall_after_shift(engine: Any, fact: str, filler: str, question: str, answer: str) -> dict[str, float]:
    """P(``answer``) after ``question`` in three caches: the fact in it; the fact's cells dropped by a
    context shift (llama.cpp's: remove the cells, move the rest back, RoPE re-rotated); the fact never seen.
    The engine's context must hold fact + filler + question."""
    fact_t = engine.tokenize(fact, add_bos=None)
    rest = engine.tokenize(filler, add_bos=False)
    ask = engine.tokenize(question, add_bos=False)
    target = engine.tokenize(answer, add_bos=False)[0]

    def p_answer() -> float:
        return float(next_token_probs(engine)[target])

    out = {}
    engine.clear()
    engine.decode(fact_t + rest + ask)
    out["in_cache"] = p_answer()
    engine.clear()
    engine.decode(fact_t + rest)
    bos = getattr(getattr(engine, "info", None), "bos", -1)
    keep = 1 if fact_t and fact_t[0] == bos else 0  # llama.cpp's shift keeps BOS: only the fact goes
    engine.shift(keep, len(fact_t) - keep)  # the fact's cells go; every later cell moves back by as many
    engine.decode(ask)
    out["shifted_out"] = p_answer()
    engine.clear()
    engine.decode(engine.tokenize(filler, add_bos=None) + ask)
    out["never_seen"] = p_answer()
    engine.clear()
    out["fact_tokens"] = len(fact_t) - keep
    return out


def ms_per_token_by_position(engine: Any, tokens: Sequence[int], chunk: int, gen: int) -> dict[str, Any]:
    """Prompt processing timed chunk by chunk (ms per token against the position the chunk starts at), then
    ``gen`` single-token decodes at the end of the long context and as many at its start, for comparison."""
    engine.clear()
    rows = []
    for start in range(0, len(tokens), chunk):
        part = list(tokens[start:start + chunk])
        ms = engine.decode(part)
        rows.append((start, ms / len(part)))
    last = int(np.argmax(engine.logits()))
    late = [engine.decode([last]) for _ in range(gen)]
    engine.clear()
    engine.decode(list(tokens[:1]))
    early = [engine.decode([last]) for _ in range(gen)]
    engine.clear()
    return {"prompt": rows, "gen_ms_late": statistics.median(late), "gen_ms_early": statistics.median(early),
            "n_tokens": len(tokens)}
