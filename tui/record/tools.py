"""What can be done with a recording besides watching it: verify, fork, export."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.errors import EngineError
from ..engine.loop import Generation
from ..safe_text import markdown_code, markdown_text, visible, visible_lines
from ..sampling.presets import Preset, PresetError, validate_specs
from ..sampling.trace import prob_bucket
from .reader import Session, first_missing
from .tree import session_tree, tree_document


def preset_from(data: dict[str, Any], where: str) -> Preset:
    """Rebuild a recorded preset (validated like a preset file)."""
    try:
        return Preset(data.get("name", "recorded"), validate_specs(data["samplers"], where=where),
                      data.get("description", ""), "recorded")
    except (KeyError, TypeError, PresetError) as exc:
        raise EngineError(f"{where}: the recorded preset is unusable: {exc}") from None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    steps: int
    first_difference: int | None
    recorded: int | None = None
    now: int | None = None

    @property
    def ok(self) -> bool:
        return self.first_difference is None


def _check_model(session: Session, engine: Any, doing: str) -> None:
    """The recording's token ids mean something only to a model with the same vocabulary (an id
    outside it aborts llama.cpp)."""
    if session.n_vocab != engine.n_vocab:
        raise EngineError(f"{session.path}: recorded with a vocabulary of {session.n_vocab:,} tokens, this model "
                          f"has {engine.n_vocab:,}: cannot {doing} it with another model")


def verify(session: Session, engine: Any) -> VerifyResult:
    """Re-run the recording with its settings, presets (changes included) and seed on ``engine``."""
    head = session.header
    where = str(session.path)
    _check_model(session, engine, "verify")
    missing = session.first_missing
    if missing is not None:
        raise EngineError(f"{where}: step {missing} is missing (a damaged line): cannot verify the steps after it")
    preset = preset_from(head["preset"], where)
    seed = int(head["seed"])
    changes: dict[int, Preset] = {}
    forced: dict[int, int] = {}  # a candidate the user chose at that step
    for ev in session.events_on_line():  # a side branch's or a later branch run's events are not the run's
        if ev.get("kind") in ("preset_changed", "resampled") and "preset" in ev:
            changes[int(ev["at_step"])] = preset_from(ev["preset"], where)
        elif ev.get("kind") == "forced" and "token" in ev:
            forced[int(ev["at_step"])] = int(ev["token"])
    recorded = session.tokens
    if not recorded:
        return VerifyResult(0, None)

    seen_before = [int(t) for t in head.get("history", [])]

    def chain_for(p: Preset, history: list[int]) -> Any:
        return p.build(engine.build_context(seed), seen=[*seen_before, *history])

    engine.clear()
    ignore_eos = bool(head.get("ignore_eos"))
    gen = Generation(engine, head["prompt_tokens"], chain_for(preset, []), max_tokens=len(recorded),
                     ignore_eos=ignore_eos, eog_tokens=engine.eog_tokens() if ignore_eos else ())
    history: list[int] = []
    it = iter(gen)
    for i, want in enumerate(recorded):
        try:
            step = next(it)
        except StopIteration:
            return VerifyResult(len(recorded), i, want, None)
        if i in changes:
            # the live run switched chains before this step (a preset change or a re-sample)
            step = gen.resample(chain_for(changes[i], history))
        if i in forced:
            step = gen.force(forced[i])
        if step.token != want:
            return VerifyResult(len(recorded), i, want, step.token)
        history.append(step.token)
    return VerifyResult(len(recorded), None)


def fork_prefix(session: Session, at_step: int, engine: Any = None,
                steps: list[Any] | None = None) -> tuple[list[int], list[int]]:
    """(prompt tokens for a fork at ``at_step``, the generated tokens it keeps); ``engine``: the model
    the fork runs on, refused unless its vocabulary is the recording's; ``steps``: a branch's path (default:
    the run's line)."""
    if engine is not None:
        _check_model(session, engine, "fork")
    line = session.steps if steps is None else steps
    if not 0 <= at_step <= len(line):
        raise EngineError(f"fork step {at_step} is outside the recording (0..{len(line)})")
    missing = first_missing(line)
    if missing is not None and at_step > missing:
        raise EngineError(f"step {missing} is missing from the recording (a damaged line): fork at step {missing} "
                          "or before")
    kept = [s.token for s in line[:at_step]]
    return list(session.header["prompt_tokens"]) + kept, kept


# -- export -----------------------------------------------------------------------------------

_BUCKET_COLOURS = ["#e06c75", "#e5c07b", "#abb2bf", "#61afef", "#98c379"]


def _piece(session: Session, token: int) -> str:
    return session.piece(token).decode("utf-8", errors="backslashreplace")


# Exports escape for their own format everything that came from the file (and so from the model,
# the user or whoever wrote the file): Markdown through markdown_text / markdown_code (HTML
# entities, Markdown's active characters, a code fence longer than any backtick run), HTML through
# html.escape; control characters made visible in both. Numbers were checked by the reader.


def export_markdown(session: Session) -> str:
    h = session.header
    model, preset = h["model"], h["preset"]
    name = markdown_text(model["name"])
    out = [f"# llmtui session: {name}", ""]
    out.append(f"- model: {name} ({markdown_text(model['arch'])}, {markdown_text(model['quant'])})")
    out.append(f"- preset: {markdown_text(preset['name'])} — seed {h['seed']} — recorded "
               f"{markdown_text(h.get('created', '?'))}")
    out.append(f"- prompt: {markdown_code(h['prompt'])} ({len(h['prompt_tokens'])} tokens)")
    if session.footer:
        out.append(f"- stopped: {markdown_text(session.footer.get('stop_reason'))} after {len(session.steps)} tokens")
    if h.get("parent"):
        out.append(f"- forked from {markdown_code(h['parent'].get('file'))} at step {h['parent'].get('fork_step')}")
    ab = session.ab
    if ab is not None:
        out.append(f"- A/B of two {ab['mode']}: A = {markdown_text(ab['label_a'])}, B = {markdown_text(ab['label_b'])}"
                   f" (preset {markdown_text(ab['preset_b']['name'])}); {_diverged(session)}")
    out += ["", "## Text", "", "Each token is shown as `[text|p]` with the probability it was drawn with.", ""]
    out.append("".join(f"[{markdown_text(s.text)}|{s.prob:.2f}]" for s in session.steps))
    branches = _branches(session)
    if branches:
        out += ["", "## Branches", "", "The token tree: where each branch leaves its parent, the token chosen there "
                "and its probability, its length and cumulative log-probability, and its text from there on.", ""]
        for depth, b, text, choice in branches:
            out.append(f"{'  ' * depth}- {_branch_title(b)}" + (f": chose {markdown_code(choice[0])} "
                       f"(p {_p(choice[1])})" if choice else "") + f"; {b.length} tokens, log-prob "
                       f"{_lp(b.logprob)} — {markdown_code(text)}")
    out += ["", "## Steps", ""]
    for s in session.steps:
        tr = s.trace
        out.append(f"### step {s.index}: {markdown_code(_piece(session, s.token))} (p {s.prob:.3f}, "
                   f"H {tr.entropy_bits:.2f} bits, draw {tr.draw if tr.draw is not None else '—'})")
        out.append("")
        out.append("| rank | token | logit | p before | p after |")
        out.append("|---:|---|---:|---:|---:|")
        for r, (t, lg, pb, pa) in enumerate(zip(tr.top_ids.tolist(), tr.top_logits.tolist(),
                                                 tr.top_p_before.tolist(), tr.top_p_after.tolist()), 1):
            mark = " ▶" if t == s.token else ""
            out.append(f"| {r}{mark} | {markdown_code(_piece(session, t))} | {lg:.2f} | {pb:.4f} | {pa:.4f} |")
        out.append("")
    return "\n".join(out) + "\n"


def _branches(session: Session) -> list[tuple[int, Any, str, tuple[str, float] | None]]:
    """(depth, branch, its text from its fork on, (the token chosen where it leaves its parent, its p)) for
    each branch of the recording's tree, in tree order; empty for a recording of one branch."""
    if len(session.branches) < 2:
        return []
    view = session_tree(session)
    out = []
    for depth, b in view.depth_first():
        choice = (_piece(session, b.choice.token), b.choice.prob) if b.choice is not None else None
        out.append((depth, b, "".join(s.text for s in b.steps), choice))
    return out


def _branch_title(b: Any) -> str:
    return f"branch {b.id} ({b.origin})" + (f" from branch {b.parent} at step {b.fork}" if b.parent is not None else "")


def _p(prob: float) -> str:
    return f"{prob:.3f}" if prob == prob else "?"  # NaN: a remote run gave no figure


def _lp(logprob: float) -> str:
    return f"{logprob:.2f}" if math.isfinite(logprob) else "?"


def _diverged(session: Session) -> str:
    d = session.footer.get("summary", {}).get("diverged_at") if session.footer else None
    return f"the sides parted at step {d}" if type(d) is int else "the sides never parted (or the run was cut off)"


def _h(text: Any) -> str:
    """A value from the file in HTML: control characters visible, then escaped (quotes too)."""
    return html.escape(visible(text))


def export_html(session: Session) -> str:
    h = session.header
    spans = []
    for s in session.steps:
        colour = _BUCKET_COLOURS[prob_bucket(s.prob)]
        tip = _h(json.dumps({"step": s.index, "p": round(s.prob, 4),
                             "top": [[visible(_piece(session, t)), round(p, 4)] for t, p in
                                     zip(s.trace.top_ids.tolist(), s.trace.top_p_before.tolist())][:5]},
                            ensure_ascii=False))
        # the text keeps its line breaks and tabs (white-space: pre-wrap)
        text = html.escape(visible_lines(s.text))
        spans.append(f'<span class="t" style="color:{colour}" title="{tip}">{text}</span>')
    rows = []
    for s in session.steps:
        tr = s.trace
        cells = "".join(
            f"<td class='{'chosen' if t == s.token else ''}'>{_h(_piece(session, t))}<br>"
            f"<small>{pb:.3f} → {pa:.3f}</small></td>"
            for t, pb, pa in zip(tr.top_ids.tolist(), tr.top_p_before.tolist(), tr.top_p_after.tolist()))
        rows.append(f"<tr><th>{s.index}</th>{cells}</tr>")
    title = _h(f"llmtui session: {h['model']['name']} · {h['preset']['name']} · seed {h['seed']}")
    prompt = html.escape(visible_lines(h["prompt"]))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ background:#11151c; color:#d8dee9; font-family: ui-monospace, monospace; margin: 2em; }}
.text {{ white-space: pre-wrap; line-height: 1.6; }}
.t:nth-child(odd) {{ background: #171c25; }}
.prompt {{ color: #7a8499; font-style: italic; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #2a3140; padding: 2px 6px; vertical-align: top; }}
td.chosen {{ background: #3a2f12; }}
</style></head><body>
<h1>{title}</h1>
<p>prompt: <span class="prompt">{prompt}</span> — {len(session.steps)} tokens;
colour = probability the token was drawn with (red &lt; 5% … green ≥ 80%); hover a token for its top-5.</p>
<div class="text"><span class="prompt">{prompt}</span>{''.join(spans)}</div>
{_html_branches(session)}<h2>Top-10 per step (p before → after the sampler chain)</h2>
<table>{''.join(rows)}</table>
</body></html>
"""


def _html_branches(session: Session) -> str:
    branches = _branches(session)
    if not branches:
        return ""
    items = []
    for depth, b, text, choice in branches:
        chose = f": chose <code>{_h(choice[0])}</code> (p {_p(choice[1])})" if choice else ""
        items.append(f'<li style="margin-left:{1.5 * depth:g}em">{_h(_branch_title(b))}{chose}; {b.length} tokens, '
                     f'log-prob {_lp(b.logprob)}<div class="text">{html.escape(visible_lines(text))}</div></li>')
    return ("<h2>Branches</h2>\n<p>The token tree: where each branch leaves its parent, the token chosen there and "
            f"its probability, its length and cumulative log-probability, and its text from there on.</p>\n"
            f"<ul>{''.join(items)}</ul>\n")


def export_tree(session: Session) -> str:
    """The token tree as JSON (``TreeView.as_dict``, token texts from the recording); ASCII only: no control
    character or bidi mark from the file reaches a terminal that shows it."""
    return json.dumps(tree_document(session), ensure_ascii=True, allow_nan=False, indent=1) + "\n"


EXPORTERS: dict[str, Callable[[Session], str]] = {"md": export_markdown, "html": export_html, "tree": export_tree}
SUFFIXES = {"md": ".md", "html": ".html", "tree": ".tree.json"}


def export(session: Session, fmt: str, out: Path | None = None) -> Path:
    if fmt not in EXPORTERS:
        raise EngineError(f"unknown export format {visible(repr(fmt))} (md, html or tree)")
    target = Path(out) if out is not None else session.path.with_suffix(SUFFIXES[fmt])
    text = EXPORTERS[fmt](session)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:  # a directory, no permission, no space
        raise EngineError(f"{visible(target)}: cannot write the export: {exc.strerror or exc}") from None
    return target
