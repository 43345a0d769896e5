"""Quantization lab and performance lab screens.

Both run their work in a worker (the model stays usable afterwards), show
progress, and can save what they produced as JSON and Markdown next to the
recordings.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Static
from textual_plotext import PlotextPlot

from ...engine.errors import EngineError
from ...engine.lab import LAB_TYPES
from ...safe_text import piece_label, visible, visible_lines
from ...units import human_bytes
from ..widgets.panels import escape
from ..widgets.safe import plain
from .base import WideModal

KL_COLOURS = ["green", "yellow", "dark_orange", "red"]  # < 0.01, < 0.1, < 1, >= 1 nats


def integer_ticks(values: Iterable[int], most: int = 8) -> list[int]:
    """Ticks for an axis of whole numbers (threads, batch sizes): the measured values, every n-th when
    there are more than ``most``, the last always kept (plotext's own ticks would read 1.25 threads)."""
    ordered = sorted(set(values))
    ticks = ordered[:: -(-len(ordered) // most)] if ordered else []
    if ordered and ticks[-1] != ordered[-1]:
        ticks[-1] = ordered[-1]
    return ticks


def set_integer_xticks(plt: Any, values: Iterable[int]) -> None:
    ticks = integer_ticks(values)
    plt.xticks(ticks, [str(t) for t in ticks])


def save_lab(kind: str, data: dict[str, Any], markdown: str) -> Path:
    from ...config import app_dirs

    folder = app_dirs().data / "labs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (folder / f"{stamp}-{kind}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    path = folder / f"{stamp}-{kind}.md"
    path.write_text(markdown, encoding="utf-8")
    return path


class LabScreen(WideModal[None]):
    """What both labs share: a status line their workers write to, and jobs that run while no generation
    uses the engine (``run_guarded``)."""

    MODE = "lab"  # tui.app.modes: esc closes it
    run_guarded: Callable[[Callable[[], Any]], Any]
    # app.tcss's `#status` (the dashboard's one-line status) reaches this #status too, which holds a line
    # per variant and, when Learn highlights it, a border round them. A screen's CSS is scoped to the screen
    # and, with the type, outranks app.tcss; DEFAULT_CSS never does.
    CSS = "Static#status { height: auto; }"

    def say(self, text: str) -> None:
        """Update the status line (from a worker thread)."""
        self.app.call_from_thread(self.query_one("#status", Static).update, text)

    @property
    def status_text(self) -> str:
        return str(self.query_one("#status", Static).content)

    def run_then(self, job: Callable[[], Any], show: Callable[[Any], None]) -> None:
        """In a worker: run ``job`` guarded, then ``show`` its result on the UI thread (or the error)."""
        try:
            result = self.run_guarded(job)
        except EngineError as exc:
            self.say(f"[red]{escape(str(exc))}[/red]")
            return
        self.app.call_from_thread(show, result)


class QuantLab(LabScreen):
    """Make variants of the loaded model, compare them with the reference, see where they flip."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="quantlab.close"),
                Binding("1", "app.learn_try(1)", "Try 1", id="quantlab.try1"),  # the last experiment's variations
                Binding("2", "app.learn_try(2)", "Try 2", id="quantlab.try2")]
    DEFAULT_CSS = """
    QuantLab #buttons { height: 3; }
    QuantLab #scores { height: auto; max-height: 10; }
    QuantLab #tokens { height: 1fr; border: round $panel-lighten-2; }
    QuantLab #flip { height: auto; max-height: 9; }
    """

    TYPES = LAB_TYPES

    def __init__(self, model_path: str, run_guarded: Callable[[Callable[[], Any]], Any], *,
                 types: tuple[str, ...] = TYPES, max_tokens: int = 256,
                 on_result: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.on_result = on_result  # (lab, result): e.g. an event of the session recording
        self.model_path = model_path
        self.run_guarded = run_guarded  # runs a job while no generation uses the engine
        self.types = types  # re-quantized from the F16 reference
        self.max_tokens = max_tokens  # tokens of the built-in text each model evaluates
        self.made: list[Any] = []  # QuantizeResults of the last "make variants"
        self.result: Any = None
        self.shown = 1  # index of the model whose KL colours the text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]Quantization lab[/b] — [i]make variants[/i] writes an F16 reference (the loaded model "
                "dequantized: numerically the model itself) and Q8_0, Q5_1, Q4_0, Q2_K re-quantized from it; "
                "[i]compare[/i] measures each against the reference. Click a token to see both top-5s. Esc closes.",
                id="intro")
            with Horizontal(id="buttons"):
                yield Button("Make variants", id="make")
                yield Button("Compare", id="compare", variant="primary")
                yield Button("Next model", id="next")
                yield Button("Save", id="save")
            yield Static("", id="status")
            scores: DataTable[str] = DataTable(id="scores", zebra_stripes=True, cursor_type="row")
            scores.add_columns("model", "size", "bits/w", "PPL", "KL mean", "KL p99", "top-1 agree", "tg t/s")
            yield scores
            with VerticalScroll(id="tokens"):
                yield Static("", id="text")
            flip: DataTable[str] = DataTable(id="flip", zebra_stripes=True, cursor_type="none")
            flip.add_columns("rank", "reference", "this model")
            yield flip

    def variants_exist(self) -> bool:
        return all(Path(p).exists() for p in self._variant_paths())

    async def make_variants(self) -> None:
        """Quantize the F16 reference and the lab's types (awaitable: ``made`` is filled after)."""
        self.query_one("#status", Static).update("quantizing… (F16 reference, then " + ", ".join(self.types) + ")")
        await self._make_variants().wait()

    def show_variant(self, index: int) -> None:
        """Paint variant ``index``'s per-token KL (once compared)."""
        self.shown = index
        self._paint()

    def _variant_paths(self) -> list[str]:
        from ...config import app_dirs
        from ...engine.lab import default_output

        src = Path(self.model_path)
        return [str(default_output(src, q, app_dirs().models)) for q in ("f16", *self.types)]

    @on(Button.Pressed, "#make")
    def _make(self) -> None:
        self.query_one("#status", Static).update("quantizing… (F16 reference, then four types)")
        self._make_variants()

    @work(thread=True, exclusive=True, group="lab", exit_on_error=False)
    def _make_variants(self) -> None:
        from ...config import app_dirs
        from ...engine.lab import quantize_model

        made = []
        models = app_dirs().models
        try:
            f16 = quantize_model(self.model_path, "f16", models_dir=models, force=True)
            made.append(f16)
            for q in self.types:
                self.say(f"quantizing {q}…")
                made.append(quantize_model(f16.output, q, models_dir=models, force=True))
        except EngineError as exc:
            self.say(f"[red]{escape(str(exc))}[/red]")
            return
        lines = [f"{Path(r.output).name}: {human_bytes(r.file_size)}, {r.bits_per_weight:.2f} bits/weight"
                 + (f", {r.fallback[0]}/{r.fallback[1]} tensors fell back to other types" if r.fallback else "")
                 for r in made]
        self.made = made
        self.say("\n".join(lines))

    @on(Button.Pressed, "#compare")
    def _compare(self) -> None:
        if self.start_compare() is None:
            self.query_one("#status", Static).update("make the variants first")

    async def compare(self) -> Any:
        """Compare the variants that exist; the Comparison (None: nothing to compare, or it failed)."""
        worker = self.start_compare()
        if worker is None:
            return None
        await worker.wait()
        return self.result

    def start_compare(self) -> Any:
        """Start comparing the variants that exist (the worker); None if there are none."""
        paths = [p for p in self._variant_paths() if Path(p).exists()]
        if len(paths) < 2:
            return None
        self.query_one("#status", Static).update("comparing… (each model evaluates the built-in text)")
        return self._run_compare(paths + [self.model_path])

    @work(thread=True, exclusive=True, group="lab", exit_on_error=False)
    def _run_compare(self, paths: list[str]) -> None:
        from ...engine.lab import compare_models

        self.run_then(lambda: compare_models(paths, max_tokens=self.max_tokens, gen_tokens=16,
                                             on_progress=self.say), self._show)

    def _show(self, result: Any) -> None:
        self.result = result
        if self.on_result is not None:
            self.on_result("quant", result.as_dict())
        table = self.query_one("#scores", DataTable)
        table.clear()
        for s in result.scores:
            table.add_row(plain(Path(s.path).stem), human_bytes(s.file_size), f"{s.bits_per_weight:.2f}",
                          f"{s.perplexity:.2f}", f"{s.kl_mean:.4f}", f"{s.kl_p99:.3f}", f"{s.top1_agreement:.1%}",
                          f"{s.gen_tps:.1f}")
        self.query_one("#status", Static).update(plain(f"reference {Path(result.reference).name} · "
                                                       f"{len(result.tokens)} tokens"))
        self.shown = min(3, len(result.scores) - 1)
        self._paint()

    def _paint(self) -> None:
        res = self.result
        score = res.scores[self.shown]
        text = Text()
        text.append(f"KL of {visible(Path(score.path).stem)} per token (green < 0.01 < yellow < 0.1 < orange < 1 ≤ red nats); "
                    f"underlined: the top-1 token flips\n\n", style="bold")
        text.append(visible_lines(res.pieces.get(res.tokens[0], "")))
        for i, t in enumerate(res.tokens[1:]):
            kl = score.per_token_kl[i]
            colour = KL_COLOURS[0 if kl < 0.01 else 1 if kl < 0.1 else 2 if kl < 1 else 3]
            style = f"{colour}" + (" underline" if score.top1[i] != res.ref_top1[i] else "")
            text.append(visible_lines(res.pieces.get(t, f"<{t}>")), style=f"{style} link llmtui:{i}")
        self.query_one("#text", Static).update(text)

    def on_click(self, event: Any) -> None:
        style = getattr(event, "style", None)
        link = getattr(style, "link", None) if style is not None else None
        if self.result is None or not link or not link.startswith("llmtui:"):
            return
        self.show_position(int(link.split(":")[1]))

    def show_position(self, i: int) -> None:
        res = self.result
        ref, other = res.scores[0].topk[i], res.scores[self.shown].topk[i]
        table = self.query_one("#flip", DataTable)
        table.clear()
        for rank, ((rt, rp), (ot, op)) in enumerate(zip(ref, other), 1):
            table.add_row(str(rank), plain(f"{piece_label(res.pieces.get(rt, f'<{rt}>').encode())} {rp:.1%}"),
                          plain(f"{piece_label(res.pieces.get(ot, f'<{ot}>').encode())} {op:.1%}"))

    @on(Button.Pressed, "#next")
    def _next(self) -> None:
        if self.result is not None:
            self.shown = self.shown % (len(self.result.scores) - 1) + 1
            self._paint()

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        if self.result is None:
            self.query_one("#status", Static).update("compare first")
            return
        from ...engine.lab import compare_markdown

        path = save_lab("quant", self.result.as_dict(), compare_markdown(self.result) + "\n")
        self.query_one("#status", Static).update(plain(f"saved {path} (and .json)"))


class PerfLab(LabScreen):
    """Threads, batch size, mmap: a llama-bench table and plots, on the loaded model."""

    BINDINGS = [Binding("escape", "dismiss", "Close", id="perflab.close"),
                Binding("1", "app.learn_try(1)", "Try 1", id="perflab.try1"),
                Binding("2", "app.learn_try(2)", "Try 2", id="perflab.try2")]
    DEFAULT_CSS = """
    PerfLab #buttons { height: 3; }
    PerfLab #rows { height: auto; max-height: 12; }
    PerfLab #plots { height: 1fr; }
    """

    def __init__(self, model_path: str, threads: int, run_guarded: Callable[[Callable[[], Any]], Any],
                 gpu: bool, *, quick: bool = False,
                 on_result: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.on_result = on_result  # (lab, result): e.g. an event of the session recording
        self.quick = quick  # threads only, short runs (tests and a first look)
        self.model_path = model_path
        self.max_threads = threads
        self.run_guarded = run_guarded
        self.gpu = gpu
        self.rows: list[Any] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "[b]Performance lab[/b] — pp = prompt processing (one batch), tg = generation (one token at a time). "
                "Generation reads every weight once per token: tok/s × model size ≈ the memory bandwidth it uses, so "
                "tg stops scaling with threads when that bandwidth runs out. Cold load: page cache dropped first "
                "(posix_fadvise); mmap maps the file instead of reading it, so warm loads are nearly free. "
                f"GPU offload in this llama.cpp build: [b]{'yes' if self.gpu else 'no (CPU build)'}[/b]. Esc closes.")
            with Horizontal(id="buttons"):
                yield Button("Run", id="run", variant="primary")
                yield Button("Save", id="save")
            yield Static("", id="status")
            rows: DataTable[str] = DataTable(id="rows", zebra_stripes=True, cursor_type="none")
            rows.add_columns("threads", "batch", "mmap", "pp t/s", "tg t/s", "load cold", "load warm", "~GB/s")
            yield rows
            with Horizontal(id="plots"):
                yield PlotextPlot(id="by_threads")
                yield PlotextPlot(id="by_batch")

    @on(Button.Pressed, "#run")
    def _run(self) -> None:
        self.query_one("#status", Static).update("benchmarking…")
        self._bench()

    async def run(self) -> list[Any]:
        """Benchmark (awaitable); the rows (empty if it failed: ``status_text`` says why)."""
        self.query_one("#status", Static).update("benchmarking…")
        await self._bench().wait()
        return self.rows

    @work(thread=True, exclusive=True, group="lab", exit_on_error=False)
    def _bench(self) -> None:
        from ...engine.lab import bench

        threads = list(range(1, self.max_threads + 1))

        def job() -> Any:
            if self.quick:
                return bench(self.model_path, threads=threads, batches=(64,), mmaps=(True,), pp=64, tg=8, reps=1,
                             on_progress=self.say)
            rows = bench(self.model_path, threads=threads, batches=(512,), mmaps=(True,), pp=256, tg=32, reps=2,
                         on_progress=self.say)
            rows += bench(self.model_path, threads=(threads[-1],), batches=(32, 128), mmaps=(True,), pp=256, tg=8,
                          reps=2, on_progress=self.say)
            rows += bench(self.model_path, threads=(threads[-1],), batches=(512,), mmaps=(False,), pp=256, tg=8,
                          reps=1, on_progress=self.say)
            return rows

        self.run_then(job, self._show)

    def _show(self, rows: list[Any]) -> None:
        self.rows = rows
        if self.on_result is not None:
            self.on_result("perf", {"model": self.model_path, "rows": [r.as_dict() for r in rows]})
        table = self.query_one("#rows", DataTable)
        table.clear()
        for r in rows:
            table.add_row(str(r.threads), str(r.batch), "on" if r.mmap else "off", f"{r.pp_tps:.0f} ± {r.pp_std:.0f}",
                          f"{r.tg_tps:.1f} ± {r.tg_std:.1f}", f"{r.load_cold_ms:.0f} ms", f"{r.load_warm_ms:.0f} ms",
                          f"{r.bandwidth_gbs:.1f}")
        first_batch = rows[0].batch if rows else 512
        by_threads = [r for r in rows if r.batch == first_batch and r.mmap]
        plt = self.query_one("#by_threads", PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("tok/s vs threads")
        if by_threads:  # (plotext cannot draw a legend without data)
            plt.plot([r.threads for r in by_threads], [r.tg_tps for r in by_threads], label="tg", marker="braille")
            plt.plot([r.threads for r in by_threads], [r.pp_tps / 10 for r in by_threads], label="pp/10",
                     marker="braille")
            set_integer_xticks(plt, (r.threads for r in by_threads))
        self.query_one("#by_threads", PlotextPlot).refresh()
        last = max((r.threads for r in rows), default=0)
        by_batch = sorted((r for r in rows if r.threads == last and r.mmap), key=lambda r: r.batch)
        plt = self.query_one("#by_batch", PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("pp tok/s vs batch")
        if by_batch:
            plt.plot([r.batch for r in by_batch], [r.pp_tps for r in by_batch], marker="braille")
            set_integer_xticks(plt, (r.batch for r in by_batch))
        self.query_one("#by_batch", PlotextPlot).refresh()
        self.query_one("#status", Static).update("done")

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        if not self.rows:
            self.query_one("#status", Static).update("run first")
            return
        from ...engine.lab import bench_markdown

        path = save_lab("perf", {"model": self.model_path, "rows": [r.as_dict() for r in self.rows]},
                        bench_markdown(self.model_path, self.rows, self.gpu))
        self.query_one("#status", Static).update(plain(f"saved {path} (and .json)"))
