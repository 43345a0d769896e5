"""API server speed vs headless `llmtui generate`, and the request overhead.

Same model (SmolLM2), preset, seed, threads and prompt: a /v1/completions
request generates the same tokens as the headless loop. Rounds alternate
(headless, server, headless, …) so machine noise hits both alike.

Printed per round and as medians:
  * generation tok/s: headless loop vs the server's own figure (usage.timings)
    and the ratio (target >= 0.95);
  * request overhead: time to first token (as the client sees it, streaming)
    minus prompt processing and queueing — what HTTP, JSON, SSE and the
    worker hand-off cost before the first token reaches the client.

    python benchmarks/bench_server.py [--tokens 128] [--rounds 4] [--preset balanced]
"""

from __future__ import annotations

import argparse
import statistics
import time

import openai

from tui.engine import EngineSettings, Generation
from tui.engine.llama import LlamaEngine
from tui.engine.models import describe_file, embedded_model_path
from tui.engine.thread import engine_thread
from tui.sampling.presets import load_presets
from tui.server import start_local

PROMPT = "Once upon a time"


def headless(engine: LlamaEngine, preset, seed: int, n: int) -> tuple[float, str]:
    """The `llmtui generate` loop on the process's engine thread, where the server's requests run too
    (two threads taking turns decoding slow each other down: see tui/engine/thread.py)."""

    def go() -> tuple[float, str]:
        engine.clear()
        gen = Generation(engine, engine.tokenize(PROMPT, parse_special=True),
                         preset.build(engine.build_context(seed)), max_tokens=n)
        for _ in gen:
            pass
        return gen.stats.gen_tps, gen.stats.text

    return engine_thread().call(go)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    path = embedded_model_path()
    settings = EngineSettings(n_ctx=1024, seed=args.seed)
    engine = LlamaEngine(path, settings)
    catalog = load_presets(None)
    preset = catalog.get(args.preset)
    entry = describe_file(path, source="embedded")
    server = start_local(engine, entry, catalog=catalog, preset=preset, seed=args.seed, port=0)
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=300)
    print(f"model {entry.name} · preset {preset.name} · seed {args.seed} · threads {settings.threads} · "
          f"{args.tokens} tokens · server {server.url}")
    headless(engine, preset, args.seed, 8)  # warm up both paths
    client.completions.create(model=entry.name, prompt=PROMPT, max_tokens=8, seed=args.seed)
    h_tps, s_tps, ratios, overheads, client_ttft = [], [], [], [], []
    for r in range(args.rounds):
        tps_h, text_h = headless(engine, preset, args.seed, args.tokens)
        resp = client.completions.create(model=entry.name, prompt=PROMPT, max_tokens=args.tokens, seed=args.seed)
        timings = resp.usage.model_extra["timings"]
        same = resp.choices[0].text == text_h
        h_tps.append(tps_h)
        s_tps.append(timings["generation_tok_per_s"])
        ratios.append(s_tps[-1] / tps_h)
        # streaming: the client's own time to first token
        t0 = time.perf_counter()
        first = None
        usage = None
        for chunk in client.completions.create(model=entry.name, prompt=PROMPT, max_tokens=args.tokens,
                                               seed=args.seed, stream=True, stream_options={"include_usage": True}):
            if first is None and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter()
            if chunk.usage is not None:
                usage = chunk.usage
        st = usage.model_extra["timings"]
        ttft = (first - t0) * 1000.0
        client_ttft.append(ttft)
        overheads.append(ttft - st["prompt_ms"] - st["queue_ms"])
        print(f"round {r + 1}: headless {tps_h:6.1f} tok/s · server {s_tps[-1]:6.1f} tok/s · ratio "
              f"{ratios[-1]:.3f} · same text {same} · client TTFT {ttft:6.1f} ms (prompt {st['prompt_ms']:.1f} ms) "
              f"· overhead {overheads[-1]:5.1f} ms (server-side {st['overhead_ms']:.1f} ms)")
    print(f"median: headless {statistics.median(h_tps):.1f} tok/s · server {statistics.median(s_tps):.1f} tok/s · "
          f"ratio {statistics.median(ratios):.3f} (target >= 0.95) · request overhead "
          f"{statistics.median(overheads):.1f} ms · client TTFT {statistics.median(client_ttft):.1f} ms")
    server.stop()
    engine.close()


if __name__ == "__main__":
    main()
