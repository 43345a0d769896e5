"""Generation speed with recording on vs off, alternated in one run (SmolLM2, balanced).

Both run the controller loop the dashboard uses, in a worker thread; "on" writes
every step (with its trace) to a JSON Lines file, flushed line by line.

    python benchmarks/bench_record.py [--tokens 256] [--rounds 6]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import threading
from pathlib import Path

from tui.engine import EngineSettings
from tui.engine.controller import Controller
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.record import SessionWriter
from tui.sampling.presets import BUILTIN_PRESETS


def run(engine: LlamaEngine, tokens: int, record_to: Path | None) -> float:
    ctl = Controller(engine, BUILTIN_PRESETS["balanced"], seed=42, emit=lambda e: None, max_tokens=tokens,
                     ignore_eos=True)
    if record_to is not None:
        ctl.recorder_factory = lambda header: SessionWriter(record_to, header, engine.piece)
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(ctl.run("Once upon a time").gen_tps))
    t.start()
    t.join()
    return out[0]


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
    engine.close()


if __name__ == "__main__":
    main()
