"""Session recordings: token-level traces in JSON Lines (see the README's "Recording format").

Every line is one JSON object with a ``type``:

* ``header`` (first line): format and app version, model identity (name, size,
  SHA-256 of the first MiB, arch, quant), engine settings, preset with its full
  parameters, seed, prompt text and token ids, parent (for forks);
* ``pieces``: the bytes (base64) of token ids that appear for the first time;
* ``step``: one generated token with its whole trace;
* ``event``: something that happened (preset changed, re-sampled, model
  switched, stopped…) at a step index;
* ``footer`` (last line when the session ended cleanly): totals.

The writer writes each line whole and flushes it at once, so a session killed
at any moment is readable up to its last complete line. The reader reports
(and skips) what it cannot read — which line and why — and keeps the rest.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..engine.loop import Step
from ..sampling.trace import SampleTrace, StageTrace

FORMAT = "llmtui-session"
VERSION = 1


class RecordError(Exception):
    """Recording failed (unwritable directory, disk full…); one line for the UI."""


class SessionFileError(Exception):
    """A session file that cannot be used at all (empty, not ours, wrong version)."""


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- writing ---------------------------------------------------------------------------


def session_header(engine: Any, preset: Any, seed: int, prompt: str, tokens: Any, *, max_tokens: int,
                   ignore_eos: bool = False, parent: dict[str, Any] | None = None,
                   history: Any = ()) -> dict[str, Any]:
    """Everything needed to replay, verify or fork a run: model identity, settings, preset, seed, prompt."""
    info = engine.info
    model: dict[str, Any] = {"name": info.name, "path": str(getattr(engine, "path", "")), "arch": info.arch,
                             "quant": info.quant, "n_vocab": info.n_vocab, "file_size": info.file_size}
    try:
        model["fingerprint"] = fingerprint(engine.path)
    except OSError:
        model["fingerprint"] = None
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


def step_record(step: Step, *, rss: int = 0, kv_bytes: int = 0) -> dict[str, Any]:
    tr = step.trace
    return {
        "type": "step",
        "i": step.index,
        "token": step.token,
        "piece": _b64(step.piece),
        "text": step.text,
        "prob": step.prob,
        "entropy": tr.entropy,
        "top": {
            "token": tr.top_ids.tolist(),
            "logit": tr.top_logits.tolist(),
            "p": tr.top_p_before.tolist(),
            "p_after": tr.top_p_after.tolist(),
        },
        "stages": [[s.name, s.n_in, s.n_out, s.mass_removed, list(s.top_ids), list(s.top_probs), s.note]
                   for s in tr.stages],
        "n_final": tr.n_final,
        "draw": tr.draw,
        "draw_lo": tr.draw_lo,
        "draw_hi": tr.draw_hi,
        "raw_logit": tr.raw_logit,
        "raw_p": tr.raw_p,
        "decode_ms": step.decode_ms,
        "sample_ms": step.sample_ms,
        "n_past": step.n_past,
        "n_ctx": step.n_ctx,
        "eog": step.is_eog,
        "rss": rss,
        "kv_bytes": kv_bytes,
        "t": step.t,
    }


class SessionWriter:
    """Appends whole lines and flushes each one; never raises past ``RecordError``."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any],
                 piece: Callable[[int], bytes]) -> None:
        self.path = Path(path)
        self.piece = piece
        self._seen: set[int] = set()
        self.steps = 0
        self.closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise RecordError(f"cannot record to {self.path}: {exc.strerror or exc}") from None
        self._write({"type": "header", "format": FORMAT, "version": VERSION, "app_version": __version__,
                     "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), **header})

    def _write(self, obj: dict[str, Any]) -> None:
        if self.closed:
            raise RecordError(f"{self.path}: the recording is closed")
        line = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, line)  # one write per line: a line is whole or absent
            if written != len(line):
                raise OSError(28, "short write (disk full?)")
        except OSError as exc:
            self.close()
            raise RecordError(f"recording to {self.path} stopped: {exc.strerror or exc}") from None

    def _new_pieces(self, ids: Iterable[int]) -> None:
        fresh = [t for t in ids if t not in self._seen]
        if fresh:
            self._seen.update(fresh)
            self._write({"type": "pieces", "map": {str(t): _b64(self.piece(t)) for t in fresh}})

    def step(self, step: Step, *, rss: int = 0, kv_bytes: int = 0) -> None:
        tr = step.trace
        ids = [step.token, *tr.top_ids.tolist()]
        for s in tr.stages:
            ids.extend(s.top_ids)
        self._new_pieces(ids)
        self._write(step_record(step, rss=rss, kv_bytes=kv_bytes))
        self.steps += 1

    def event(self, kind: str, at_step: int, **data: Any) -> None:
        self._write({"type": "event", "kind": kind, "at_step": at_step, **data})

    def footer(self, **data: Any) -> None:
        self._write({"type": "footer", "steps": self.steps, **data})
        self.close()

    def finish(self, stats: Any) -> None:
        """The end of a run (a GenerationStats): a "stopped" event after its last step, then the footer."""
        reason = stats.stop_reason.value if stats.stop_reason else None
        self.event("stopped", stats.generated, reason=reason, error=stats.error)
        self.footer(stop_reason=reason, summary=stats.summary(), text=stats.text)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError:
                return


def append_event(path: str | os.PathLike[str], kind: str, at_step: int, **data: Any) -> None:
    """Add one event line to a finished recording (a lab run from the UI after it); one whole write,
    like every other line. Readers take events wherever they are, footer or not."""
    line = (json.dumps({"type": "event", "kind": kind, "at_step": at_step, **data}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise RecordError(f"{path}: cannot add to the recording: {exc.strerror or exc}") from None
    try:
        if os.write(fd, line) != len(line):
            raise RecordError(f"{path}: short write (disk full?)")
    except OSError as exc:
        raise RecordError(f"{path}: cannot add to the recording: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def default_session_path(directory: Path, model: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[:40]
    path = directory / f"{stamp}-{safe}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{stamp}-{safe}-{n}.jsonl"
    return path


# -- reading ---------------------------------------------------------------------------------


def _step_from(rec: dict[str, Any]) -> Step:
    top = rec["top"]
    stages = tuple(StageTrace(name, n_in, n_out, mass, tuple(ids), tuple(probs), note)
                   for name, n_in, n_out, mass, ids, probs, note in rec["stages"])
    trace = SampleTrace(
        token=rec["token"], prob=rec["prob"], entropy=rec["entropy"],
        top_ids=np.asarray(top["token"], dtype=np.int32), top_logits=np.asarray(top["logit"], dtype=np.float32),
        top_p_before=np.asarray(top["p"], dtype=np.float64), top_p_after=np.asarray(top["p_after"], dtype=np.float64),
        stages=stages, n_final=rec["n_final"], draw=rec["draw"], draw_lo=rec["draw_lo"], draw_hi=rec["draw_hi"],
        raw_logit=rec["raw_logit"], raw_p=rec["raw_p"],
    )
    return Step(
        index=rec["i"], token=rec["token"], piece=base64.b64decode(rec["piece"]), text=rec["text"],
        prob=rec["prob"], trace=trace, decode_ms=rec["decode_ms"], sample_ms=rec["sample_ms"],
        n_past=rec["n_past"], n_ctx=rec["n_ctx"], is_eog=rec["eog"], t=rec["t"],
    )


@dataclass(slots=True)
class Session:
    path: Path
    header: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    pieces: dict[int, bytes] = field(default_factory=dict)
    footer: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)  # "line N: what is wrong"
    metrics: list[tuple[int, int]] = field(default_factory=list)  # (rss, kv_bytes) per step

    @property
    def complete(self) -> bool:
        return self.footer is not None

    @property
    def tokens(self) -> list[int]:
        return [s.token for s in self.steps]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    def piece(self, token: int) -> bytes:
        return self.pieces.get(token, f"<{token}>".encode())


def read_session(path: str | os.PathLike[str]) -> Session:
    """Read what can be read. Raises SessionFileError only when nothing is usable."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SessionFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise SessionFileError(f"{p}: empty file: not a recording")
    lines = raw.split(b"\n")
    truncated_tail = not raw.endswith(b"\n")
    session: Session | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)
        try:
            obj = json.loads(line.decode("utf-8"))
            if not isinstance(obj, dict) or "type" not in obj:
                raise ValueError("not a session record")
        except (UnicodeDecodeError, ValueError) as exc:
            if session is None:
                raise SessionFileError(f"{p}: line {number}: not an llmtui recording ({_why(exc)})") from None
            what = "truncated last line (the session was cut off)" if last and truncated_tail else _why(exc)
            session.problems.append(f"line {number}: {what}; skipped")
            continue
        kind = obj["type"]
        if session is None:
            if kind != "header" or obj.get("format") != FORMAT:
                raise SessionFileError(f"{p}: line 1: not an llmtui recording (no {FORMAT} header)")
            if obj.get("version") != VERSION:
                raise SessionFileError(
                    f"{p}: line 1: format version {obj.get('version')!r}, this llmtui reads version {VERSION}")
            session = Session(path=p, header=obj)
            continue
        try:
            if kind == "step":
                session.steps.append(_step_from(obj))
                session.metrics.append((int(obj.get("rss", 0)), int(obj.get("kv_bytes", 0))))
            elif kind == "pieces":
                session.pieces.update({int(k): base64.b64decode(v) for k, v in obj["map"].items()})
            elif kind == "event":
                session.events.append(obj)
            elif kind == "footer":
                session.footer = obj
            else:
                session.problems.append(f"line {number}: unknown record type {kind!r}; skipped")
        except (KeyError, TypeError, ValueError) as exc:
            session.problems.append(f"line {number}: bad {kind} record ({_why(exc)}); skipped")
    if session is None:
        raise SessionFileError(f"{p}: no header line: not a recording")
    return session


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
