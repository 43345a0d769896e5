"""Stage 5 — a service: chat turns that reuse the cache, recorded."""

from __future__ import annotations

from pathlib import Path

from ...units import shorten
from ..host import Finding, Runner
from .stage2 import CHAT_TURNS, _chat_turns


async def exp_chat(r: Runner, v: int) -> Finding:
    await r.host.ready()
    host = r.host
    await r.host.use_settings()
    r.host.policy()
    r.host.use_preset("balanced")
    system = "Answer like a pirate, in one sentence." if v == 2 else "You are a helpful assistant. Answer briefly."
    files: list[str] = []
    recording = await host.recording(True) if v == 1 else False
    try:
        def recorded() -> None:
            if v == 1 and host.current().record_path:
                files.append(host.current().record_path)

        seen = await _chat_turns(r, CHAT_TURNS if v != 1 else CHAT_TURNS[:2], r.n(32, 10), system=system,
                                 on_turn=recorded)
    finally:
        if v == 1:
            await host.recording(recording)
    last, reply = seen[-1]
    reused = [t.reused for t, _ in seen]
    if v == 1:
        headline = (f"{len(files)} turn(s) recorded, one session file each; the last one's prompt holds the "
                    f"whole conversation: {Path(files[-1]).name if files else '(none)'}")
        r.host.mark("stream", "recorded")
        return r.finding("stream", headline, files=files, reused=reused)
    recalled = "Ada" in reply if v == 0 else None
    headline = (f"{len(seen)} turns, reused per turn: {', '.join(map(str, reused))} tokens; last reply: "
                f"{shorten(reply, 60)!r}" + ("" if recalled is None else
                                           f" — the name {'was' if recalled else 'was not'} recalled"))
    r.host.mark("stream", "the conversation as the template renders it")
    return r.finding("stream", headline, reused=reused, reply=reply, recalled=recalled)
