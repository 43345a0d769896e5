"""``llmtui replay`` (in the dashboard, ``--verify``, ``--fork``) and ``llmtui export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import validate as V
from ..safe_text import piece_label
from .common import (
    CliError,
    common_args,
    config_or_defaults,
    find_models,
    keymap_problems,
    load_config_or_fail,
    pick_preset,
    read_session_or_fail,
    sampling_args,
    say,
    with_overrides,
)
from .recorded import load_recorded_model, recorded_model


def register(sub: Any) -> None:
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
    common_args(replay, sub=True)
    sampling_args(replay, sub=True)

    export = sub.add_parser("export", help="write a readable report of a recorded session, or its token tree",
                            description="Markdown or HTML: the text with tokens coloured by probability and "
                            "every step's top-10 with probabilities before and after the sampler chain; a "
                            "recording with several branches (forks, branch runs, an A/B run) also lists each "
                            "branch: where it leaves its parent, the token chosen there, its text. tree: the "
                            "token tree as JSON (branches with parent, fork, origin, log-probability and steps).")
    export.add_argument("file", metavar="FILE", type=Path)
    export.add_argument("--format", choices=["md", "html", "tree"], default="md")
    export.add_argument("-o", "--output", type=Path, metavar="OUT", help="default: FILE with .md/.html/.tree.json")


def cmd_replay(args: argparse.Namespace) -> int:
    session = read_session_or_fail(args.file)
    if args.verify or args.fork is not None:
        return _replay_with_model(args, session)
    from ..app.app import run_app
    from ..app.themes import load_themes, shipped_theme_dir
    from ..config import app_dirs, load_state
    from ..engine import EngineSettings
    from ..record.tools import preset_from
    from ..sampling.presets import load_presets

    notices = [f"{args.file}: {p}" for p in session.problems]
    config = config_or_defaults(args, notices)
    notices += keymap_problems(config)
    dirs = app_dirs()
    themes = load_themes(shipped_theme_dir(), dirs.themes)
    from ..engine.pool import EnginePool

    # no model is loaded: the replay needs none (nor llama.cpp); forking (f) loads the recorded one, m picks any
    settings = EngineSettings.from_dict(session.header["engine"])

    def open_engine(path: Any, progress: Any) -> Any:
        from ..engine.llama import LlamaEngine

        return LlamaEngine(path, settings, on_progress=progress)

    pool = EnginePool(open_engine, capacity=1)
    return run_app(
        load=lambda e, progress: pool.get(e.path, progress),
        loaded_paths=lambda: pool.loaded,
        settings=settings,
        preset=preset_from(session.header["preset"], str(args.file)),
        catalog=load_presets(dirs.presets),
        prompt=session.header["prompt"],
        themes=themes.themes,
        theme=config.theme or load_state().get("theme"),
        keymap=config.keys,
        replay=session,
        notices=notices,
        fork_load=lambda s: load_recorded_model(args, s),
        discover=lambda: find_models(args, config),
    )


def _replay_with_model(args: argparse.Namespace, session: Any) -> int:
    from ..engine import EngineSettings
    from ..engine.llama import LlamaEngine
    from ..record.tools import fork_prefix, preset_from, verify

    entry = recorded_model(args, session)
    settings = EngineSettings.from_dict(session.header["engine"])
    with LlamaEngine(entry.path, settings) as engine:
        if args.verify:
            result = verify(session, engine)
            if result.ok:
                say(f"all {result.steps} steps match ({entry.name}, seed {session.header['seed']})")
                return 0
            i = result.first_difference
            want = piece_label(engine.piece(result.recorded)) if result.recorded is not None else "?"
            now = piece_label(engine.piece(result.now)) if result.now is not None else "(stopped)"
            say(f"first difference at step {i} of {result.steps}: recorded {result.recorded} {want}, "
                  f"now {result.now} {now}")
            return 1
        # fork: a run from the recorded prompt and the kept steps, always recorded (it names its parent)
        from ..engine.controller import Controller
        from ..engine.loop import StopReason
        from .generate import run_headless

        prefix, kept = fork_prefix(session, args.fork, engine)
        seed = args.seed if getattr(args, "seed", None) is not None else settings.seed
        # --preset picks another preset; without it the recorded one, with any --temp/--top-k/… applied
        preset = pick_preset(args, load_config_or_fail(args)) if getattr(args, "preset", None) else with_overrides(
            preset_from(session.header["preset"], str(args.file)), args)
        controller = Controller(engine, preset, seed=seed, emit=lambda event: None, max_tokens=args.max_tokens)
        say(session.header["prompt"] + "".join(s.text for s in session.steps[: args.fork]), end="")
        sys.stdout.write("⟨fork⟩")
        stats = run_headless(controller, session.header["prompt"], as_json=False,
                             record=getattr(args, "record", None) or "", prefix=prefix, history=kept,
                             parent={"file": str(args.file), "fork_step": args.fork})
        sys.stdout.write("\n")
        if stats.stop_reason is StopReason.ERROR:
            raise CliError(f"the fork stopped at step {args.fork + stats.generated}: {stats.error}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..record.tools import export

    session = read_session_or_fail(args.file)
    say(export(session, args.format, args.output))
    return 0


COMMANDS = {"replay": cmd_replay, "export": cmd_export}
