"""The status line, composed from the app's settings and the screen's run (one place, no Textual)."""

from __future__ import annotations

from typing import Any


def chat_info(turn: Any) -> str:
    """A chat turn's reuse figures in words."""
    if turn is None:
        return ""
    return (f"reused {turn.reused:,}, evaluated {turn.evaluated:,}, saved ~{turn.saved_ms:.0f} ms"
            + (f", dropped {turn.dropped_turns} old turn(s)" if turn.dropped_turns else ""))


def status_line(app: Any, screen: Any) -> str:
    """``model │ preset │ seed │ threads │ n_ctx │ API │ state │ modes │ selection │ load time``."""
    engine = screen.engine
    label, seed, threads = screen.identity()
    info = getattr(engine, "info", None)
    model = f"{label} · {info.arch} · {info.quant}" if info else label
    # wall-clock figures are left out in deterministic (snapshot) mode
    loaded = f" │ {app.load_info}" if app.load_info and screen.live_metrics else ""
    n_ctx = getattr(engine, "n_ctx", app.settings.n_ctx)
    run = screen.model
    mode = " │ STEP MODE" if app.step_mode else ""
    if app.chat_mode:
        info_text = chat_info(run.chat_turn)
        mode += " │ CHAT" + (f" ({info_text})" if info_text else "")
    if app.context_policy == "shift":
        mode += " │ shift"
    if app.recorder.on:
        mode += " │ ● REC"
    mode += screen.mode_text()
    api = ""
    if app.api.server is not None:  # before the state: the long state line is what a narrow terminal cuts
        svc = app.api.server.service
        api = f" │ API :{app.api.server.http.port} ({svc.started} request{'s' if svc.started != 1 else ''}" + (
            f", {svc.queue_length} waiting)" if svc.queue_length else ")")
    sel = f" │ viewing step {run.selected}" if run.selected is not None else ""
    return (f"{model} │ preset {screen.preset_name} │ seed {seed} │ threads {threads} │ n_ctx {n_ctx:,}{api} │ "
            f"{run.state_text}{mode}{sel}{loaded}")
