"""Memory over a long run: 10,000 tokens through a 512-token context that shifts, RSS from the recording.

Runs ``llmtui generate`` as a user would (``--context-policy shift --n-ctx 512 --ignore-eos --record``),
then reads the recording back: every step carries the process's RSS (sampled every 8 steps) and the KV
bytes in use. A leak per token or per shift shows as RSS that climbs from the first thousand steps to
the last; flat means the engine, the sampler chain, the recorder and the text decoder hold nothing per
token. Prints the figures; asserts nothing (the machine is shared: figures vary run to run).

    python benchmarks/bench_shift_rss.py [--tokens 10000] [--n-ctx 512] [--preset balanced]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not 100 <= args.tokens <= 100_000:
        ap.error("--tokens: 100..100000")
    with tempfile.TemporaryDirectory() as home:
        rec = Path(home) / "long.jsonl"
        cmd = [sys.executable, "-m", "tui.cli", "generate", "Write a long story about a lighthouse keeper.",
               "--max-tokens", str(args.tokens), "--ignore-eos", "--context-policy", "shift", "--n-ctx",
               str(args.n_ctx), "--preset", args.preset, "--seed", str(args.seed), "--record", str(rec)]
        env = {**os.environ, "LLMTUI_HOME": home}
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        steps, shifts = [], 0
        for line in rec.read_text().splitlines():
            obj = json.loads(line)
            if obj["type"] == "step":
                steps.append(obj)
                shifts += obj["n_past"] < (steps[-2]["n_past"] if len(steps) > 1 else 0)
    rss = [s["rss"] for s in steps]
    bucket = max(1, len(steps) // 10)
    print(f"{len(steps):,} tokens in {wall:.1f} s ({len(steps) / wall:.1f} tok/s incl. start-up), n_ctx "
          f"{args.n_ctx}, {shifts} context shifts, preset {args.preset}")
    # what may grow without a leak: caches of token pieces, bounded by the vocabulary (the engine's piece
    # cache, the recorder's "pieces already written"), filled by every id a step shows (chosen, top-10,
    # stage survivors), and the run's generated text
    print(f"{'steps':>15} {'RSS median':>12} {'RSS max':>10} {'KV in use':>10} {'new ids':>8} {'text':>9}")
    seen: set[int] = set()
    text = 0
    for start in range(0, len(steps), bucket):
        part = steps[start:start + bucket]
        r = [s["rss"] for s in part]
        before = len(seen)
        for s in part:
            seen.add(s["token"])
            seen.update(s["top"]["token"])
            for stage in s["stages"]:
                seen.update(stage[4])
            text += len(s["text"].encode())
        print(f"{start:>7,}-{start + len(part) - 1:<7,} {statistics.median(r) / 2**20:>9.1f} MiB "
              f"{max(r) / 2**20:>6.1f} MiB {statistics.median(s['kv_bytes'] for s in part) / 2**20:>6.2f} MiB "
              f"{len(seen) - before:>8,} {text / 1024:>6.0f} KiB")
    first = statistics.median(rss[: len(rss) // 10])
    last = statistics.median(rss[-(len(rss) // 10):])
    per_1k = (last - first) / (len(rss) / 1000) / 1024
    print(f"RSS first tenth {first / 2**20:.1f} MiB, last tenth {last / 2**20:.1f} MiB: "
          f"{(last - first) / 2**20:+.2f} MiB ({per_1k:+.1f} KiB per 1,000 tokens, "
          f"{(last - first) / max(1, first) * 100:+.2f} %); {len(seen):,} distinct token ids shown, "
          f"{text / 1024:.0f} KiB of text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
