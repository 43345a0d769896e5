"""What every command shares: one-line errors, the sanitised printer, argument groups, config,
engine settings, model and preset choice."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import validate as V
from ..config import Config, ConfigError, load_config
from ..safe_text import visible, visible_lines

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
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


# -- argument groups: options accepted both before and after the subcommand. On subparsers their
# default is SUPPRESS so that `llmtui --model X generate …` keeps X (argparse would otherwise
# overwrite it with the subparser's default).


def tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-bos", action="store_true", help="never add the BOS token (default: as the model asks)")
    p.add_argument("--bos", action="store_true", help="always add the BOS token")
    p.add_argument("--special", action="store_true", help="parse special tokens such as <|im_start|> in the text")


def add_bos(args: argparse.Namespace) -> bool | None:
    """--bos / --no-bos as the engine's add_bos (None: as the model asks)."""
    if args.bos and args.no_bos:
        raise CliError("--bos and --no-bos contradict each other")
    return True if args.bos else False if args.no_bos else None


def common_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    g = parser.add_argument_group("models")
    if sub:
        g.argument_default = argparse.SUPPRESS
    g.add_argument("--model", "-m", metavar="NAME|PATH",
                   help="model to use: a name from `llmtui models` or a .gguf path; a substring is enough when it "
                   "names one model (the quant lab's variants give way to the others: `smol` is the installed SmolLM2)")
    g.add_argument("--models-dir", action="append", metavar="DIR", type=Path,
                   help="also look for *.gguf under DIR (repeatable; adds to the config file's models.dirs)")
    g.add_argument("--config", type=Path, metavar="FILE", help="config file (default: $LLMTUI_CONFIG or the user config dir)")


def engine_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
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


def sampling_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
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


# -- config, settings, models, presets


def load_config_or_fail(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config) if args.config else load_config()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def config_or_defaults(args: argparse.Namespace, notices: list[str]) -> Config:
    """The config for the dashboard: a bad file does not stop it, it starts with the defaults and says why."""
    try:
        return load_config_or_fail(args)
    except CliError as exc:
        notices.append(f"{exc} — started with the default settings")
        return Config()


def keymap_problems(config: Config) -> list[str]:
    """The config's [keys] entries that name no binding (Textual would ignore them without a word)."""
    from ..app.keys import known_binding_ids  # Textual: only where the dashboard starts anyway

    unknown = sorted(set(config.keys) - known_binding_ids())
    if not unknown:
        return []
    return [f"{config.source}: [keys] unknown binding id(s) {', '.join(unknown)}: ignored (the help screen, ?, "
            "lists the ids)"]


def seed_given(args: argparse.Namespace, config: Config) -> bool:
    """The user chose a seed (--seed or the config file's): a server then uses it for requests that give none."""
    return getattr(args, "seed", None) is not None or "seed" in config.engine


def engine_settings(args: argparse.Namespace, config: Config) -> Any:
    from ..engine import EngineError, EngineSettings

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
    from ..config import app_dirs
    from ..engine.models import discover

    dirs = app_dirs()
    return discover(
        [*config.models_dirs, *(getattr(args, "models_dir", None) or [])],
        extra_paths,
        scan_hf_cache=config.scan_hf_cache,
        data_models=dirs.models,
        cache_dir=dirs.cache,
    )


def usable_model(spec: str | None, entries: Any) -> Any:
    """The model ``spec`` names among ``entries``; a file that cannot be used is a one-line error."""
    from ..engine.models import resolve_model

    entry = resolve_model(spec, entries)
    if not entry.usable:
        raise CliError(f"{entry.path}: {entry.error}")
    return entry


def pick_model(args: argparse.Namespace, config: Config) -> Any:
    return usable_model(args.model or config.model, find_models(args, config))


def pick_preset(args: argparse.Namespace, config: Config, catalog: Any = None) -> Any:
    """The preset from --preset / config, with --samplers and parameter overrides applied
    (``catalog``: the presets already loaded, else they are read here)."""
    from ..config import app_dirs
    from ..sampling.presets import DEFAULT_PRESET, PresetError, load_presets

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
    from ..sampling.presets import PresetError

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



def read_session_or_fail(path: Path) -> Any:
    """A recording, its problems as warnings on stderr; unreadable → a one-line error."""
    from ..record import SessionFileError, read_session

    try:
        session = read_session(path)
    except SessionFileError as exc:
        raise CliError(str(exc)) from None
    for problem in session.problems:
        warn(f"{path}: {problem}")
    return session
