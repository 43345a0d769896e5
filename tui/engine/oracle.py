"""llama.cpp's own samplers, as the reference (oracle) for the pure-Python chain: the identity tests and
the benchmarks build the same chain in C and compare."""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

import numpy as np

from .binding import ll
from .errors import EngineError

def _native_init(name: str, p: dict[str, Any], vocab: Any, n_vocab: int) -> Any:
    if name == "greedy":
        return ll.llama_sampler_init_greedy()
    if name == "dist":
        return ll.llama_sampler_init_dist(p.get("seed", 0) & 0xFFFFFFFF)
    if name == "top_k":
        return ll.llama_sampler_init_top_k(p["k"])
    if name == "top_p":
        return ll.llama_sampler_init_top_p(p["p"], p.get("min_keep", 1))
    if name == "min_p":
        return ll.llama_sampler_init_min_p(p["p"], p.get("min_keep", 1))
    if name == "typical":
        return ll.llama_sampler_init_typical(p["p"], p.get("min_keep", 1))
    if name == "temp":
        return ll.llama_sampler_init_temp(p["t"])
    if name == "temp_ext":
        return ll.llama_sampler_init_temp_ext(p["t"], p.get("delta", 0.0), p.get("exponent", 1.0))
    if name == "xtc":
        return ll.llama_sampler_init_xtc(p["probability"], p["threshold"], p.get("min_keep", 1), p.get("seed", 0) & 0xFFFFFFFF)
    if name == "top_n_sigma":
        return ll.llama_sampler_init_top_n_sigma(p["n"])
    if name == "mirostat":
        return ll.llama_sampler_init_mirostat(n_vocab, p.get("seed", 0) & 0xFFFFFFFF, p["tau"], p["eta"], p.get("m", 100))
    if name == "mirostat_v2":
        return ll.llama_sampler_init_mirostat_v2(p.get("seed", 0) & 0xFFFFFFFF, p["tau"], p["eta"])
    if name == "penalties":
        return ll.llama_sampler_init_penalties(
            n_vocab, p.get("last_n", 64), p.get("repeat", 1.0), p.get("frequency", 0.0), p.get("presence", 0.0)
        )
    if name == "dry":
        breakers = [b.encode() for b in p.get("sequence_breakers", ["\n", ":", '"', "*"])]
        arr = (ctypes.c_char_p * len(breakers))(*breakers)
        return ll.llama_sampler_init_dry(
            vocab, p["multiplier"], p.get("base", 1.75), p.get("allowed_length", 2),
            p.get("penalty_last_n", 64), arr, len(breakers),
        )
    if name == "logit_bias":
        bias = p.get("bias", {})
        arr = (ll.llama_logit_bias * len(bias))()
        for i, (tok, val) in enumerate(bias.items()):
            arr[i].token = int(tok)
            arr[i].bias = float(val)
        return ll.llama_sampler_init_logit_bias(n_vocab, len(bias), arr)
    if name == "adaptive_p":
        return ll.llama_sampler_init_adaptive_p(p["target"], p["decay"], p.get("seed", 0) & 0xFFFFFFFF)
    raise EngineError(f"llama.cpp has no sampler named {name!r}")


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
    return NativeSampler(specs, vocab=engine._vocab, n_vocab=engine.n_vocab)


def native_sample(engine: Any, sampler: NativeSampler) -> int:
    """Sample with llama.cpp's chain straight from ``engine``'s context (no Python in the loop)."""
    return int(ll.llama_sampler_sample(sampler.ptr, engine._ctx, -1))
