"""The app's side of remote servers: a controller for a server, probe mode, the fleet view, URLs typed in
the model picker. The servers themselves are :mod:`tui.remote`'s (no Textual there)."""

from __future__ import annotations

from typing import Any

from ..engine.controller import Controller
from ..safe_text import visible
from ..remote.entries import Remotes, RemoteSpec, looks_like_url


class RemoteHost:
    def __init__(self, app: Any, remotes: Remotes | None) -> None:
        self.app = app
        self.remotes = remotes if remotes is not None else Remotes()
        self.fleet_on_start = len(self.remotes.specs) > 1

    @property
    def attached(self) -> Any:
        """The server the dashboard watches (its RemoteEngine), or None for a local model."""
        engine = self.app.engine
        return engine if getattr(engine, "is_remote", False) else None

    def controller(self, engine: Any, preset: Any, **kw: Any) -> Controller:
        """The controller for a freshly loaded engine: a server's streams or probes, a local one decodes."""
        if getattr(engine, "is_remote", False):
            from ..remote.controller import RemoteController

            return RemoteController(engine, preset, probe=getattr(engine, "probe_default", False), **kw)
        return Controller(engine, preset, **kw)

    def show_kv(self, gauge: Any, model: Any, engine: Any) -> None:
        """The KV gauge for a server: the context it says it has and what this run put there, the cache reuse
        it reports; "not exposed by this server" for what it does not say (never a guess)."""
        from .widgets.panels import show_text

        info = engine.remote
        srv = model.server
        notes = []
        n_reused = 0
        if model.probes:
            last = model.probes[-1]
            n_reused = last.cache_n or 0
            notes.append(f"probe {last.step}: server evaluated {_n(last.prompt_n)}, reused {_n(last.cache_n)} "
                         f"from its cache, {last.ms:.0f} ms")
        elif srv is not None:
            n_reused = srv.cache_n or 0
            notes.append(f"server: prompt_n {_n(srv.prompt_n)}, cache_n {_n(srv.cache_n)}, "
                         f"predicted_n {_n(srv.predicted_n)}")
        if srv is not None and srv.kv_usage is not None:
            notes.append(f"server-wide KV in use: {srv.kv_usage * 100:.1f}% (its /metrics)")
        notes.append("KV bytes: not exposed by this server")
        n_prompt = model.n_prompt
        n_past = n_prompt + len(model.steps)
        if info.n_ctx:
            gauge.show(n_ctx=info.n_ctx, n_past=n_past, n_prompt=n_prompt, n_reused=n_reused, bytes_per_token=0.0,
                       allocated=0, type_k="?", type_v="?", notes=tuple(notes))
        else:
            show_text(gauge, f"n_ctx: not exposed by this server · this run: {n_past:,} tokens", tuple(notes),
                      "kv--dim")

    def toggle_probe(self) -> None:
        app = self.app
        engine = self.attached
        if engine is None:
            app.notify("probe mode is for a remote server (llmtui --remote URL, or a URL in the model picker)",
                       severity="warning")
            return
        if not engine.remote.max_top_k:
            app.notify(f"{engine.remote.url} returns no logprobs: probe mode needs its top-K", severity="error")
            return
        controller = app.controller
        controller.probe = not controller.probe
        engine.probe_default = controller.probe
        if controller.probe:
            chat = "" if not app.chat_mode or engine.can_probe_chat else (
                " This server does not apply its chat template on request: chat still streams.")
            app.notify(f"probe mode: one request per token for the server's top-{engine.n_probs}; llmtui's chain "
                       f"samples here (presets, step mode, re-sample work).{chat}", timeout=6)
        else:
            app.notify("stream mode: the server samples, the panels show what it streams", timeout=4)
        app._repaint_status()

    def entry_for_url(self, text: str) -> Any:
        """A model picker's typed URL as a catalog entry (the key and backend of the command line apply)."""
        first = next(iter(self.remotes.specs.values()), None)
        return self.remotes.add(RemoteSpec(text, first.api_key if first else None, "auto"))

    def open_fleet(self) -> None:
        from .screens.fleet import FleetScreen

        app = self.app
        if not self.remotes.specs:
            app.notify("no servers to watch: start llmtui with --remote URL (repeatable) or type a URL in the "
                       "model picker (m)", severity="warning")
            return
        urls = list(self.remotes.specs)

        def chosen(index: int | None) -> None:
            if index is not None and 0 <= index < len(urls):
                app.switch_model(self.remotes.entry(self.remotes.specs[urls[index]]))

        app.push_screen(FleetScreen(self.remotes.poll), chosen)


def recorded_remote_notes(engine: Any) -> tuple[str, ...] | None:
    """A replay of a remote run: the server's KV bytes were never known (the gauge says so, not "0 B")."""
    head = getattr(engine, "remote_header", None)
    if not isinstance(head, dict):
        return None
    return (f"recorded from {visible(head.get('backend', '?'))} at {visible(head.get('url', '?'))}",
            "KV bytes: not exposed by that server")


def _n(value: int | None) -> str:
    return "not exposed" if value is None else f"{value:,}"


__all__ = ["RemoteHost", "looks_like_url"]
