"""KV-cache accounting from the model's real dimensions and the cache types.

Every layer stores, per token, a key and a value vector for each KV head:
``n_head_kv * head_dim_k`` elements of ``type_k`` plus ``n_head_kv *
head_dim_v`` of ``type_v``. Quantized cache types store blocks (q8_0: 34 bytes
per 32 elements). llama.cpp rounds the context up (to 256 cells) and gives
sliding-window (SWA) layers a cache of their own, smaller one; the bytes it
actually allocated are in its log (``llama_kv_cache: size = … MiB``), which we
read back and prefer for "allocated".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .gguf_header import ggml_type_info
from .settings import CACHE_TYPES

_SIZE_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers")
CTX_PAD = 256  # llama.cpp rounds n_ctx up to a multiple of this

# Sliding-window architectures: llama.cpp marks layer il as SWA when il % pattern < pattern - 1
# (set_swa_pattern); the pattern is in llama.cpp's code, not in the GGUF.
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "llama4": 4}


def padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


def type_bytes(cache_type: str, n_elements: int) -> float:
    """Bytes for ``n_elements`` of a cache type (fractional for block-quantized types)."""
    _name, block, size = ggml_type_info(CACHE_TYPES[cache_type])
    return n_elements * size / block


@dataclass(frozen=True, slots=True)
class KvLayout:
    n_layer: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    type_k: str
    type_v: str
    n_ctx: int
    allocated_log: int | None = None  # bytes llama.cpp reported allocating (all caches)
    cells_log: tuple[int, ...] = ()  # cells per cache, from the log

    @property
    def bytes_per_token(self) -> float:
        k = type_bytes(self.type_k, self.n_head_kv * self.head_dim_k)
        v = type_bytes(self.type_v, self.n_head_kv * self.head_dim_v)
        return self.n_layer * (k + v)

    @property
    def allocated(self) -> int:
        if self.allocated_log is not None:
            return self.allocated_log
        return int(self.bytes_per_token * self.n_ctx)

    def used(self, n_past: int) -> int:
        return int(self.bytes_per_token * n_past)


def computed_allocation(*, arch: str, n_layer: int, n_head_kv: int, head_dim_k: int, head_dim_v: int,
                        type_k: str, type_v: str, n_ctx: int, n_ubatch: int = 512, n_swa: int = 0,
                        swa_full: bool = True) -> tuple[int, int, int]:
    """(bytes, full-context layers, sliding-window layers) llama.cpp allocates for the KV cache.

    Full-context layers get ``padded_ctx(n_ctx)`` cells; sliding-window layers
    (Gemma 3: 5 of every 6) get as many when ``swa_full`` (llama.cpp's
    default), else ``pad(min(n_ctx, n_swa + n_ubatch))`` cells.
    """
    ctx = padded_ctx(n_ctx)
    per_cell = type_bytes(type_k, n_head_kv * head_dim_k) + type_bytes(type_v, n_head_kv * head_dim_v)
    pattern = SWA_PATTERN.get(arch, 0) if n_swa else 0
    # every pattern-th layer is full-context, the others slide (counted, not looped: n_layer is from the file)
    n_swa_layers = (n_layer // pattern) * (pattern - 1) + min(n_layer % pattern, pattern - 1) if pattern else 0
    n_full = n_layer - n_swa_layers
    swa_cells = ctx if swa_full else padded_ctx(min(ctx, n_swa + n_ubatch))
    total = per_cell * (n_full * ctx + n_swa_layers * swa_cells)
    return int(total), n_full, n_swa_layers


def parse_kv_log(lines: list[str]) -> tuple[int, tuple[int, ...]] | None:
    """Total bytes and cells from llama.cpp's ``llama_kv_cache: size = …`` lines."""
    total, cells = 0.0, []
    for line in lines:
        m = _SIZE_LINE.search(line)
        if m:
            total += float(m.group(1)) * 2**20
            cells.append(int(m.group(2)))
    if not cells:
        return None
    return int(round(total)), tuple(cells)


def head_dims(key_length: Any, value_length: Any, n_embd: int, n_head: int) -> tuple[int, int]:
    """Key and value head sizes: the GGUF's attention.key_length / value_length, else n_embd / n_head."""
    k = int(key_length or (int(n_embd) // max(int(n_head), 1)))
    return k, int(value_length or k)


def layout_for(meta: dict[str, str], *, n_layer: int, n_head: int, n_head_kv: int, n_embd: int,
               type_k: str, type_v: str, n_ctx: int, log_lines: list[str] | None = None) -> KvLayout:
    arch = meta.get("general.architecture", "")
    head_k, head_v = head_dims(meta.get(f"{arch}.attention.key_length"),
                               meta.get(f"{arch}.attention.value_length"), n_embd, n_head)
    parsed = parse_kv_log(log_lines or [])
    return KvLayout(
        n_layer=n_layer, n_head_kv=n_head_kv, head_dim_k=head_k, head_dim_v=head_v,
        type_k=type_k, type_v=type_v, n_ctx=n_ctx,
        allocated_log=parsed[0] if parsed else None, cells_log=parsed[1] if parsed else (),
    )


def figures_for(arch: str, hyper: dict[str, Any], n_ctx: int, cache_type: str) -> dict[str, Any]:
    """The KV cache a model needs at ``n_ctx`` from its GGUF hyperparameters alone (no model loaded):
    what ``llmtui inspect`` prints. ``hyper``: :attr:`~tui.engine.anatomy.Anatomy.hyper` (a value
    the file gave as text is no figure and is left out)."""
    h = {k: v for k, v in hyper.items() if not isinstance(v, str)}
    n_head = int(h.get("attention heads", 1) or 1)
    n_head_kv = h.get("KV heads", n_head)
    n_head_kv = int(max(n_head_kv) if isinstance(n_head_kv, list) else n_head_kv)
    head_k, head_v = head_dims(h.get("key head size"), h.get("value head size"), int(h.get("embedding size", 0)),
                               n_head)
    dims = dict(n_layer=int(h.get("layers", 0)), n_head_kv=n_head_kv, head_dim_k=head_k, head_dim_v=head_v,
                type_k=cache_type, type_v=cache_type, n_ctx=n_ctx)
    total, full, swa = computed_allocation(arch=arch, n_swa=int(h.get("sliding window", 0) or 0), **dims)
    return {"n_ctx": padded_ctx(n_ctx), "cache_type": cache_type, "bytes": total,
            "bytes_per_token": KvLayout(**dims).bytes_per_token, "full_layers": full, "swa_layers": swa}
