"""A/B lockstep of two presets on one model against a single run, side by side, and what branches cost.

Each round runs, in alternating order, a single run of preset A (the generation loop, as the dashboard runs
it) and an A/B run of A and B (tui/engine/ab.py: one llama_decode per step, two rows once the sides part) on
the same prompt, and compares generation speed: tokens per second of both sides of the A/B run (two per
step) and steps per second, each over tokens per second of the single run. B = A as well: the sides never
part, every step is one token in one llama_decode that both chains read.
Then a small tree: switching between two resident branches, and to a
branch whose cells were evicted, with the tokens each switch decoded.

    python benchmarks/bench_ab.py [--tokens 128] [--rounds 3] [--a greedy] [--b creative] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from tui.engine import EngineSettings, Generation
from tui.engine.ab import ABRun
from tui.engine.branching import BranchStart
from tui.engine.controller import Controller
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.engine.settings import max_threads
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "Once upon a time, in a small village by the sea,"


def single(engine: LlamaEngine, preset: str, prompt: list[int], n: int, seed: int) -> float:
    engine.clear()
    gen = Generation(engine, prompt, BUILTIN_PRESETS[preset].build(engine.build_context(seed)), max_tokens=n,
                     ignore_eos=True, eog_tokens=engine.eog_tokens())
    for _ in gen:
        pass
    return gen.stats.gen_tps


def ab(engine: LlamaEngine, a: str, b: str, prompt: list[int], n: int, seed: int) -> tuple[float, dict, float, float]:
    """Steps per second, the summary, and the median decode ms of a step while the sides shared one sequence
    (one token per llama_decode) and once they parted (two rows per llama_decode)."""
    ctx = engine.build_context(seed)
    run = ABRun(engine, BUILTIN_PRESETS[a].build(ctx), BUILTIN_PRESETS[b].build(ctx), max_tokens=n,
                ignore_eos=True)
    result = run.run(prompt)
    d = result.summary["diverged_at"]
    d = len(result.steps) if d is None else d
    joined = [s.a.decode_ms for s in result.steps[1:d + 1]]  # step i's logits came from step i-1's decode
    parted = [s.a.decode_ms for s in result.steps[d + 2:]]
    med = (lambda xs: statistics.median(xs) if xs else float("nan"))
    return float(result.summary["steps_per_s"]), result.summary, med(joined), med(parted)


def ms_or_none(values: list[float]) -> str:
    values = [v for v in values if v == v]  # NaN: that regime did not occur in a round
    return f"{statistics.median(values):.1f} ms" if values else "none (did not occur)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--a", default="greedy")
    ap.add_argument("--b", default="creative")
    ap.add_argument("--threads", type=int, default=0, help="0: physical cores")
    args = ap.parse_args()
    if not 1 <= args.tokens <= 1024 or not 1 <= args.rounds <= 20 or not 0 <= args.threads <= max_threads():
        ap.error("--tokens 1..1024, --rounds 1..20, --threads 0..(logical CPUs × 4)")
    engine = LlamaEngine(embedded_model_path(), EngineSettings(n_ctx=2048, n_threads=args.threads))
    prompt = engine.tokenize(PROMPT)
    single(engine, args.a, prompt, 8, 0)  # warm up
    print(f"SmolLM2 Q4_1, {args.tokens} tokens, A={args.a}, threads {engine.settings.threads}")
    for b in dict.fromkeys((args.b, args.a)):  # B = A: the sides never part (one sequence all along)
        per_side, throughput, one_ms, joined_ms, parted_ms = [], [], [], [], []
        for r in range(args.rounds):
            order = ("single", "ab") if r % 2 == 0 else ("ab", "single")
            got: dict[str, float] = {}
            for which in order:
                if which == "single":
                    got["single"] = single(engine, args.a, prompt, args.tokens, r)
                    one_ms.append(1000.0 / got["single"])
                else:
                    got["ab"], summary, j, p = ab(engine, args.a, b, prompt, args.tokens, r)
                    joined_ms.append(j)
                    parted_ms.append(p)
            per_side.append(got["ab"] / got["single"])
            throughput.append(2 * got["ab"] / got["single"])
            print(f"  B={b:8s} round {r + 1}: single {got['single']:6.1f} tok/s | A/B {got['ab']:6.1f} steps/s "
                  f"({2 * got['ab']:6.1f} tok/s, both sides) | parted at step {summary['diverged_at']}, "
                  f"{summary['decode_calls']} llama_decode calls for {summary['steps']} steps")
        print(f"B={b}: A/B tokens per second (both sides) / single run: median {statistics.median(throughput):.3f}; "
              f"steps per second / single: median {statistics.median(per_side):.3f}")
        print(f"      a step's decode: single {statistics.median(one_ms):.1f} ms/token (sampling included) | A/B one "
              f"sequence {ms_or_none(joined_ms)} | two sequences (one batch of 2 rows) {ms_or_none(parted_ms)}")

    # switching branches: resident (nothing but the last token) and evicted (only after the shared prefix)
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda e: None, max_tokens=64)
    ctl.run(PROMPT)
    tok = engine.tokenize(" dragon", add_bos=False)[0]
    ctl.run("", branch=BranchStart(parent=0, at=8, tokens=(tok,)))
    t0 = time.perf_counter()
    resident = ctl.switch_branch(0)
    t1 = time.perf_counter()
    ctl.switch_branch(1)
    engine.seqs.evict_one()  # branch 0's own cells go
    t2 = time.perf_counter()
    evicted = ctl.switch_branch(0)
    t3 = time.perf_counter()
    engine.clear()
    t4 = time.perf_counter()
    cold = ctl.switch_branch(0)
    t5 = time.perf_counter()
    switches = (("resident", resident, t1 - t0), ("evicted", evicted, t3 - t2), ("empty cache", cold, t5 - t4))
    for name, sw, dt in switches:
        print(f"switch to branch 0 ({name:11s}): reused {sw.reused:3d} cells, decoded {sw.evaluated:3d} tokens, "
              f"{dt * 1000:6.1f} ms")
    engine.close()


if __name__ == "__main__":
    main()
