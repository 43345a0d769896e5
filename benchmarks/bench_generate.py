"""`llmtui generate --json` vs llama.cpp's own greedy generation, in one process.

Both loops decode the same prompt on the same context with the same threads;
the only difference is who picks the token: llama.cpp's C sampler chain
(`llama_sampler_sample`) or our Python loop with its sampler chain, trace,
per-step JSON and output, exactly as the CLI runs it. Runs alternate (ABAB…)
so machine noise hits both alike. Prints both tok/s figures and the ratio.

    python benchmarks/bench_generate.py [--tokens 128] [--rounds 5] [--model NAME|PATH]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from tui.cli.generate import StepPrinter
from tui.engine import EngineSettings
from tui.engine.controller import Controller
from tui.engine.llama import LlamaEngine
from tui.engine.oracle import native_chain, native_sample
from tui.engine.models import discover, resolve_model
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "Once upon a time"


class NullOut(io.TextIOBase):
    def write(self, s: str) -> int:
        return len(s)


def native_run(engine: LlamaEngine, tokens: list[int], n: int) -> float:
    engine.clear()
    engine.decode(tokens)
    smpl = native_chain(engine, [("greedy", {})])
    eog = set(engine.eog_tokens())
    t0 = time.perf_counter()
    produced = 0
    for i in range(n):
        tok = native_sample(engine, smpl)
        produced += 1
        if tok in eog or i == n - 1:
            break
        engine.decode([tok])
    dt = time.perf_counter() - t0
    smpl.close()
    return produced / dt


def python_run(engine: LlamaEngine, tokens: list[int], n: int) -> float:
    """What `llmtui generate --json` does: the controller, its greedy chain, a JSON line per step."""
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=0, emit=lambda event: None, max_tokens=n)
    ctl.listeners.append(StepPrinter(engine, NullOut(), as_json=True))
    return ctl.run("", prefix=tokens).gen_tps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    entry = resolve_model(args.model, discover())
    with LlamaEngine(entry.path, EngineSettings(n_ctx=1024, n_threads=args.threads)) as engine:
        tokens = engine.tokenize(PROMPT)
        native_run(engine, tokens, 16)  # warm-up
        python_run(engine, tokens, 16)
        nat, py = [], []
        for _ in range(args.rounds):
            nat.append(native_run(engine, tokens, args.tokens))
            py.append(python_run(engine, tokens, args.tokens))
        n_med, p_med = statistics.median(nat), statistics.median(py)
        print(f"model: {entry.name}  threads: {engine.settings.threads}  tokens: {args.tokens}  rounds: {args.rounds}")
        print(f"llama.cpp native greedy : {n_med:7.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in nat)})")
        print(f"llmtui generate --json  : {p_med:7.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in py)})")
        pair = statistics.median(p / n for p, n in zip(py, nat))
        print(f"ratio llmtui / native   : {p_med / n_med:.3f}  (median of paired ratios: {pair:.3f})")


if __name__ == "__main__":
    main()
