"""``llmtui ab``: A/B lockstep without the dashboard — two presets on one model, or two models (variants of
one model: the same vocabulary) on the same prompt, step by step (:mod:`tui.engine.ab`).

The human output shows the two texts, labelled, where they parted, a per-step table (each side's token, the
KL divergence between the two distributions, each side's entropy, whether their top-1 tokens agree) and the
run's summary; ``--json`` streams one JSON object per step, then ``{"summary": …}`` (null where a figure does
not exist: a stopped side, an undefined KL).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import unicodedata
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .. import validate as V
from ..safe_text import json_text, piece_label
from .common import (
    CliError,
    add_bos,
    common_args,
    engine_args,
    engine_settings,
    find_models,
    load_config_or_fail,
    pick_preset,
    say,
    tokenizer_args,
    usable_model,
    warn,
)


def register(sub: Any) -> None:
    ab = sub.add_parser(
        "ab", help="A/B lockstep: two presets on one model, or two models, step by step",
        description="Generate from PROMPT with side A (--preset on --model) and side B (--b-preset on the same "
        "model: one llama_decode per step, both chains sample the same logits until they pick different tokens; "
        "or --b-model: a variant of the model with the same vocabulary, e.g. a quantization from `llmtui "
        "quantize`, with KL(A‖B) per step on A's text). Prints both texts, where they diverged, a per-step table "
        "and the summary.")
    ab.add_argument("prompt", type=V.utf8_text, metavar="PROMPT", help="the prompt text")
    ab.add_argument("--preset", metavar="NAME", default=argparse.SUPPRESS,
                    help="side A's sampling preset (see `llmtui presets`; default balanced)")
    ab.add_argument("--b-preset", metavar="NAME", help="side B's preset (default: A's, with --b-model)")
    ab.add_argument("--b-model", metavar="NAME|PATH",
                    help="side B's model (a name from `llmtui models` or a .gguf path) with the same vocabulary as A's")
    ab.add_argument("--max-tokens", "-n", type=V.TOKENS, default=32, metavar="N", help="steps (default 32)")
    ab.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-generation tokens")
    ab.add_argument("--json", action="store_true",
                    help="print one JSON object per step, then one summary object")
    ab.add_argument("--chat", action="store_true",
                    help="PROMPT is a user message in the model's chat template (default: raw completion)")
    ab.add_argument("--system", type=V.utf8_text, metavar="TEXT", help="system prompt for --chat")
    ab.add_argument("--record", type=Path, metavar="FILE|DIR",
                    help="record the run: side A as the run, side B as a branch from where they part, and each "
                    "step's KL and entropies (a directory: a new file in it); `llmtui replay` shows the tree")
    tokenizer_args(ab)
    common_args(ab, sub=True)
    engine_args(ab, sub=True)


def cmd_ab(args: argparse.Namespace) -> int:
    from ..config import app_dirs
    from ..engine.ab import ABRun, ABStep
    from ..engine.chat import prompt_tokens
    from ..engine.llama import LlamaEngine
    from ..sampling.presets import PresetError, load_presets
    from .generate import ctrl_c_stops

    if args.b_preset is None and args.b_model is None:
        raise CliError("ab needs side B: --b-preset NAME (the same model) or --b-model MODEL (a variant of it)")
    if args.system and not args.chat:
        raise CliError("--system needs --chat (a raw completion has no system prompt)")
    config = load_config_or_fail(args)
    settings = engine_settings(args, config)
    catalog = load_presets(app_dirs().presets)
    preset_a = pick_preset(args, config, catalog)
    try:
        preset_b = catalog.get(args.b_preset) if args.b_preset else preset_a
    except PresetError as exc:
        raise CliError(str(exc)) from None
    entries = find_models(args, config)
    entry_a = usable_model(getattr(args, "model", None) or config.model, entries)
    entry_b = usable_model(args.b_model, entries) if args.b_model else None
    if entry_b is not None and entry_a.n_vocab and entry_b.n_vocab and entry_a.n_vocab != entry_b.n_vocab:
        raise CliError(f"{entry_b.name} has another vocabulary ({entry_b.n_vocab:,} tokens, {entry_a.name}: "
                       f"{entry_a.n_vocab:,}): --b-model needs a variant of the same model, e.g. from "
                       "`llmtui quantize`")
    bos = add_bos(args)
    with ExitStack() as stack:
        engine_a = stack.enter_context(LlamaEngine(entry_a.path, settings))
        engine_b = stack.enter_context(LlamaEngine(entry_b.path, settings)) if entry_b is not None else None
        for engine in (engine_a, engine_b):
            for warning in (engine.warnings if engine is not None else ()):
                warn(warning)
        if args.chat and not engine_a.info.has_chat_template:
            raise CliError(f"{entry_a.name} has no chat template: drop --chat (raw completion)")
        text, tokens = prompt_tokens(engine_a, args.prompt, chat=args.chat, system=args.system, add_bos=bos,
                                     parse_special=args.special)
        label_a, label_b = preset_a.name, preset_b.name
        if entry_b is not None:
            label_a, label_b = f"{preset_a.name} · {entry_a.name}", f"{preset_b.name} · {entry_b.name}"
        chain_a = preset_a.build(engine_a.build_context(settings.seed))
        chain_b = preset_b.build((engine_b or engine_a).build_context(settings.seed))
        cancel = threading.Event()
        pieces = _Pieces(engine_a)
        recorded: list[object] = []
        record = None
        if args.record is not None:
            from ..record.recorder import ab_recorder

            record = ab_recorder(engine_a, args.record, preset_a=preset_a, preset_b=preset_b, seed=settings.seed,
                                 engine_b=engine_b, max_tokens=args.max_tokens, ignore_eos=args.ignore_eos,
                                 report=recorded.append)

        def emit(event: object) -> None:
            if record is not None:
                record(event)
            if args.json and isinstance(event, ABStep):
                sys.stdout.write(json_text(step_record(event, pieces)) + "\n")
                sys.stdout.flush()

        run = ABRun(engine_a, chain_a, chain_b, engine_b=engine_b, max_tokens=args.max_tokens, cancel=cancel,
                    emit=emit, label_a=label_a, label_b=label_b, ignore_eos=args.ignore_eos)
        with ctrl_c_stops(SimpleNamespace(stop=cancel.set)):
            result = run.run(tokens, text)
        summary = {**result.summary, "model_a": entry_a.name, "model_b": (entry_b or entry_a).name,
                   "preset_a": preset_a.name, "preset_b": preset_b.name, "seed": settings.seed,
                   "prompt_tokens": len(tokens), "chat": bool(args.chat)}
        for note in recorded:
            if type(note).__name__ == "RecordingStarted":
                summary["recording"] = note.path
            else:
                warn(f"recording: {note.message}")
        if args.json:
            sys.stdout.write(json_text({"summary": finite(summary)}) + "\n")
        else:
            say(report(result, summary, args.prompt))
            if "recording" in summary:
                say(f"recorded to {summary['recording']}")
    if result.summary.get("error"):
        raise CliError(f"the A/B run stopped: {result.summary['error']}")
    return 0


class _Pieces:
    """A token's text for JSON (cached): undecodable bytes as backslash escapes, as ``generate --json``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cache: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        text = self.cache.get(token)
        if text is None:
            text = self.cache[token] = self.engine.piece(token).decode("utf-8", "backslashreplace")
        return text


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (nested) as None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _side(step: Any, pieces: Any) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"token": step.token, "piece": pieces(step.token), "text": step.text, "prob": step.prob,
            "eog": step.is_eog}


def step_record(event: Any, pieces: Any) -> dict[str, Any]:
    """One ABStep as JSON: each side's token (null once that side stopped), KL, entropies, agreement."""
    return finite({"step": event.index, "a": _side(event.a, pieces), "b": _side(event.b, pieces), "kl": event.kl,
                   "entropy_a": event.entropy_a, "entropy_b": event.entropy_b, "top1_agree": event.top1_agree,
                   "diverged": event.diverged, "decodes": event.decodes})


# -- the human report ----------------------------------------------------------------------------------------


def _cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, width: int) -> str:
    """``text`` cut (with …) or padded to ``width`` terminal cells."""
    if _cells(text) > width:
        while text and _cells(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _cells(text))


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, fmt)


def _token(step: Any) -> str:
    if step is None:
        return "–"
    return f"{piece_label(step.piece)} {step.prob:.0%}" if math.isfinite(step.prob) else piece_label(step.piece)


def report(result: Any, summary: dict[str, Any], prompt: str) -> str:
    """Both texts, the divergence, the per-step table and the summary (sanitised by the caller's ``say``)."""
    how = "a user turn in the chat template" if summary.get("chat") else "raw completion"
    lines = [f"A/B · {summary['mode']} · seed {summary['seed']} · {summary['prompt_tokens']} prompt tokens ({how}): "
             f"{prompt}", ""]
    for side, label in (("a", summary["a"]), ("b", summary["b"])):
        lines.append(f"{side.upper()} ({label}):")
        lines.append("    " + result.text(side).replace("\n", "\n    "))
    at = summary["diverged_at"]
    if at is None:
        lines.append(f"\nthe two sides chose the same {summary['steps']} tokens")
    else:
        step = result.steps[at]
        lines.append(f"\ndiverged at step {at}: A chose {_token(step.a)}, B chose {_token(step.b)}")
    lines.append("")
    width = 18
    lines.append(f"{'step':>4}  {_fit('A token', width)}  {_fit('B token', width)}  {'KL':>7}  {'H(A)':>5}  "
                 f"{'H(B)':>5}  top-1")
    for s in result.steps:
        mark = "*" if at is not None and s.index == at else " "
        agree = "–" if s.top1_agree is None else "agree" if s.top1_agree else "differ"
        lines.append(f"{s.index:>4}{mark} {_fit(_token(s.a), width)}  {_fit(_token(s.b), width)}  "
                     f"{_num(s.kl, '7.4f')}  {_num(s.entropy_a, '5.2f')}  {_num(s.entropy_b, '5.2f')}  {agree}")
    lines.append("(* the step where they diverged; KL(A‖B) and entropies H in nats; a token's % is its probability "
                 "after its side's sampler chain)")
    lines.append("")
    lines.append(summary_line(summary))
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    """steps, steps/s, llama_decode calls, divergence, mean KL, top-1 agreement, why it stopped."""
    at = summary.get("diverged_at")
    agreement = summary.get("top1_agreement")
    parts = [f"{summary['steps']} steps", f"{summary['steps_per_s']:.1f} steps/s",
             f"{summary['decode_calls']} llama_decode calls",
             "never diverged" if at is None else f"diverged at step {at}",
             f"mean KL {_num(summary.get('kl_mean'), '.4f')} nats (max {_num(summary.get('kl_max'), '.4f')})",
             "top-1 agreement –" if agreement is None else f"top-1 agreement {agreement:.1%}",
             f"stop: {summary['stop_reason']}"]
    return " · ".join(parts)


COMMANDS = {"ab": cmd_ab}
