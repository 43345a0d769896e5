"""The app's modes, what each one shows in the status line, its one way out, and the keys its footer lists.

A mode is derived, never stored: from the screen on top (a replay, a lab, the
Learn screen) and the app's switches (step mode, chat, the API server). Each
mode names its exit key, so the status line always says how to leave what you
are in. No Textual here: the dashboard filters its footer with :func:`footer_shows`
(its ``active_bindings``), and the tests ask it directly. The exit keys named here are the default key table's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Mode(enum.Enum):
    LIVE = "live"  # the dashboard: type, Enter generates
    STEP = "step"  # step mode: each token waits for space
    CHAT = "chat"  # prompts are user turns in the model's chat template
    REPLAY = "replay"  # a recording plays in the panels
    LAB = "lab"  # the quant or perf lab
    LEARN = "learn"  # the Learn screen (questions, experiments, results)
    SERVING = "serving"  # the OpenAI-compatible API server listens


@dataclass(frozen=True, slots=True)
class Exit:
    key: str  # the default key, as the status line shows it
    does: str
    binding: str = ""  # the key table's id: a [keys] remap moves the exit too


EXITS: dict[Mode, Exit] = {
    Mode.STEP: Exit("s", "step mode off", "gen.step_mode"),
    Mode.CHAT: Exit("c", "raw completion", "chat.toggle"),
    Mode.REPLAY: Exit("esc", "leave the replay", "gen.stop"),
    Mode.LAB: Exit("esc", "close the lab"),
    Mode.LEARN: Exit("ctrl+n", "leave Learn", "session.new"),  # on the dashboard, after an experiment
    Mode.SERVING: Exit("S", "stop serving", "api.serve"),
}


def key_label(keys: str) -> str:
    """A binding's first key as the status line writes it (``escape,q`` → ``esc``)."""
    first = keys.split(",")[0].strip()
    return {"escape": "esc", "question_mark": "?", "comma": ","}.get(first, first)


def active_modes(*, step: bool, chat: bool, serving: bool, screen: str = "live", learning: bool = False
                 ) -> list[Mode]:
    """The modes in force, the screen's first (``screen``: "live", "replay", "lab" or "learn";
    ``learning``: the dashboard shows an experiment's finding)."""
    modes = [Mode(screen)] if screen != "live" else []
    if learning and screen == "live":
        modes.append(Mode.LEARN)
    if screen in ("live", "learn", "lab"):  # a replay has no step or chat mode of its own
        modes += [m for m, on in ((Mode.STEP, step), (Mode.CHAT, chat)) if on]
    if serving:
        modes.append(Mode.SERVING)
    return modes or [Mode.LIVE]


def mode_label(mode: Mode, *, can_chat: bool = True, keymap: dict[str, str] | None = None) -> str:
    """``CHAT (c: raw completion)``: the mode and its way out, for the status line (``keymap``: the config's
    ``[keys]`` remaps, by binding id). Raw completion on a model with a chat template says how to chat (the
    first thing a newcomer needs for an answer)."""
    keymap = keymap or {}

    def key(exit_: Exit) -> str:
        return key_label(keymap[exit_.binding]) if exit_.binding in keymap else exit_.key

    if mode is Mode.LIVE:
        return f"RAW ({key(EXITS[Mode.CHAT])}: chat)" if can_chat else ""
    exit_ = EXITS[mode]
    return f"{mode.name} ({key(exit_)}: {exit_.does})"


CHAT_ON = "chat mode: each prompt is a user turn in the model's chat template; only new tokens are evaluated"
CHAT_OFF = ("raw completion: the model continues your text token by token (the roadmap's stage 1); "
            "an instruct model may end a bare question at once — c chats again")


def prompt_hint(chat: bool, can_chat: bool) -> str:
    """The prompt box's placeholder: what Enter does in the mode you are in."""
    if chat:
        return "ask something — Enter sends it as a user turn (chat mode; c: raw completion)"
    return "text to continue — Enter generates (raw completion" + ("; c: chat)" if can_chat else ")")


@dataclass(frozen=True, slots=True)
class FooterState:
    running: bool  # a run is on (esc stops it)
    step: bool  # step mode (space steps)
    pending: bool  # a step waits (r re-samples it)
    has_steps: bool  # a finished run's last step can be re-sampled


def footer_state(run: Any, step_mode: bool) -> FooterState:
    """What the live dashboard's footer depends on, from its run model (the run as shown, not the thread)."""
    running = run.phase.value in ("prompt", "generating", "paused", "stopping")
    return FooterState(running, step_mode, run.pending is not None, bool(run.steps))


def footer_shows(action: str, state: FooterState) -> bool:
    """Whether the live dashboard's footer lists ``action`` now (a key it leaves out still answers in
    one line; the footer lists what the mode you are in uses)."""
    if action == "stop":
        return state.running
    if action == "step":
        return state.step
    if action == "resample":
        return state.pending or (state.has_steps and not state.running)
    return True


def screen_kind(screen: Any) -> str:
    """Which mode a screen is ("live", "replay", "lab", "learn"): its ``MODE`` attribute, else live."""
    return getattr(screen, "MODE", "live")
