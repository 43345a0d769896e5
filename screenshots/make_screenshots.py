"""Re-create the README's screenshots: the real app on the real SmolLM2 model.

    python screenshots/make_screenshots.py [NAME ...]

Each SVG is taken with Textual's save_screenshot while the model is generating
(or paused in step mode), so the panels show real data.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Input

from tui.app.app import LlmTuiApp
from tui.app.themes import load_themes, shipped_theme_dir
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings
from tui.engine.llama import LlamaEngine
from tui.engine.models import embedded_model_path
from tui.sampling.presets import load_presets

OUT = Path(__file__).resolve().parent
PROMPT = "Once upon a time"
QUESTION = "Name three colors and say what each one makes you think of."


def make_app(engine: LlamaEngine, preset: str = "balanced", theme: str | None = None,
             chat: bool | None = False) -> LlmTuiApp:
    """The app as `llmtui` starts it; raw completion (stage 1) unless ``chat=None``: the first-run rule."""
    catalog = load_presets(None)
    return LlmTuiApp(
        engine_factory=lambda: engine, model_label="SmolLM2-135M-Instruct.Q4_1", settings=engine.settings,
        preset=catalog.get(preset), catalog=catalog, prompt=None if chat is None else PROMPT, max_tokens=400,
        themes=load_themes(shipped_theme_dir()).themes, theme=theme, chat=chat,
    )


async def wait(pilot, cond, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise TimeoutError


async def shoot(engine: LlamaEngine, name: str, size: tuple[int, int], scenario: str, **kw) -> None:
    app = make_app(engine, **kw)
    async with app.run_test(size=size) as pilot:
        await wait(pilot, lambda: app.controller is not None)
        app.query_one("#prompt", Input).cursor_blink = False
        if scenario.startswith("learn"):
            from tui.app.screens.learn import LearnScreen

            app.query_one(TokenStream).focus()
            if scenario == "learn":
                app.action_learn("s2-kv-cache")
                await wait(pilot, lambda: isinstance(app.screen, LearnScreen))
            else:
                question = scenario.split(":", 1)[1]
                worker = app.run_experiment(question)
                await worker.wait()
        elif scenario in ("quant", "perf"):
            from tui.app.screens.labs import PerfLab, QuantLab

            app.query_one(TokenStream).focus()
            await pilot.press("Q" if scenario == "quant" else "B")
            await wait(pilot, lambda: isinstance(app.screen, (QuantLab, PerfLab)))
            lab = app.screen
            if scenario == "quant":
                await pilot.click("#make")
                await wait(pilot, lambda: "Q2_K" in str(lab.query_one("#status").render()), 180)
                await pilot.click("#compare")
                await wait(pilot, lambda: lab.result is not None, 300)
                lab.show_position(40)
            else:
                await pilot.click("#run")
                await wait(pilot, lambda: bool(lab.rows), 300)
        elif scenario == "serve":
            import threading

            import openai

            app.api.start()
            await wait(pilot, lambda: app.api.server is not None)
            client = openai.OpenAI(base_url=app.api.server.http.url, api_key="x", max_retries=0)

            def ask() -> None:
                for _ in client.chat.completions.create(
                        model=app.model_label, stream=True,
                        messages=[{"role": "system", "content": "You are a helpful assistant."},
                                  {"role": "user", "content": "Tell me a short story about a lighthouse."}],
                        max_tokens=300, seed=3):
                    pass

            threading.Thread(target=ask, daemon=True).start()
            await wait(pilot, lambda: len(app.current.steps) >= 50 or (app.current.steps and not app.running))
        elif scenario == "first-run":  # what a newcomer does: type a question, press Enter
            prompt = app.query_one("#prompt", Input)
            prompt.value = QUESTION
            prompt.focus()
            await pilot.press("enter")
            await wait(pilot, lambda: app.current.steps and not app.running, 120)
        elif scenario == "tree":  # a step-mode run forced at step 2, then a branch from a past step
            board = app.dashboard
            app.query_one(TokenStream).focus()
            app.query_one("#prompt", Input).value = "The capital of France is"
            await pilot.press("s", "space")
            for _ in range(2):
                await wait(pilot, lambda: app.current.pending is not None)
                await pilot.press("space")
            await wait(pilot, lambda: app.current.pending is not None and app.current.pending.index == 2)
            pending = app.current.pending
            board.choose(pending, int(pending.trace.top_ids[1]), pending=True)
            await wait(pilot, lambda: app.current.tree is not None and len(app.current.tree.branches) == 2)
            await pilot.press("s")  # step mode off: the run goes on from the forced token
            await wait(pilot, lambda: not app.running and app.current.pending is None, 60)
            step = app.current.steps[5]
            board.choose(step, int(step.trace.top_ids[2]), pending=False)
            await wait(pilot, lambda: app.running)
            await wait(pilot, lambda: not app.running, 60)
            board.action_branches()
        elif scenario == "ab":
            from tui.app.screens.ab import ABScreen

            app.query_one("#prompt", Input).value = "The dragon opened its eyes and"
            app.query_one(TokenStream).focus()
            app.action_ab()
            await wait(pilot, lambda: isinstance(app.screen, ABScreen))
            screen = app.screen
            screen.action_run()  # what r does
            await wait(pilot, lambda: screen.summary is not None, 120)
        elif scenario == "rag":  # the sample documents indexed, then a question in chat with retrieval on
            import tempfile

            from tui.engine.embed import Embedder
            from tui.engine.thread import engine_thread
            from tui.rag import SAMPLE_DOCS, build_index
            from tui.rag.index import default_index_dir

            root = Path(tempfile.mkdtemp())
            out = default_index_dir(SAMPLE_DOCS, root)

            def build() -> dict:
                with Embedder(str(embedded_model_path())) as e:
                    build_index(SAMPLE_DOCS, e, out)  # the defaults: 800 characters, 100 shared
                from tui.app.rag_host import describe_index

                return describe_index(out)

            info = engine_thread().call(build)
            app.rag.use(out, info)
            prompt = app.query_one("#prompt", Input)
            prompt.value = "How many hearts does an octopus have?"
            prompt.focus()
            await pilot.press("enter")
            await wait(pilot, lambda: app.current.steps and not app.running, 180)
        elif scenario == "step":
            app.query_one(TokenStream).focus()
            await pilot.press("s", "space")
            for i in range(1, 12):
                await wait(pilot, lambda: app.current.pending is not None)
                await pilot.press("space")
            await wait(pilot, lambda: app.current.pending is not None and app.current.pending.index == 11)
        else:
            app.start_generation(PROMPT)
            await wait(pilot, lambda: len(app.current.steps) >= 60 or (app.current.steps and not app.running))
            if scenario == "select":
                app.query_one(TokenStream).focus()
                app.screen.select_step(40)
            elif scenario == "help":
                app.action_help()
        await pilot.pause(1.2)  # let the plots catch up
        app.save_screenshot(str(OUT / f"{name}.svg"))
        print("wrote", OUT / f"{name}.svg")
        if app.controller:
            app.controller.stop()
        app.api.stop()
        await pilot.pause(0.2)


async def shoot_remote(engine: LlamaEngine, name: str, size: tuple[int, int], scenario: str) -> None:
    """The dashboard attached to llama.cpp's own llama-server (benchmarks/build_llama_server.sh builds it), and
    the fleet view over it, llmtui's own server and one that is down."""
    import socket
    import subprocess

    from tests.test_remote_servers import llama_server_binary, wait_ready
    from tui.engine.models import describe_file
    from tui.remote.entries import Remotes, RemoteSpec
    from tui.server import start_local

    binary = llama_server_binary()
    if binary is None:
        print("skipped", name, "(llama-server is not built: benchmarks/build_llama_server.sh)")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = Path("/tmp/llmtui-shot-llama-server.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "-m", str(embedded_model_path()), "--host", "127.0.0.1", "--port",
                                 str(port), "-c", "2048", "-np", "1", "-t", "1", "--metrics"], stdout=out, stderr=out,
                                env={"LD_LIBRARY_PATH": str(binary.parent)})
    url = f"http://127.0.0.1:{port}"
    ours = start_local(engine, describe_file(embedded_model_path()), catalog=load_presets(None),
                       preset=load_presets(None).get("greedy"), seed=7)
    try:
        wait_ready(url, proc, "/health", log)
        specs = [RemoteSpec(url)] + ([RemoteSpec(ours.url), RemoteSpec("http://127.0.0.1:9")] if scenario == "fleet"
                                     else [])
        remotes = Remotes(specs)
        catalog = load_presets(None)
        app = LlmTuiApp(load=lambda e, p: remotes.load(e), entry=remotes.entries()[0], remotes=remotes,
                        model_label=url, settings=EngineSettings(n_ctx=2048, seed=7), preset=catalog.get("balanced"),
                        catalog=catalog, prompt=PROMPT, max_tokens=300, chat=False,
                        themes=load_themes(shipped_theme_dir()).themes)
        async with app.run_test(size=size) as pilot:
            await wait(pilot, lambda: app.controller is not None and app.engine is not None)
            app.query_one("#prompt", Input).cursor_blink = False
            if scenario == "fleet":
                await app.generate(PROMPT)  # some traffic for the counters
                app.remote.open_fleet()
                await pilot.pause(2.5)
                await app.generate(PROMPT)
                await pilot.pause(2.5)
            else:
                app.start_generation(PROMPT)
                await wait(pilot, lambda: len(app.current.steps) >= 60 or (app.current.steps and not app.running))
                await pilot.pause(1.2)
            app.save_screenshot(str(OUT / f"{name}.svg"))
            print("wrote", OUT / f"{name}.svg")
            if app.controller:
                app.controller.stop()
            await pilot.pause(0.2)
    finally:
        ours.stop()
        proc.terminate()
        proc.wait(timeout=15)


async def main(only: list[str]) -> None:
    engine = LlamaEngine(embedded_model_path(), EngineSettings(n_ctx=2048, seed=7))
    if only:
        global shoot
        real = shoot

        async def shoot(engine: LlamaEngine, name: str, *a, **kw) -> None:  # type: ignore[no-redef]
            if name in only:
                await real(engine, name, *a, **kw)
    await shoot(engine, "first-run", (160, 48), "first-run", chat=None)
    await shoot(engine, "first-run-small", (80, 24), "first-run", chat=None)
    await shoot(engine, "dashboard", (160, 48), "run")
    await shoot(engine, "step-mode", (160, 48), "step")
    await shoot(engine, "selected-token", (160, 48), "select", preset="creative")
    await shoot(engine, "small-terminal", (80, 24), "run")
    await shoot(engine, "light-theme", (120, 40), "run", theme="llmtui-light", preset="wild")
    await shoot(engine, "help", (120, 40), "help")
    await shoot(engine, "quant-lab", (140, 45), "quant")
    await shoot(engine, "perf-lab", (140, 45), "perf")
    await shoot(engine, "learn", (140, 45), "learn")
    await shoot(engine, "learn-kv-cache", (140, 45), "learn:s2-kv-cache")
    await shoot(engine, "learn-next-token", (140, 45), "learn:s1-next-token")
    await shoot(engine, "learn-stories", (140, 45), "learn:s3-stories")
    await shoot(engine, "api-server", (130, 40), "serve")
    await shoot(engine, "tree", (160, 48), "tree", preset="greedy")
    await shoot(engine, "ab", (150, 45), "ab", preset="balanced")
    await shoot(engine, "rag-chat", (160, 48), "rag", preset="greedy", chat=True)
    if not only or "remote" in only:
        await shoot_remote(engine, "remote", (160, 48), "run")
    if not only or "fleet" in only:
        await shoot_remote(engine, "fleet", (150, 20), "fleet")
    engine.close()


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))  # names of the shots to take (default: all)
