"""``llmtui quantize``, ``compare``, ``bench``: the quantization and performance labs, headless."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import validate as V
from ..safe_text import json_text
from ..units import human_bytes
from .common import (
    CliError,
    common_args,
    find_models,
    load_config_or_fail,
    pick_model,
    say,
    usable_model,
)


def register(sub: Any) -> None:
    qz = sub.add_parser("quantize", help="(re)quantize a model with llama.cpp (llama_model_quantize)",
                        description="Write MODEL re-quantized to --type. Our embedded sources are already "
                        "quantized (Q4_1, Q4_K_M), so this re-quantizes; --type f16 dequantizes (the lab's "
                        "reference, numerically the source model itself). The output lands in the user models "
                        "dir (listed by `llmtui models`) unless --out is given.")
    qz.add_argument("model", metavar="MODEL")
    qz.add_argument("--type", required=True, metavar="TYPE",
                    help="q8_0, q5_1, q5_0, q4_1, q4_0, q4_k_m, q5_k_m, q6_k, q2_k or f16")
    qz.add_argument("--out", type=Path, metavar="PATH")
    qz.add_argument("--force", action="store_true", help="overwrite an existing output file")
    qz.add_argument("--json", action="store_true")
    common_args(qz, sub=True)

    cmp_ = sub.add_parser("compare", help="perplexity, KL divergence and top-1 agreement against a reference",
                          description="Evaluate REF and each OTHER on a text (built in, or --text FILE): file size, "
                          "bits per weight, load time, prompt and generation tok/s, perplexity, mean and p99 KL "
                          "divergence from REF's next-token distributions, and how often the top-1 token agrees — "
                          "what llama-perplexity --kl-divergence reports.")
    cmp_.add_argument("models", nargs="+", metavar="MODEL", help="REF first, then the others")
    cmp_.add_argument("--text", type=Path, metavar="FILE", help="text to evaluate (default: a built-in text)")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--md", action="store_true", help="a Markdown table")
    common_args(cmp_, sub=True)

    bn = sub.add_parser("bench", help="llama-bench-like pp/tg table over threads, batch, mmap, cache types, GPU layers",
                        description="pp (prompt processing, --pp tokens in one batch) and tg (generation, --tg "
                        "tokens one by one) tok/s with ± stddev over --reps, cold (page cache dropped with "
                        "posix_fadvise) and warm load times, and an estimate of the memory bandwidth generation "
                        "uses (model bytes × tok/s). Lists are comma-separated.")
    bn.add_argument("--threads", default="0", metavar="LIST", help="e.g. 1,2 (0 = physical cores)")
    bn.add_argument("--batch", default="512", metavar="LIST")
    bn.add_argument("--mmap", default="on", metavar="LIST", help="on,off")
    bn.add_argument("--cache-type", default="f16", metavar="LIST", help="e.g. f16,q8_0")
    bn.add_argument("--ngl", default="0", metavar="LIST", help="GPU layers (needs a GPU build)")
    bn.add_argument("--pp", type=V.int_in(1, 65536), default=512, help="prompt tokens (default 512)")
    bn.add_argument("--tg", type=V.int_in(1, 65536), default=128, help="generated tokens (default 128)")
    bn.add_argument("--reps", type=V.REPS, default=3, help="repetitions of each row (default 3)")
    bn.add_argument("--json", action="store_true")
    bn.add_argument("--md", action="store_true")
    common_args(bn, sub=True)


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..config import app_dirs
    from ..engine.lab import quantize_model

    entry = pick_model(args, load_config_or_fail(args))  # quantize_model rejects a bad --type before touching anything
    r = quantize_model(entry.path, args.type, args.out, models_dir=app_dirs().models, force=args.force)
    if args.json:
        print(json_text(r.as_dict(), indent=2))
        return 0
    say(f"wrote {r.output} ({human_bytes(r.file_size)}, {r.bits_per_weight:.2f} bits per weight) in {r.seconds:.1f} s")
    if r.requantized:
        say("note: the source was already quantized — this is a re-quantization of its (dequantized) weights")
    say("tensor types in the output:")
    for t, row in r.by_type.items():
        say(f"  {t:<6} {row['tensors']:>4} tensors {human_bytes(row['bytes']):>10}")
    if r.fallback:
        say(f"llama.cpp used other types for {r.fallback[0]} of {r.fallback[1]} tensors: a type only fits rows whose "
              "width is a multiple of its block (K-quants: 256; SmolLM2's rows are 576 wide), and llama.cpp keeps "
              "some tensors (token embeddings, norms) in higher precision by design")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..engine.lab import compare_models

    entries = find_models(args, load_config_or_fail(args))
    paths = [usable_model(spec, entries).path for spec in args.models]
    text = None
    if args.text:
        try:
            text = args.text.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{args.text}: cannot read: {exc.strerror or exc}") from None
    from ..engine.lab import compare_markdown, compare_table

    result = compare_models(paths, text, on_progress=lambda m: say(m, file=sys.stderr))
    if args.json:
        print(json_text(result.as_dict(), indent=2))
        return 0
    say(compare_markdown(result) if args.md else compare_table(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..engine.lab import bench, bench_markdown
    from ..engine.binding import supports_gpu_offload

    config = load_config_or_fail(args)
    entry = pick_model(args, config)

    def ints(text: str, name: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise CliError(f"--{name}: expected comma-separated integers, got {text!r}") from None

    mmaps = []
    for x in args.mmap.split(","):
        if x.strip() not in ("on", "off"):
            raise CliError(f"--mmap: expected on/off values, got {x!r}")
        mmaps.append(x.strip() == "on")
    rows = bench(entry.path, threads=ints(args.threads, "threads"), batches=ints(args.batch, "batch"), mmaps=mmaps,
                 cache_types=[c.strip() for c in args.cache_type.split(",")], ngls=ints(args.ngl, "ngl"),
                 pp=args.pp, tg=args.tg, reps=args.reps, on_progress=lambda m: say(m, file=sys.stderr))
    gpu = supports_gpu_offload()
    if args.json:
        print(json_text({"model": entry.path, "gpu_offload": gpu, "rows": [r.as_dict() for r in rows]}, indent=2))
    else:
        say(bench_markdown(entry.path, rows, gpu))
    return 0


COMMANDS = {"quantize": cmd_quantize, "compare": cmd_compare, "bench": cmd_bench}
