"""Generation speed with the full dashboard running vs headless `llmtui generate`.

Same model (SmolLM2), preset, seed, threads and prompt: the two generate the
same tokens. Rounds alternate (headless, dashboard, headless, …) so machine
noise hits both alike. The dashboard runs in Textual's headless mode with real
rendering (compositor, widgets, plots at their normal rates) at 120×40.
Also measured: key press → screen update while generating (pressing `p`,
until the status bar shows the new preset and a frame has been composed).

    python benchmarks/bench_dashboard.py [--tokens 256] [--rounds 4] [--preset balanced]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from textual import events
from textual.screen import Screen

from tui.app.app import LlmTuiApp
from tui.app.themes import load_themes, shipped_theme_dir
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings, Generation
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.engine.thread import engine_thread
from tui.sampling.presets import load_presets

PROMPT = "Once upon a time"


def headless(engine: LlamaEngine, preset, seed: int, n: int) -> tuple[float, int]:
    """The `llmtui generate` loop, run on the process's engine thread like the dashboard's runs.

    (llama.cpp's OpenMP keeps a thread team per calling thread; two threads
    taking turns decoding slow each other down — see tui/engine/thread.py —
    so both sides of the comparison decode on the same thread.)
    """
    return engine_thread().call(_headless, engine, preset, seed, n)


def _headless(engine: LlamaEngine, preset, seed: int, n: int) -> tuple[float, int]:
    engine.clear()
    gen = Generation(engine, engine.tokenize(PROMPT), preset.build(engine.build_context(seed)), max_tokens=n)
    for _ in gen:
        pass
    return gen.stats.gen_tps, gen.stats.generated


FRAMES = [0]
_original_update = Screen._on_timer_update


def _counted_update(self: Screen) -> None:
    FRAMES[0] += 1
    _original_update(self)


Screen._on_timer_update = _counted_update  # count composed frames (for the key-press latency)


async def dashboard(engine: LlamaEngine, preset, catalog, settings, n: int) -> tuple[float, int, list[float]]:
    """One generation in the full app. Nothing here forces extra repaints: plain asyncio sleeps,
    and keys are posted the way a terminal driver posts them."""
    app = LlmTuiApp(engine_factory=lambda: engine, model_label="SmolLM2", settings=settings, preset=preset,
                    catalog=catalog, prompt=PROMPT, max_tokens=n, themes=load_themes(shipped_theme_dir()).themes,
                    chat=False)  # raw completion, as the headless loop it is compared with
    summary: dict = {}
    latencies: list[float] = []
    frames = FRAMES
    async with app.run_test(size=(120, 40)):
        while app.controller is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # let start-up (compose, footer, first plots) settle, as a user would
        original_emit = app.controller.emit

        def spy(event):
            if type(event).__name__ == "Finished":
                summary.update(event.summary)
            original_emit(event)

        app.controller.emit = spy
        app.start_generation(PROMPT)  # what Enter in the prompt box does
        app.query_one(TokenStream).focus()
        pressed = 0
        while not summary:
            await asyncio.sleep(0.02)
            if app.running and pressed < 3 and len(app.current.steps) > 40 * (pressed + 1):
                # key press -> screen update, while generating
                before = app.preset.name
                t0 = time.perf_counter()
                app.post_message(events.Key("p", "p"))
                while before in app.query_one("#status").text.split("│")[1]:
                    await asyncio.sleep(0.0005)
                seen = frames[0]
                while frames[0] == seen:  # the next composed frame shows it
                    await asyncio.sleep(0.0005)
                latencies.append((time.perf_counter() - t0) * 1000)
                app.post_message(events.Key("P", "P"))  # back: the same tokens as headless
                pressed += 1
        await asyncio.sleep(0.1)
    return summary["generation_tok_per_s"], summary["generated_tokens"], latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    catalog = load_presets(None)
    preset = catalog.get(args.preset)
    settings = EngineSettings(n_ctx=2048, seed=args.seed)
    engine = LlamaEngine(embedded_model_path(), settings)
    headless(engine, preset, args.seed, 16)  # warm-up
    h_runs, d_runs, lat = [], [], []
    for _ in range(args.rounds):
        gc.collect()  # the previous round's app is garbage: don't bill its collection to the next run
        tps, n_h = headless(engine, preset, args.seed, args.tokens)
        h_runs.append(tps)
        gc.collect()
        tps, n_d, la = asyncio.run(dashboard(engine, preset, catalog, settings, args.tokens))
        d_runs.append(tps)
        lat += la
    h, d = statistics.median(h_runs), statistics.median(d_runs)
    pair = statistics.median(dd / hh for dd, hh in zip(d_runs, h_runs))
    print(f"SmolLM2, preset {preset.name}, {args.tokens} tokens, threads {settings.threads}, {args.rounds} rounds")
    print(f"headless generate : {h:6.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in h_runs)})")
    print(f"dashboard         : {d:6.1f} tok/s  (runs: {', '.join(f'{x:.1f}' for x in d_runs)})")
    print(f"ratio dashboard / headless: {d / h:.3f}  (median of paired ratios {pair:.3f})")
    if lat:
        print(f"key press -> screen update while generating: median {statistics.median(lat):.1f} ms, "
              f"max {max(lat):.1f} ms ({len(lat)} presses)")
    engine.close()


if __name__ == "__main__":
    main()
