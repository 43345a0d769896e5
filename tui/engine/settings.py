"""Engine settings: every knob llama.cpp exposes that the app lets the user turn."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import EngineError

# KV cache element types llama.cpp accepts for type_k / type_v (ggml_type ids).
CACHE_TYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "bf16": 30,
}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


def default_threads() -> int:
    """Physical cores: llama.cpp's threads spin-wait, so hyper-threads rarely help."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail in odd containers
        n = None
    return max(1, n or os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    n_ctx: int = 2048
    n_threads: int = 0  # 0 = default_threads()
    n_threads_batch: int = 0  # 0 = same as n_threads
    n_batch: int = 512
    n_ubatch: int = 512
    use_mmap: bool = True
    use_mlock: bool = False
    n_gpu_layers: int = 0
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = True  # full-size cache for sliding-window layers (llama.cpp's default)
    seed: int = 42

    def __post_init__(self) -> None:
        if self.n_ctx < 8:
            raise EngineError(f"n_ctx must be at least 8 (got {self.n_ctx})")
        if self.n_ctx > 1 << 22:
            raise EngineError(f"n_ctx {self.n_ctx:,} is impossible here (max {1 << 22:,})")
        if self.n_batch < 1 or self.n_ubatch < 1:
            raise EngineError("n_batch and n_ubatch must be positive")
        if self.n_threads < 0 or self.n_threads_batch < 0:
            raise EngineError("thread counts must be positive (0 = automatic)")
        for name in ("type_k", "type_v"):
            if getattr(self, name) not in CACHE_TYPES:
                raise EngineError(f"{name} must be one of {', '.join(CACHE_TYPES)} (got {getattr(self, name)!r})")
        if self.flash_attn not in FLASH_ATTN:
            raise EngineError(f"flash_attn must be auto, on or off (got {self.flash_attn!r})")

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()

    @property
    def threads_batch(self) -> int:
        return self.n_threads_batch or self.threads

    def with_(self, **changes: Any) -> "EngineSettings":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EngineSettings":
        """Settings from ``as_dict`` output (a recording's header); unknown keys are ignored."""
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_threads"] = self.threads
        d["n_threads_batch"] = self.threads_batch
        return d
