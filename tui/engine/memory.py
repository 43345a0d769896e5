"""The memory guard: will a context fit? Pure arithmetic over a model's dimensions and the settings.

llama.cpp allocates the whole KV cache (and its compute buffers) when a
context is created; asking for more than the machine has ends in an OOM kill,
not an error. So a context is checked first: refused with the largest n_ctx
that would fit (a figure the caller can use: :attr:`ContextError.largest_n_ctx`),
or accepted with the warnings it deserves.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ContextError
from .kv import CTX_PAD, computed_allocation
from .settings import EngineSettings


@dataclass(frozen=True, slots=True)
class ModelDims:
    """What the guard needs of a loaded model (read once, after loading)."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    head_k: int
    head_v: int
    n_swa: int
    n_vocab: int
    n_ctx_train: int


def estimate_bytes(dims: ModelDims, n_ctx: int, settings: EngineSettings) -> tuple[int, int]:
    """(KV cache bytes, compute buffer bytes) a context of ``n_ctx`` would need (an upper estimate),
    with ``settings``' cache types and batch sizes."""
    s = settings
    kv, _full, _swa = computed_allocation(
        arch=dims.arch, n_layer=dims.n_layer, n_head_kv=dims.n_head_kv, head_dim_k=dims.head_k,
        head_dim_v=dims.head_v, type_k=s.type_k, type_v=s.type_v, n_ctx=n_ctx,
        n_ubatch=min(s.n_ubatch, s.n_batch), n_swa=dims.n_swa, swa_full=s.swa_full)
    ub = min(s.n_ubatch, s.n_batch, n_ctx)
    # logits for a micro-batch, plus attention scores (one head at a time with flash attention off)
    compute = ub * dims.n_vocab * 4 + ub * min(n_ctx, 1 << 20) * 4 * max(1, dims.n_head) // 2 + (64 << 20)
    return kv, compute


def largest_fitting(dims: ModelDims, settings: EngineSettings, available: int, below: int) -> int:
    """The largest n_ctx (a multiple of llama.cpp's padding, below ``below``) whose cache and buffers fit."""
    lo, hi = CTX_PAD, below
    while hi - lo > CTX_PAD:
        mid = (lo + hi) // 2 // CTX_PAD * CTX_PAD
        if sum(estimate_bytes(dims, mid, settings)) <= available:
            lo = mid
        else:
            hi = mid
    return lo


def check(dims: ModelDims, n_ctx: int, settings: EngineSettings, available: int) -> list[str]:
    """The warnings a context of ``n_ctx`` deserves; :class:`ContextError` (with ``largest_n_ctx``) when its
    KV cache and buffers need more than ``available`` bytes."""
    kv, compute = estimate_bytes(dims, n_ctx, settings)
    warnings = []
    if n_ctx > dims.n_ctx_train:
        warnings.append(f"n_ctx {n_ctx:,} is beyond the model's training context {dims.n_ctx_train:,}: "
                        "expect degraded output past it")
    if kv + compute <= available:
        return warnings
    largest = largest_fitting(dims, settings, available, n_ctx)
    gib = 2**30
    raise ContextError(
        f"n_ctx {n_ctx:,} needs ~{kv / gib:.1f} GiB of KV cache (+{compute / gib:.1f} GiB of buffers) but only "
        f"{available / gib:.1f} GiB of memory is available: the largest n_ctx that fits is about {largest:,}",
        largest_n_ctx=largest, needed=kv + compute, available=available)


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)
