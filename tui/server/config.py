"""What the HTTP app serves and how it guards itself: :class:`ServerConfig` and its bounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body larger than this is refused (413) before it is read
OPEN_PATHS = frozenset({"/health", "/openapi.json"})  # served without the API key: nothing private in them


@dataclass(slots=True)
class ServerConfig:
    catalog: Any  # PresetCatalog
    default_preset: Callable[[], Any] | None = None  # the Preset a request without `preset` uses
    seed: int | None = None  # a request without one: this seed if the user set one, else a fresh one each time
    max_tokens: int = 256  # chat default when the client sets none
    api_key: str | None = None
    loaded: Callable[[], Any] = lambda: None  # the loaded ModelEntry (or None while loading)
    models: Callable[[], Sequence[Any]] = tuple  # every discovered ModelEntry
    max_body_bytes: int = MAX_BODY_BYTES
    # browsers' origins allowed to call the API (CORS); empty: none — a page elsewhere cannot read the answers
    cors_origins: tuple[str, ...] = ()
    allow_grammar: bool = False  # raw GBNF from clients (a grammar can make every step exponential: trusted only)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {self.max_body_bytes}")
