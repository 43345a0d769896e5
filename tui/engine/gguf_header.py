"""A fast GGUF *header* scan for model discovery.

``gguf.GGUFReader`` (llama.cpp's own reader, used for the anatomy screen) builds
a numpy view for every element of every array; on SmolLM2 that takes ~4 s and on
Gemma 3's 262k-token vocabulary far longer. Discovery only needs the scalar
metadata, the array lengths and the tensor table, so this module walks the
header with ``struct`` over an ``mmap`` and skips array bodies. The type sizes
come from the ``gguf`` package's constants so there is one source of truth.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelFileError


def totals_by_type(tensors: Iterable[tuple[str, int, int]]) -> dict[str, dict[str, int]]:
    """``(type, elements, bytes)`` per tensor → tensors, elements and bytes per type, largest first."""
    out: dict[str, dict[str, int]] = {}
    for type_name, n_elements, n_bytes in tensors:
        row = out.setdefault(type_name, {"tensors": 0, "elements": 0, "bytes": 0})
        row["tensors"] += 1
        row["elements"] += n_elements
        row["bytes"] += n_bytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))

GGUF_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# gguf_type -> struct format (scalars)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# small scalar arrays are kept (e.g. general.languages, per-layer head counts)
_KEEP_ARRAY_MAX = 512


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    type_name: str
    offset: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    elem_type: int
    count: int


@dataclass(slots=True)
class GGUFHeader:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, ArrayInfo] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def tensor_data_size(self) -> int:
        if not self.tensors:
            return 0
        return max(t.offset + t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight over every tensor (block scales included)."""
        n = self.n_params
        return sum(t.n_bytes for t in self.tensors) * 8 / n if n else 0.0

    def by_type(self) -> dict[str, dict[str, int]]:
        """Tensors, elements and bytes per tensor type, largest first (what ``Anatomy.by_type`` says,
        from the header alone: no second read of the file)."""
        return totals_by_type((t.type_name, t.n_elements, t.n_bytes) for t in self.tensors)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_key(self, suffix: str, default: Any = None) -> Any:
        arch = self.metadata.get("general.architecture", "")
        return self.metadata.get(f"{arch}.{suffix}", default)


class _Cursor:
    __slots__ = ("buf", "pos", "path")

    def __init__(self, buf: Any, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ModelFileError(str(self.path), "truncated GGUF file (header ends early)")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise ModelFileError(str(self.path), "truncated GGUF file (header ends early)")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack_from = struct.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise ModelFileError(str(self.path), "truncated GGUF file (header ends early)")
            (n,) = unpack_from("<Q", buf, pos)
            pos += 8 + n
        if pos > end:
            raise ModelFileError(str(self.path), "truncated GGUF file (header ends early)")
        self.pos = pos


def _quant_sizes() -> dict[int, tuple[str, int, int]]:
    from gguf.constants import GGML_QUANT_SIZES  # lazy: the gguf package takes ~0.3 s to import

    return {int(t): (t.name, block, size) for t, (block, size) in GGML_QUANT_SIZES.items()}


_SIZES: dict[int, tuple[str, int, int]] | None = None


def ggml_type_info(ggml_type: int) -> tuple[str, int, int]:
    """(name, block size in elements, bytes per block) for a ggml type id."""
    global _SIZES
    if _SIZES is None:
        _SIZES = _quant_sizes()
    return _SIZES.get(ggml_type, (f"type{ggml_type}", 1, 0))


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Scan a GGUF file's header. Raises ModelFileError with a one-line reason."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(str(p), "no such file")
    if p.is_dir():
        raise ModelFileError(str(p), "is a directory, not a GGUF file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            if size < 24:
                head = fh.read(4)
                if head != GGUF_MAGIC:
                    raise ModelFileError(str(p), f"not a GGUF file (starts with {head!r})")
                raise ModelFileError(str(p), "truncated GGUF file (header ends early)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, p, size)
    except PermissionError:
        raise ModelFileError(str(p), "permission denied") from None
    except OSError as exc:
        raise ModelFileError(str(p), f"cannot read: {exc.strerror or exc}") from None


def _parse(buf: Any, path: Path, size: int) -> GGUFHeader:
    magic = bytes(buf[:4])
    if magic != GGUF_MAGIC:
        raise ModelFileError(str(path), f"not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.unpack("I")
    if version not in (2, 3):
        raise ModelFileError(str(path), f"unsupported GGUF version {version}")
    n_tensors = cur.unpack("Q")
    n_kv = cur.unpack("Q")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise ModelFileError(str(path), "corrupt GGUF header (implausible counts)")
    header = GGUFHeader(path=path, version=version, file_size=size)
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("I")
        if vtype == _ARRAY:
            etype = cur.unpack("I")
            count = cur.unpack("Q")
            header.arrays[key] = ArrayInfo(etype, count)
            if etype == _STRING:
                cur.skip_strings(count)
            elif etype in _SCALAR:
                fmt = _SCALAR[etype]
                nbytes = struct.calcsize(fmt) * count
                if cur.pos + nbytes > len(buf):
                    raise ModelFileError(str(path), "truncated GGUF file (header ends early)")
                if count <= _KEEP_ARRAY_MAX:
                    header.metadata[key] = list(struct.unpack_from(f"<{count}{fmt}", buf, cur.pos))
                cur.pos += nbytes
            else:
                raise ModelFileError(str(path), f"corrupt GGUF header (nested array in {key!r})")
        elif vtype == _STRING:
            header.metadata[key] = cur.string()
        elif vtype in _SCALAR:
            header.metadata[key] = cur.unpack(_SCALAR[vtype])
        else:
            raise ModelFileError(str(path), f"corrupt GGUF header (unknown value type {vtype} for {key!r})")
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise ModelFileError(str(path), f"corrupt GGUF header (tensor {name!r} has {n_dims} dims)")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        ggml_type = cur.unpack("I")
        offset = cur.unpack("Q")
        n_elements = 1
        for d in shape:
            n_elements *= d
        type_name, block, type_size = ggml_type_info(ggml_type)
        n_bytes = n_elements // block * type_size if block else 0
        header.tensors.append(TensorInfo(name, shape, ggml_type, type_name, offset, n_elements, n_bytes))
    alignment = int(header.metadata.get("general.alignment", _DEFAULT_ALIGNMENT)) or _DEFAULT_ALIGNMENT
    header.data_offset = (cur.pos + alignment - 1) // alignment * alignment
    needed = header.data_offset + header.tensor_data_size
    if needed > size:
        raise ModelFileError(
            str(path),
            f"truncated GGUF file: tensor data needs {needed:,} bytes but the file has {size:,}",
        )
    return header
