"""Reading session recordings back (the format: :mod:`tui.record.format`).

A recording is untrusted input: the reader checks every field it keeps (:mod:`tui.record.checks`:
types, ranges, every token id against the header's ``model.n_vocab``) and reports (and skips)
what it cannot use, which line and why, keeping the rest. A header it cannot use is one
:class:`SessionFileError` naming the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.loop import Step
from .checks import BadField, check_event, check_footer, check_header, clipped, pieces_from, shown, step_from
from .format import FORMAT, VERSION

MAX_FILE_BYTES = 1 << 30  # 1 GiB: ~500,000 steps; a larger file is not a recording llmtui wrote
MAX_HEADER_BYTES = 64 << 20  # a header holds the prompt's text and token ids


class SessionFileError(Exception):
    """A session file that cannot be used at all (empty, not ours, wrong version, a bad header)."""


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
                step, metrics = step_from(obj, n_vocab)
                done = session.steps[-1].index if session.steps else -1
                if step.index <= done:
                    raise BadField(f"i: step {step.index} again after step {done} (a repeated line?)")
                if step.index > done + 1:
                    missing = f"step {done + 1}" if step.index == done + 2 else f"steps {done + 1}..{step.index - 1}"
                    session.problems.append(f"line {number}: step {step.index} follows step {done}: {missing} missing")
                session.steps.append(step)
                session.metrics.append(metrics)
            elif kind == "pieces":
                session.pieces.update(pieces_from(obj, n_vocab))
            elif kind == "event":
                session.events.append(check_event(obj, n_vocab))
            elif kind == "footer":
                session.footer = check_footer(obj)
            elif kind == "header":
                session.problems.append(f"line {number}: a second header (two sessions in one file?); skipped")
            else:
                session.problems.append(f"line {number}: unknown record type {shown(kind)}; skipped")
        except BadField as exc:
            session.problems.append(f"line {number}: bad {kind} record: {exc}; skipped")
    if session is None:
        raise SessionFileError(f"{p}: no header line: not a recording")
    return session


def _header(obj: dict[str, Any], p: Path, number: int) -> dict[str, Any]:
    """``obj`` if it is a usable header; SessionFileError (one line naming the field) if not."""
    if obj.get("type") != "header" or obj.get("format") != FORMAT:
        raise SessionFileError(f"{p}: line {number}: not an llmtui recording (no {FORMAT} header)")
    if obj.get("version") != VERSION:
        raise SessionFileError(f"{p}: line {number}: format version {shown(obj.get('version'))}, "
                               f"this llmtui reads version {VERSION}")
    try:
        check_header(obj)
    except BadField as exc:
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


def _why(exc: Exception) -> str:
    return clipped(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)
