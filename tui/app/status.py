"""The status line, composed from the app's settings and the screen's run (one place, no Textual).

What matters most comes first, so a narrow terminal cuts only the tail: the run's state, the modes you are
in (each with its way out), the selection, then the model and its settings, then the chat turn's figures.
"""

from __future__ import annotations

from typing import Any

from .modes import active_modes, key_label, mode_label, screen_kind


def chat_info(turn: Any) -> str:
    """A chat turn's reuse figures in words."""
    if turn is None:
        return ""
    return (f"turn: reused {turn.reused:,}, evaluated {turn.evaluated:,}, saved ~{turn.saved_ms:.0f} ms"
            + (f", dropped {turn.dropped_turns} old turn(s)" if turn.dropped_turns else ""))


def branch_info(run: Any, tree_key: str = "T", timed: bool = True) -> str:
    """``branch 2 of 3 (T: tree) · reused 17 cells, evaluated 1 (9 ms) · 2 sequences share 7 cells``: the branch
    shown and what the last switch to it cost (once the run has branched; ``timed``: with the wall time)."""
    sw, tree = run.switched, run.tree
    if run.branch is None or (sw is None and (tree is None or len(tree.branches) < 2)):
        return ""
    head = f"branch {run.branch}" + (f" of {len(tree.branches)}" if tree is not None else "") + f" ({tree_key}: tree)"
    if sw is None or sw.branch != run.branch:
        return head
    shared = sum(1 for holders in sw.active_shared if holders > 1)
    share = (f"{sw.sequences} sequences share {shared:,} cells" if shared else
             f"{sw.sequences} sequence{'s' if sw.sequences != 1 else ''}, no shared cells")
    ms = f" ({sw.ms:,.0f} ms)" if timed else ""
    return f"{head} · reused {sw.reused:,} cells, evaluated {sw.evaluated:,}{ms} · {share}"


def modes_text(app: Any, screen: Any) -> str:
    """``CHAT (c: raw completion) │ SERVING (S: stop serving)``: the modes in force, each with its exit."""
    kind = screen_kind(screen)
    modes = active_modes(step=app.step_mode, chat=app.chat_mode, serving=app.api.server is not None,
                         screen=kind, learning=app.learn_question is not None)
    can_chat = kind == "live" and app.can_chat
    labels = [screen.mode_text() if kind == "replay" and m.value == "replay" else mode_label(m, can_chat=can_chat, keymap=app.keymap)
              for m in modes]
    return " │ ".join(label for label in labels if label)


def mode_key(app: Any) -> str:
    """How to switch between stream and probe mode, as the keymap has it."""
    return f"{app.keymap.get('remote.probe', 'o')}: switch"


def status_line(app: Any, screen: Any) -> str:
    """``state │ modes │ retrieval │ selection │ model │ preset │ seed │ threads │ n_ctx │ API │ shift │ REC │ turn │
    retrieved context │ load``."""
    engine = screen.engine
    label, seed, threads = screen.identity()
    info = getattr(engine, "info", None)
    remote = getattr(engine, "remote", None)
    model = f"{label} · {info.arch} · {info.quant}" if info and remote is None else label
    n_ctx = getattr(engine, "n_ctx", app.settings.n_ctx)
    run = screen.model
    live = screen_kind(screen) == "live"
    parts = [run.state_text, modes_text(app, screen), app.rag.status_text() if live else ""]
    if run.selected is not None:
        parts.append(f"viewing step {run.selected} (end: live)")
    parts.append(branch_info(run, key_label(app.keymap.get("branch.tree", "T")), timed=screen.live_metrics))
    if app.recorder.on and screen_kind(screen) == "live":
        parts.append("● REC")
    if remote is not None:  # a server: its protocol and how it is watched instead of our threads
        mode = "probe" if getattr(app.controller, "probe", False) else "stream"
        parts += [model, f"preset {screen.preset_name}", f"seed {seed}", f"{remote.backend} · {mode} ({mode_key(app)})",
                  f"n_ctx {remote.n_ctx:,}" if remote.n_ctx else "n_ctx: not exposed"]
        if run.prompt_ms and mode == "stream":
            parts.append(f"TTFT {run.prompt_ms:,.0f} ms")
    else:
        parts += [model, f"preset {screen.preset_name}", f"seed {seed}", f"threads {threads}", f"n_ctx {n_ctx:,}"]
    if app.api.server is not None:
        svc = app.api.server.service
        parts.append(f"API :{app.api.server.http.port} ({svc.started} request{'s' if svc.started != 1 else ''}"
                     + (f", {svc.queue_length} waiting)" if svc.queue_length else ")"))
    if app.context_policy == "shift":
        parts.append("context: shift")
    if app.chat_mode and live:
        parts.append(chat_info(run.chat_turn))
        cost = app.rag.cost_for(screen)  # a retrieval-augmented turn's: its tokens, their KV bytes, prompt time
        parts.append(cost.text() if cost is not None else "")
    if app.load_info and screen.live_metrics:  # wall-clock figures are left out in deterministic (snapshot) mode
        parts.append(app.load_info)
    return " │ ".join(p for p in parts if p)
