"""Multi-turn chat with KV-cache prefix reuse ("feed only the new tokens").

Each user turn re-renders the whole conversation with the model's chat
template and tokenizes it; the tokens already in the KV cache that match its
beginning (the longest common prefix) are kept, the cache is cut there
(``llama_memory_seq_rm``) and only the rest is evaluated. When the
conversation no longer fits, the ``drop-oldest-turns`` policy drops the oldest
user/assistant exchange (the system prompt stays) and re-evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ContextError


@dataclass(frozen=True, slots=True)
class TurnPlan:
    text: str  # the whole conversation, rendered with the chat template
    tokens: list[int]  # ... and tokenized
    reused: int  # tokens kept from the cache
    dropped_turns: int = 0

    @property
    def evaluate(self) -> list[int]:
        return self.tokens[self.reused:]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable_prefix(engine: Any, tokens: list[int]) -> int:
    """How many of ``tokens`` the engine's KV cache already holds, in order; at least one token is
    always left to evaluate (its logits are needed). An engine that does not know what it holds
    (a replay) reuses nothing."""
    held = getattr(engine, "held", None)
    if held is None:
        return 0
    return max(0, min(common_prefix(held, tokens), len(tokens) - 1))


def loop_policy(context_policy: str) -> str:
    """What a generation does when the context fills, for the user's policy (the loop knows stop and shift)."""
    return "shift" if context_policy == "shift" else "stop"


def chat_policy(context_policy: str) -> str:
    """What a chat turn does when the conversation no longer fits, for the user's policy."""
    return "drop-oldest-turns" if context_policy == "drop-oldest-turns" else "stop"


def chat_prompt(eng: Any, messages: list[dict[str, str]],
                tools: list[dict[str, Any]] | None = None) -> tuple[str, list[int]]:
    """The conversation rendered with the model's chat template (ready for the answer), and its tokens;
    ``tools``: for a template that lists them itself."""
    text = eng.render_chat(messages, add_generation_prompt=True, tools=tools) if tools else eng.render_chat(
        messages, add_generation_prompt=True)
    bos = eng.piece(eng.info.bos).decode("utf-8", "replace") if eng.info.bos >= 0 else None
    add_bos = False if bos and text.startswith(bos) else None  # the template already wrote it
    return text, eng.tokenize(text, add_bos=add_bos, parse_special=True)


def prompt_tokens(engine: Any, prompt: str, *, chat: bool, system: str | None = None, add_bos: bool | None = None,
                  parse_special: bool = False) -> tuple[str, list[int]]:
    """The text the model reads and its tokens: ``prompt`` as it is, or as a user turn (after ``system``, if any)
    in the model's chat template."""
    if not chat:
        return prompt, engine.tokenize(prompt, add_bos=add_bos, parse_special=parse_special)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return chat_prompt(engine, messages)


@dataclass(slots=True)
class ChatSession:
    engine: Any
    system: str | None = None
    policy: str = "stop"  # or "drop-oldest-turns"
    reserve: int = 256  # room kept free for the answer when dropping turns
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    def prepare(self, user_text: str) -> TurnPlan:
        """Add the user's turn and cut the cache to the part the new conversation shares."""
        self.messages.append({"role": "user", "content": user_text})
        text, tokens = chat_prompt(self.engine, self.messages)
        dropped = 0
        n_ctx = self.engine.n_ctx
        while len(tokens) + self.reserve > n_ctx:
            first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:  # nothing older to drop, whatever the policy
                self.messages.pop()
                raise ContextError(f"this message ({len(tokens)} tokens with the chat template, plus "
                                   f"{self.reserve} kept free for the answer) does not fit n_ctx {n_ctx}: "
                                   "use a larger --n-ctx or a shorter message")
            if self.policy != "drop-oldest-turns":
                self.messages.pop()
                raise ContextError(f"the conversation ({len(tokens)} tokens) no longer fits n_ctx {n_ctx}: "
                                   "use --context-policy drop-oldest-turns or a larger --n-ctx")
            del self.messages[first:first + 2]  # the oldest user/assistant exchange
            dropped += 1
            text, tokens = chat_prompt(self.engine, self.messages)
        # what the cache holds is the engine's to say: other runs (an experiment, an API
        # request) and context shifts change it between turns
        reused = reusable_prefix(self.engine, tokens)
        self.engine.truncate(reused)
        return TurnPlan(text, tokens, reused, dropped)

    def finish(self, text: str) -> None:
        """Record the answer (the cache now holds the conversation and every answer token but the last)."""
        self.messages.append({"role": "assistant", "content": text})
