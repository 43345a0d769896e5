"""The dashboard (``llmtui`` with no command) and ``llmtui learn``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import validate as V
from ..safe_text import json_text
from .common import (
    CliError,
    Parser,
    common_args,
    config_or_defaults,
    engine_args,
    engine_settings,
    find_models,
    keymap_problems,
    load_config_or_fail,
    pick_model,
    pick_preset,
    sampling_args,
    say,
    seed_given,
    warn,
)
from .recorded import load_recorded_model
from .remote import remote_args, remotes_from


def dashboard_parser() -> argparse.ArgumentParser:
    """``llmtui``'s own options (the dashboard's), before any subcommand is added: also what checks the
    options ``llmtui web`` passes to every session."""
    parser = Parser(
        prog="llmtui",
        allow_abbrev=False,
        description="Watch a local GGUF model think, one token at a time. "
        "With no subcommand, opens the dashboard on the embedded SmolLM2 model.",
        epilog="Run `llmtui COMMAND --help` for a command's options. No network is used unless you name a server "
        "(--remote URL).",
    )
    common_args(parser)
    engine_args(parser)
    sampling_args(parser)
    dashboard_args(parser)
    return parser


def dashboard_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``llmtui`` itself (the dashboard)."""
    parser.add_argument("--prompt", type=V.utf8_text, metavar="TEXT", help="prompt to put in the dashboard's input")
    parser.add_argument("--max-tokens", type=V.TOKENS, default=256, metavar="N",
                        help="tokens per generation in the dashboard (default 256)")
    parser.add_argument("--record", nargs="?", const="", metavar="FILE",
                        help="record every generation (the first to FILE, later ones next to it, "
                        "or all in the sessions directory); ctrl+r toggles it in the app")
    parser.add_argument("--context-policy", choices=["stop", "shift", "drop-oldest-turns"], default="stop",
                        help="when the context is full: stop, shift (keep --n-keep, drop half of the rest), "
                        "or drop-oldest-turns in chat mode")
    parser.add_argument("--n-keep", type=V.N_KEEP, default=-1, metavar="N",
                        help="tokens kept by a shift (-1: the prompt)")
    parser.add_argument("--system", type=V.utf8_text, metavar="TEXT", help="system prompt for chat mode (c)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--raw", dest="chat", action="store_false", default=None,
                      help="start in raw completion (default: chat mode when the model has a chat template)")
    mode.add_argument("--chat", dest="chat", action="store_true", default=None,
                      help="start in chat mode (the default for a model with a chat template)")
    parser.add_argument("--serve", nargs="?", const="127.0.0.1:8000", metavar="[HOST:]PORT",
                        help="also serve the OpenAI-compatible API (default 127.0.0.1:8000): every request shows "
                        "up live in the panels; S toggles it in the app")
    parser.add_argument("--api-key", type=V.utf8_text, metavar="KEY", default=os.environ.get("LLMTUI_API_KEY"),
                        help="with --serve / serve: require 'Authorization: Bearer KEY' (default $LLMTUI_API_KEY)")
    parser.add_argument("--max-body", type=V.BODY_MIB, default=8, metavar="MIB",
                        help="with --serve / serve: the largest request body accepted, in MiB (default 8)")
    remote_args(parser)


def register(sub: Any) -> None:
    learn = sub.add_parser("learn", help="the learning path: the llama.cpp study roadmap's questions, each with a "
                           "live experiment",
                           description="Open the dashboard on the Learn screen (L in the app), at QUESTION if "
                           "given (an id such as s2-kv-cache, or a number such as 2.1). Enter runs a question's "
                           "experiment; 1 and 2 run its variations. --list prints the questions. --run runs "
                           "QUESTION's experiment without the dashboard and prints what it found: the headline, "
                           "every value behind it, where the dashboard would point (marks) and its tables.")
    learn.add_argument("question", nargs="?", metavar="QUESTION")
    learn.add_argument("--list", action="store_true", help="print the questions (English and Chinese) and exit")
    learn.add_argument("--run", action="store_true",
                       help="run QUESTION's experiment headlessly on the model and print the finding (no dashboard)")
    learn.add_argument("--variant", type=V.int_in(0, 9), default=0, metavar="N",
                       help="with --run: variation N, the question's 'Try next' item N (default 0: the experiment "
                       "itself)")
    learn.add_argument("--json", action="store_true",
                       help="with --list: a JSON array; with --run: one JSON object (question, number, variant, "
                       "headline, values, marks, tables)")
    learn.add_argument("--guess", type=V.utf8_text, metavar="ANSWER",
                       help="with --run: your prediction (predict, then run), set beside what the run measured")
    learn.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # shortened experiments (tests)
    common_args(learn, sub=True)
    engine_args(learn, sub=True)


def cmd_app(args: argparse.Namespace, learn: str | None = None) -> int:
    from ..config import app_dirs, load_state
    from ..sampling.presets import load_presets

    notices: list[str] = []
    config = config_or_defaults(args, notices)
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
    remotes = remotes_from(args)  # --remote URL…: the dashboard watches servers, no local model is loaded
    entry = remotes.entries()[0] if remotes.specs else pick_model(args, config)

    from ..app.app import run_app  # Textual is imported only here
    from ..app.themes import load_themes, shipped_theme_dir
    from ..engine.llama import LlamaEngine
    from ..engine.pool import EnginePool

    themes = load_themes(shipped_theme_dir(), dirs.themes)
    notices += [*catalog.errors, *themes.errors, *keymap_problems(config)]

    def discover() -> list[Any]:
        return find_models(args, config)

    pool = EnginePool(lambda path, progress: LlamaEngine(path, settings, on_progress=progress),
                      capacity=config.keep_loaded)
    from ..remote.entries import REMOTE

    def load(e: Any, progress: Any) -> Any:
        return remotes.load(e) if e.source == REMOTE else pool.get(e.path, progress)

    return run_app(
        load=load,
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
        fork_load=lambda session: load_recorded_model(args, session, by_arg=False),
        notices=notices,
        record=args.record,
        context_policy=args.context_policy,
        n_keep=args.n_keep,
        system=args.system,
        chat=getattr(args, "chat", None),
        learn=learn,
        serve=_host_port(args.serve) if getattr(args, "serve", None) else None,
        api_key=getattr(args, "api_key", None),
        max_body_bytes=int(args.max_body * 2**20),
        remotes=remotes,
        seed_given=seed_given(args, config),
    )


def _host_port(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise CliError(f"--serve: expected [HOST:]PORT, got {spec!r}") from None


def cmd_learn(args: argparse.Namespace) -> int:
    from ..learn import STAGES, find, load_questions

    questions = load_questions()
    if args.run or args.variant:
        if args.list:
            raise CliError("--list and --run: pick one")
        if not args.run:
            raise CliError("--variant needs --run (in the dashboard, 1 and 2 run the variations)")
        if args.question is None:
            raise CliError("--run needs a QUESTION (see llmtui learn --list)")
        return _run_learn(args)
    if args.guess is not None:
        raise CliError("--guess needs --run (in the dashboard, Enter asks for it)")
    if args.quick:
        raise CliError("--quick needs --run")
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


def _run_learn(args: argparse.Namespace) -> int:
    """``llmtui learn QUESTION --run``: the experiment on a headless host, its finding printed."""
    import asyncio
    import sys

    from ..config import app_dirs
    from ..engine.errors import EngineError
    from ..learn import find
    from ..learn.headless import HeadlessHost, report, report_lines
    from ..learn.host import LearnError
    from ..sampling.presets import load_presets

    try:
        question = find(args.question)
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from None
    if args.variant > len(question.try_next):
        raise CliError(f"{question.number} has no variation {args.variant} "
                       f"(it has {len(question.try_next)}; llmtui learn --list shows them)")
    prediction = guess = None
    if args.guess is not None:
        from ..learn.predict import GuessError, parse_guess, prediction_for

        prediction = prediction_for(question.id, args.variant)
        if prediction is None:
            raise CliError(f"{question.number}{f' variation {args.variant}' if args.variant else ''} asks for no "
                           "prediction (1.2, 1.4, 2.1 and 4.2 do)")
        try:
            guess = parse_guess(prediction, args.guess)
        except GuessError as exc:
            raise CliError(f"--guess: {prediction.ask} — the guess should be {exc}") from None
    config = load_config_or_fail(args)
    settings = engine_settings(args, config)
    catalog = load_presets(app_dirs().presets)
    preset = pick_preset(args, config, catalog)
    entry = pick_model(args, config)

    async def run() -> tuple[Any, Any]:
        host = HeadlessHost.load(entry.path, settings, preset=preset, catalog=catalog, model_label=entry.name,
                                 discover=lambda: find_models(args, config), quick=args.quick,
                                 max_tokens=args.max_tokens, context_policy=args.context_policy,
                                 n_keep=args.n_keep, system=args.system)
        for warning in host.engine.warnings:
            warn(warning)
        try:
            return host, await host.run_question(question, args.variant)
        finally:
            await host.aclose()

    try:
        host, finding = asyncio.run(run())
    except (LearnError, EngineError) as exc:
        raise CliError(f"{question.number} {question.id}: {exc}") from None
    for severity, message in host.notices:
        if severity != "information":
            say(f"llmtui: {severity}: {message}", file=sys.stderr)
    said = ""
    if prediction is not None:
        from ..learn.predict import verdict

        said = verdict(prediction, guess, finding.values)
    if args.json:
        print(json_text({**report(host, question, finding), **({"prediction": said} if said else {})}, indent=2))
    else:
        for line in report_lines(host, question, finding):
            say(line)
        if said:
            say(f"prediction: {said}")
    return 0


COMMANDS = {"learn": cmd_learn}
