"""The learning path's experiments: each sets the app up (model, preset, settings, prompt), runs,
and lands on the panel that shows the answer with the figure highlighted.

An experiment is a coroutine on the UI's event loop (an async worker): it drives the app through
the same methods the keys use, waits for the engine's events, and reads the result from the app
state the panels show. Engine work that has no dashboard run (tokenizing, memory estimates,
side-by-side sampler runs, benchmarks) goes to a thread while no generation holds the engine.
It returns a :class:`Finding`: the figure, in one line, and the values behind it (tests read them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.widget import Widget
from textual.widgets import Input

from ..config import app_dirs
from ..engine.errors import ContextError, EngineError
from ..learn import Question, find
from ..units import human_bytes, shorten
from .widgets.panels import escape

if TYPE_CHECKING:
    from .app import LlmTuiApp

WAIT_S = 300.0  # generous: a 2-core machine quantizing or benchmarking


class LearnError(Exception):
    """An experiment could not run (no model, a refused setting): said in one line."""


@dataclass(frozen=True)
class Finding:
    question: str  # id
    number: str
    variant: int
    panel: str  # where the answer is: a dashboard panel id or a screen's name
    headline: str
    values: dict[str, Any] = field(default_factory=dict)
    try_next: tuple[str, ...] = ()

    def bar_text(self) -> str:
        keys = "  ".join(f"[b]{t.split(':', 1)[0]}[/b]:{escape(shorten(t.split(':', 1)[1], 44))}" for t in self.try_next)
        return (f"[b]Learn {self.number}[/b]{f' · variation {self.variant}' if self.variant else ''} · "
                f"{escape(self.headline)}\n" + (f"try next: {keys}   " if keys else "") + "[b]L[/b]: the question")


class Runner:
    """What experiments do to the app, in the app's own terms."""

    def __init__(self, app: "LlmTuiApp", question: Question, variant: int) -> None:
        self.app = app
        self.question = question
        self.variant = variant

    # -- small things ----------------------------------------------------------------------------

    def n(self, full: int, quick: int) -> int:
        """A token count: ``quick`` in shortened runs (tests)."""
        return quick if self.app.learn_quick else full

    def finding(self, panel: str, headline: str, **values: Any) -> Finding:
        q = self.question
        return Finding(q.id, q.number, self.variant, panel, headline, values, tuple(q.try_next))

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise LearnError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    def mark(self, widget: Widget, text: str) -> None:
        """Highlight the widget that shows the answer, the figure in its border."""
        widget.add_class("-learn")
        widget.border_subtitle = escape(f"★ {text}")
        self.app.learn_marked.append(widget)

    def widget(self, selector: str) -> Widget:
        return self.app.query_one(selector)

    # -- the engine ------------------------------------------------------------------------------

    async def ready(self) -> None:
        app = self.app
        if getattr(app.engine, "replay", False):
            raise LearnError("this is a replay: experiments need a model (run `llmtui learn`)")
        await self.until(lambda: (app.engine is not None and app.controller is not None)
                         or app.state.startswith("error"), "the model to load")
        if app.engine is None:
            raise LearnError(app.state)

    async def idle(self) -> None:
        app = self.app
        if app.running:
            app.controller.stop()
        await self.until(lambda: not app.running, "the running generation to stop")

    async def in_thread(self, job: Callable[[], Any]) -> Any:
        """Run engine work off the UI thread while no generation uses the engine."""
        await self.idle()
        return await asyncio.to_thread(self.app._run_guarded, job)

    async def settings(self, **changes: Any) -> Any:
        """The app's start-up settings with ``changes`` (the context is recreated if they differ)."""
        app = self.app
        try:
            target = app.base_settings.with_(**changes)
        except EngineError as exc:
            raise LearnError(str(exc)) from None
        if app.settings != target:
            await self.idle()
            worker = app._apply_settings(target)
            await worker.wait()
            if app.settings != target:
                raise LearnError(f"the context could not be recreated with {changes}")
        return target

    def policy(self, policy: str = "stop", n_keep: int = -1, ignore_eos: bool = False) -> None:
        self.app.controller.ignore_eos = ignore_eos
        self.app.set_context_policy(policy, n_keep)

    def preset(self, name_or_preset: Any) -> Any:
        """Use a preset for the next runs (without making it the remembered default)."""
        app = self.app
        preset = app.catalog.get(name_or_preset) if isinstance(name_or_preset, str) else name_or_preset
        app.preset = preset
        app.controller.preset = preset
        app._update_status()
        return preset

    def chat(self, on: bool, system: str | None = None) -> None:
        self.app.set_chat(on, system)

    async def generate(self, prompt: str, max_tokens: int, *, step_mode: bool = False) -> None:
        """Run ``prompt`` in the dashboard; return when it stopped (or, in step mode, at the first
        pending step)."""
        app = self.app
        await self.idle()
        app.step_mode = step_mode
        app.query_one("#prompt", Input).value = prompt
        ctrl = app.controller
        saved = ctrl.max_tokens
        ctrl.max_tokens = max_tokens
        count = app.generation_count + 1
        try:
            app.start_generation(prompt, step_mode=step_mode)
            if step_mode:
                await self.until(lambda: app.pending is not None or app.state.startswith("stopped"),
                                 "the first step")
            else:
                await self.until(lambda: app.generation_count == count and not app.running
                                 and app.state.startswith("stopped"), "the generation to finish")
        finally:
            ctrl.max_tokens = saved
        if app.state.startswith("stopped: error"):
            raise LearnError(app.state)

    async def push(self, screen: Any) -> Any:
        await self.app.push_screen(screen)
        return screen

    def lab_model(self) -> str:
        path = self.app.model_file()
        if path is None:
            raise LearnError("this experiment needs a model file (the loaded model has none)")
        return path


# -- stage 1 ----------------------------------------------------------------------------------------


async def exp_load(r: Runner, v: int) -> Finding:
    await r.ready()
    if v == 1:
        return await _model_picker(r)
    from ..engine.anatomy import read_anatomy
    from .screens.anatomy import AnatomyScreen

    path = r.lab_model()
    anatomy = await asyncio.to_thread(read_anatomy, path, app_dirs().cache)
    screen = await r.push(AnatomyScreen(anatomy))
    load = r.app.load_info or "loaded"
    headline = (f"{load}: {human_bytes(anatomy.file_size)} file, {len(anatomy.tensors)} tensors, "
                f"{anatomy.total_elements / 1e6:.1f}M parameters at {anatomy.bits_per_weight:.2f} bits/weight")
    r.mark(screen.query_one("#summary"), headline)
    return r.finding("anatomy", headline, load_info=load, n_tensors=len(anatomy.tensors),
                     file_size=anatomy.file_size, parameters=anatomy.total_elements)


async def _model_picker(r: Runner) -> Finding:
    from .screens.models import ModelPicker

    app = r.app
    if app._discover is None:
        raise LearnError("model discovery is not available here")
    entries = await asyncio.to_thread(app._discover)
    await app.push_screen(ModelPicker(entries, app.model_label, app._loaded_paths()), app._picked)
    loaded = len(app._loaded_paths())
    headline = (f"{len(entries)} model(s) found, {loaded} loaded: pick one (Enter), then come back — "
                "the return is warm")
    return r.finding("models", headline, n_models=len(entries), loaded=loaded)


def _is_text(piece: str) -> bool:
    return piece.isascii() and "\\x" not in piece


async def _tokenizer(r: Runner, text: str, special: bool = False) -> tuple[Any, Any]:
    from .screens.tokenizer import TokenizerScreen

    app = r.app
    await r.idle()
    screen = await r.push(TokenizerScreen(text, app._tokenizer_job, special=special))
    await r.until(lambda: screen.result is not None, "the tokenizer")
    if isinstance(screen.result, EngineError):
        raise LearnError(str(screen.result))
    app.set_focus(None)  # the number keys reach the app, not the text box
    return screen, screen.result


async def exp_tokens(r: Runner, v: int) -> Finding:
    await r.ready()
    if v == 1:
        text = "<|im_start|>user"
        screen, result = await _tokenizer(r, text, special=True)
        plain = await r.in_thread(lambda: r.app.engine.tokenize(text, add_bos=False, parse_special=False))
        special = [row for row in result["tokens"] if row["special"]]
        headline = (f"parsed as special: {len(result['tokens'])} tokens ({len(special)} control token"
                    f"{'s' if len(special) != 1 else ''}); as plain text: {len(plain)} pieces")
        r.mark(screen.query_one("#chips"), headline)
        return r.finding("tokenizer", headline, n_special_parse=len(result["tokens"]), n_control=len(special),
                         n_plain=len(plain))
    if v == 2:
        text = "今天天氣很好，我們去公園散步吧。"
        screen, result = await _tokenizer(r, text)
        n = len(result["tokens"])
        headline = f"{len(text)} Chinese characters → {n} tokens ({n / len(text):.2f} per character)"
        r.mark(screen.query_one("#chips"), headline)
        return r.finding("tokenizer", headline, n_chars=len(text), n_tokens=n)
    text = "The capital of France is Paris. 你好 👋"
    screen, result = await _tokenizer(r, text)
    rows = result["tokens"]
    english = [row for row in rows if _is_text(row["piece"])]
    other = len(rows) - len(english)
    headline = (f"{len(rows)} tokens: the English words take {len(english)}, the 2 Chinese characters and "
                f"the emoji take {other} (raw bytes)")
    r.mark(screen.query_one("#chips"), headline)
    return r.finding("tokenizer", headline, n_tokens=len(rows), n_english=len(english), n_other=other,
                     pieces=[row["piece"] for row in rows])


def _piece(app: Any, token: int) -> str:
    return app.engine.piece(token).decode("utf-8", "replace")


async def exp_next_token(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings()
    r.policy()
    r.chat(False)
    r.preset("balanced" if v == 1 else "greedy")
    await r.generate("The capital of France is", 16, step_mode=True)
    step = app.pending
    if step is None:
        raise LearnError("the model stopped before its first token")
    tr = step.trace
    if v == 2:
        before = step
        from ..engine.controller import Resample

        wild = app.catalog.get("wild")
        app.controller.send(Resample(wild))
        await r.until(lambda: app.pending is not None and app.pending is not before, "the re-sampled step")
        step = app.pending
        tr = step.trace
        headline = (f"greedy chose {_piece(app, before.token)!r}; the same logits re-sampled with wild: "
                    f"{_piece(app, step.token)!r} (rank {tr.rank or '>10'}, draw u={tr.draw:.3f})"
                    + (" — the draw landed on the same token; p and r try other presets" if step.token == before.token
                       else ""))
        r.mark(r.widget("#trace"), headline)
        r.mark(r.widget("#hist"), f"{_piece(app, step.token)!r} — no new llama_decode")
        return r.finding("trace", headline, greedy_token=before.token, token=step.token, draw=tr.draw)
    chosen = _piece(app, step.token)
    if tr.draw is None:
        how = "greedy: no random draw"
    else:
        how = f"drawn: u={tr.draw:.3f} fell in [{tr.draw_lo:.3f}, {tr.draw_hi:.3f})"
    headline = (f"step 0: {chosen!r} p={step.prob:.1%} (raw {tr.raw_p:.1%}, rank {tr.rank}), entropy "
                f"{tr.entropy_bits:.2f} bits; {how} — space accepts it")
    r.mark(r.widget("#hist"), f"{chosen!r} {tr.raw_p:.1%} · H={tr.entropy_bits:.2f} bits")
    r.mark(r.widget("#trace"), how)
    return r.finding("hist", headline, token=step.token, draw=tr.draw, entropy=tr.entropy, prob=step.prob,
                     rank=tr.rank)


async def exp_prompt_form(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    if v in (1, 2):
        await r.settings()
        r.policy()
        r.chat(v == 2)
        r.preset("greedy")
        await r.generate("Name the capital city of France.", r.n(40, 16))
        text = "".join(s.text for s in app.steps)
        first = app.steps[0] if app.steps else None
        where = "in the chat template" if v == 2 else "as plain text"
        opening = f"first token {_piece(app, first.token)!r} ({first.trace.raw_p:.0%})" if first else "no token"
        headline = f"{where}: {opening}, then {shorten(text, 60)!r}"
        r.mark(r.widget("#stream"), "the chat template, then an answer" if v == 2 else "a continuation, not an answer")
        return r.finding("stream", headline, text=text, chat=v == 2)
    screen, result = await _tokenizer(r, "The capital of France is")
    tops = result["top"]

    def top1(label: str) -> str:
        piece, p = tops[label][0]
        return f"{piece!r} {p:.0%}"

    headline = (f"next token without a trailing space: {top1('no trailing space')}; with one: "
                f"{top1('trailing space')}; with BOS: {top1('with BOS')}, without: {top1('without BOS')}")
    from textual.widgets import DataTable

    r.mark(screen.query_one("#compare", DataTable), "same text, four forms: four different top-5s")
    return r.finding("tokenizer", headline, top={k: v[0] for k, v in tops.items()})


# -- stage 2 ----------------------------------------------------------------------------------------


def _kv_figures(app: Any) -> dict[str, Any]:
    kv = app.engine.kv_layout()
    n_past = app.engine.n_past
    return {"n_past": n_past, "used": kv.used(n_past), "bytes_per_token": kv.bytes_per_token,
            "allocated": kv.allocated, "type": f"{kv.type_k}/{kv.type_v}", "n_ctx": app.engine.n_ctx}


async def exp_kv_cache(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    r.policy()
    r.chat(False)
    r.preset("balanced")
    base = None
    if v == 1:
        await r.settings()
        base = app.engine.kv_layout().bytes_per_token
        await r.settings(type_k="q8_0", type_v="q8_0")
    elif v == 2:
        await r.settings()
        base = app.engine.kv_layout().allocated
        await r.settings(n_ctx=app.base_settings.n_ctx * 4)
    else:
        await r.settings()
    await r.generate("Once upon a time", r.n(48, 12))
    f = _kv_figures(app)
    headline = (f"{f['n_past']} tokens × {human_bytes(f['bytes_per_token'])} = {human_bytes(f['used'])} used of "
                f"{human_bytes(f['allocated'])} allocated for n_ctx {f['n_ctx']:,} ({f['type']})")
    if v == 1:
        headline += f"; f16 needs {human_bytes(base)} per token: ×{f['bytes_per_token'] / base:.2f}"
    elif v == 2:
        headline += f"; n_ctx {app.base_settings.n_ctx:,} allocated {human_bytes(base)}: allocation is up front"
    r.mark(r.widget("#kv"), f"{human_bytes(f['used'])} = {f['n_past']} × {human_bytes(f['bytes_per_token'])}")
    return r.finding("kv", headline, base=base, **f)


CHAT_TURNS = ["Hi! My name is Ada. What is a cat?", "And what is a dog?", "What is my name?"]


async def _chat_turns(r: Runner, turns: list[str], max_tokens: int, *, fresh: bool = True,
                      system: str | None = None, on_turn: Callable[[], None] | None = None) -> list[Any]:
    app = r.app
    if fresh or not app.chat_mode:
        r.chat(True, system)
    seen = []
    for text in turns:
        await r.generate(text, max_tokens)
        if app.chat_turn is None:
            raise LearnError("the chat turn reported no reuse figures")
        seen.append((app.chat_turn, "".join(s.text for s in app.steps).strip()))
        if on_turn is not None:
            on_turn()
    return seen


async def exp_new_tokens(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    if v == 1 and app.chat_mode and app.controller.chat is not None and len(app.controller.chat.messages) >= 4:
        before = app.chat_turn
        turns = await _chat_turns(r, CHAT_TURNS[2:], r.n(24, 10), fresh=False)
    else:
        await r.settings()
        r.policy()
        r.preset("balanced")
        before = None
        turns = await _chat_turns(r, CHAT_TURNS[:3] if v == 1 else CHAT_TURNS[:2], r.n(24, 10))
        if len(turns) > 2:
            before = turns[-2][0]
    turn = turns[-1][0]
    headline = (f"this turn reused {turn.reused:,} cached tokens, evaluated "
                f"only {turn.evaluated:,} new ones (saved ~{turn.saved_ms:.0f} ms)")
    if before is not None:
        headline += f"; the turn before reused {before.reused:,}"
    r.mark(r.widget("#kv"), f"reused {turn.reused:,} · new {turn.evaluated:,}")
    return r.finding("kv", headline, reused=turn.reused, evaluated=turn.evaluated,
                     reused_before=before.reused if before else None)


async def exp_long_context(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings()
    r.chat(False)
    n_ctx = 4_000_000
    cache = "q8_0" if v == 1 else "f16"

    def probe() -> tuple[ContextError | None, int, int, int]:
        from ..engine import memory

        settings = app.engine.settings.with_(type_k=cache, type_v=cache)
        available = memory.available_memory()
        refused = None
        try:
            memory.check(app.engine.dims, n_ctx, settings, available)
        except ContextError as exc:
            refused = exc
        kv, compute = memory.estimate_bytes(app.engine.dims, n_ctx, settings)  # with these cache types
        return refused, kv, compute, available

    refused, kv, compute, available = await r.in_thread(probe)
    message = str(refused) if refused is not None else None
    largest = refused.largest_n_ctx if refused is not None and refused.largest_n_ctx else n_ctx
    headline = (f"n_ctx {n_ctx:,} with a {cache} cache needs {human_bytes(kv)} of KV (+{human_bytes(compute)}): "
                + (f"refused — {human_bytes(available)} available, the largest n_ctx that fits is ~{largest:,}"
                   if message else f"it fits in the {human_bytes(available)} available"))
    if message:
        app.notify(message, severity="warning", timeout=12)
    r.mark(r.widget("#kv"), f"{cache}: ≤ ~{largest:,} tokens fit")
    return r.finding("kv", headline, message=message, kv_bytes=kv, available=available, largest=largest,
                     cache=cache)


async def exp_shift(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings(n_ctx=256)
    r.chat(False)
    r.preset("balanced")
    r.policy("stop" if v == 1 else "shift", -1, ignore_eos=True)
    try:
        await r.generate("Once upon a time, in a small village by the sea,", r.n(600, 320))
    finally:
        app.controller.ignore_eos = False
    n = len(app.steps)
    reason = app.last_summary.get("stop_reason")
    if v == 1:
        headline = f"policy stop: {n} tokens, then {reason!r} — the 256-cell context is full"
        r.mark(r.widget("#kv"), f"full after {n} tokens")
        return r.finding("kv", headline, steps=n, stop_reason=reason, shifts=len(app.shifts))
    if app.shifts:
        _at, keep, drop = app.shifts[0]
        headline = (f"{len(app.shifts)} context shift(s) in a 256-cell context: each kept the first {keep} "
                    f"(n_keep) and dropped {drop}, then shifted the rest back (RoPE re-rotated); {n} tokens")
    else:
        headline = f"no shift happened ({n} tokens, {reason})"
    r.mark(r.widget("#kv"), f"{len(app.shifts)} shift(s) · {n} tokens in n_ctx 256")
    return r.finding("kv", headline, shifts=len(app.shifts), steps=n, stop_reason=reason,
                     first_shift=app.shifts[0] if app.shifts else None)


# -- stage 3 ----------------------------------------------------------------------------------------


def _runs_table(runs: list[Any]) -> tuple[list[str], list[list[str]]]:
    columns = ["preset", "text", "tokens", "H bits", "rank", "draws", "distinct", "kept per stage"]
    rows = []
    for run in runs:
        stages = "\n".join(f"{s.name}{f' {s.note}' if s.note else ''}: {s.kept_mean:,.0f}" for s in run.stages)
        stop = "eos" if run.stop_reason == "eog" else ("max" if run.stop_reason == "max_tokens" else run.stop_reason)
        rows.append([run.preset, run.text.strip().replace("\n", " ⏎ "), f"{run.n_tokens} ({stop})",
                     f"{run.entropy_mean / 0.6931:.2f}", f"{run.rank_mean:.1f}", str(run.draws),
                     f"{run.distinct_ratio:.0%}", stages])
    return columns, rows


async def _preset_runs(r: Runner, prompt: str, presets: list[Any], max_tokens: int,
                       seeds: list[int] | None = None) -> list[Any]:
    from ..learn.runs import run_presets

    app = r.app
    seed = app.settings.seed

    def job() -> list[Any]:
        if seeds is None:
            return run_presets(app.engine, prompt, presets, seed=seed, max_tokens=max_tokens)
        out = []
        for s in seeds:
            (run,) = run_presets(app.engine, prompt, presets[:1], seed=s, max_tokens=max_tokens)
            out.append(dataclasses.replace(run, preset=f"{run.preset} · seed {s}"))
        return out

    runs = await r.in_thread(job)
    app.controller.last = type(app.controller.last)()  # the cache no longer holds the dashboard's run
    return runs


async def _show_runs(r: Runner, title: str, runs: list[Any], notes: str, mark_row: int = 0) -> Any:
    from .screens.learn import ResultsScreen

    columns, rows = _runs_table(runs)
    return await r.push(ResultsScreen(title, columns, rows, notes, mark_row=mark_row, widths={1: 48, 7: 20}))


def _temp_preset(base: Any, t: float) -> Any:
    p = base.with_param("temp", "t", t)
    return dataclasses.replace(p, name=f"{base.name} T={t:g}")


def _custom(name: str, *specs: tuple[str, dict[str, Any]]) -> Any:
    from ..sampling.presets import Preset, SamplerSpec, validate_specs

    return Preset(name, validate_specs([SamplerSpec(n, p) for n, p in specs], where=name), "learn")


SAMPLER_NOTES = (
    "H bits: mean entropy of the model's raw distribution (the model's own uncertainty). rank: mean rank of the "
    "chosen token in the raw distribution (1 = always the most likely). draws: steps decided by a random draw. "
    "distinct: distinct tokens / tokens (low = repetitive). kept per stage: candidates left after each sampler, "
    "mean over the steps.")


async def exp_samplers(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings()
    prompt = "The best way to learn a new language is"
    cat = app.catalog
    if v == 1:
        presets = [_temp_preset(cat.get("balanced"), t) for t in (0.2, 0.7, 1.5)]
        title = "one chain, three temperatures"
    elif v == 2:
        presets = [_custom("top-k 5", ("top_k", {"k": 5}), ("temp", {"t": 1.0}), ("dist", {})),
                   _custom("top-p 0.5", ("top_p", {"p": 0.5}), ("temp", {"t": 1.0}), ("dist", {})),
                   _custom("min-p 0.2", ("min_p", {"p": 0.2}), ("temp", {"t": 1.0}), ("dist", {}))]
        title = "three truncations at T=1"
    else:
        presets = [cat.get(n) for n in ("greedy", "precise", "balanced", "wild")]
        title = "greedy, precise, balanced, wild"
    runs = await _preset_runs(r, prompt, presets, r.n(32, 8))
    screen = await _show_runs(r, f"{title} — {prompt!r}, seed {app.settings.seed}", runs, SAMPLER_NOTES)
    parts = [f"{run.preset}: rank {run.rank_mean:.1f}, {run.draws} draws" for run in runs]
    headline = "same prompt and seed — " + "; ".join(parts)
    from textual.widgets import DataTable

    r.mark(screen.query_one(DataTable), "rank 1.0 = always the top token; higher = the chain let others through")
    return r.finding("results", headline, runs=runs)


async def exp_stories(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings()
    prompt = "The dragon opened its eyes and"
    cat = app.catalog
    seeds = None
    if v == 1:
        presets = [cat.get("creative"), cat.get("wild")]
    elif v == 2:
        presets = [cat.get("wild")]
        seeds = [app.settings.seed + i for i in range(3)]
    else:
        presets = [cat.get("precise"), cat.get("wild")]
    runs = await _preset_runs(r, prompt, presets, r.n(64, 12), seeds)
    screen = await _show_runs(r, f"stories — {prompt!r}", runs, SAMPLER_NOTES, mark_row=len(runs) - 1)
    parts = [f"{run.preset}: mean rank {run.rank_mean:.1f}, {run.distinct_ratio:.0%} distinct" for run in runs]
    headline = "; ".join(parts)
    from textual.widgets import DataTable

    r.mark(screen.query_one(DataTable), "wild picks tokens far down the list: a high mean rank")
    return r.finding("results", headline, runs=runs)


# -- stage 4 ----------------------------------------------------------------------------------------


async def exp_quant_types(r: Runner, v: int) -> Finding:
    await r.ready()
    if v == 1:
        lab = await _quant_lab(r)
        await _make_variants(r, lab)
        lines = [f"{Path(m.output).stem.split('.')[-1]} {m.bits_per_weight:.2f} b/w"
                 + (f" ({m.fallback[0]}/{m.fallback[1]} fell back)" if m.fallback else "") for m in lab.made]
        headline = "made: " + ", ".join(lines)
        r.mark(lab.query_one("#status"), "bits per weight and fallbacks, as llama_model_quantize wrote them")
        return r.finding("quant lab", headline, made=[(m.output, m.bits_per_weight, m.fallback) for m in lab.made])
    from ..engine.anatomy import bits_per_weight, read_anatomy
    from .screens.anatomy import AnatomyScreen

    anatomy = await asyncio.to_thread(read_anatomy, r.lab_model(), app_dirs().cache)
    screen = await r.push(AnatomyScreen(anatomy))
    by_type = anatomy.by_type()
    bpw = {t: bits_per_weight(row["bytes"], row["elements"]) for t, row in by_type.items() if row["elements"]}
    headline = f"{anatomy.file_type}: " + ", ".join(
        f"{t} {by_type[t]['tensors']} tensors at {b:.2f} bits/weight" for t, b in bpw.items())
    r.mark(screen.query_one("#types"), "bits/weight = block bytes × 8 / weights per block")
    return r.finding("anatomy", headline, bits_per_weight=bpw)


async def _quant_lab(r: Runner) -> Any:
    from .screens.labs import QuantLab

    types = ("q8_0", "q4_0") if r.app.learn_quick else QuantLab.TYPES
    return await r.push(QuantLab(r.lab_model(), r.app._run_guarded, types=types,
                                 max_tokens=r.n(256, 64)))


async def _make_variants(r: Runner, lab: Any) -> None:
    await r.idle()
    lab.query_one("#status").update("quantizing… (F16 reference, then " + ", ".join(lab.types) + ")")
    await lab._make_variants().wait()
    if not lab.made:
        raise LearnError("quantizing failed: " + str(lab.query_one("#status").content))


async def exp_ptq(r: Runner, v: int) -> Finding:
    await r.ready()
    lab = await _quant_lab(r)
    if not all(Path(p).exists() for p in lab._variant_paths()):
        await _make_variants(r, lab)
    await r.idle()
    worker = lab.compare()
    if worker is None:
        raise LearnError("no variants to compare")
    await worker.wait()
    if lab.result is None:
        raise LearnError("the comparison failed: " + str(lab.query_one("#status").content))
    scores = lab.result.scores
    if v == 1:
        lab.shown = min(range(1, len(scores)), key=lambda i: scores[i].bits_per_weight)
        lab._paint()
    shown = scores[lab.shown]
    flips = sum(a != b for a, b in zip(shown.top1, lab.result.ref_top1))
    parts = [f"{Path(s.path).stem.split('.')[-1]}: KL {s.kl_mean:.3f}, top-1 {s.top1_agreement:.0%}"
             for s in scores[1:]]
    headline = "against the F16 reference — " + "; ".join(parts)
    r.mark(lab.query_one("#scores"), "KL mean: how far each model's next-token distribution moved")
    r.mark(lab.query_one("#tokens"), f"{Path(shown.path).stem}: {flips} top-1 flips (underlined)")
    return r.finding("quant lab", headline, scores=[(s.path, s.kl_mean, s.top1_agreement) for s in scores],
                     flips=flips, shown=shown.path)


async def exp_threads(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    from ..engine.settings import default_threads

    if v == 1:
        r.chat(False)
        r.policy()
        r.preset("greedy")
        speeds = {}
        for threads in sorted({1, default_threads()}):
            await r.settings(n_threads=threads)
            await r.generate("The history of the printing press", r.n(64, 16))
            speeds[threads] = float(app.last_summary.get("generation_tok_per_s") or 0.0)
        headline = "generation tok/s — " + ", ".join(f"{t} thread(s): {s:.1f}" for t, s in speeds.items())
        r.mark(r.widget("#tput"), headline.split(" — ")[1])
        return r.finding("tput", headline, speeds=speeds)
    from ..engine.lab import gpu_offload_available
    from .screens.labs import PerfLab

    lab = await r.push(PerfLab(r.lab_model(), default_threads(), app._run_guarded, gpu_offload_available(),
                               quick=True))
    await r.idle()
    await lab._bench().wait()
    if not lab.rows:
        raise LearnError("the benchmark failed: " + str(lab.query_one("#status").content))
    rows = lab.rows
    parts = [f"{row.threads} thread(s): pp {row.pp_tps:.0f}, tg {row.tg_tps:.1f} tok/s (~{row.bandwidth_gbs:.1f} GB/s)"
             for row in rows]
    headline = "; ".join(parts)
    r.mark(lab.query_one("#rows"), "tg is bound by memory bandwidth, pp by compute")
    return r.finding("perf lab", headline, rows=[(row.threads, row.pp_tps, row.tg_tps) for row in rows])


async def exp_gpu(r: Runner, v: int) -> Finding:
    await r.ready()
    from ..engine.binding import llama_cpp_version, supports_gpu_offload, system_info
    from ..engine.lab import bench
    from .screens.learn import ResultsScreen

    path = r.lab_model()
    pp, tg = r.n(128, 32), r.n(32, 4)

    def job() -> tuple[bool, str, list[Any]]:
        return supports_gpu_offload(), system_info(), bench(path, threads=(0,), ngls=(0, 99), pp=pp, tg=tg, reps=1)

    gpu, info, rows = await r.in_thread(job)
    table = [[str(row.n_gpu_layers), f"{row.pp_tps:.0f}", f"{row.tg_tps:.1f}", f"{row.load_cold_ms:.0f} ms"]
             for row in rows]
    ratio = rows[1].tg_tps / rows[0].tg_tps if rows[0].tg_tps else 0.0
    notes = (f"llama-cpp-python {llama_cpp_version()} · GPU offload in this build: "
             f"{'YES' if gpu else 'NO — a CPU-only build: n_gpu_layers is accepted and ignored'}\n\n"
             f"llama_print_system_info():\n{info}\n\n"
             "To offload, llama-cpp-python must be built with a GPU backend, e.g. "
             "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install llama-cpp-python --force-reinstall --no-cache-dir; "
             "then `llmtui --n-gpu-layers 99` puts every layer on the GPU.")
    screen = await r.push(ResultsScreen("GPU offload: n_gpu_layers 0 and 99 on this build",
                                        ["n_gpu_layers", "pp tok/s", "tg tok/s", "load"], table, notes, mark_row=1))
    headline = (f"GPU offload supported: {'yes' if gpu else 'no (CPU build)'}; ngl 99 / ngl 0 generation speed "
                f"×{ratio:.2f}" + ("" if gpu else " — the same work on the same CPU"))
    r.mark(screen.query_one("#notes"), "what this build can do")
    return r.finding("results", headline, gpu=gpu, ratio=ratio, system_info=info)


async def exp_mmap(r: Runner, v: int) -> Finding:
    await r.ready()
    if v == 1:
        return await _model_picker(r)
    from ..engine.lab import bench, drop_page_cache
    from .screens.learn import ResultsScreen

    path = r.lab_model()

    def job() -> tuple[bool, list[Any]]:
        can_drop = drop_page_cache(path)
        return can_drop, bench(path, threads=(0,), mmaps=(True, False), pp=16, tg=2, reps=1)

    can_drop, rows = await r.in_thread(job)
    table = [["on" if row.mmap else "off", f"{row.load_cold_ms:.0f} ms", f"{row.load_warm_ms:.0f} ms",
              human_bytes(row.rss_after_load)] for row in rows]
    on = next(row for row in rows if row.mmap)
    off = next(row for row in rows if not row.mmap)
    notes = ("cold: the file was dropped from the page cache first (posix_fadvise DONTNEED)"
             + ("" if can_drop else " — this system refused, so 'cold' may be warm here")
             + ". warm: loaded again at once, the pages still cached. With mmap the weights are not copied: the "
             "process maps the cached pages; without it every byte is read into the process's own memory.")
    screen = await r.push(ResultsScreen("mmap: cold and warm loads", ["mmap", "cold load", "warm load",
                                                                      "RSS after load"], table, notes))
    headline = (f"mmap on: cold {on.load_cold_ms:.0f} ms, warm {on.load_warm_ms:.0f} ms; mmap off: cold "
                f"{off.load_cold_ms:.0f} ms, warm {off.load_warm_ms:.0f} ms")
    from textual.widgets import DataTable

    r.mark(screen.query_one(DataTable), "warm + mmap: only the mapping is built")
    return r.finding("results", headline, mmap_cold=on.load_cold_ms, mmap_warm=on.load_warm_ms,
                     read_cold=off.load_cold_ms, read_warm=off.load_warm_ms, dropped=can_drop)


# -- stage 5 ----------------------------------------------------------------------------------------


async def exp_chat(r: Runner, v: int) -> Finding:
    await r.ready()
    app = r.app
    await r.settings()
    r.policy()
    r.preset("balanced")
    system = "Answer like a pirate, in one sentence." if v == 2 else "You are a helpful assistant. Answer briefly."
    recording = app.recording
    files: list[str] = []
    if v == 1:
        app.recording = True
        app.sync_recorder()
    try:
        def recorded() -> None:
            if v == 1 and app.record_path:
                files.append(app.record_path)

        seen = await _chat_turns(r, CHAT_TURNS if v != 1 else CHAT_TURNS[:2], r.n(32, 10), system=system,
                                 on_turn=recorded)
    finally:
        if v == 1:
            app.recording = recording
            app.sync_recorder()
            app._update_status()
    last, reply = seen[-1]
    reused = [t.reused for t, _ in seen]
    if v == 1:
        headline = (f"{len(files)} turn(s) recorded, one session file each; the last one's prompt holds the "
                    f"whole conversation: {Path(files[-1]).name if files else '(none)'}")
        r.mark(r.widget("#stream"), "recorded")
        return r.finding("stream", headline, files=files, reused=reused)
    recalled = "Ada" in reply if v == 0 else None
    headline = (f"{len(seen)} turns, reused per turn: {', '.join(map(str, reused))} tokens; last reply: "
                f"{shorten(reply, 60)!r}" + ("" if recalled is None else
                                           f" — the name {'was' if recalled else 'was not'} recalled"))
    r.mark(r.widget("#stream"), "the conversation as the template renders it")
    return r.finding("stream", headline, reused=reused, reply=reply, recalled=recalled)


EXPERIMENTS: dict[str, Callable[[Runner, int], Awaitable[Finding]]] = {
    "load": exp_load, "tokens": exp_tokens, "next_token": exp_next_token, "prompt_form": exp_prompt_form,
    "kv_cache": exp_kv_cache, "new_tokens": exp_new_tokens, "long_context": exp_long_context, "shift": exp_shift,
    "samplers": exp_samplers, "stories": exp_stories, "quant_types": exp_quant_types, "ptq": exp_ptq,
    "threads": exp_threads, "gpu": exp_gpu, "mmap": exp_mmap, "chat": exp_chat,
}


async def run_experiment(app: "LlmTuiApp", question_id: str, variant: int = 0) -> Finding | None:
    """Run one experiment (an async worker's body); the finding lands in the app and is returned."""
    try:
        question = find(question_id)
    except KeyError as exc:
        app.notify(str(exc.args[0]), severity="error", timeout=8)
        return None
    experiment = EXPERIMENTS.get(question.experiment)
    if experiment is None:
        app.notify(f"{question.id}: unknown experiment {question.experiment!r}", severity="error")
        return None
    while len(app.screen_stack) > 1:  # experiments start from the dashboard
        app.pop_screen()
    for widget in app.learn_marked:
        widget.remove_class("-learn")
        widget.border_subtitle = ""
    app.learn_marked.clear()
    label = question.label + (f" — variation {variant}" if variant else "")
    app.learn_question = question.id
    bar = app.query_one("#learnbar")
    bar.update(f"[b]Learn {question.number}[/b] · running the experiment…")
    bar.display = True
    app.notify(f"experiment: {label}", timeout=3)
    try:
        finding = await experiment(Runner(app, question, variant), variant)
    except (LearnError, EngineError) as exc:
        bar.update(f"[b]Learn {question.number}[/b] · the experiment could not run: {escape(str(exc))}")
        app.notify(f"{label}: {exc}", severity="error", timeout=10)
        return None
    app.show_finding(finding)
    app.notify(finding.headline, title=f"Learn {question.number}", timeout=12)
    return finding
