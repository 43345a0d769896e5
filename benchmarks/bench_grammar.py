"""What a grammar costs a step: llama.cpp's grammar check of the candidates, on the full vocabulary (the
grammar stage first, where it sits) against the 40 left after top_k (where it could sit instead).

A greedy run of SmolLM2 under a JSON-schema grammar records its tokens and logits; each step is then
replayed: the grammar checks the full vocabulary, then only the top-40 candidates, then the whole chain is
timed with and without the grammar stage. Compare with the decode time of a step.

    python benchmarks/bench_grammar.py [--tokens 48] [--preset llama.cpp-default]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np

from tui.engine import EngineSettings, Generation
from tui.engine.grammar import Grammar
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.sampling.candidates import arange_ids, top_k_stable
from tui.sampling.presets import BUILTIN_PRESETS

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "hobbies": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "hobbies"],
}
PROMPT = [{"role": "user", "content": "Describe a person as JSON with a name, an age and hobbies."}]


def ms(samples: list[float]) -> str:
    q = np.percentile(samples, [50, 90]) * 1000
    return f"median {q[0]:6.3f} ms  p90 {q[1]:6.3f} ms  max {max(samples) * 1000:6.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--preset", default="llama.cpp-default")
    args = ap.parse_args()
    engine = LlamaEngine(embedded_model_path(), EngineSettings(n_ctx=1024, n_threads=2))
    grammar = Grammar.from_json_schema(engine, SCHEMA)
    prompt = engine.tokenize(engine.render_chat(PROMPT), parse_special=True)
    ctx = dataclasses.replace(engine.build_context(1), grammar=grammar)
    gen = Generation(engine, prompt, BUILTIN_PRESETS["greedy"].build(ctx), max_tokens=args.tokens)
    steps, logits = [], []
    for step in gen:
        steps.append(step)
        logits.append(engine.logits().copy())
    decode = [s.decode_ms / 1000 for s in steps[1:]]
    text = gen.stats.text
    print(f"{len(steps)} steps, output {text!r}")

    replay = grammar.clone()
    full_vocab, after_top_k, allowed = [], [], []
    for step, lg in zip(steps, logits):
        ids = arange_ids(len(lg))
        t0 = time.perf_counter()
        mask = replay.allowed(ids, lg)
        t1 = time.perf_counter()
        top = top_k_stable(lg, 40).astype(np.int32)
        t2 = time.perf_counter()
        replay.allowed(top, lg[top])
        t3 = time.perf_counter()
        full_vocab.append(t1 - t0)
        after_top_k.append(t3 - t2)
        allowed.append(int(mask.sum()))
        if not step.is_eog:
            replay.accept(step.token)

    preset = BUILTIN_PRESETS[args.preset]
    chains = {"without grammar": preset.build(engine.build_context(1)), "grammar first": preset.build(ctx)}
    chain_ms: dict[str, list[float]] = {}
    for label, chain in chains.items():
        times = []
        for step, lg in zip(steps, logits):
            t0 = time.perf_counter()
            chain.sample(lg)
            times.append(time.perf_counter() - t0)
            if not step.is_eog:
                chain.accept(step.token)  # the greedy run's token keeps both chains on the grammar's path
        chain_ms[label] = times

    print(f"vocabulary {engine.n_vocab:,}; tokens the grammar allowed per step: median "
          f"{statistics.median(allowed):,.0f}, min {min(allowed):,}, max {max(allowed):,}")
    print(f"grammar check, full vocabulary : {ms(full_vocab)}")
    print(f"grammar check, top-40 only     : {ms(after_top_k)}")
    for label, times in chain_ms.items():
        print(f"chain {args.preset} {label:16}: {ms(times)}")
    print(f"decode of one token            : {ms(decode)}")
    grammar.close()
    engine.close()


if __name__ == "__main__":
    main()
