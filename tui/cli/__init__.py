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
from typing import Any

from .. import __version__
from ..config import ConfigError
from ..crash import crash_log
from . import ab, dashboard, embed, generate, labs, models, rag, replay, serve, web
from .common import (
    EXIT_USAGE,
    CliError,
    Parser,
    config_or_defaults,
    engine_settings,
    keymap_problems,
    say,
)

__all__ = ["CliError", "build_parser", "config_or_defaults", "engine_settings", "keymap_problems", "main"]

_MODULES = (generate, ab, embed, rag, models, replay, labs, serve, web, dashboard)
COMMANDS = {name: command for module in _MODULES for name, command in module.COMMANDS.items()}
COMMANDS[None] = dashboard.cmd_app


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that remember how many arguments followed the command's name, so that `main` can tell
    which options were given before it (``llmtui web`` passes those on to every session)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.after_command = len(values) - 1


def build_parser() -> argparse.ArgumentParser:
    parser = dashboard.dashboard_parser()
    parser.add_argument("--version", action="version", version=f"llmtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_Commands,
                                parser_class=functools.partial(Parser, allow_abbrev=False))
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is not None:  # the options given before the command's name, as typed
        args.before_command = argv[:len(argv) - 1 - args.after_command]
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
