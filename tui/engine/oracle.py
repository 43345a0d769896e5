"""llama.cpp's own samplers, as the reference (oracle) for the pure-Python chain: the identity tests and
the benchmarks build the same chain in C and compare."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..sampling.samplers import SAMPLERS
from ..sampling.schema import Param
from .binding import ll
from .errors import EngineError


def _native_init(name: str, params: dict[str, Any], vocab: Any, n_vocab: int) -> Any:
    """llama.cpp's sampler ``name``, built as the sampler class declares (``native``), with the declared
    defaults for what ``params`` leaves out and seed 0 when it has none."""
    cls = SAMPLERS.get(name)
    if cls is None or cls.native is None:
        raise EngineError(f"llama.cpp has no sampler named {name!r}")
    p = {key: param.default for key, param in cls.schema.items()} | {"seed": 0} | params
    args = [_native_arg(arg, p, cls.schema, vocab, n_vocab) for arg in cls.native.args]
    return getattr(ll, f"llama_sampler_init_{cls.native.init}")(*args)


def _native_arg(arg: str, p: dict[str, Any], schema: Mapping[str, Param], vocab: Any, n_vocab: int) -> Any:
    """One C argument, named as in :class:`~tui.sampling.schema.Native`."""
    if arg == "vocab":
        return vocab
    if arg == "n_vocab":
        return n_vocab
    if arg == "seed":
        return int(p["seed"]) & 0xFFFFFFFF  # uint32_t in C
    if arg.startswith("len(") and arg.endswith(")"):
        return len(p[arg[4:-1]])
    value, kind = p[arg], schema[arg].kind
    if kind is list:  # const char ** (llama.cpp copies the strings)
        return (ctypes.c_char_p * len(value))(*(s.encode() for s in value))
    if kind is dict:  # llama_logit_bias[]: token id -> bias
        arr = (ll.llama_logit_bias * len(value))()
        for i, (tok, bias) in enumerate(value.items()):
            arr[i].token = int(tok)
            arr[i].bias = float(bias)
        return arr
    return value


class NativeSampler:
    """A llama.cpp sampler chain built from ``(name, params)`` specs."""

    def __init__(self, specs: Iterable[tuple[str, dict[str, Any]]], *, vocab: Any, n_vocab: int) -> None:
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        self.ptr = ll.llama_sampler_chain_init(params)
        self.n_vocab = n_vocab
        for name, p in specs:
            ll.llama_sampler_chain_add(self.ptr, _native_init(name, p, vocab, n_vocab))

    def accept(self, token: int) -> None:
        ll.llama_sampler_accept(self.ptr, token)

    def reset(self) -> None:
        ll.llama_sampler_reset(self.ptr)

    def apply(self, ids: np.ndarray, logits: np.ndarray, *, sorted: bool = False) -> dict[str, Any]:
        """Apply the chain to candidates (ids, logits); return llama.cpp's view of them afterwards."""
        n = len(ids)
        data = (ll.llama_token_data * n)()
        view = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_byte)), shape=(n * 12,))
        rec = view.view(np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        rec["id"] = ids
        rec["logit"] = logits
        rec["p"] = 0.0
        arr = ll.llama_token_data_array(data, n, -1, sorted)
        ll.llama_sampler_apply(self.ptr, ctypes.byref(arr))
        size = int(arr.size)
        # samplers may re-point arr.data (e.g. to a sorted buffer of their own)
        out_view = np.ctypeslib.as_array(ctypes.cast(arr.data, ctypes.POINTER(ctypes.c_byte)), shape=(size * 12,))
        out = out_view.view(np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])).copy()
        return {
            "ids": out["id"],
            "logits": out["logit"],
            "probs": out["p"],
            "selected": int(arr.selected),
            "sorted": bool(arr.sorted),
        }

    def close(self) -> None:
        if self.ptr:
            ll.llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # best effort; tests create many
        try:
            self.close()
        except Exception:
            pass


def native_chain(engine: Any, specs: Iterable[tuple[str, dict[str, Any]]]) -> NativeSampler:
    """llama.cpp's chain for ``specs`` on ``engine``'s vocabulary (a loaded :class:`~tui.engine.llama.LlamaEngine`)."""
    return NativeSampler(specs, vocab=engine.handles().vocab, n_vocab=engine.n_vocab)


def native_sample(engine: Any, sampler: NativeSampler) -> int:
    """Sample with llama.cpp's chain straight from ``engine``'s context (no Python in the loop)."""
    return int(ll.llama_sampler_sample(sampler.ptr, engine.handles().ctx, -1))


# -- llama.cpp's own account of what the engine did (our bookkeeping is checked against it) --------------


@dataclass(frozen=True, slots=True)
class PerfCounters:
    t_load_ms: float
    t_prompt_ms: float
    t_eval_ms: float
    n_prompt: int
    n_eval: int


def perf_counters(engine: Any) -> PerfCounters:
    """llama.cpp's performance counters of ``engine``'s context (``llama_perf_context``)."""
    d = ll.llama_perf_context(engine.handles().ctx)
    return PerfCounters(d.t_load_ms, d.t_p_eval_ms, d.t_eval_ms, d.n_p_eval, d.n_eval)


def perf_reset(engine: Any) -> None:
    ll.llama_perf_context_reset(engine.handles().ctx)


def cache_pos_max(engine: Any) -> int:
    """The highest position llama.cpp's KV cache holds for sequence 0 (``llama_memory_seq_pos_max``)."""
    return int(ll.llama_memory_seq_pos_max(engine.handles().memory, 0))
