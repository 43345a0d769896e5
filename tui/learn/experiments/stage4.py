"""Stage 4 — quantization and performance: types, PTQ, threads, GPU offload, mmap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...engine.anatomy import bits_per_weight, read_anatomy
from ...units import human_bytes
from ..host import Finding, LearnError, Runner
from .stage1 import _model_picker


async def exp_quant_types(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        lab = await _quant_lab(r)
        await _make_variants(r, lab)
        lines = [f"{Path(m.output).stem.split('.')[-1]} {m.bits_per_weight:.2f} b/w"
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
    parts = [f"{Path(s.path).stem.split('.')[-1]}: KL {s.kl_mean:.3f}, top-1 {s.top1_agreement:.0%}"
             for s in scores[1:]]
    headline = "against the F16 reference — " + "; ".join(parts)
    r.host.mark(lab, part="#scores", text="KL mean: how far each model's next-token distribution moved")
    r.host.mark(lab, part="#tokens", text=f"{Path(shown.path).stem}: {flips} top-1 flips (underlined)")
    return r.finding("quant lab", headline, scores=[(s.path, s.kl_mean, s.top1_agreement) for s in scores],
                     flips=flips, shown=shown.path)


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
    lab = await r.host.perf_lab(quick=True)
    await r.host.idle()
    await lab.run()
    if not lab.rows:
        raise LearnError("the benchmark failed: " + lab.status_text)
    rows = lab.rows
    parts = [f"{row.threads} thread(s): pp {row.pp_tps:.0f}, tg {row.tg_tps:.1f} tok/s (~{row.bandwidth_gbs:.1f} GB/s)"
             for row in rows]
    headline = "; ".join(parts)
    r.host.mark(lab, part="#rows", text="tg is bound by memory bandwidth, pp by compute")
    return r.finding("perf lab", headline, rows=[(row.threads, row.pp_tps, row.tg_tps) for row in rows])


async def exp_gpu(r: Runner, v: int) -> Finding:
    await r.host.ready()
    from ...engine.binding import llama_cpp_version, supports_gpu_offload, system_info
    from ...engine.lab import bench

    path = r.host.model_file()
    pp, tg = r.n(128, 32), r.n(32, 4)

    def job() -> tuple[bool, str, list[Any]]:
        return supports_gpu_offload(), system_info(), bench(path, threads=(0,), ngls=(0, 99), pp=pp, tg=tg, reps=1)

    gpu, info, rows = await r.host.in_thread(job)
    table = [[str(row.n_gpu_layers), f"{row.pp_tps:.0f}", f"{row.tg_tps:.1f}", f"{row.load_cold_ms:.0f} ms"]
             for row in rows]
    ratio = rows[1].tg_tps / rows[0].tg_tps if rows[0].tg_tps else 0.0
    notes = (f"llama-cpp-python {llama_cpp_version()} · GPU offload in this build: "
             f"{'YES' if gpu else 'NO — a CPU-only build: n_gpu_layers is accepted and ignored'}\n\n"
             f"llama_print_system_info():\n{info}\n\n"
             "To offload, llama-cpp-python must be built with a GPU backend, e.g. "
             "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install llama-cpp-python --force-reinstall --no-cache-dir; "
             "then `llmtui --n-gpu-layers 99` puts every layer on the GPU.")
    screen = await r.host.show_results("GPU offload: n_gpu_layers 0 and 99 on this build",
                                       ["n_gpu_layers", "pp tok/s", "tg tok/s", "load"], table, notes, mark_row=1)
    headline = (f"GPU offload supported: {'yes' if gpu else 'no (CPU build)'}; ngl 99 / ngl 0 generation speed "
                f"×{ratio:.2f}" + ("" if gpu else " — the same work on the same CPU"))
    r.host.mark(screen, part="#notes", text="what this build can do")
    return r.finding("results", headline, gpu=gpu, ratio=ratio, system_info=info)


async def exp_mmap(r: Runner, v: int) -> Finding:
    await r.host.ready()
    if v == 1:
        return await _model_picker(r)
    from ...engine.lab import bench, drop_page_cache

    path = r.host.model_file()

    def job() -> tuple[bool, list[Any]]:
        can_drop = drop_page_cache(path)
        return can_drop, bench(path, threads=(0,), mmaps=(True, False), pp=16, tg=2, reps=1)

    can_drop, rows = await r.host.in_thread(job)
    table = [["on" if row.mmap else "off", f"{row.load_cold_ms:.0f} ms", f"{row.load_warm_ms:.0f} ms",
              human_bytes(row.rss_after_load)] for row in rows]
    on = next(row for row in rows if row.mmap)
    off = next(row for row in rows if not row.mmap)
    notes = ("cold: the file was dropped from the page cache first (posix_fadvise DONTNEED)"
             + ("" if can_drop else " — this system refused, so 'cold' may be warm here")
             + ". warm: loaded again at once, the pages still cached. With mmap the weights are not copied: the "
             "process maps the cached pages; without it every byte is read into the process's own memory.")
    screen = await r.host.show_results("mmap: cold and warm loads",
                                       ["mmap", "cold load", "warm load", "RSS after load"], table, notes)
    headline = (f"mmap on: cold {on.load_cold_ms:.0f} ms, warm {on.load_warm_ms:.0f} ms; mmap off: cold "
                f"{off.load_cold_ms:.0f} ms, warm {off.load_warm_ms:.0f} ms")
    r.host.mark(screen, part="table", text="warm + mmap: only the mapping is built")
    return r.finding("results", headline, mmap_cold=on.load_cold_ms, mmap_warm=on.load_warm_ms,
                     read_cold=off.load_cold_ms, read_warm=off.load_warm_ms, dropped=can_drop)
