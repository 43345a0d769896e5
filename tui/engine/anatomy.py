"""A model's anatomy (what Netron shows): tensors by layer, bytes by type, hyperparameters.

Read with ``gguf.GGUFReader`` — llama.cpp's own Python reader — not a
hand-written parser. It parses every metadata array (~4 s for SmolLM2's
vocabulary), so results are cached per (path, size, mtime) in the user cache.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..safe_text import visible
from .errors import ModelFileError
from .gguf_header import totals_by_type

_LAYER = re.compile(r"^blk\.(\d+)\.")
_CACHE_VERSION = 2  # 2: float32 metadata stored as the number it was written as
HYPER_KEYS = [
    ("block_count", "layers"),
    ("attention.head_count", "attention heads"),
    ("attention.head_count_kv", "KV heads"),
    ("embedding_length", "embedding size"),
    ("feed_forward_length", "feed-forward size"),
    ("context_length", "training context"),
    ("attention.key_length", "key head size"),
    ("attention.value_length", "value head size"),
    ("attention.sliding_window", "sliding window"),
    ("rope.dimension_count", "RoPE dimensions"),
    ("rope.freq_base", "RoPE base frequency"),
    ("rope.scaling.type", "RoPE scaling"),
    ("rope.scaling.factor", "RoPE scaling factor"),
    ("attention.layer_norm_rms_epsilon", "RMS norm epsilon"),
]


def bits_per_weight(n_bytes: float, n_elements: float) -> float:
    """Stored bits per weight (block scales included); 0 for no weights."""
    return n_bytes * 8 / n_elements if n_elements else 0.0


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: str
    n_elements: int
    n_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return bits_per_weight(self.n_bytes, self.n_elements)


@dataclass(slots=True)
class Anatomy:
    path: str
    file_size: int
    arch: str
    name: str
    file_type: str
    hyper: dict[str, Any] = field(default_factory=dict)  # label -> value
    vocab_size: int = 0
    tensors: list[Tensor] = field(default_factory=list)
    data_offset: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def total_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return bits_per_weight(self.total_bytes, self.total_elements)

    def by_type(self) -> dict[str, dict[str, int]]:
        return totals_by_type((t.type, t.n_elements, t.n_bytes) for t in self.tensors)

    def by_layer(self) -> "OrderedDict[str, list[Tensor]]":
        groups: OrderedDict[str, list[Tensor]] = OrderedDict()
        for t in self.tensors:
            m = _LAYER.match(t.name)
            key = f"layer {int(m.group(1)):>3}" if m else "model"
            groups.setdefault(key, []).append(t)
        return OrderedDict(sorted(groups.items(), key=lambda kv: (kv[0] != "model", kv[0])))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        d["total_elements"] = self.total_elements
        d["bits_per_weight"] = round(self.bits_per_weight, 4)
        d["by_type"] = self.by_type()
        return d


def _hyper_value(value: Any) -> Any:
    """A hyperparameter as read: sane numbers (and non-empty lists of them) as they are, float32s as the
    number that was written (:func:`_float32_decimal`); anything else (a crafted file's string, NaN, 2**40
    layers) as visible text, which no computation uses."""
    if _sane(value):
        return _float32_decimal(value) if isinstance(value, float) else value
    if isinstance(value, list) and value and len(value) <= 1 << 16 and all(_sane(v) for v in value):
        return [_float32_decimal(v) if isinstance(v, float) else v for v in value]
    return visible(value)


def _as_float32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _float32_decimal(x: float) -> float:
    """The shortest decimal that is the same float32: GGUF stores 1e-5 as a float32, which Python widens
    to 9.999999747378752e-06; this gives 1e-05 back (the same float32, so no computation changes). A
    value that is no float32 (a FLOAT64 field) is kept as it is."""
    try:
        if _as_float32(x) != x:
            return x
    except OverflowError:  # beyond float32's range: a FLOAT64 field
        return x
    for digits in range(1, 10):  # 9 significant digits always identify a float32
        short = float(f"{x:.{digits}g}")
        if _as_float32(short) == x:
            return short
    return x


def _sane(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value < 1 << 31
    return isinstance(value, float) and math.isfinite(value)


def _value(field_: Any) -> Any:
    try:
        return field_.contents()
    except Exception:  # a field gguf cannot decode is shown as missing, not fatal
        return None


def read_anatomy(path: str | Path, cache_dir: Path | None = None) -> Anatomy:
    """A model file's anatomy (llama.cpp's gguf reader: seconds on a large file), cached in
    ``cache_dir`` (by path, size and mtime) when given."""
    p = Path(path)
    from .gguf_header import read_header

    header = read_header(p)  # a clear one-line error for missing / bad / truncated files
    cache_file = cache_dir / "anatomy" / f"{p.name}.json" if cache_dir is not None else None
    st = p.stat()
    key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_VERSION}"
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file is not None else {}
        if cached.get("key") == key:
            data = cached["anatomy"]
            data["tensors"] = [Tensor(**{**t, "shape": tuple(t["shape"])}) for t in data["tensors"]]
            return Anatomy(**data)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import gguf

    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:  # the reader raises many kinds of errors on a damaged file
        raise ModelFileError(str(p), f"gguf cannot read it: {exc}") from None
    fields = reader.fields
    arch = str(_value(fields["general.architecture"])) if "general.architecture" in fields else "?"
    hyper: dict[str, Any] = {}
    for suffix, label in HYPER_KEYS:
        f = fields.get(f"{arch}.{suffix}")
        if f is not None:
            hyper[label] = _hyper_value(_value(f))
    tokens = fields.get("tokenizer.ggml.tokens")
    from .models import _file_type_name

    anatomy = Anatomy(
        path=str(p),
        file_size=st.st_size,
        arch=visible(arch),  # GGUF strings are untrusted: made visible once, for every display
        name=visible(_value(fields["general.name"])) if "general.name" in fields else visible(p.stem),
        file_type=_file_type_name(_value(fields["general.file_type"]) if "general.file_type" in fields else None),
        hyper=hyper,
        vocab_size=len(tokens.data) if tokens is not None else 0,
        tensors=[
            Tensor(visible(t.name), tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_elements),
                   int(t.n_bytes))
            for t in reader.tensors
        ],
        data_offset=header.data_offset,
    )
    if cache_file is None:
        return anatomy
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(anatomy)
        cache_file.write_text(json.dumps({"key": key, "anatomy": data}), encoding="utf-8")
    except OSError:
        return anatomy  # the cache only saves time
    return anatomy
