"""What every remote backend gives llmtui, whatever the server (no Textual, no llama_cpp).

A backend turns one server's protocol into these records:

* :class:`RemoteInfo` — what the server is and what it exposes (model, n_ctx,
  logprobs, token ids, metrics...). Anything it does not expose is ``None`` or
  ``False`` and is shown as "not exposed by this server", never guessed.
* :class:`RemoteToken` — one streamed token: its text, the server's logprob of it
  and the server's top-K (:class:`Candidate`), with the time it arrived.
* :class:`RemoteDone` — how the stream ended and the server's own counters.
* :class:`ProbeResult` — probe mode: the top-K for the next position of a prompt.
* :class:`MetricsSample` — what the fleet view polls.

A candidate is keyed by the server's token id where the server gives ids
(llama-server, SGLang) and by its text where it does not (OpenAI-style
logprobs); :class:`tui.remote.vocab.RemoteVocab` turns keys into the ids the
panels and recordings use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .http import Endpoint, RemoteError

Key = int | str  # a server token id, or the token's text where the server gives none


@dataclass(frozen=True, slots=True)
class Candidate:
    key: Key
    piece: bytes  # the token's bytes (from the server's ``bytes`` where given, else its text as UTF-8)
    logprob: float


@dataclass(frozen=True, slots=True)
class RemoteToken:
    key: Key | None  # None: the server named no token (no logprobs): the text is all there is
    piece: bytes
    text: str
    logprob: float | None  # the server's logprob of this token (None: not exposed)
    top: tuple[Candidate, ...] = ()  # the server's top-K, best first (empty: not exposed)
    t: float = field(default_factory=time.perf_counter)  # arrival


@dataclass(frozen=True, slots=True)
class RemoteDone:
    finish_reason: str | None  # stop | length | eog | error ... as the server said
    prompt_n: int | None = None  # prompt tokens the server evaluated
    cache_n: int | None = None  # prompt tokens it reused from its cache
    predicted_n: int | None = None
    prompt_ms: float | None = None
    predicted_ms: float | None = None
    n_ctx: int | None = None  # the slot's context, where the answer says
    stopped_eog: bool = False  # ended at an end-of-generation token (not a stop string or the limit)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    top: tuple[Candidate, ...]  # the next position's top-K, best first
    prompt_n: int | None = None  # tokens the server evaluated for this probe
    cache_n: int | None = None  # tokens it reused from its prompt cache
    ms: float = 0.0  # wall time of the request
    eog: tuple[Key, ...] = ()  # candidates the server marked as end of generation


@dataclass(frozen=True, slots=True)
class RemoteInfo:
    backend: str  # llama-server, vllm, ollama, sglang, openai, llmtui
    url: str  # without credentials
    model: str
    n_ctx: int | None = None
    n_vocab: int | None = None
    chat: bool = False  # the server applies a chat template
    max_top_k: int = 0  # the most candidates per token it returns (0: no logprobs)
    token_ids: bool = False  # candidates carry the server's token ids
    version: str = ""
    exposes: dict[str, bool] = field(default_factory=dict)  # logprobs, top_k, kv, n_ctx, metrics, tokenize, cache_n
    notes: tuple[str, ...] = ()  # one-line facts worth showing (e.g. "logprobs capped at 20 by --max-logprobs")

    def header(self) -> dict[str, Any]:
        """What a recording's header keeps about the server (see the README's recording format)."""
        return {"backend": self.backend, "url": self.url, "model": self.model, "n_ctx": self.n_ctx,
                "n_vocab": self.n_vocab, "max_top_k": self.max_top_k, "token_ids": self.token_ids,
                "version": self.version, "exposed": dict(sorted(self.exposes.items()))}


@dataclass(frozen=True, slots=True)
class Sampling:
    """The server-side sampling a streamed request asks for (from the preset; None: the server's default)."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")

    def fields(self, *, rename: dict[str, str] | None = None, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The parameters set, as a request body's fields (llama.cpp's names unless ``rename`` says otherwise):
        what a server's protocol calls them differs, what is sent does not."""
        names = rename or {}
        return {names.get(f, f): getattr(self, f) for f in self.FIELDS
                if f not in skip and getattr(self, f) is not None}


@dataclass(frozen=True, slots=True)
class Request:
    prompt: str = ""  # raw text (completion endpoints)
    messages: tuple[dict[str, str], ...] = ()  # chat mode (chat endpoints)
    max_tokens: int = 128
    n_probs: int = 10  # top-K asked for (capped at the server's max)
    sampling: Sampling = Sampling()
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """One poll of a server for the fleet view (None: not exposed)."""

    url: str
    backend: str
    model: str
    healthy: bool
    error: str = ""  # why not healthy (one line)
    running: float | None = None  # requests being processed
    waiting: float | None = None  # requests queued
    generated_total: float | None = None  # tokens generated since start (a counter: the rate is its slope)
    prompt_total: float | None = None
    kv_usage: float | None = None  # 0..1
    cache_hit_total: float | None = None  # prompt tokens served from the cache
    requests: tuple[str, ...] | None = None  # one line per request slot, where the server lists them (/slots)
    t: float = field(default_factory=time.perf_counter)


class Backend:
    """One server protocol. Subclasses set ``name`` and implement what their server can do; what it cannot
    raises :class:`RemoteError` with kind ``unsupported`` and a line that says so."""

    name: ClassVar[str] = "?"
    detect_path: ClassVar[str] = ""  # the GET whose answer says a server speaks this protocol

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._info: RemoteInfo | None = None  # what info() read, once

    # -- detection ------------------------------------------------------------------------------------------

    @classmethod
    def detect(cls, endpoint: Endpoint) -> bool:
        """Whether the server at ``endpoint`` speaks this protocol (cheap GETs; never raises)."""
        if not cls.detect_path:
            return False
        try:
            body = endpoint.get_json(cls.detect_path, timeout=5)
        except RemoteError:
            return False
        return isinstance(body, dict) and cls.recognises(body)

    @classmethod
    def recognises(cls, body: dict[str, Any]) -> bool:
        """Whether ``detect_path``'s answer is this protocol's."""
        return False

    # -- what a server is ----------------------------------------------------------------------------------

    def info(self) -> RemoteInfo:
        raise NotImplementedError

    @property
    def model(self) -> str:
        return self.info().model

    def _object(self, path: str, body: Any = None, *, timeout: float | None = None) -> dict[str, Any]:
        """An optional endpoint's JSON object: {} where the server has none, or answers something else."""
        try:
            answer = (self.endpoint.get_json(path, timeout=timeout) if body is None
                      else self.endpoint.post_json(path, body, timeout=timeout))
        except RemoteError:
            return {}
        return answer if isinstance(answer, dict) else {}

    # -- generation ----------------------------------------------------------------------------------------

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        """The server's own generation, token by token; ends with one :class:`RemoteDone`."""
        raise NotImplementedError

    def probe(self, prompt: Sequence[Key] | str, n_probs: int) -> ProbeResult:
        """The top-``n_probs`` candidates for the position after ``prompt`` (token ids where the server takes
        them, else text), one request of one token."""
        raise RemoteError(f"{self.name}: probe mode is not supported by this backend", kind="unsupported")

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int] | None:
        """The server's tokens for ``text``, or None where it has no tokenizer endpoint."""
        return None

    def detokenize(self, ids: Sequence[int]) -> bytes | None:
        return None

    def eog_keys(self) -> list[Key]:
        """Tokens the server names as end of generation (probe mode stops on them), where it says."""
        return []

    def apply_template(self, messages: Sequence[dict[str, str]]) -> str | None:
        """The server's chat template applied to ``messages`` (ready for the answer), or None where it has no
        endpoint for that."""
        return None

    def metrics(self) -> MetricsSample:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing is held open between requests."""
