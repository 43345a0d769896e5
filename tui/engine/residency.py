"""Where a file's bytes are: in the kernel's page cache (``mincore``), and what a process holds of them
(file-backed vs anonymous resident memory). Linux only: elsewhere the answers are ``None`` ("not measured"),
never a guess."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_libc: ctypes.CDLL | None = None


def _linux_libc() -> ctypes.CDLL | None:
    """libc with mmap / mincore / munmap typed for 64-bit arguments (None off Linux)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            libc.mmap.restype = ctypes.c_void_p
            libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
            libc.mincore.restype = ctypes.c_int
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            libc.munmap.restype = ctypes.c_int
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


_MAP_FAILED = ctypes.c_void_p(-1).value


def resident_fraction(path: str | os.PathLike[str]) -> float | None:
    """The fraction (0..1) of ``path``'s pages now in the page cache, or None where that cannot be known.

    A fresh read-only shared mapping is asked with ``mincore(2)``; mapping without touching faults nothing
    in, so asking does not change the answer. None: not Linux, an empty or unreadable file, or a file this
    user neither owns nor may write — for those, Linux (``can_do_mincore`` in mm/mincore.c, since 5.2)
    reports only the pages this process has mapped itself, which on a fresh mapping says nothing.
    """
    libc = _linux_libc()
    if libc is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_size == 0 or not (st.st_uid == os.geteuid() or os.access(path, os.W_OK)):
            return None
        size = st.st_size
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                return None
            # only the low bit means "resident"; the others are reserved
            resident = int((np.frombuffer(vec, dtype=np.uint8) & 1).sum())
        finally:
            libc.munmap(addr, size)
        return resident / pages
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class RssSplit:
    """A process's resident memory by kind, in bytes (``/proc/<pid>/status``)."""

    anon: int  # RssAnon: its own pages (heap, malloc'd buffers, a copied-in model)
    file: int  # RssFile: pages of mapped files it has touched (code, an mmapped model); shared, reclaimable
    shmem: int  # RssShmem: shared memory

    def minus(self, before: RssSplit) -> RssSplit:
        return RssSplit(self.anon - before.anon, self.file - before.file, self.shmem - before.shmem)


def rss_split(pid: int | str = "self") -> RssSplit | None:
    """File-backed vs anonymous resident memory of a process (None off Linux or when /proc cannot be read)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            try:
                fields[key] = int(value.split()[0]) * 1024  # reported in kB
            except (ValueError, IndexError):
                return None
    if "RssAnon" not in fields or "RssFile" not in fields:
        return None
    return RssSplit(fields["RssAnon"], fields["RssFile"], fields.get("RssShmem", 0))
