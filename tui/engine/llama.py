"""The engine: one loaded model and one context, over llama.cpp's C API (see :mod:`tui.engine.binding`).

* pieces are produced by our own ``llama_token_to_piece`` call (the library's
  one-token helpers pad to 32 bytes or drop longer pieces);
* the last position's logits are a zero-copy numpy view;
* every token id is checked before llama.cpp sees it (it aborts the process on a bad one);
* a context that cannot fit in memory is refused before llama.cpp tries (:mod:`tui.engine.memory`).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import memory
from .batch import Batch, SequenceOps
from .binding import LOG, ChatFormatter, ensure_backend, error_from_log, ll, tokenize_bytes
from .errors import ContextError, EngineError, ModelFileError
from .gguf_header import read_header
from .memory import ModelDims
from .native_info import all_metadata, meta_value, read_info
from .records import ModelInfo
from .sequences import SEQ_MAX, Attached, MemoryOps, SeqTable
from .settings import CACHE_TYPES, FLASH_ATTN, EngineSettings

if TYPE_CHECKING:
    from .kv import KvLayout

# ChatML, for models whose GGUF carries no chat template
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class NativeHandles:
    vocab: Any
    ctx: Any
    memory: Any


class LlamaEngine(SequenceOps):
    """One loaded model and one context. Not thread-safe: use from one thread at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: EngineSettings | None = None,
        *,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings = settings or EngineSettings()
        self._model: Any = None
        self._ctx: Any = None
        self.warnings: list[str] = []
        self._piece_cache: dict[int, bytes] = {}
        self._eog_cache: list[int] | None = None
        self._chat_formatters: dict[bool, Any] = {}  # the chat template, compiled once (Jinja)
        self._dry_vocab: Any = None
        self._batch: Batch | None = None
        self.seqs = SeqTable(0)  # the sequences the KV cache holds (see tui.engine.sequences)
        self._logits_addr: int | None = None
        self._logits_view: np.ndarray | None = None
        header = read_header(self.path)  # fast validation with a clear message
        ensure_backend()
        self.load_ms, self.context_ms = self._load(on_progress, header.file_size)
        self.info = self._read_info(header.file_size)

    # -- lifecycle ---------------------------------------------------------

    def _load(self, on_progress: Callable[[float], None] | None, file_size: int) -> tuple[float, float]:
        s = self.settings
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = s.n_gpu_layers
        if s.use_mmap and s.use_mlock:
            mparams.load_mode = ll.LLAMA_LOAD_MODE_MMAP_MLOCK
        elif s.use_mmap:
            mparams.load_mode = ll.LLAMA_LOAD_MODE_MMAP
        elif s.use_mlock:
            mparams.load_mode = ll.LLAMA_LOAD_MODE_MLOCK
        else:
            mparams.load_mode = ll.LLAMA_LOAD_MODE_NONE
        if on_progress is not None:

            def _progress(p: float, _user: Any) -> bool:
                try:
                    on_progress(float(p))
                except Exception:
                    pass  # a broken progress display must not abort the load
                return True

            self._progress_cb = ll.llama_progress_callback(_progress)
            mparams.progress_callback = self._progress_cb
        else:
            # llama.cpp's default callback prints dots; a no-op keeps the log clean
            self._progress_cb = ll.llama_progress_callback(lambda p, u: True)
            mparams.progress_callback = self._progress_cb
        mark = LOG.mark
        t0 = time.perf_counter()
        model = ll.llama_model_load_from_file(str(self.path).encode(), mparams)
        t1 = time.perf_counter()
        if not model:
            raise ModelFileError(str(self.path), error_from_log(mark))
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.dims = self._model_dims()
        self._create_context()
        t2 = time.perf_counter()
        return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0

    def _create_context(self) -> None:
        s = self.settings
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = s.n_ctx
        cparams.n_batch = s.n_batch
        cparams.n_ubatch = min(s.n_ubatch, s.n_batch)
        cparams.n_seq_max = SEQ_MAX  # branches are sequences sharing one unified cache of n_ctx cells
        cparams.kv_unified = True
        cparams.n_threads = s.threads
        cparams.n_threads_batch = s.threads_batch
        cparams.type_k = CACHE_TYPES[s.type_k]
        cparams.type_v = CACHE_TYPES[s.type_v]
        cparams.flash_attn_type = FLASH_ATTN[s.flash_attn]
        cparams.swa_full = s.swa_full
        cparams.no_perf = False
        self.warnings = memory.check(self.dims, s.n_ctx, s, memory.available_memory())
        mark = LOG.mark
        ctx = ll.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise ContextError(f"cannot create a context with n_ctx={s.n_ctx}: {error_from_log(mark)}")
        self._ctx = ctx
        self._logits_addr = None  # a new context: a new logits buffer
        self._memory = ll.llama_get_memory(ctx)
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        mem = self._memory
        self.seqs = SeqTable(self.n_ctx, SEQ_MAX, MemoryOps(
            rm=lambda s, p0, p1: ll.llama_memory_seq_rm(mem, s, p0, p1),
            cp=lambda src, dst, p0, p1: ll.llama_memory_seq_cp(mem, src, dst, p0, p1)))
        if self._batch is None or self._batch.capacity != s.n_batch:
            self._free_batch()
            self._batch = Batch(s.n_batch)
        self._context_log = [ln.text for ln in LOG.since(mark)]
        self._kv = None

    # -- memory guard ------------------------------------------------------------------

    def _model_dims(self) -> ModelDims:
        """The model's dimensions for the memory guard (read once per model)."""
        from .kv import head_dims

        m = self._model
        arch = self.meta("general.architecture") or "?"
        n_embd, n_head = int(ll.llama_model_n_embd(m)), int(ll.llama_model_n_head(m))
        head_k, head_v = head_dims(self.meta(f"{arch}.attention.key_length"),
                                   self.meta(f"{arch}.attention.value_length"), n_embd, n_head)
        return ModelDims(arch=arch, n_layer=int(ll.llama_model_n_layer(m)), n_head=n_head,
                         n_head_kv=int(ll.llama_model_n_head_kv(m)), head_k=head_k, head_v=head_v,
                         n_swa=int(ll.llama_model_n_swa(m)), n_vocab=self.n_vocab,
                         n_ctx_train=int(ll.llama_model_n_ctx_train(m)))

    def recreate_context(self, settings: EngineSettings) -> None:
        """Apply new context settings; the model stays loaded (and mapped)."""
        old = self.settings
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
        self.settings = settings
        try:
            self._create_context()
        except EngineError:
            self.settings = old  # put the working context back, then report
            self._create_context()
            raise

    def close(self) -> None:
        """Free the context and the model (their memory is returned to the OS).

        Runs on the engine thread, after whatever it is running: a generation that is
        still finishing there (a stopped run copies its last logits) must never find its
        context freed under it.
        """
        from .thread import engine_thread

        engine_thread().call(self._free)

    def _free_batch(self) -> None:
        if self._batch is not None:
            self._batch.free()
            self._batch = None

    def _free(self) -> None:
        self._free_batch()
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
            self._logits_addr = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None

    @property
    def closed(self) -> bool:
        return self._model is None

    def __enter__(self) -> "LlamaEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_open(self) -> None:
        if self._ctx is None:
            raise EngineError("the engine is closed")

    # -- metadata ------------------------------------------------------------

    def handles(self) -> "NativeHandles":
        """llama.cpp's handles of this engine (vocabulary, context, memory) for code that calls the C API
        on them (the oracle); valid until the context is recreated or the engine closed."""
        self._require_open()
        return NativeHandles(self._vocab, self._ctx, self._memory)

    def meta(self, key: str) -> str | None:
        return meta_value(self._model, key)

    def metadata(self) -> dict[str, str]:
        return all_metadata(self._model)

    def _read_info(self, file_size: int) -> ModelInfo:
        return read_info(self._model, self._vocab, self.path, file_size, self.n_vocab)

    # -- tokens ----------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Text -> token ids. ``add_bos=None`` follows the model's own setting."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: undecodable bytes of a command line
            raise EngineError(f"the text is not valid UTF-8 (at character {exc.start}); "
                              "give text in UTF-8") from None
        tokens = tokenize_bytes(self._vocab, data, add_special=False, parse_special=parse_special)
        if add_bos is None:
            add_bos = self.info.add_bos
        if add_bos and self.info.bos >= 0 and (not tokens or tokens[0] != self.info.bos):
            tokens.insert(0, self.info.bos)
        return tokens

    def piece(self, token: int) -> bytes:
        """The exact bytes of one token (special tokens rendered), cached."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        self._check_token(token)
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_token_to_piece(self._vocab, token, buf, size, 0, True)
            if n < 0:
                size = -n
                continue
            piece = buf.raw[:n]
            self._piece_cache[token] = piece
            return piece

    def _check_token(self, token: int) -> None:
        """llama.cpp aborts the process (std::out_of_range) on an id outside the vocabulary: every
        id that reaches it from here is checked first (ids come from files and clients too)."""
        if not 0 <= token < self.n_vocab:
            raise EngineError(f"token id {token} is outside this model's vocabulary (0..{self.n_vocab - 1})")

    def is_eog(self, token: int) -> bool:
        self._check_token(token)
        return bool(ll.llama_vocab_is_eog(self._vocab, token))

    def is_control(self, token: int) -> bool:
        self._check_token(token)
        return bool(ll.llama_vocab_is_control(self._vocab, token))

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token (EOS, EOT, <end_of_turn>, …), computed once."""
        if self._eog_cache is None:
            self._eog_cache = [t for t in range(self.n_vocab) if self.is_eog(t)]
        return self._eog_cache

    # -- chat ------------------------------------------------------------------------

    @property
    def template_takes_tools(self) -> bool:
        """The model's chat template renders a list of tools itself (it names ``tools``)."""
        return "tools" in (self.info.chat_template or "")

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True,
                    tools: list[dict[str, Any]] | None = None) -> str:
        """The conversation as the model expects it: its own GGUF chat template, rendered with
        llama-cpp-python's Jinja formatter (ChatML when the model has no template); ``tools`` (OpenAI's
        shape) go to a template that takes them."""
        try:
            fmt = self._chat_formatters.get(add_generation_prompt)
            if fmt is None:
                template = self.info.chat_template or CHATML
                bos = self.piece(self.info.bos).decode("utf-8", "replace") if self.info.bos >= 0 else ""
                eos = self.piece(self.info.eos).decode("utf-8", "replace") if self.info.eos >= 0 else ""
                fmt = self._chat_formatters[add_generation_prompt] = ChatFormatter(
                    template, eos_token=eos, bos_token=bos, add_generation_prompt=add_generation_prompt)
            return (fmt(messages=messages, tools=tools) if tools else fmt(messages=messages)).prompt
        except Exception as exc:  # a template that does not render is a user-facing problem
            raise EngineError(f"the chat template does not render: {exc}") from None

    # -- evaluation ------------------------------------------------------------

    @property
    def held(self) -> list[int]:
        """The tokens the active sequence holds, in position order."""
        return self.seqs.held

    @property
    def n_past(self) -> int:
        """Positions in the active sequence (derived from the tokens it holds)."""
        return len(self.seqs.held)

    def decode(self, tokens: Sequence[int], *, should_stop: Callable[[], bool] | None = None) -> float:
        """Evaluate ``tokens`` at the end of the sequence, in n_batch chunks.

        Returns wall milliseconds. Only the last position's logits are computed.
        Raises ContextError when the KV cache is full.
        """
        self._require_open()
        if not tokens:
            return 0.0
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextError(
                f"context full: {self.n_past} + {len(tokens)} tokens > n_ctx {self.n_ctx}"
            )
        if len(tokens) == 1:  # a generated token: every step of every run comes through here
            ids = [int(tokens[0])]
            self._check_token(ids[0])
        else:
            arr = np.ascontiguousarray(tokens, dtype=np.int64)
            if arr.min() < 0 or arr.max() >= self.n_vocab:
                self._check_token(int(arr[(arr < 0) | (arr >= self.n_vocab)][0]))
            ids = arr.tolist()
        t0 = time.perf_counter()
        step = self.settings.n_batch
        for start in range(0, len(ids), step):
            if should_stop is not None and start and should_stop():
                break
            chunk = ids[start:start + step]
            self._decode_chunk(chunk)
            self.seqs.appended(chunk)
        return (time.perf_counter() - t0) * 1000.0

    def _decode_chunk(self, chunk: list[int]) -> None:
        """One llama_decode of ``chunk`` at the end of the active sequence. A cache full of other branches'
        cells gives way: the least recently used branch is evicted (its key noted) and the decode retried."""
        assert self._batch is not None
        while True:
            rc = self._batch.run(self._ctx, chunk, self.n_past, self.seqs.active)
            if rc == 1 and self.seqs.others():
                self.seqs.evicted.append(self.seqs.evict_one())
                continue
            if rc == 1:
                raise ContextError(f"context full: no KV slot for {len(chunk)} tokens "
                                   f"(n_past {self.n_past}, n_ctx {self.n_ctx})")
            if rc != 0:
                raise EngineError(f"llama_decode failed with code {rc}: {error_from_log(LOG.mark - 5)}")
            return

    def evaluate_all(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits for every position of ``tokens`` (a fresh sequence), shape (n, n_vocab), float32.

        Each chunk of n_batch tokens is one llama_decode with every position's
        output requested (what llama-perplexity does); the cache is cleared first.
        """
        self._require_open()
        self.clear()
        n = len(tokens)
        if n > self.n_ctx:
            raise ContextError(f"{n} tokens do not fit n_ctx {self.n_ctx}")
        for tok in tokens:
            self._check_token(tok)
        out = np.empty((n, self.n_vocab), dtype=np.float32)
        step = min(self.settings.n_batch, self.settings.n_ubatch)
        batch = Batch(step)
        try:
            for start in range(0, n, step):
                chunk = [int(t) for t in tokens[start:start + step]]
                rc = batch.run(self._ctx, chunk, start, 0, all_logits=True)
                if rc != 0:
                    raise EngineError(f"llama_decode failed with code {rc} while evaluating")
                for i in range(len(chunk)):
                    ptr = ll.llama_get_logits_ith(self._ctx, i)
                    out[start + i] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        finally:
            batch.free()
        self.seqs.replaced(tokens)
        return out

    def logits(self) -> np.ndarray:
        """Zero-copy float32 view of the last evaluated position's logits.

        Valid until the next ``decode``; copy what must outlive it.
        """
        ptr = ll.llama_get_logits_ith(self._ctx, -1)
        if not ptr:
            raise EngineError("no logits: nothing has been decoded yet")
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        if addr != self._logits_addr:  # building the view costs ~80 µs a token; the buffer rarely moves
            self._logits_view = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            self._logits_addr = addr
        return self._logits_view

    # -- KV memory -------------------------------------------------------------

    def clear(self) -> None:
        """Empty the KV cache, every sequence (a new conversation)."""
        self._require_open()
        ll.llama_memory_clear(self._memory, True)
        self.seqs.reset()

    def truncate(self, n_keep: int) -> None:
        """Drop every position >= n_keep of the active sequence (to re-use a common prefix)."""
        self._require_open()
        if n_keep >= self.n_past:
            return
        if not ll.llama_memory_seq_rm(self._memory, self.seqs.active, n_keep, -1):
            raise EngineError("this model's memory cannot be truncated (recurrent?)")
        self.seqs.truncated(n_keep)

    def can_shift(self) -> bool:
        return bool(ll.llama_memory_can_shift(self._memory))

    def shift(self, n_keep: int, n_discard: int) -> None:
        """llama.cpp's context shift: drop [n_keep, n_keep+n_discard) and slide the rest left. A cell has one
        position for every sequence holding it, so the other branches are evicted first (noted)."""
        self._require_open()
        if not self.can_shift():
            raise EngineError("this model's cache cannot shift positions")
        while self.seqs.others():
            self.seqs.evicted.append(self.seqs.evict_one())
        seq = self.seqs.active
        ll.llama_memory_seq_rm(self._memory, seq, n_keep, n_keep + n_discard)
        ll.llama_memory_seq_add(self._memory, seq, n_keep + n_discard, self.n_past, -n_discard)
        self.seqs.truncated(n_keep, n_keep + n_discard)

    # -- sequences: branches sharing the cache (see tui.engine.sequences) ----------------------------------

    def attach(self, tokens: Sequence[int], key: Any = None, *, reserve: int = 0) -> Attached:
        """Make the active sequence hold the longest cached prefix of ``tokens`` (shared cells, nothing
        copied); decode ``Attached.evaluate`` to complete it."""
        self._require_open()
        for tok in tokens:
            self._check_token(int(tok))
        return self.seqs.attach(tokens, key, reserve=reserve)

    def kv_layout(self) -> "KvLayout":
        """The KV cache's dimensions and the bytes llama.cpp allocated for it."""
        if self._kv is None:
            from .kv import layout_for

            info = self.info
            self._kv = layout_for(
                self.metadata(), n_layer=info.n_layer, n_head=info.n_head, n_head_kv=info.n_head_kv,
                n_embd=info.n_embd, type_k=self.settings.type_k, type_v=self.settings.type_v,
                n_ctx=self.n_ctx, log_lines=self._context_log,
            )
        return self._kv

    # -- sampling ------------------------------------------------------------------

    def build_context(self, seed: int) -> Any:
        """What a sampler chain needs from this model (see ``tui.sampling.presets``)."""
        from ..sampling.presets import BuildContext
        from ..sampling.samplers import DryVocab

        if self._dry_vocab is None:
            self._dry_vocab = DryVocab(self.n_vocab, self.piece, lambda s: self.tokenize(s, add_bos=False))
        return BuildContext(n_vocab=self.n_vocab, seed=seed, n_ctx=self.n_ctx, dry_vocab=self._dry_vocab)
