"""Sampler-chain cost and generation speed vs llama.cpp's native sampling.

1. Per-step time of a preset's chain *with the full trace*, on real logits:
   SmolLM2 (vocab 49,152) and Gemma 3 (262,144) when the gemma extra is
   installed (otherwise synthetic logits of that size). Two figures: "hot"
   (the same step repeated: the number comparable to a microbenchmark) and
   "cold" (caches flushed by streaming 128 MiB first, which is what a decode
   does to them between two real steps).
2. Generation tok/s of the instrumented loop (tui.engine.Generation with the
   chain and trace) vs a loop where llama.cpp samples natively with the same
   samplers and seed (llama_sampler_sample), alternated in one run.

    python benchmarks/bench_sampling.py [--preset balanced] [--tokens 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tui.engine import EngineSettings, Generation
from tui.engine.llama import LlamaEngine
from tui.engine.oracle import native_chain, native_sample
from tui.config import app_dirs
from tui.engine.models import embedded_model_path, gemma_model_path
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "Once upon a time"
_EVICT = np.ones(128 * 2**20 // 4, dtype=np.float32)


def real_logits(engine: LlamaEngine, n: int = 32) -> list[np.ndarray]:
    engine.clear()
    engine.decode(engine.tokenize(PROMPT))
    out = []
    for _ in range(n):
        lg = engine.logits().copy()
        out.append(lg)
        engine.decode([int(np.argmax(lg))])
    return out


def per_step_ms(preset, ctx, logits: list[np.ndarray], *, cold: bool) -> float:
    chain = preset.build(ctx)
    times = []
    for rep in range(3):
        for lg in logits:
            if cold:
                _EVICT.sum()
            t0 = time.perf_counter()
            tr = chain.sample(lg)
            times.append(time.perf_counter() - t0)
            chain.accept(tr.token)
    return statistics.median(times) * 1000


def native_tps(engine: LlamaEngine, preset, seed: int, tokens: list[int], n: int) -> float:
    chain = native_chain(engine, preset.native_specs(engine.build_context(seed)))
    engine.clear()
    engine.decode(tokens)
    t0 = time.perf_counter()
    for i in range(n):
        tok = native_sample(engine, chain)
        if i < n - 1:
            engine.decode([tok])
    dt = time.perf_counter() - t0
    chain.close()
    return n / dt


def python_tps(engine: LlamaEngine, preset, seed: int, tokens: list[int], n: int) -> float:
    engine.clear()
    gen = Generation(engine, tokens, preset.build(engine.build_context(seed)), max_tokens=n,
                     ignore_eos=True, eog_tokens=engine.eog_tokens())
    for _ in gen:
        pass
    return gen.stats.gen_tps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    preset = BUILTIN_PRESETS[args.preset]
    models = [("SmolLM2", embedded_model_path())]
    gemma = gemma_model_path(app_dirs().models, assemble=True)
    models.append(("Gemma 3 270M", gemma))

    print(f"preset {preset.name}: {preset.describe()}\n")
    print("1. per-step chain time with full trace (median ms)")
    for label, path in models:
        if path is None:
            n = 262_144
            rng = np.random.default_rng(0)
            logits = [(rng.standard_normal(n) * 2.5).astype(np.float32) for _ in range(8)]
            for lg in logits:
                lg[rng.integers(n, size=5)] += 12
            from tui.sampling.presets import BuildContext

            ctx = BuildContext(n_vocab=n, seed=args.seed)
            label = "synthetic (gemma extra not installed)"
        else:
            with LlamaEngine(path, EngineSettings(n_ctx=512)) as eng:
                logits = real_logits(eng)
                ctx = eng.build_context(args.seed)
        hot = per_step_ms(preset, ctx, logits, cold=False)
        cold = per_step_ms(preset, ctx, logits, cold=True)
        print(f"   {label:<40} vocab {len(logits[0]):>7,}: hot {hot:6.3f} ms   cold {cold:6.3f} ms")

    print(f"\n2. generation tok/s, {args.tokens} tokens, {args.rounds} alternating rounds (median)")
    for label, path in models:
        if path is None:
            print(f"   {label}: not installed (pip install -e '.[gemma]')")
            continue
        with LlamaEngine(path, EngineSettings(n_ctx=1024)) as eng:
            tokens = eng.tokenize(PROMPT)
            native_tps(eng, preset, args.seed, tokens, 16)
            python_tps(eng, preset, args.seed, tokens, 16)
            nat, py = [], []
            for _ in range(args.rounds):
                nat.append(native_tps(eng, preset, args.seed, tokens, args.tokens))
                py.append(python_tps(eng, preset, args.seed, tokens, args.tokens))
            n_med, p_med = statistics.median(nat), statistics.median(py)
            pair = statistics.median(p / n for p, n in zip(py, nat))
            print(f"   {label:<14} threads {eng.settings.threads}: llama.cpp native {n_med:6.1f} tok/s   "
                  f"llmtui loop {p_med:6.1f} tok/s   ratio {p_med / n_med:.3f} (median of paired ratios {pair:.3f})")


if __name__ == "__main__":
    main()
