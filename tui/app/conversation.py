"""Chat mode and the context policy: how the app's prompts become turns of a conversation, and what happens
when the context is full (a mixin of :class:`~tui.app.app.LlmTuiApp`, which owns the state it sets)."""

from __future__ import annotations

from typing import Any

from ..engine.chat import chat_policy, loop_policy
from .modes import CHAT_OFF, CHAT_ON, prompt_hint


class Conversation:
    """``toggle_chat`` (the c key), ``set_chat`` and ``set_context_policy`` on the app's controller."""

    controller: Any
    engine: Any
    system: str | None
    context_policy: str
    n_keep: int
    chat_mode: bool

    def toggle_chat(self) -> None:
        if self.controller is None:
            return
        if self.running:
            self.notify("stop the generation first (esc)", severity="warning")
            return
        if not self.chat_mode and not self.can_chat:
            self.notify("this model has no chat template: raw completion only", severity="warning")
            return
        self.set_chat(not self.chat_mode)
        self.notify(CHAT_ON if self.chat_mode else CHAT_OFF, timeout=6)
        self.dashboard.query_one("#prompt").focus()

    def set_context_policy(self, policy: str, n_keep: int) -> None:
        """stop, shift or drop-oldest-turns, for the generation loop and the chat alike."""
        self.context_policy, self.n_keep = policy, n_keep
        if self.controller is not None:
            self.controller.context_policy = loop_policy(self.context_policy)
            self.controller.n_keep = n_keep
            if self.controller.chat is not None:
                self.controller.chat.policy = chat_policy(self.context_policy)
        self._repaint_status()

    def set_chat(self, on: bool, system: str | None = None) -> None:
        """Chat mode on (a fresh conversation, with ``system`` if given) or off; a model without a chat
        template stays in raw completion (said once)."""
        from ..engine.chat import ChatSession

        if on and not self.can_chat:
            self.notify("this model has no chat template: raw completion", severity="warning")
            on = False
        if system is not None:
            self.system = system
        self.controller.chat = ChatSession(self.engine, system=self.system, policy=chat_policy(self.context_policy)) if on else None
        self.dashboard.model.chat_turn = None
        self.chat_mode = on
        self._repaint_status()
        self.dashboard.query_one("#prompt").placeholder = prompt_hint(on, self.can_chat)
