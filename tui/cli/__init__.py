"""``llmtui`` command line. With no subcommand it launches the dashboard.

Every subcommand prints a one-line error and exits with status 2 on bad input
(missing or damaged model file, bad settings); nothing prints a traceback.
Each command lives in a module of its own (``register`` adds its parser,
``COMMANDS`` maps its name to the function that runs it).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

from .. import __version__
from ..config import ConfigError
from ..crash import crash_log
from . import ab, dashboard, embed, generate, labs, models, rag, replay, serve
from .common import (
    EXIT_USAGE,
    CliError,
    Parser,
    common_args,
    config_or_defaults,
    engine_args,
    engine_settings,
    keymap_problems,
    sampling_args,
    say,
)

__all__ = ["CliError", "build_parser", "config_or_defaults", "engine_settings", "keymap_problems", "main"]

_MODULES = (generate, ab, embed, rag, models, replay, labs, serve, dashboard)
COMMANDS = {name: command for module in _MODULES for name, command in module.COMMANDS.items()}
COMMANDS[None] = dashboard.cmd_app


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="llmtui",
        allow_abbrev=False,
        description="Watch a local GGUF model think, one token at a time. "
        "With no subcommand, opens the dashboard on the embedded SmolLM2 model.",
        epilog="Run `llmtui COMMAND --help` for a command's options. No network is used unless you name a server "
        "(--remote URL).",
    )
    parser.add_argument("--version", action="version", version=f"llmtui {__version__}")
    common_args(parser)
    engine_args(parser)
    sampling_args(parser)
    dashboard.dashboard_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(Parser, allow_abbrev=False))
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..engine.errors import EngineError
    from ..record import RecordError
    from ..sampling.presets import PresetError

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
        where = crash_log(exc)
        say(f"llmtui: internal error: {type(exc).__name__}: {exc} (traceback: {where}; please report it)",
            file=sys.stderr)
        return 1
