"""Quantization with llama.cpp (``llama_model_quantize``): re-quantize or dequantize a GGUF file."""

from __future__ import annotations

import ctypes
import os

from .binding import LOG, ensure_backend, error_from_log, ll
from .errors import EngineError
from .gguf_header import read_header

QUANT_TYPES: dict[str, int] = {
    "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
    "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18,
}


def quantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str, *,
             threads: int = 0) -> list[str]:
    """Write ``src`` re-quantized to ``qtype`` at ``dst``; returns llama.cpp's log of it.

    Requantizing is allowed (our embedded sources are already quantized).
    """
    key = qtype.lower()
    if key not in QUANT_TYPES:
        raise EngineError(f"unsupported quantization type {qtype!r} (one of {', '.join(QUANT_TYPES)})")
    read_header(src)  # a clear error for a bad input file
    ensure_backend()
    params = ll.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = QUANT_TYPES[key]
    params.allow_requantize = True
    mark = LOG.mark
    rc = ll.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    lines = [ln.text for ln in LOG.since(mark)]
    if rc != 0:
        raise EngineError(f"{src}: quantization to {qtype} failed: {error_from_log(mark)}")
    return lines
