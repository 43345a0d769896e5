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

The writer creates a new file (never appends to or writes through an existing
one), writes each line whole and flushes it at once, so a session killed at any
moment is readable up to its last complete line.

A recording is untrusted input: the reader checks every field it keeps — types,
ranges, every token id against the header's ``model.n_vocab`` — and reports (and
skips) what it cannot use, which line and why, keeping the rest. A header it
cannot use is one :class:`SessionFileError` naming the field.
"""

from __future__ import annotations

import base64
import datetime as _dt
import errno
import functools
import hashlib
import json
import math
import os
import reprlib
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..engine.errors import EngineError
from ..engine.loop import Step
from .steps import _b64, step_record
from ..engine.settings import CACHE_TYPES, MAX_CTX, SEED_MAX, EngineSettings
from ..safe_text import visible
from ..sampling.presets import PresetError, validate_specs
from ..sampling.trace import SampleTrace, StageTrace

FORMAT = "llmtui-session"
VERSION = 1


class RecordError(Exception):
    """Recording failed (unwritable directory, disk full…); one line for the UI."""


class RecordingExists(RecordError):
    """The recording's path is already taken (a file, a directory or a symlink)."""


class SessionFileError(Exception):
    """A session file that cannot be used at all (empty, not ours, wrong version, a bad header)."""


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


class SessionWriter:
    """Writes whole lines to a new file and flushes each one; never raises past ``RecordError``.

    ``path`` must not exist (:class:`RecordingExists` otherwise); :meth:`new_in` picks a free
    name in a directory instead.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any],
                 piece: Callable[[int], bytes]) -> None:
        self.path = Path(path)
        self.piece = piece
        self._seen: set[int] = set()
        self.steps = 0
        self.closed = False
        self._rss = 0
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
        fresh = [t for t in ids if t not in self._seen]
        if fresh:
            self._seen.update(fresh)
            self._write({"type": "pieces", "map": {str(t): _b64(self.piece(t)) for t in fresh}})

    def step(self, step: Step, *, kv_bytes: int = 0, rss: int | None = None) -> None:
        """Write one step; ``rss`` (the process's resident memory) is measured here, every
        :data:`RSS_EVERY` steps (a psutil call costs ~20 µs), unless given."""
        tr = step.trace
        ids = [step.token, *tr.top_ids.tolist()]
        for s in tr.stages:
            ids.extend(s.top_ids)
        self._new_pieces(ids)
        if rss is None:
            if self.steps % RSS_EVERY == 0:
                self._rss = _rss()
            rss = self._rss
        self._write(step_record(step, rss=rss, kv_bytes=kv_bytes))
        self.steps += 1

    def event(self, kind: str, at_step: int, **data: Any) -> None:
        self._write({"type": "event", "kind": kind, "at_step": at_step, **data})

    def footer(self, **data: Any) -> None:
        self._write({"type": "footer", "steps": self.steps, **data})
        self.close()

    def finish(self, reason: str | None, error: str | None, summary: dict[str, Any], text: str) -> None:
        """The end of a run: a "stopped" event after its last step, then the footer."""
        self.event("stopped", self.steps, reason=reason, error=error)
        self.footer(stop_reason=reason, summary=summary, text=text)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError:
                return


def append_event(path: str | os.PathLike[str], kind: str, at_step: int, **data: Any) -> None:
    """Add one event line to a finished recording (a lab run from the UI after it); one whole write,
    like every other line. Readers take events wherever they are, footer or not.

    Only to a regular file at ``path`` itself: a symlink put there since is refused (O_NOFOLLOW),
    and so is a FIFO or a device (O_NONBLOCK: opening one cannot hang the app)."""
    line = _line({"type": "event", "kind": kind, "at_step": at_step, **data})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise RecordError(f"{path}: cannot add to the recording: {why}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordError(f"{path}: cannot add to the recording: not a regular file")
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


# -- reading ---------------------------------------------------------------------------------
#
# Everything the reader keeps is checked here, where it enters, so nothing after it (the replay,
# verify, fork, the exports, the panels) meets a wrong type, a NaN or a token id outside the
# vocabulary: llama.cpp aborts the whole process on one of those.
#
# Explicit checks, not pydantic: a step holds ~30 fields and ~100 list elements; these checks test
# a whole list at once with builtins that run in C (set(map(type, ids)), min, max). Measured on
# 10,000 real steps: the checks cost ~0.2 s (reading goes from ~0.62 s to ~0.85 s), a strict
# pydantic TypeAdapter of the same step ~0.45 s, and it would still need a second pass for the
# vocabulary bound (n_vocab comes from the header, not from a schema) and rewording of its errors.
# Every message names the field, on one line.

_FLOAT_MAX = sys.float_info.max
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_PROB = (-1e-6, 1.0 + 1e-6)  # probabilities are float sums: 1.0000000000000002 is still one
_NUMBER = frozenset({int, float})  # JSON's 1 is as good as 1.0; bool (a subclass of int) is not
_INT_ONLY = frozenset({int})
_MISSING = object()


class _Bad(ValueError):
    """One field of a record cannot be used; the message names it."""


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40
_repr.maxlist = _repr.maxdict = 4
_repr.maxlevel = 2


def _shown(value: Any) -> str:
    """A value from the file in a message: short, one line, safe for a terminal."""
    return visible(_repr.repr(value))


def _clipped(text: str, limit: int = 200) -> str:
    """Someone else's message about a value from the file: it may quote all of it."""
    return visible(text if len(text) <= limit else text[:limit] + "…")


def _get(rec: dict[str, Any], key: str, where: str) -> Any:
    value = rec.get(key, _MISSING)
    if value is _MISSING:
        raise _Bad(f"{where}{key}: missing")
    return value


def _range(lo: float, hi: float) -> str:
    if hi >= _INT64_MAX:  # no upper bound worth naming
        return f"≥ {lo:g}" if isinstance(lo, float) else f"≥ {lo:,}"
    return f"in {lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"in {lo:,}..{hi:,}"


def _int(value: Any, name: str, lo: int = 0, hi: int = _INT64_MAX) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _Bad(f"{name}: expected a whole number {_range(lo, hi)}, got {_shown(value)}")
    return value


def _float(value: Any, name: str, lo: float = -_FLOAT_MAX, hi: float = _FLOAT_MAX) -> float:
    """A number in lo..hi; NaN never (it fails every comparison), an infinity only when lo or hi is one."""
    if (type(value) is not float and type(value) is not int) or not lo <= value <= hi:
        what = "a probability (0..1)" if (lo, hi) == _PROB else f"a number {_range(lo, hi)}"
        raise _Bad(f"{name}: expected {what}, got {_shown(value)}")
    return float(value)


def _prob(value: Any, name: str) -> float:
    return _float(value, name, *_PROB)


def _str(value: Any, name: str) -> str:
    if type(value) is not str:
        raise _Bad(f"{name}: expected text, got {_shown(value)}")
    return value


def _bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise _Bad(f"{name}: expected true or false, got {_shown(value)}")
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Bad(f"{name}: expected an object, got {_shown(value)}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if type(value) is not list:
        raise _Bad(f"{name}: expected a list, got {_shown(value)}")
    return value


def _ids(value: Any, name: str, n_vocab: int) -> list[int]:
    """A list of token ids of this model: 0 ≤ id < n_vocab."""
    if type(value) is not list:
        raise _Bad(f"{name}: expected a list of token ids, got {_shown(value)}")
    if value and (set(map(type, value)) != _INT_ONLY or min(value) < 0 or max(value) >= n_vocab):
        i, bad = next((i, x) for i, x in enumerate(value) if type(x) is not int or not 0 <= x < n_vocab)
        raise _Bad(f"{name}[{i}]: {_shown(bad)} is not a token id of this model (0..{n_vocab - 1:,})")
    return value


def _token(value: Any, name: str, n_vocab: int) -> int:
    if type(value) is not int or not 0 <= value < n_vocab:
        raise _Bad(f"{name}: {_shown(value)} is not a token id of this model (0..{n_vocab - 1:,})")
    return value


def _numbers(value: Any, name: str, lo: float, hi: float) -> list[float]:
    """A list of numbers in lo..hi, none NaN."""
    if type(value) is not list:
        raise _Bad(f"{name}: expected a list of numbers, got {_shown(value)}")
    if value:
        try:
            ok = (set(map(type, value)) <= _NUMBER and not any(map(math.isnan, value))
                  and lo <= min(value) and max(value) <= hi)
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            for i, x in enumerate(value):
                _float(x, f"{name}[{i}]", lo, hi)
    return value


def _step_from(rec: dict[str, Any], n_vocab: int) -> tuple[Step, tuple[int, int]]:
    """A step record → (Step, (rss, kv_bytes)); _Bad names the first field that cannot be used."""
    try:
        return _checked_step(rec, n_vocab)
    except KeyError as exc:  # rec[...] below: cheaper than a .get per field on the happy path
        raise _Bad(f"{exc.args[0]}: missing") from None


def _checked_step(rec: dict[str, Any], n_vocab: int) -> tuple[Step, tuple[int, int]]:
    token = _token(rec["token"], "token", n_vocab)
    try:
        piece = base64.b64decode(_str(rec["piece"], "piece"), validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise _Bad(f"piece: not base64: {_shown(rec['piece'])}") from None
    prob = _prob(rec["prob"], "prob")
    top = _dict(rec["top"], "top")
    top_ids = _ids(_get(top, "token", "top."), "top.token", n_vocab)
    top_logits = _numbers(_get(top, "logit", "top."), "top.logit", -math.inf, _FLOAT_MAX)  # -inf: a banned token
    top_p = _numbers(_get(top, "p", "top."), "top.p", *_PROB)
    top_p_after = _numbers(_get(top, "p_after", "top."), "top.p_after", *_PROB)
    if not len(top_ids) == len(top_logits) == len(top_p) == len(top_p_after):  # zipped by the exports and panels
        raise _Bad(f"top: lists of different lengths ({len(top_ids)}, {len(top_logits)}, {len(top_p)}, "
                   f"{len(top_p_after)})")
    stages = []
    for k, stage in enumerate(_list(rec["stages"], "stages")):
        if type(stage) is not list or len(stage) != 7:
            raise _Bad(f"stages[{k}]: expected [name, n_in, n_out, mass_removed, ids, probs, note], "
                       f"got {_shown(stage)}")
        try:
            stages.append(_stage(stage, n_vocab))
        except _Bad as exc:  # the stage's number only now: formatting it for every stage costs
            raise _Bad(f"stages[{k}].{exc}") from None
    draw = rec["draw"]
    trace = SampleTrace(
        token=token, prob=prob, entropy=_float(rec["entropy"], "entropy", 0.0),
        top_ids=np.asarray(top_ids, dtype=np.int32), top_logits=np.asarray(top_logits, dtype=np.float32),
        top_p_before=np.asarray(top_p, dtype=np.float64), top_p_after=np.asarray(top_p_after, dtype=np.float64),
        stages=tuple(stages), n_final=_int(rec["n_final"], "n_final", 0, n_vocab),
        draw=None if draw is None else _prob(draw, "draw"),
        draw_lo=_prob(rec["draw_lo"], "draw_lo"), draw_hi=_prob(rec["draw_hi"], "draw_hi"),
        raw_logit=_float(rec["raw_logit"], "raw_logit", -math.inf), raw_p=_prob(rec["raw_p"], "raw_p"),
    )
    step = Step(
        index=_int(rec["i"], "i", 0, _INT32_MAX), token=token, piece=piece, text=_str(rec["text"], "text"),
        prob=prob, trace=trace, decode_ms=_float(rec["decode_ms"], "decode_ms", 0.0),
        sample_ms=_float(rec["sample_ms"], "sample_ms", 0.0), n_past=_int(rec["n_past"], "n_past", 0, MAX_CTX),
        n_ctx=_int(rec["n_ctx"], "n_ctx", 1, MAX_CTX), is_eog=_bool(rec["eog"], "eog"), t=_float(rec["t"], "t"),
    )
    return step, (_int(rec.get("rss", 0), "rss"), _int(rec.get("kv_bytes", 0), "kv_bytes"))


def _stage(stage: list[Any], n_vocab: int) -> StageTrace:
    name, n_in, n_out, mass, ids, probs, note = stage
    trace = StageTrace(_str(name, "name"), _int(n_in, "n_in", 0, n_vocab), _int(n_out, "n_out", 0, n_vocab),
                       _prob(mass, "mass_removed"), tuple(_ids(ids, "ids", n_vocab)),
                       tuple(_numbers(probs, "probs", *_PROB)), _str(note, "note"))
    if len(ids) != len(probs):
        raise _Bad(f"probs: {len(ids)} ids but {len(probs)} probabilities")
    return trace


def _pieces_from(rec: dict[str, Any], n_vocab: int) -> dict[int, bytes]:
    pieces: dict[int, bytes] = {}
    for key, value in _dict(_get(rec, "map", ""), "map").items():
        # int() would also take " 12", "1_2" and other scripts' digits
        if not (key.isascii() and key.isdigit() and len(key) <= 10) or not int(key) < n_vocab:
            raise _Bad(f"map: {_shown(key)} is not a token id of this model (0..{n_vocab - 1:,})")
        try:
            pieces[int(key)] = base64.b64decode(_str(value, f"map[{key}]"), validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise _Bad(f"map[{key}]: not base64: {_shown(value)}") from None
    return pieces


def _check_preset(value: Any, name: str) -> None:
    """A recorded preset: what a preset file may hold (validate_specs checks every parameter's type
    and range, numbers finite, whole numbers within llama.cpp's int32)."""
    preset = _dict(value, name)
    _str(_get(preset, "name", f"{name}."), f"{name}.name")
    if "description" in preset:
        _str(preset["description"], f"{name}.description")
    try:
        validate_specs(_list(_get(preset, "samplers", f"{name}."), f"{name}.samplers"), where=name)
    except PresetError as exc:
        raise _Bad(_clipped(str(exc))) from None


def _check_header(head: dict[str, Any]) -> None:
    """Every header field the replay, verify, fork and the exports use."""
    for key in ("app_version", "created"):
        if key in head:
            _str(head[key], key)
    model = _dict(_get(head, "model", ""), "model")
    for key in ("name", "path", "arch", "quant"):
        _str(_get(model, key, "model."), f"model.{key}")
    n_vocab = _int(_get(model, "n_vocab", "model."), "model.n_vocab", 1, _INT32_MAX)
    if "file_size" in model:
        _int(model["file_size"], "model.file_size")
    if model.get("fingerprint") is not None:
        _str(model["fingerprint"], "model.fingerprint")
    engine = _dict(_get(head, "engine", ""), "engine")
    for key in ("type_k", "type_v", "flash_attn"):  # EngineSettings looks these up in a dict: hashable first
        if key in engine:
            _str(engine[key], f"engine.{key}")
    try:
        EngineSettings.from_dict(engine)
    except EngineError as exc:
        raise _Bad(f"engine.{_clipped(str(exc))}") from None  # its messages start with the setting's name
    _int(_get(head, "n_ctx", ""), "n_ctx", 1, MAX_CTX)
    if "kv" in head:
        kv = _dict(head["kv"], "kv")
        if "bytes_per_token" in kv:
            _float(kv["bytes_per_token"], "kv.bytes_per_token", 0.0, float(2**40))
        if "allocated" in kv:
            _int(kv["allocated"], "kv.allocated")
        for key in ("type_k", "type_v"):
            if key in kv and (type(kv[key]) is not str or kv[key] not in CACHE_TYPES):
                raise _Bad(f"kv.{key}: expected one of {', '.join(CACHE_TYPES)}, got {_shown(kv[key])}")
    _check_preset(_get(head, "preset", ""), "preset")
    _int(_get(head, "seed", ""), "seed", -1, SEED_MAX)
    _str(_get(head, "prompt", ""), "prompt")
    _ids(_get(head, "prompt_tokens", ""), "prompt_tokens", n_vocab)
    _ids(head.get("history", []), "history", n_vocab)
    if "max_tokens" in head:
        _int(head["max_tokens"], "max_tokens", 0, _INT32_MAX)
    if "ignore_eos" in head:
        _bool(head["ignore_eos"], "ignore_eos")
    if head.get("parent") is not None:
        parent = _dict(head["parent"], "parent")
        if "file" in parent:
            _str(parent["file"], "parent.file")
        if "fork_step" in parent:
            _int(parent["fork_step"], "parent.fork_step", 0, _INT32_MAX)


def _check_event(rec: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    _str(_get(rec, "kind", ""), "kind")
    _int(_get(rec, "at_step", ""), "at_step", 0, _INT32_MAX)
    if "preset" in rec:
        _check_preset(rec["preset"], "preset")
    if "token" in rec:
        _token(rec["token"], "token", n_vocab)
    for key in ("reason", "error", "lab"):
        if rec.get(key) is not None:
            _str(rec[key], key)
    return rec


def _check_footer(rec: dict[str, Any]) -> dict[str, Any]:
    if "steps" in rec:
        _int(rec["steps"], "steps", 0, _INT32_MAX)
    for key in ("stop_reason", "text", "error"):
        if rec.get(key) is not None:
            _str(rec[key], key)
    if "summary" in rec:
        _dict(rec["summary"], "summary")
    return rec


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
    def n_vocab(self) -> int:
        return int(self.header["model"]["n_vocab"])

    @property
    def tokens(self) -> list[int]:
        return [s.token for s in self.steps]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def first_missing(self) -> int | None:
        """The first step index the recording lacks before its last step (a damaged line), or None."""
        for position, step in enumerate(self.steps):
            if step.index != position:
                return position
        return None

    def piece(self, token: int) -> bytes:
        return self.pieces.get(token, f"<{token}>".encode())


def read_session(path: str | os.PathLike[str]) -> Session:
    """Read what can be read. Raises SessionFileError only when nothing is usable (no header, a
    header that cannot be used); every other bad line is a problem ("line N: …; skipped")."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SessionFileError(f"{p}: {size / 2**20:,.0f} MiB is too large for a recording (at most "
                                   f"{MAX_FILE_BYTES / 2**20:,.0f} MiB)")
        raw = p.read_bytes()
    except OSError as exc:
        raise SessionFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise SessionFileError(f"{p}: empty file: not a recording")
    lines = raw.split(b"\n")
    truncated_tail = not raw.endswith(b"\n")
    session: Session | None = None
    n_vocab = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)
        try:
            obj = json.loads(line.decode("utf-8"))
            if type(obj) is not dict or "type" not in obj:
                raise ValueError("not a session record")
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            if session is None:
                raise SessionFileError(f"{p}: line {number}: not an llmtui recording ({_why(exc)})") from None
            what = "truncated last line (the session was cut off)" if last and truncated_tail else _why(exc)
            session.problems.append(f"line {number}: {what}; skipped")
            continue
        kind = obj["type"]
        if session is None:
            session = Session(path=p, header=_header(obj, p, number))
            n_vocab = session.n_vocab
            continue
        try:
            if kind == "step":
                step, metrics = _step_from(obj, n_vocab)
                done = session.steps[-1].index if session.steps else -1
                if step.index <= done:
                    raise _Bad(f"i: step {step.index} again after step {done} (a repeated line?)")
                if step.index > done + 1:
                    missing = f"step {done + 1}" if step.index == done + 2 else f"steps {done + 1}..{step.index - 1}"
                    session.problems.append(f"line {number}: step {step.index} follows step {done}: {missing} missing")
                session.steps.append(step)
                session.metrics.append(metrics)
            elif kind == "pieces":
                session.pieces.update(_pieces_from(obj, n_vocab))
            elif kind == "event":
                session.events.append(_check_event(obj, n_vocab))
            elif kind == "footer":
                session.footer = _check_footer(obj)
            elif kind == "header":
                session.problems.append(f"line {number}: a second header (two sessions in one file?); skipped")
            else:
                session.problems.append(f"line {number}: unknown record type {_shown(kind)}; skipped")
        except _Bad as exc:
            session.problems.append(f"line {number}: bad {kind} record: {exc}; skipped")
    if session is None:
        raise SessionFileError(f"{p}: no header line: not a recording")
    return session


def _header(obj: dict[str, Any], p: Path, number: int) -> dict[str, Any]:
    """``obj`` if it is a usable header; SessionFileError (one line naming the field) if not."""
    if obj.get("type") != "header" or obj.get("format") != FORMAT:
        raise SessionFileError(f"{p}: line {number}: not an llmtui recording (no {FORMAT} header)")
    if obj.get("version") != VERSION:
        raise SessionFileError(f"{p}: line {number}: format version {_shown(obj.get('version'))}, "
                               f"this llmtui reads version {VERSION}")
    try:
        _check_header(obj)
    except _Bad as exc:
        raise SessionFileError(f"{p}: line {number}: bad header: {exc}") from None
    return obj


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the header of a recording (its first line, read with a bound), checked as
    :func:`read_session` checks it: for listing recordings without reading them."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            line = fh.readline(MAX_HEADER_BYTES)
    except OSError as exc:
        raise SessionFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SessionFileError(f"{p}: line 1: not an llmtui recording ({_why(exc)})") from None
    if type(obj) is not dict:
        raise SessionFileError(f"{p}: line 1: not an llmtui recording (no {FORMAT} header)")
    return _header(obj, p, 1)


MAX_FILE_BYTES = 1 << 30  # 1 GiB: ~500,000 steps; a larger file is not a recording llmtui wrote
MAX_HEADER_BYTES = 64 << 20  # a header holds the prompt's text and token ids


def _why(exc: Exception) -> str:
    return _clipped(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)
