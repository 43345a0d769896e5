"""``llmtui generate``: a run without the dashboard, streamed to stdout.

It drives the same :class:`~tui.engine.controller.Controller` the dashboard
and the API server use; the recording is the same
:class:`~tui.record.recorder.Recorder`, and the printer is one more listener of
the run's events.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import validate as V
from .remote import remote_args
from ..safe_text import json_text, piece_label, visible_lines
from .common import (
    CliError,
    add_bos,
    common_args,
    engine_args,
    engine_settings,
    load_config_or_fail,
    pick_model,
    pick_preset,
    sampling_args,
    say,
    tokenizer_args,
    warn,
)


def register(sub: Any) -> None:
    gen = sub.add_parser("generate", help="generate text headlessly, streaming to stdout",
                         description="Generate from PROMPT and stream the text to stdout as it is produced.")
    gen.add_argument("prompt", type=V.utf8_text, metavar="PROMPT", help="the prompt text")
    gen.add_argument("--max-tokens", "-n", type=V.TOKENS, default=128, metavar="N",
                     help="tokens to generate (default 128)")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")
    tokenizer_args(gen)
    gen.add_argument("--json", action="store_true",
                     help="print one JSON object per generated token, then one summary object")
    gen.add_argument("--record", nargs="?", const="", metavar="FILE",
                     help="record the session (JSON Lines) to FILE, or to the sessions directory")
    mode = gen.add_mutually_exclusive_group()
    mode.add_argument("--chat", dest="chat", action="store_true", default=None,
                      help="PROMPT is a user message in the model's chat template (the default when it has one)")
    mode.add_argument("--raw", dest="chat", action="store_false", default=None,
                      help="raw completion: the model continues PROMPT as text (the roadmap's stage 1)")
    gen.add_argument("--system", type=V.utf8_text, metavar="TEXT", help="system prompt for --chat")
    gen.add_argument("--context-policy", choices=["stop", "shift"], default="stop",
                     help="when the context is full: stop (default) or shift (llama.cpp's: keep --n-keep "
                     "tokens, drop half of the rest)")
    gen.add_argument("--n-keep", type=V.N_KEEP, default=-1, metavar="N",
                     help="tokens kept at the start on a context shift (default: the whole prompt)")
    common_args(gen, sub=True)
    engine_args(gen, sub=True)
    sampling_args(gen, sub=True)
    remote_args(gen, sub=True)


class StepPrinter:
    """A run listener: each accepted step's text (sanitised) or its JSON line, flushed at once."""

    def __init__(self, engine: Any, out: Any, *, as_json: bool) -> None:
        self.engine, self.out, self.as_json = engine, out, as_json
        self._texts: dict[int, str] = {}

    def piece_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.engine.piece(token).decode("utf-8", "backslashreplace")
        return text

    def __call__(self, event: object) -> None:
        from ..engine.controller import Accepted
        from ..record.steps import step_json

        if isinstance(event, Accepted):
            step = event.step
            self.out.write(json_text(step_json(step, self.piece_text)) + "\n" if self.as_json
                           else visible_lines(step.text))
            self.out.flush()


class RecordingTarget:
    """``--record [FILE]`` for a headless run: a file that cannot be opened is an error before the
    first token (exit 2); one that fails later is a warning and the run goes on."""

    def __init__(self, engine: Any, target: str) -> None:
        from ..config import app_dirs
        from ..record import SessionWriter
        from ..record.recorder import Recorder

        def open_writer(header: dict[str, Any]) -> Any:
            if target:
                return SessionWriter(Path(target), header, engine.piece)
            return SessionWriter.new_in(app_dirs().sessions, engine.info.name, header, engine.piece)

        self.recorder = Recorder(engine, open_writer, self._report)
        self.started = False
        self.refused: str | None = None
        self.controller: Any = None

    def _report(self, event: object) -> None:
        from ..record.recorder import RecordingFailed, RecordingStarted

        if isinstance(event, RecordingStarted):
            self.started = True
            say(f"llmtui: recording to {event.path}", file=sys.stderr)
        elif isinstance(event, RecordingFailed):
            if self.started:
                warn(event.message)
            else:  # could not even open it: nothing is generated unrecorded
                self.refused = event.message
                self.controller.stop()


@contextmanager
def ctrl_c_stops(controller: Any) -> Iterator[None]:
    """Ctrl+C stops the run between tokens (its recording still ends cleanly) instead of killing it."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: controller.stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_headless(controller: Any, prompt: str, *, as_json: bool, record: str | None, **run: Any) -> Any:
    """Run ``prompt`` on ``controller``, printing each step; ``record``: None (off), "" (the sessions
    directory) or a file. Returns the run's stats; a failed run or recording is a CliError."""
    engine = controller.engine
    controller.listeners.append(StepPrinter(engine, sys.stdout, as_json=as_json))
    target = None
    if record is not None:
        target = RecordingTarget(engine, record)
        target.controller = controller
        controller.listeners.append(target.recorder)
    with ctrl_c_stops(controller):
        stats = controller.run(prompt, **run)
    if target is not None and target.refused:
        raise CliError(target.refused)
    return stats


def cmd_generate(args: argparse.Namespace) -> int:
    from ..engine.chat import ChatSession
    from ..engine.controller import Controller
    from ..engine.llama import LlamaEngine
    from ..engine.loop import StopReason

    config = load_config_or_fail(args)
    settings = engine_settings(args, config)
    preset = pick_preset(args, config)
    if getattr(args, "remote", None):
        return cmd_generate_remote(args, preset, settings.seed)
    entry = pick_model(args, config)
    bos = add_bos(args)
    with LlamaEngine(entry.path, settings) as engine:
        for warning in engine.warnings:
            warn(warning)
        controller = Controller(engine, preset, seed=settings.seed, emit=lambda event: None,
                                max_tokens=args.max_tokens, ignore_eos=args.ignore_eos,
                                context_policy=args.context_policy, n_keep=args.n_keep)
        chat = args.chat if args.chat is not None else engine.info.has_chat_template
        if chat:
            if not engine.info.has_chat_template:
                raise CliError(f"{entry.name} has no chat template: drop --chat (raw completion)")
            controller.chat = ChatSession(engine, system=args.system)
        stats = run_headless(controller, args.prompt, as_json=args.json, record=args.record, add_bos=bos,
                             parse_special=args.special)
        if (stats.stop_reason is StopReason.EOG and not stats.text and stats.generated <= 1
                and controller.last.history):
            from ..run.model import first_token_hint

            warn(first_token_hint(chat, piece_label(engine.piece(controller.last.history[0])),
                                  how="run it without --raw (chat mode: the question becomes a user turn)",
                                  can_chat=engine.info.has_chat_template))
        summary = None
        if args.json:
            summary = {**stats.summary(), "model": entry.name, "preset": preset.name, "samplers": preset.describe(),
                       "seed": settings.seed, "n_ctx": engine.n_ctx, "threads": settings.threads}
        return finish_output(stats, summary)


def finish_output(stats: Any, summary: dict[str, Any] | None) -> int:
    """After the streamed steps: the ``{"summary": …}`` line with --json (else a newline); a failed run is a
    CliError (exit 2)."""
    from ..engine.loop import StopReason

    out = sys.stdout
    out.write(json_text({"summary": summary}) + "\n" if summary is not None else "\n")
    out.flush()
    if stats.stop_reason is StopReason.ERROR:
        raise CliError(stats.error or "generation failed")
    return 0


def cmd_generate_remote(args: argparse.Namespace, preset: Any, seed: int) -> int:
    """``llmtui generate --remote URL``: the same output as a local run, from a server; the JSON step lines
    carry null where the server gives nothing (never an invented figure)."""
    from ..engine.chat import ChatSession
    from ..engine.errors import EngineError
    from ..remote.controller import RemoteController, unsent_samplers
    from .remote import remotes_from

    remotes = remotes_from(args)
    if len(remotes.specs) != 1:
        raise CliError("generate --remote takes one server (the dashboard takes several)")
    (spec,) = remotes.specs.values()
    try:
        engine = remotes.load(remotes.entry(spec)).engine
    except EngineError as exc:
        raise CliError(str(exc)) from None
    for warning in engine.warnings:
        warn(warning)
    probe = bool(getattr(args, "probe", False))
    controller = RemoteController(engine, preset, probe=probe, seed=seed, emit=lambda event: None,
                                  max_tokens=args.max_tokens, ignore_eos=args.ignore_eos)
    chat = args.chat if args.chat is not None else (engine.remote.chat and (not probe or engine.can_probe_chat))
    if chat:
        if probe and not engine.can_probe_chat:
            raise CliError(f"{spec.shown} does not apply its chat template on request, so --probe cannot chat: "
                           "use --raw (without --probe, chat streams through its chat endpoint)")
        if not engine.remote.chat:
            raise CliError(f"{spec.shown} applies no chat template: drop --chat (raw completion)")
        controller.chat = ChatSession(engine, system=args.system)
    if not probe and (unsent := unsent_samplers(preset)):
        warn(f"the server samples: {', '.join(unsent)} cannot be sent to it (use --probe to run them here)")
    warned = len(engine.warnings)
    stats = run_headless(controller, args.prompt, as_json=args.json, record=args.record)
    for warning in engine.warnings[warned:]:  # what the server showed about itself during the run
        warn(warning)
    summary = None
    if args.json:
        remote = engine.remote
        counters = controller.last_counters
        summary = {**controller.last_summary, "model": remote.model, "preset": preset.name,
                   "samplers": preset.describe(),
                   "seed": seed, "remote": {**remote.header(), "mode": engine.mode},
                   "server": None if counters is None else {"prompt_n": counters.prompt_n, "cache_n": counters.cache_n,
                                                            "predicted_n": counters.predicted_n}}
    return finish_output(stats, summary)


COMMANDS = {"generate": cmd_generate}
