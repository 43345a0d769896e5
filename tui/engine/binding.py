"""The only module that imports ``llama_cpp``: llama.cpp's C API through llama-cpp-python's ctypes
bindings (not its high-level ``Llama`` class), and what is process-wide about it.

* llama.cpp's log goes to an in-memory :class:`LogRing` via ``llama_log_set``.
  ``Llama(verbose=False)`` would instead redirect the process's fd 1/2 while
  loading, which blanks a running Textual screen; we never touch the fds.
* the backend is initialised once;
* what this build can do (GPU offload, mmap, mlock) and what it is.

The engine (:mod:`tui.engine.llama`), the oracle (:mod:`tui.engine.oracle`),
quantization (:mod:`tui.engine.quantize`) and grammars (:mod:`tui.engine.grammar`)
reach the C API as ``binding.ll``.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp as ll
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from .logring import LogRing

__all__ = ["JSON_GBNF", "LOG", "ChatFormatter", "error_from_log", "ensure_backend", "grammar_rejects",
           "grammar_sampler", "json_schema_to_gbnf", "ll", "llama_cpp_version", "supports_gpu_offload",
           "supports_mlock", "supports_mmap", "system_info", "tokenize_bytes"]

ChatFormatter = Jinja2ChatFormatter  # renders a GGUF's chat template (Jinja), as llama-cpp-python does

# log capture: installed at import, before any model is touched

LOG = LogRing()


@ll.llama_log_callback
def _on_log(level: int, text: bytes, user_data: Any) -> None:
    try:
        LOG.write(level, text.decode("utf-8", errors="replace") if text else "")
    except Exception:  # never let a log line raise inside a C callback
        return


ll.llama_log_set(_on_log, ctypes.c_void_p(0))
_backend_ready = False


def ensure_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        ll.llama_backend_init()
        _backend_ready = True


def llama_cpp_version() -> str:
    return getattr(ll, "__version__", "?")


def system_info() -> str:
    ensure_backend()
    return (ll.llama_print_system_info() or b"").decode("utf-8", errors="replace").strip()


def supports_gpu_offload() -> bool:
    ensure_backend()
    return bool(ll.llama_supports_gpu_offload())


def supports_mmap() -> bool:
    return bool(ll.llama_supports_mmap())


def supports_mlock() -> bool:
    return bool(ll.llama_supports_mlock())


def tokenize_bytes(vocab: Any, data: bytes, *, add_special: bool, parse_special: bool) -> list[int]:
    """``llama_tokenize`` of UTF-8 ``data`` into a buffer large enough (it says how large when it is not)."""
    n_max = len(data) + 8
    buf = (ctypes.c_int32 * n_max)()
    n = ll.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, parse_special)
    if n < 0:
        n_max = -n
        buf = (ctypes.c_int32 * n_max)()
        n = ll.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, parse_special)
    return list(buf[:n])


def error_from_log(mark: int) -> str:
    """The most telling error line llama.cpp logged since ``mark``."""
    lines = LOG.since(mark)
    for wanted in ("error", "warn"):
        picked = [ln.text.strip() for ln in lines if ln.level == wanted and ln.text.strip()]
        # "llama_model_load: error loading model: <reason>" -> "<reason>"; the generic
        # "…_impl: failed to load model" that llama.cpp logs after it says nothing more
        for sep in ("error loading model: ", "failed to load model: "):
            reasons = [t.split(sep, 1)[1] for t in picked if sep in t]
            if reasons:
                return reasons[-1]
        if picked:
            return picked[-1]
    return "llama.cpp refused it (see the log)"


# -- llama.cpp's grammar engine (GBNF), for tui.engine.grammar --------------------------------------------
# JSON_GBNF (any JSON object: response_format json_object) and json_schema_to_gbnf (a JSON schema, as text, to
# GBNF) are llama-cpp-python's own, re-exported from here so that no other module imports llama_cpp.

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # struct llama_token_data


def grammar_sampler(vocab: Any, gbnf: str, root: str) -> Any:
    """llama.cpp's grammar sampler (``llama_sampler_init_grammar``) for GBNF text starting at rule ``root``.

    llama.cpp returns NULL for a grammar it cannot use: that raises ValueError with the reason it logged
    (its parser prints the details to stderr, which we cannot capture without touching fd 2)."""
    mark = LOG.mark
    ptr = ll.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), root.encode("utf-8"))
    if not ptr:
        raise ValueError(error_from_log(mark))
    return ptr


def grammar_rejects(sampler: Any, ids: np.ndarray) -> np.ndarray:
    """Which of the token ``ids`` the grammar ``sampler`` rejects as the next token (bool mask).

    ``llama_sampler_apply`` on a candidate array of these ids: the grammar sets the logit of every token it
    rejects to -inf and leaves the others (all 0 here) alone, so the mask does not depend on any logit. The
    ids must lie inside the vocabulary (llama.cpp aborts on others)."""
    n = len(ids)
    data = np.zeros(n, _TOKEN_DATA)
    data["id"] = ids
    arr = ll.llama_token_data_array(data.ctypes.data_as(ctypes.POINTER(ll.llama_token_data)), n, -1, False)
    ll.llama_sampler_apply(sampler, ctypes.byref(arr))
    return data["logit"] == -np.inf
