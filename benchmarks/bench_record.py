"""Generation speed with recording on vs off, alternated in one run (SmolLM2, balanced).

Both run the controller loop the dashboard uses, on the engine thread; "on" writes
every step (with its trace) to a JSON Lines file, flushed line by line.

    python benchmarks/bench_record.py [--tokens 256] [--rounds 6]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from tui.engine import EngineSettings
from tui.engine.controller import Accepted, Controller
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.engine.thread import engine_thread
from tui.record import SessionWriter
from tui.record.recorder import Recorder
from tui.sampling.presets import BUILTIN_PRESETS


RECORD_MS: list[float] = []


def run(engine: LlamaEngine, tokens: int, record_to: Path | None) -> float:
    ctl = Controller(engine, BUILTIN_PRESETS["balanced"], seed=42, emit=lambda e: None, max_tokens=tokens,
                     ignore_eos=True)
    if record_to is not None:
        recorder = Recorder(engine, lambda header: SessionWriter(record_to, header, engine.piece))

        def timed(event: object) -> None:  # the recording's own cost per step, free of machine noise
            t0 = time.perf_counter()
            recorder(event)
            if isinstance(event, Accepted):
                RECORD_MS.append((time.perf_counter() - t0) * 1000.0)

        ctl.listeners.append(timed)
    # on the process's engine thread, where the dashboard's runs (and recordings) happen
    return engine_thread().call(lambda: ctl.run("Once upon a time").gen_tps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    engine = LlamaEngine(embedded_model_path(), EngineSettings(n_ctx=2048))
    off, on = [], []
    with tempfile.TemporaryDirectory() as d:
        run(engine, 16, None)
        for i in range(args.rounds):
            gc.collect()
            off.append(run(engine, args.tokens, None))
            gc.collect()
            on.append(run(engine, args.tokens, Path(d) / f"r{i}.jsonl"))
        size = (Path(d) / "r0.jsonl").stat().st_size
    o, r = statistics.median(off), statistics.median(on)
    pair = statistics.median(b / a for a, b in zip(off, on))
    print(f"SmolLM2, balanced, {args.tokens} tokens, {args.rounds} rounds, threads {engine.settings.threads}")
    print(f"recording off: {o:6.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in off)})")
    print(f"recording on : {r:6.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in on)})")
    print(f"ratio on / off: {r / o:.3f}  (median of paired ratios {pair:.3f}); "
          f"{size / args.tokens / 1024:.1f} KiB per recorded step")
    per_step = statistics.mean(RECORD_MS)
    print(f"recording work per step (timed inside the run): mean {per_step:.3f} ms, p99 "
          f"{statistics.quantiles(RECORD_MS, n=100)[98]:.3f} ms = {per_step * o / 1000:.1%} of a step at "
          f"{o:.0f} tok/s -> expected ratio {1 / (1 + per_step * o / 1000):.3f}")
    engine.close()


if __name__ == "__main__":
    main()
