"""Writing session recordings (the format: :mod:`tui.record.format`).

:class:`SessionWriter` creates a new file (never appends to or writes through an existing one);
:class:`AppendWriter` adds a branch run's lines to the recording of its token tree (a regular file
only, never through a symlink). Each line is written whole and flushed at once, so a session killed
at any moment is readable up to its last complete line.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.loop import Step
from ..safe_text import visible
from .format import FORMAT, VERSION
from .steps import _b64, step_record


class RecordError(Exception):
    """Recording failed (unwritable directory, disk full…); one line for the UI."""


class RecordingExists(RecordError):
    """The recording's path is already taken (a file, a directory or a symlink)."""


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A cheap identity for a model file: SHA-256 of its size and first MiB (read once per file
    version: the API server records every request)."""
    st = Path(path).stat()
    return _fingerprint(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(2**20))
    return h.hexdigest()


# a remote run's ids are the server's, or numbered by llmtui for tokens it names by text only
# (tui.remote.source.RemoteVocab, from 2**30 up beside the server's): the header's bound covers both
REMOTE_ID_BOUND = (1 << 31) - 1


def model_identity(engine: Any) -> dict[str, Any]:
    """Which model a run used: name, file, architecture, quantization, vocabulary, size, fingerprint."""
    info = engine.info
    model: dict[str, Any] = {"name": info.name, "path": str(getattr(engine, "path", "")), "arch": info.arch,
                             "quant": info.quant, "n_vocab": info.n_vocab, "file_size": info.file_size}
    if getattr(engine, "remote", None) is not None:  # a server: its ids, no file of ours
        model["n_vocab"] = REMOTE_ID_BOUND
        model["fingerprint"] = None
        return model
    try:
        model["fingerprint"] = fingerprint(engine.path)
    except (OSError, TypeError):
        model["fingerprint"] = None
    return model


def session_header(engine: Any, preset: Any, seed: int, prompt: str, tokens: Any, *, max_tokens: int,
                   ignore_eos: bool = False, parent: dict[str, Any] | None = None,
                   history: Any = ()) -> dict[str, Any]:
    """Everything needed to replay, verify or fork a run: model identity, settings, preset, seed, prompt."""
    model = model_identity(engine)
    remote = getattr(engine, "remote", None)
    if remote is not None:  # a server (tui.remote): no file, no KV layout of ours; what it exposed instead
        return {"model": model, "engine": {}, "n_ctx": engine.n_ctx,
                "remote": {**remote.header(), "mode": getattr(engine, "mode", "stream")},
                "preset": preset.as_dict(), "seed": seed, "prompt": prompt, "prompt_tokens": list(tokens),
                "max_tokens": max_tokens, "ignore_eos": ignore_eos, "parent": parent, "history": list(history)}
    kv = engine.kv_layout()
    return {
        "model": model,
        "engine": engine.settings.as_dict(),
        "n_ctx": engine.n_ctx,
        "kv": {"bytes_per_token": kv.bytes_per_token, "allocated": kv.allocated,
               "type_k": kv.type_k, "type_v": kv.type_v},
        "preset": preset.as_dict(),
        "seed": seed,
        "prompt": prompt,
        "prompt_tokens": list(tokens),
        "max_tokens": max_tokens,
        "ignore_eos": ignore_eos,
        "parent": parent,
        "history": list(history),  # tokens the sampler chain had seen before step 0 (a fork's kept tokens)
    }


def _line(obj: dict[str, Any]) -> bytes:
    """One record as a line of UTF-8 JSON."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # data JSON cannot hold (a lab result with an odd type)
        raise RecordError(f"cannot record a {obj.get('type')} line: {exc}") from None
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (a prompt from a command line with undecodable bytes) have no UTF-8:
        # escaped as \udcXX the line stays valid UTF-8 and reads back as the same text
        return (json.dumps(obj, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


# A recording is always a new file: O_EXCL never appends to a file that exists (a reader would
# merge two sessions) and, with O_CREAT, refuses a symlink planted at the name (open(2): "if
# pathname is a symbolic link, open() fails regardless of where it points"); O_NOFOLLOW says so
# once more for the last component.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _create(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError too: a file where the directory should be
        raise RecordError(f"cannot record to {path}: {exc.strerror or exc}") from None
    try:
        return os.open(path, _CREATE, 0o644)
    except FileExistsError:
        raise RecordingExists(f"{path} exists: a recording never overwrites or appends to a file; "
                              "choose another name") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordingExists(f"{path} is a symbolic link: a recording never writes through one; "
                                  "choose another name") from None
        raise RecordError(f"cannot record to {path}: {exc.strerror or exc}") from None


class LineWriter:
    """Whole lines to an open file, each flushed at once (one write per line: a line is whole or absent);
    never raises past ``RecordError``. Pieces are written once per file: ``seen`` holds the ids it has."""

    path: Path
    _fd: int

    def __init__(self, path: Path, piece: Callable[[int], bytes], seen: set[int] | None = None) -> None:
        self.path = path
        self.piece = piece
        self.seen: set[int] = set() if seen is None else seen
        self.steps = 0  # step lines this writer wrote
        self.closed = False
        self._rss = 0

    def _write(self, obj: dict[str, Any]) -> None:
        if self.closed:
            raise RecordError(f"{self.path}: the recording is closed")
        line = _line(obj)
        try:
            written = os.write(self._fd, line)  # one write per line: a line is whole or absent
            if written != len(line):
                raise OSError(28, "short write (disk full?)")
        except OSError as exc:
            self.close()
            raise RecordError(f"recording to {self.path} stopped: {exc.strerror or exc}") from None

    def _new_pieces(self, ids: Iterable[int]) -> None:
        fresh = [t for t in ids if t not in self.seen]
        if fresh:
            self.seen.update(fresh)
            self._write({"type": "pieces", "map": {str(t): _b64(self.piece(t)) for t in fresh}})

    def step(self, step: Step, *, kv_bytes: int = 0, rss: int | None = None, branch: int = 0) -> None:
        """Write one step (of ``branch`` of the token tree); ``rss`` (the process's resident memory) is
        measured here, every :data:`RSS_EVERY` steps (a psutil call costs ~20 µs), unless given."""
        tr = step.trace
        ids = [step.token, *tr.top_ids.tolist()]
        for s in tr.stages:
            ids.extend(s.top_ids)
        self._new_pieces(ids)
        if rss is None:
            if self.steps % RSS_EVERY == 0:
                self._rss = _rss()
            rss = self._rss
        self._write(step_record(step, rss=rss, kv_bytes=kv_bytes, branch=branch))
        self.steps += 1

    def event(self, kind: str, at_step: int, *, branch: int = 0, **data: Any) -> None:
        self._write({"type": "event", "kind": kind, "at_step": at_step, **({"branch": branch} if branch else {}),
                     **data})

    def branch_line(self, bid: int, parent: int, fork: int, origin: str, **data: Any) -> None:
        """Branch ``bid`` of the token tree leaves ``parent`` at step ``fork`` (before any step of it)."""
        self._write({"type": "branch", "id": bid, "parent": parent, "fork": fork, "origin": origin, **data})

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError:
                return


class SessionWriter(LineWriter):
    """A new recording: ``path`` must not exist (:class:`RecordingExists` otherwise); :meth:`new_in`
    picks a free name in a directory instead. The header is its first line."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any],
                 piece: Callable[[int], bytes]) -> None:
        super().__init__(Path(path), piece)
        self._fd = _create(self.path)
        self._write({"type": "header", "format": FORMAT, "version": VERSION, "app_version": __version__,
                     "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **header})

    @classmethod
    def new_in(cls, directory: str | os.PathLike[str], model: str, header: dict[str, Any],
               piece: Callable[[int], bytes]) -> SessionWriter:
        """A recording under a fresh name in ``directory``: ``<date>-<time>-<model>[-N].jsonl``.

        The name is taken by creating the file (O_EXCL), not by looking first: two recorders
        starting in the same second (the API server records every request) get two names.
        """
        for path in _session_names(Path(directory), model):
            try:
                return cls(path, header, piece)
            except RecordingExists:
                continue  # taken meanwhile: the next name
        raise RecordError(f"{directory}: no free recording name for {visible(model)} this second")

    def footer(self, **data: Any) -> None:
        self._write({"type": "footer", "steps": self.steps, **data})
        self.close()

    def finish(self, reason: str | None, error: str | None, summary: dict[str, Any], text: str, *,
               at_step: int | None = None, branch: int = 0) -> None:
        """The end of a run: a "stopped" event after its last step (``at_step``: the index after it, by
        default the steps written), then the footer."""
        self.event("stopped", self.steps if at_step is None else at_step, branch=branch, reason=reason, error=error)
        self.footer(stop_reason=reason, summary=summary, text=text, **({"error": error} if error else {}))


class AppendWriter(LineWriter):
    """More lines at the end of a recording this process wrote (a branch run of its token tree): only a
    regular file at ``path`` itself, never through a symlink put there since; ``seen``: the token ids whose
    pieces the file already holds."""

    def __init__(self, path: str | os.PathLike[str], piece: Callable[[int], bytes],
                 seen: set[int] | None = None) -> None:
        super().__init__(Path(path), piece, seen)
        self._fd = _open_append(self.path)


def _open_append(path: str | os.PathLike[str]) -> int:
    """An existing regular file for appending: a symlink is refused (O_NOFOLLOW), and so is a FIFO or a
    device (O_NONBLOCK: opening one cannot hang the app, and it is no regular file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise RecordError(f"{path}: cannot add to the recording: {why}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise RecordError(f"{path}: cannot add to the recording: {exc.strerror or exc}") from None
    if not regular:
        os.close(fd)
        raise RecordError(f"{path}: cannot add to the recording: not a regular file")
    return fd


def append_event(path: str | os.PathLike[str], kind: str, at_step: int, **data: Any) -> None:
    """Add one event line to a finished recording (a lab run from the UI after it); one whole write,
    like every other line. Readers take events wherever they are, footer or not.

    Only to a regular file at ``path`` itself: a symlink put there since is refused (O_NOFOLLOW),
    and so is a FIFO or a device (O_NONBLOCK: opening one cannot hang the app)."""
    line = _line({"type": "event", "kind": kind, "at_step": at_step, **data})
    fd = _open_append(path)
    try:
        if os.write(fd, line) != len(line):
            raise RecordError(f"{path}: short write (disk full?)")
    except OSError as exc:
        raise RecordError(f"{path}: cannot add to the recording: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


_MAX_NAMES = 1000  # recordings of one model started in one second


def _session_names(directory: Path, model: str) -> Iterator[Path]:
    """``<date>-<time>-<model>.jsonl``, then ``…-2.jsonl``, ``…-3.jsonl``…"""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[:40]
    yield directory / f"{stamp}-{safe}.jsonl"
    for n in range(2, _MAX_NAMES + 1):
        yield directory / f"{stamp}-{safe}-{n}.jsonl"


RSS_EVERY = 8  # steps between two RSS readings


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil can fail in odd containers: 0 says "not measured"
        return 0
