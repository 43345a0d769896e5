"""``llmtui web``: the dashboard in a browser (textual-serve), one llmtui process per tab."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import socket
import sys
from pathlib import Path
from urllib.parse import urlencode
from typing import Any

from .. import validate as V
from .common import CliError, config_or_defaults, pick_model, say, warn
from .dashboard import dashboard_parser
from .remote import remotes_from

GENERATED = "\0generate"  # --token with no value: a random one
TOKEN_FORM = re.compile(r"[A-Za-z0-9._~-]{12,256}")


def token_text(text: str) -> str:
    """A token: 12 to 256 characters a URL carries as they are (letters, digits, ``. _ ~ -``)."""
    if not TOKEN_FORM.fullmatch(text):
        raise argparse.ArgumentTypeError("a token (--token or $LLMTUI_WEB_TOKEN) is 12 to 256 letters, digits, "
                                         "'.', '_', '~' or '-' (or give --token alone for a random one)")
    return text


def register(sub: Any) -> None:
    web = sub.add_parser(
        "web", help="the dashboard in a web browser (textual-serve): one llmtui process per tab",
        description="Serve the dashboard to web browsers. Every tab runs its own llmtui process (it loads the "
        "model: memory and CPU for each open tab) and that process ends when the tab closes. The dashboard's "
        "options go before `web` or after `--`: `llmtui --model M web --port 8080 -- --preset P`. Binds to "
        "loopback; another --host needs --token.",
        epilog="A token is given once in the address (…/?token=T), then kept in a cookie; scripts may send "
        "'Authorization: Bearer T'.")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only; any other needs --token)")
    web.add_argument("--port", type=V.PORT, default=8080, help="port (default 8080; 0 picks a free one)")
    web.add_argument("--max-sessions", type=V.int_in(1, 64), default=4, metavar="N",
                     help="browser tabs served at once (default 4); each is a process that loads the model")
    web.add_argument("--token", nargs="?", const=GENERATED, type=token_text, metavar="TOKEN",
                     default=os.environ.get("LLMTUI_WEB_TOKEN") or None,
                     help="require TOKEN for every request (with no TOKEN: a random one, printed in the address; "
                     "default $LLMTUI_WEB_TOKEN, which other users cannot read in the process list)")
    web.add_argument("dashboard", nargs="*", metavar="-- DASHBOARD-OPTIONS",
                     help="options for the dashboard of every session (after --), as for `llmtui`")


def session_command(args: argparse.Namespace) -> tuple[list[str], str]:
    """The command line of every session — this Python running llmtui with the options given before `web`
    and after `--`, checked here once (a bad one would otherwise fail in every tab) — and what the page
    says while a session starts."""
    options = [*getattr(args, "before_command", []), *args.dashboard]
    dashboard = dashboard_parser().parse_args(options)  # a bad option: one line, exit 2, as for `llmtui`
    if dashboard.serve:
        raise CliError("--serve cannot be used with llmtui web: every session would serve the API on one port "
                       "(run `llmtui serve` beside it)")
    if dashboard.record:
        raise CliError("with llmtui web, --record takes no FILE: every session records into the sessions "
                       f"directory (sessions would write one file at once): {dashboard.record}")
    notices: list[str] = []
    config = config_or_defaults(dashboard, notices)
    for notice in notices:
        warn(notice)
    argv = [sys.executable, "-m", "tui.cli", *options]
    remotes = remotes_from(dashboard)
    if remotes.specs:
        return argv, "Starting llmtui on " + ", ".join(map(str, remotes.specs)) + "…"
    entry = pick_model(dashboard, config)  # a model that cannot be found: said now, not in every tab
    try:
        size = f", {Path(entry.path).stat().st_size / 2**20:.0f} MiB"
    except OSError:
        size = ""
    return argv, f"Starting llmtui: this tab's own process loads {entry.name}{size}…"


def cmd_web(args: argparse.Namespace) -> int:
    from ..web import WebOptions, WebServer, binding_problem

    # a given token (or $LLMTUI_WEB_TOKEN: argparse checks a default as it checks an argument) is token_text's
    token = secrets.token_hex(16) if args.token == GENERATED else args.token
    if problem := binding_problem(args.host, token):  # said before the model is looked for
        raise CliError(problem)
    argv, starting = session_command(args)
    options = WebOptions(argv=argv, host=args.host, port=args.port, max_sessions=args.max_sessions, token=token,
                         starting=starting)
    server = WebServer(options, say=lambda line: say(f"llmtui web: {line}", file=sys.stderr, flush=True))

    def ready(port: int) -> None:
        shown = server.bound_address or args.host  # the address bound (a name may resolve to several)
        if args.host in ("0.0.0.0", "::", ""):  # every address of this machine: its name is one of them
            shown = socket.gethostname()
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{port}/" + (f"?{urlencode({'token': token})}" if token else "")
        say(f"llmtui web: serving the dashboard on {url} — up to {args.max_sessions} tab(s) at once, each its "
            "own llmtui process loading the model; Ctrl+C stops", file=sys.stderr, flush=True)

    try:
        asyncio.run(server.serve_until_signal(ready))
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    say("llmtui web: stopped; every session has ended", file=sys.stderr)
    return 0


COMMANDS = {"web": cmd_web}
