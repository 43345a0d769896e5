"""``llmtui serve``: the OpenAI-compatible API on the instrumented engine."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .. import validate as V
from ..safe_text import visible_lines
from .common import (
    CliError,
    common_args,
    engine_args,
    engine_settings,
    find_models,
    load_config_or_fail,
    pick_model,
    pick_preset,
    sampling_args,
    say,
    seed_given,
    warn,
)


def register(sub: Any) -> None:
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
    srv.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", type=V.utf8_text,
                     help="let web pages from ORIGIN (e.g. http://localhost:3000; repeatable; * for any) call the "
                     "API from a browser (CORS); default: none")
    srv.add_argument("--allow-grammar", action="store_true",
                     help="accept raw GBNF grammars from clients (llama-server's 'grammar' field); off by default: a "
                     "grammar can make every step exponential — response_format and json_schema are always accepted")
    srv.add_argument("--max-tokens", type=V.TOKENS, default=256, metavar="N",
                     help="max_tokens for chat requests that set none (default 256)")
    srv.add_argument("--record", nargs="?", const="", metavar="DIR",
                     help="record every request as a session (into DIR or the sessions directory)")
    common_args(srv, sub=True)
    engine_args(srv, sub=True)
    sampling_args(srv, sub=True)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..config import app_dirs
    from ..engine.llama import LlamaEngine
    from ..record import SessionWriter
    from ..record.recorder import RecordingFailed
    from ..sampling.presets import load_presets
    from ..server import start_local

    config = load_config_or_fail(args)
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
                             seed=settings.seed if seed_given(args, config) else None, host=args.host, port=args.port, api_key=args.api_key,
                             max_tokens=args.max_tokens, models=lambda: find_models(args, config),
                             recorder_factory=recorder, on_event=on_event,
                             max_body_bytes=int(args.max_body * 2**20), cors_origins=args.cors_origin,
                             allow_grammar=args.allow_grammar)
    except OSError as exc:
        engine.close()
        raise CliError(str(exc)) from None
    _log_server_errors_to_stderr()  # after the server started: it silences its loggers first
    seed = f"seed {settings.seed}" if seed_given(args, config) else "a fresh seed per request without one"
    say(f"llmtui: serving {entry.name} ({preset.name}, {seed}, n_ctx {engine.n_ctx}) on "
          f"{server.url}" + (" — API key required" if args.api_key else "") + "; Ctrl+C stops", file=sys.stderr,
          flush=True)
    # Ctrl+C (SIGINT) and SIGTERM stop the server cleanly, even where SIGINT came in ignored (a shell starts
    # background jobs that way, and Python then never raises KeyboardInterrupt)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        for again in (signal.SIGINT, signal.SIGTERM):  # a second one while stopping: the default (force quit)
            signal.signal(again, signal.SIG_DFL if again != signal.SIGINT else signal.default_int_handler)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        while server.http.thread.is_alive() and not stop.wait(0.5):
            pass
        if stop.is_set():
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


COMMANDS = {"serve": cmd_serve}
