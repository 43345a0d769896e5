"""A remote server as an engine (no Textual, no llama_cpp); :mod:`tui.remote.controller` drives it.

Two ways to watch a server:

* **stream** (the default): the server samples; each streamed token becomes a
  :class:`~tui.engine.loop.Step` whose trace holds the server's top-K only
  (``SampleTrace.top_k_only``: the tail is unknown, the entropy over the top-K
  is a lower bound, the server's chain is not seen). Latency and throughput come
  from arrival times.
* **probe** (step mode, or ``--probe``): :class:`RemoteEngine` is an engine
  whose ``decode`` asks the server for the next position's top-K (one request
  of one token) and whose ``logits`` are those K logprobs (-inf elsewhere). The
  ordinary :class:`~tui.engine.controller.Controller` then runs *our* sampler
  chain on them: step mode, re-sample and presets work on a remote model. The
  chosen token goes back as part of the next prompt;
  :class:`~tui.remote.controller.ServerCounters` shows how much of that prompt
  the server's cache reused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..engine.errors import EngineError
from ..engine.records import ModelInfo
from ..sampling.trace import SampleTrace
from .backend import Backend, Candidate, Key, ProbeResult, RemoteInfo
from .http import RemoteError

UNKNOWN_CTX = 1 << 22  # a server that does not say its n_ctx: the loop never calls the context full (MAX_CTX)
MAX_TEXT_KEYS = 1 << 20  # tokens named by text: more than any vocabulary has
TEXT_IDS = 1 << 30  # ids numbered here for text-only keys, on a server that has ids of its own
N_PROBS = 20  # top-K asked for per token (capped by what the server allows)


class RemoteVocab:
    """Token keys from a server → the ids the panels, chains and recordings use, and their bytes.

    A server that gives token ids (llama-server, SGLang) keeps them; tokens it names by text only (OpenAI-style
    logprobs, a chat endpoint) get ids numbered here in order of first appearance — from :data:`TEXT_IDS` up
    on a server whose own ids fill the low range, so the two never collide (a recording's header says which)."""

    def __init__(self, token_ids: bool, n_vocab: int | None = None, where: str = "the server") -> None:
        self.token_ids = token_ids
        self._ids: dict[Key, int] = {}
        self.pieces: dict[int, bytes] = {}
        self._next = TEXT_IDS if token_ids else 0
        self.n_vocab = n_vocab or 0
        # a server's own ids are checked where they enter: the chain's arrays are sized by them
        self.limit = n_vocab if token_ids and n_vocab else TEXT_IDS
        self.where = where

    def id_of(self, key: Key, piece: bytes) -> int:
        if self.token_ids and isinstance(key, int):
            if not 0 <= key < self.limit:
                raise RemoteError(f"{self.where} named token id {key}, outside its vocabulary "
                                  f"(0..{self.limit - 1:,})", kind="bad-json")
            tid = key
        else:
            tid = self._ids.get(key, -1)
            if tid < 0:
                if len(self._ids) >= MAX_TEXT_KEYS:
                    raise RemoteError(f"{self.where} named more than {MAX_TEXT_KEYS:,} different tokens",
                                      kind="bad-json")
                tid = self._ids[key] = self._next
                self._next += 1
        if piece or tid not in self.pieces:
            self.pieces[tid] = piece
        if tid < TEXT_IDS or not self.token_ids:
            self.n_vocab = max(self.n_vocab, tid + 1)  # the chain's array: server ids (text ids never probe)
        return tid

    def piece(self, tid: int) -> bytes:
        return self.pieces.get(tid, b"")


def _prompt_total(probe: ProbeResult | None) -> int | None:
    """The prompt's length as the server counted it (evaluated + reused from its cache), if it says."""
    if probe is None or probe.prompt_n is None:
        return None
    return probe.prompt_n + (probe.cache_n or 0)


def lower_bound_entropy(logprobs: np.ndarray) -> float:
    """-Σ p log p over the known top-K only: the true entropy is at least this (the tail adds ≥ 0)."""
    finite = logprobs[np.isfinite(logprobs)].astype(np.float64)
    return float(-(np.exp(finite) * finite).sum()) if finite.size else float("nan")


def remote_trace(token: int, logprob: float | None, ids: np.ndarray, logprobs: np.ndarray) -> SampleTrace:
    """The trace of a token the server sampled: its top-K as the server gave it, nothing invented."""
    p = np.exp(logprobs.astype(np.float64))
    hit = np.flatnonzero(ids == token)
    lp = logprob if logprob is not None else (float(logprobs[hit[0]]) if hit.size else None)
    prob = math.exp(lp) if lp is not None else float("nan")
    ids.flags.writeable = logprobs.flags.writeable = p.flags.writeable = False
    after = np.zeros(len(ids))
    after.flags.writeable = False
    return SampleTrace(token=token, prob=prob, entropy=lower_bound_entropy(logprobs), top_ids=ids,
                       top_logits=logprobs, top_p_before=p, top_p_after=after, stages=(), n_final=0, draw=None,
                       raw_logit=lp if lp is not None else float("nan"), raw_p=prob, top_k_only=len(ids),
                       server_sampled=True)


def model_info(info: RemoteInfo) -> ModelInfo:
    """The :class:`ModelInfo` the panels show for a server: only what it exposes (0 / None elsewhere)."""
    return ModelInfo(
        name=f"{info.model} @ {info.url}", path=info.url, arch=info.backend, quant="remote",
        description=f"{info.backend} at {info.url}", n_params=0, size_bytes=0, file_size=0,
        n_ctx_train=info.n_ctx or 0, n_vocab=info.n_vocab or 0, n_layer=0, n_head=0, n_head_kv=0, n_embd=0,
        n_swa=0, bos=-1, eos=-1, eot=-1, add_bos=False,
        chat_template="(applied by the server)" if info.chat else None, general_name=info.model,
    )


class RemoteEngine:
    """A server behind the engine interface. ``decode`` probes (see the module doc)."""

    is_remote = True

    def __init__(self, backend: Backend, *, n_probs: int = N_PROBS) -> None:
        self.backend = backend
        self.remote = backend.info()
        self.info = model_info(self.remote)
        self.path = self.remote.url
        self.n_probs = max(1, min(n_probs, self.remote.max_top_k or 1))
        self.vocab = RemoteVocab(self.remote.token_ids, self.remote.n_vocab, self.remote.url)
        self.n_ctx = self.remote.n_ctx or UNKNOWN_CTX
        self.warnings: list[str] = []  # what the user should know (said as warnings)
        self.notes: list[str] = list(self.remote.notes)  # facts about the server (said once, as information)
        self.held_ids: list[int] = []
        self.eog: set[int] = set()
        try:
            for key in backend.eog_keys():
                self.eog.add(self.vocab.id_of(key, b""))
        except RemoteError as exc:
            self.warnings.append(f"end-of-generation tokens unknown ({exc}): probe mode stops at max tokens")
        self.last_probe: ProbeResult | None = None
        self.retokenized = False  # the last probe's server saw other tokens than we sent (text-only APIs)
        self._top: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, np.float32))
        self.on_probe: Callable[[ProbeResult], None] | None = None
        self.settings = None
        self.mode = "stream"  # or "probe": what the controller does (a recording's header says it)
        if not self.remote.max_top_k:
            self.warnings.append(f"{self.remote.url} returns no logprobs: tokens without probabilities, no top-K, "
                                 "no probe mode")

    def refresh(self) -> str:
        """What the server showed about itself since it was attached (it refused logprobs, or as many): the
        engine's figures follow, and a line says it (empty: nothing changed)."""
        try:
            now = self.backend.info()
        except RemoteError:
            return ""
        if now == self.remote:
            return ""
        was, self.remote = self.remote, now
        self.n_probs = max(1, min(self.n_probs, now.max_top_k or 1))
        if now.max_top_k == 0 and was.max_top_k:
            why = getattr(self.backend, "refused_logprobs", "")
            line = f"{now.url} returns no logprobs: tokens without probabilities, no top-K, no probe mode" + (
                f" ({why})" if why else "")
        elif now.max_top_k < was.max_top_k:
            line = f"{now.url} gives at most {now.max_top_k} logprobs per token: the top-K shows that many"
        else:
            return ""
        self.warnings.append(line)
        return line

    @property
    def n_vocab(self) -> int:
        return max(1, self.vocab.n_vocab)

    @property
    def n_past(self) -> int:
        return len(self.held_ids)

    # -- tokens ------------------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        if self.remote.exposes.get("tokenize"):
            try:
                ids = self.backend.tokenize(text, add_special=add_bos is not False)
            except RemoteError as exc:
                raise EngineError(str(exc)) from None
            if ids is not None:
                return ids
        # a server without a tokenizer endpoint: the prompt is one opaque piece of text
        return [self.vocab.id_of("\x00prompt\x00" + text, text.encode("utf-8", "surrogatepass"))]

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def is_eog(self, token: int) -> bool:
        return token in self.eog

    def is_control(self, token: int) -> bool:
        return token in self.eog

    def eog_tokens(self) -> list[int]:
        return sorted(self.eog)

    @property
    def held(self) -> list[int]:
        """What the server's cache holds for us, as far as we know: what we sent it last."""
        return self.held_ids

    # -- probing -------------------------------------------------------------------------------------------

    def _prompt(self) -> Sequence[Key] | str:
        if self.remote.token_ids and self.remote.exposes.get("tokenize"):  # the prompt went in as the server's ids
            return list(self.held_ids)
        return b"".join(self.vocab.piece(t) for t in self.held_ids).decode("utf-8", "replace")

    def decode(self, tokens: Sequence[int], *, should_stop: Callable[[], bool] | None = None) -> float:
        self.held_ids.extend(int(t) for t in tokens)
        if not self.remote.max_top_k:
            raise EngineError(f"{self.remote.url} returns no logprobs: probe mode needs them (watch it streaming)")
        try:
            result = self.backend.probe(self._prompt(), self.n_probs)
        except RemoteError as exc:
            raise EngineError(str(exc)) from None
        before = self.last_probe
        seen_then, seen_now = _prompt_total(before), _prompt_total(result)
        # merged: the server counts fewer new prompt tokens than we sent (a count that fell is another way of
        # counting — only the uncached tokens, say — not a merge)
        self.retokenized = bool(not self.remote.token_ids and seen_then is not None and seen_now is not None
                                and seen_then <= seen_now < seen_then + len(tokens))
        self.last_probe = result
        try:
            ids = np.fromiter((self.vocab.id_of(c.key, c.piece) for c in result.top), dtype=np.int64,
                              count=len(result.top))
            for key in result.eog:
                self.eog.add(self.vocab.id_of(key, b""))
            lps = np.fromiter((c.logprob for c in result.top), dtype=np.float32, count=len(result.top))
        except RemoteError as exc:
            raise EngineError(str(exc)) from None
        self._top = (ids, lps)
        if self.on_probe is not None:
            self.on_probe(result)
        return result.ms

    def logits(self) -> np.ndarray:
        ids, lps = self._top
        out = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        keep = ids < len(out)  # a candidate the server named by text only has no place among its ids
        out[ids[keep]] = lps[keep]
        return out

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """The last probe's candidate ids and the server's logprobs, best first."""
        return self._top

    def clear(self) -> None:
        self.held_ids.clear()
        self.last_probe = None

    def truncate(self, n_keep: int) -> None:
        del self.held_ids[n_keep:]
        self.last_probe = None

    def can_shift(self) -> bool:
        return False

    def shift(self, n_keep: int, n_discard: int) -> None:
        raise EngineError("a remote server's context cannot be shifted from here")

    def kv_layout(self) -> None:
        return None  # the server's KV cache is its own: see ServerCounters and the fleet view

    def recreate_context(self, settings: Any) -> None:
        raise EngineError("a remote server's context is set where it runs (restart it with another -c)")

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The server's own chat template applied to ``messages`` (llama-server's /apply-template): probe mode
        in chat. A server without it raises EngineError (its chat streams through the chat endpoint)."""
        try:
            text = self.backend.apply_template(messages)
        except RemoteError as exc:
            raise EngineError(str(exc)) from None
        if text is None:
            raise EngineError(f"{self.remote.backend} does not apply its chat template on request: chat streams")
        return text

    @property
    def can_probe_chat(self) -> bool:
        return bool(self.remote.exposes.get("apply_template"))

    def build_context(self, seed: int) -> Any:
        from ..sampling.presets import BuildContext

        return BuildContext(n_vocab=self.n_vocab, seed=seed, n_ctx=self.n_ctx, dry_vocab=None)

    def close(self) -> None:
        self.backend.close()


def probe_top(engine: RemoteEngine) -> list[Candidate]:
    """The last probe's candidates (for tests and the CLI)."""
    ids, lps = engine.top()
    return [Candidate(int(i), engine.piece(int(i)), float(lp)) for i, lp in zip(ids.tolist(), lps.tolist())]
