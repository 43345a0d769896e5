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


def max_threads() -> int:
    """The most threads a setting may ask for: the machine's logical CPUs × 4.

    llama.cpp starts every thread it is told to and spin-waits them between
    tokens: ``--threads 10000`` hung this kind of machine for an hour and
    ``100000`` crashed llama.cpp. A few per logical CPU is already far past
    where generation stops getting faster.
    """
    return logical_cpus() * THREADS_PER_CPU


def logical_cpus() -> int:
    """Logical CPUs this process may run on (its affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


THREADS_PER_CPU = 4
MAX_CTX = 1 << 22  # 4,194,304 tokens: beyond any model's training context
MAX_BATCH = 1 << 16
MAX_GPU_LAYERS = 10_000  # more than any model has: llama.cpp caps it at the model's layer count
MAX_TOKENS = 1_000_000  # tokens one run may generate: bounded work, even with a context shift
SEED_MAX = 0xFFFFFFFF  # llama.cpp's seeds are 32-bit; -1 (= 0xFFFFFFFF) asks for a random one

# field -> (type, lowest, highest or None). Checked once, where settings are made (CLI, config,
# a recording's header, the settings screen): a wrong type or range names the field.
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "n_ctx": (8, MAX_CTX),
    "n_threads": (0, None),  # highest: max_threads(), read when checked
    "n_threads_batch": (0, None),
    "n_batch": (1, MAX_BATCH),
    "n_ubatch": (1, MAX_BATCH),
    "n_gpu_layers": (-1, MAX_GPU_LAYERS),
    "seed": (-1, SEED_MAX),
}
_BOOLS = ("use_mmap", "use_mlock", "swa_full")


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
        for name, (lo, hi) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise EngineError(f"{name}: expected a whole number, got {value!r}")
            if name in ("n_threads", "n_threads_batch"):
                hi = max_threads()
                if value > hi:
                    raise EngineError(f"{name}: {value:,} threads is more than this machine can use (at most "
                                      f"{hi} = {logical_cpus()} logical CPUs × {THREADS_PER_CPU}; 0 = "
                                      "automatic)")
            if value < lo or (hi is not None and value > hi):
                if name == "n_ctx" and value > lo:
                    raise EngineError(f"n_ctx {value:,} is impossible here (max {MAX_CTX:,})")
                what = " (-1: a random seed)" if name == "seed" else " (0: automatic)" if "threads" in name else ""
                raise EngineError(f"{name}: {value:,} is outside {lo:,}..{hi:,}{what}" if hi is not None
                                  else f"{name}: {value:,} must be at least {lo}{what}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise EngineError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        for name in ("type_k", "type_v", "flash_attn"):
            if not isinstance(getattr(self, name), str):
                raise EngineError(f"{name}: expected a name, got {getattr(self, name)!r:.60}")
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
    def from_dict(cls, values: Any, *, strict: bool = False) -> "EngineSettings":
        """Settings from untrusted key/values (a config file's [engine], a recording's header).

        Every value is checked (type and range); ``strict``: unknown keys are an error (a config
        file: a typo must not pass silently), else ignored (a recording from another version).
        Thread counts above what this machine allows are lowered to it when not ``strict``: a
        recording made on a larger machine still replays here. Raises EngineError naming the field.
        """
        if not isinstance(values, dict):
            raise EngineError(f"expected a table of engine settings, got {type(values).__name__}")
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        unknown = sorted(str(k) for k in values if k not in cls.__dataclass_fields__)
        if strict and unknown:
            raise EngineError(f"unknown setting(s): {', '.join(unknown)} (known: {', '.join(cls.__dataclass_fields__)})")
        if not strict:
            for name in ("n_threads", "n_threads_batch"):
                v = known.get(name)
                if isinstance(v, int) and not isinstance(v, bool) and v > max_threads():
                    known[name] = max_threads()
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_threads"] = self.threads
        d["n_threads_batch"] = self.threads_batch
        return d
