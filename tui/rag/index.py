"""A local vector index: ``manifest.json`` (what was indexed, with which embedding model and chunking),
``chunks.jsonl`` (each chunk's file, offsets and text) and ``vectors.npy`` (float32, L2-normalised, one row per
chunk).

Why numpy and a manifest rather than a vector database (sqlite-vec, FAISS): at the sizes a teaching tool indexes
(10,000 chunks of a 576-dimension model are 22 MiB) a brute-force dot product over all rows takes a few
milliseconds (``benchmarks/bench_embed.py``), is exact, needs no native extension, and the files can be read
by anything. Saving is atomic (a temporary file, then ``os.replace``), every few seconds and when indexing is
cancelled: a later run resumes, skipping the files already done. Everything read back is checked: an index is
a file like any other.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chunk import Chunk, check_chunking, chunk_text

FORMAT = "llmtui-index"
VERSION = 1
MAX_FILE_BYTES = 16 << 20  # a text file bigger than this is skipped (a log, a dump: not a document)
MAX_CHUNKS = 1_000_000
SAVE_EVERY_S = 3.0
GROUP = 16  # chunks embedded per call (the embedder packs them into batches)


class IndexError_(Exception):  # noqa: N801 - not the builtin IndexError
    """An index that cannot be built, opened or used: one line for the user."""


@dataclass(frozen=True, slots=True)
class Hit:
    rank: int
    score: float  # cosine similarity
    chunk: Chunk

    def as_dict(self) -> dict[str, Any]:
        """What a recording and ``llmtui index --query --json`` say of it."""
        return {"rank": self.rank, "score": round(self.score, 6), "file": self.chunk.source,
                "start": self.chunk.start, "end": self.chunk.end, "text": self.chunk.text}


@dataclass(slots=True)
class BuildReport:
    directory: str
    index: str
    files: int = 0  # indexed now
    kept: int = 0  # already indexed (resumed)
    chunks: int = 0  # in the index when it stopped
    new_chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    cancelled: bool = False
    seconds: float = 0.0
    saved: Index | None = field(default=None, repr=False)  # the index as it is on disk now (no need to reopen it)

    @property
    def chunks_per_s(self) -> float:
        return self.new_chunks / self.seconds if self.seconds > 0 else 0.0


def default_index_dir(directory: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Where ``directory``'s index lives under ``root`` (default: the data directory's ``indexes``): the CLI and
    the lab agree on it, so an index built either way is found by both."""
    if root is None:
        from ..config import app_dirs

        root = app_dirs().data / "indexes"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(directory).resolve().name)[:60] or "index"
    return Path(root) / name


def model_identity(embedder: Any) -> dict[str, Any]:
    from ..record.writer import fingerprint

    return {"name": str(embedder.name), "file": Path(embedder.path).name, "path": str(Path(embedder.path).resolve()),
            "fingerprint": fingerprint(embedder.path),
            "dimensions": int(embedder.n_embd), "pooling": str(embedder.pooling), "kind": str(embedder.kind)}


def same_space(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two model identities make comparable vectors: the same file (fingerprint) and pooling."""
    return (a["fingerprint"], a["pooling"]) == (b["fingerprint"], b["pooling"])


class Index:
    def __init__(self, path: Path, manifest: dict[str, Any], chunks: list[Chunk], vectors: np.ndarray) -> None:
        self.path, self.manifest, self.chunks, self.vectors = path, manifest, chunks, vectors

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    def check_model(self, embedder: Any) -> None:
        """An index is searched with the model that built it: another model's vectors live in another space."""
        mine, now = self.model, model_identity(embedder)
        if not same_space(mine, now):
            raise IndexError_(f"{self.path}: built with {mine['name']} ({mine['pooling']} pooling), not with "
                              f"{now['name']} ({now['pooling']} pooling): its vectors cannot be compared — rebuild "
                              "it with this model (llmtui index DIR --rebuild) or use that one")

    def search(self, query: np.ndarray, k: int = 3) -> list[Hit]:
        if not len(self.chunks):
            return []
        scores = self.vectors @ np.asarray(query, dtype=np.float32)
        k = max(1, min(k, len(scores)))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(r, float(scores[i]), self.chunks[int(i)]) for r, i in enumerate(top)]


# -- building ------------------------------------------------------------------------------------------------


def _files(directory: Path, skip: Path | None) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(directory):  # symlinked directories are not followed
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or Path(root, d) != skip))
        out += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
    return out


def _read_text(path: Path) -> tuple[str | None, str]:
    """The file's text, or None and why it is skipped."""
    try:
        st = path.lstat()
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror or exc}"
    if not path.is_file() or path.is_symlink():
        return None, "not a regular file"
    if st.st_size > MAX_FILE_BYTES:
        return None, f"{st.st_size / 2**20:.1f} MiB: over the {MAX_FILE_BYTES >> 20} MiB a document may have"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror or exc}"
    if b"\0" in data[:8192]:
        return None, "binary (it holds NUL bytes)"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start}): binary, or another encoding"


def build_index(directory: str | os.PathLike[str], embedder: Any, out: str | os.PathLike[str], *, size: int = 800,
                overlap: int = 100, rebuild: bool = False, cancel: threading.Event | None = None,
                on_progress: Callable[[int, int, int, str], None] | None = None) -> BuildReport:
    """Index the text files under ``directory`` into ``out``; ``on_progress(files done, files, chunks, file)``.
    A run that was cancelled (or killed) resumes where it stopped: files already indexed are kept."""
    src, dest = Path(directory), Path(out)
    if not src.is_dir():
        raise IndexError_(f"{src}: not a directory")
    files = _files(src, dest.resolve() if dest.resolve().is_relative_to(src.resolve()) else None)
    if not files:
        raise IndexError_(f"{src}: nothing to index (an empty directory; hidden files are left out)")
    try:
        check_chunking(size, overlap)
    except ValueError as exc:
        raise IndexError_(str(exc)) from None
    identity = model_identity(embedder)
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    done: dict[str, dict[str, Any]] = {}
    old: Index | None = None
    if (dest / "manifest.json").exists() and not rebuild:
        old = open_index(dest)
        if not same_space(old.model, identity):
            raise IndexError_(f"{dest}: an index built with {old.model['name']} ({old.model['pooling']} pooling): "
                              "another embedding model cannot add to it — --rebuild, or another --out")
        if old.manifest["chunking"] != {"size": size, "overlap": overlap}:
            raise IndexError_(f"{dest}: built with chunks of {old.manifest['chunking']}: --rebuild to change them")
        keep = {rel for rel, f in old.manifest["files"].items() if f.get("status") == "done"
                and (src / rel).is_file() and _same(src / rel, f)}
        done = {rel: f for rel, f in old.manifest["files"].items() if rel in keep}
        for c, v in zip(old.chunks, old.vectors):
            if c.source in keep:
                chunks.append(c)
                vectors.append(v)
    report = BuildReport(str(src), str(dest), kept=len(done))
    t0 = last_save = time.perf_counter()
    for n, path in enumerate(files):
        rel = path.relative_to(src).as_posix()
        if rel in done:
            continue
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        text, why = _read_text(path)
        if text is None:
            report.skipped.append((rel, why))
            done[rel] = {"status": "skipped", "why": why, **_stat(path)}
            continue
        pieces = chunk_text(text, rel, size=size, overlap=overlap)
        if len(chunks) + len(pieces) > MAX_CHUNKS:
            report.skipped.append((rel, f"the index would pass {MAX_CHUNKS:,} chunks"))
            continue
        new: list[np.ndarray] = []
        for i in range(0, len(pieces), GROUP):
            if cancel is not None and cancel.is_set():
                break
            new.extend(embedder.embed_many([c.text for c in pieces[i:i + GROUP]]))
            if on_progress is not None:
                on_progress(n, len(files), len(chunks) + len(new), rel)
        if len(new) < len(pieces):  # cancelled inside this file: it is done next time
            report.cancelled = True
            break
        chunks.extend(pieces)
        vectors.extend(new)
        report.files += 1
        report.new_chunks += len(pieces)
        done[rel] = {"status": "done", "chunks": len(pieces), **_stat(path)}
        if time.perf_counter() - last_save > SAVE_EVERY_S:
            _save(dest, _manifest(src, identity, size, overlap, done, chunks), chunks, vectors, embedder.n_embd)
            last_save = time.perf_counter()
    manifest = _manifest(src, identity, size, overlap, done, chunks)
    if old is not None and len(chunks) == len(old.chunks) and manifest == {**old.manifest, "saved": None}:
        report.saved = old  # nothing changed (every file kept as it was): the files on disk are already this
    else:
        report.saved = _save(dest, manifest, chunks, vectors, embedder.n_embd)
    report.chunks = len(chunks)
    report.seconds = time.perf_counter() - t0
    if on_progress is not None:
        on_progress(len(files), len(files), len(chunks), "")
    return report


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same(path: Path, record: dict[str, Any]) -> bool:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns) == (record.get("size"), record.get("mtime_ns"))


def _manifest(src: Path, identity: dict[str, Any], size: int, overlap: int, files: dict[str, Any],
              chunks: list[Chunk]) -> dict[str, Any]:
    """The manifest of an index, but for when it was saved (``saved``: :func:`_save` sets it)."""
    return {"format": FORMAT, "version": VERSION, "source": str(src.resolve()), "model": identity,
            "chunking": {"size": size, "overlap": overlap}, "chunks": len(chunks), "files": files, "saved": None}


def _save(dest: Path, manifest: dict[str, Any], chunks: list[Chunk], vectors: list[np.ndarray], dims: int) -> Index:
    """Write the index atomically; the :class:`Index` it wrote."""
    dest.mkdir(parents=True, exist_ok=True)
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dims), np.float32)
    manifest = {**manifest, "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
    writes = {"vectors.npy": lambda f: np.save(f, matrix, allow_pickle=False),
              "chunks.jsonl": lambda f: f.write("".join(json.dumps({"file": c.source, "start": c.start, "end": c.end,
                                                                    "text": c.text}) + "\n" for c in chunks).encode()),
              "manifest.json": lambda f: f.write(json.dumps(manifest, indent=1).encode())}
    for name, write in writes.items():  # the manifest last: it only ever describes files that are complete
        tmp = dest / f".{name}.tmp"
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, dest / name)
    return Index(dest, manifest, list(chunks), matrix)


# -- opening (untrusted files) --------------------------------------------------------------------------------


def open_index(path: str | os.PathLike[str]) -> Index:
    where = Path(path)
    try:
        manifest = json.loads((where / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexError_(f"{where}: not an llmtui index (no manifest.json of format {FORMAT})")
        if manifest.get("version") != VERSION:
            raise IndexError_(f"{where}: index format version {manifest.get('version')!r}; this llmtui reads "
                              f"version {VERSION}")
        model, files, chunking = manifest.get("model"), manifest.get("files"), manifest.get("chunking")
        if not (isinstance(model, dict) and isinstance(files, dict) and isinstance(chunking, dict)
                and isinstance(model.get("fingerprint"), str) and isinstance(model.get("dimensions"), int)):
            raise IndexError_(f"{where}: a damaged manifest (model, files or chunking missing)")
        vectors = np.load(where / "vectors.npy", allow_pickle=False)
        chunks = [_chunk(json.loads(line)) for line in (where / "chunks.jsonl").read_text(
            encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError as exc:
        raise IndexError_(f"{where}: no index here ({Path(exc.filename or '').name} is missing)") from None
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise IndexError_(f"{where}: a damaged index: {str(exc)[:200]}") from None
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape != (len(chunks), model["dimensions"]):
        raise IndexError_(f"{where}: a damaged index: {vectors.shape} vectors for {len(chunks)} chunks of "
                          f"{model['dimensions']} dimensions")
    if not np.isfinite(vectors).all():
        raise IndexError_(f"{where}: a damaged index: vectors that are not finite numbers")
    return Index(where, manifest, chunks, vectors)


def _chunk(rec: Any) -> Chunk:
    if not (isinstance(rec, dict) and isinstance(rec.get("file"), str) and isinstance(rec.get("text"), str)
            and isinstance(rec.get("start"), int) and isinstance(rec.get("end"), int)):
        raise ValueError("a chunk line without file, start, end and text")
    return Chunk(rec["file"], rec["start"], rec["end"], rec["text"])
