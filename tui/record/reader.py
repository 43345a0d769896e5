"""Reading session recordings back (the format: :mod:`tui.record.format`).

A recording is untrusted input: the reader checks every field it keeps (:mod:`tui.record.checks`:
types, ranges, every token id against the header's ``model.n_vocab``) and reports (and skips)
what it cannot use, which line and why, keeping the rest. A header it cannot use is one
:class:`SessionFileError` naming the field.

Version 2 recordings hold a token tree: each branch line is checked against the tree read so far (its
parent introduced before it, ids growing, its fork within its parent's steps: no cycle, no duplicate), each
step against its own branch's order. :attr:`Session.steps` is the recorded run's line, what it accepted in
order, as in version 1: branch 0, or, when the run forked (a forced or re-sampled step in step mode), the
path of the branch it went on with; :attr:`Session.branches` holds every branch
(:func:`tui.record.tree.tree_from_session` makes it a tree view).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.loop import Step
from ..engine.tree import path_segments
from .checks import (
    BadField,
    check_branch,
    check_event,
    check_footer,
    check_header,
    clipped,
    pieces_from,
    shown,
    step_from,
)
from .format import FORMAT, READABLE

MAX_FILE_BYTES = 1 << 30  # 1 GiB: ~500,000 steps; a larger file is not a recording llmtui wrote
MAX_HEADER_BYTES = 64 << 20  # a header holds the prompt's text and token ids
MAX_BRANCHES = 4096  # branches of one token tree (each a fork the user made)
MAX_DEPTH = 400  # forks from the first run to a branch (a tree view walks them recursively)


class SessionFileError(Exception):
    """A session file that cannot be used at all (empty, not ours, wrong version, a bad header)."""


@dataclass(slots=True)
class RecordedBranch:
    """A branch of the recorded token tree (branch 0: the first run's; the others from version 2 on)."""

    id: int
    parent: int | None
    fork: int  # the index of its first own step
    origin: str  # run | forced | resampled | inserted | A | B
    steps: list[Step] = field(default_factory=list)  # its own, in index order (a damaged line leaves a gap)
    metrics: list[tuple[int, int]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # a branch run's preset, seed, max_tokens
    depth: int = 0  # forks from branch 0

    @property
    def end(self) -> int:
        """The index after its last step (where it goes on)."""
        return self.steps[-1].index + 1 if self.steps else self.fork


def first_missing(steps: Sequence[Step]) -> int | None:
    """The first step index a path (``steps``, from step 0) lacks before its last step (a damaged line), or None."""
    for position, step in enumerate(steps):
        if step.index != position:
            return position
    return None


def _first_branch() -> dict[int, RecordedBranch]:
    return {0: RecordedBranch(0, None, 0, "run")}


@dataclass(slots=True)
class Session:
    path: Path
    header: dict[str, Any]
    steps: list[Step] = field(default_factory=list)  # the recorded run's line (see the module's docstring)
    events: list[dict[str, Any]] = field(default_factory=list)
    pieces: dict[int, bytes] = field(default_factory=dict)
    footer: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)  # "line N: what is wrong"
    metrics: list[tuple[int, int]] = field(default_factory=list)  # (rss, kv_bytes) per step
    version: int = 1
    branches: dict[int, RecordedBranch] = field(default_factory=_first_branch)
    line: int = 0  # the branch the recorded run ended on: ``steps`` is its path
    current: int = 0  # the branch of the last step (or branch line) read: where the recording left off

    @property
    def ab(self) -> dict[str, Any] | None:
        """An A/B run's header block (mode, labels, side B's preset and model), or None."""
        return self.header.get("ab")

    def branch_line(self, bid: int) -> tuple[list[Step], list[tuple[int, int]]]:
        """Branch ``bid``'s path (its parent's steps before its fork, then its own) and, parallel to it, each
        step's recorded (RSS, KV bytes). A branch's steps are picked by index, not position: a damaged line
        leaves a gap."""
        steps: list[Step] = []
        metrics: list[tuple[int, int]] = []
        for b, stop in path_segments(self.branches.__getitem__, bid):
            for step, m in zip(b.steps, b.metrics):
                if stop is None or step.index < stop:
                    steps.append(step)
                    metrics.append(m)
        return steps, metrics

    def line_owner(self, index: int) -> int:
        """The branch that holds step ``index`` of the run's line (the line's own branch past its end)."""
        b = self.branches[self.line]
        while b.parent is not None and index < b.fork:
            b = self.branches[b.parent]
        return b.id

    def events_on_line(self) -> list[dict[str, Any]]:
        """The events of the run's line (what verify replays): not a side branch's, nor a later branch run's."""
        return [ev for ev in self.events if ev.get("branch", 0) == self.line_owner(ev["at_step"])]

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
        """The first step index the run's line lacks before its last step (a damaged line), or None."""
        return first_missing(self.steps)

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
    run_open = True  # version 2: the recorded run's lines (its stopped event or footer ends them)
    refused: set[int] = set()  # branches whose line was refused: their steps go with it (one problem, not one each)
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
            session.version = session.header["version"]
            n_vocab = session.n_vocab
            continue
        tree = session.version >= 2
        if not tree:
            obj.pop("branch", None)  # version 1 had no branches: a stray key means nothing, as it always did
        if tree and kind in ("step", "event") and type(obj.get("branch")) is int and obj["branch"] in refused:
            continue  # its branch line was refused, and said so
        try:
            if kind == "step":
                step, metrics = step_from(obj, n_vocab)
                _add_step(session, _branch_of(obj, session), step, metrics, number, run_open or not tree)
            elif kind == "branch" and tree:
                try:
                    _add_branch(session, check_branch(obj), run_open)
                except BadField:
                    bid = obj.get("id")
                    if type(bid) is int and bid not in session.branches:
                        refused.add(bid)
                    raise
                refused.discard(obj["id"])
            elif kind == "pieces":
                session.pieces.update(pieces_from(obj, n_vocab))
            elif kind == "event":
                event = check_event(obj, n_vocab)
                _branch_of(event, session)
                session.events.append(event)
                run_open = run_open and not (tree and event["kind"] == "stopped")
            elif kind == "footer":
                session.footer = check_footer(obj)
                run_open = run_open and not tree
            elif kind == "header":
                session.problems.append(f"line {number}: a second header (two sessions in one file?); skipped")
            else:
                session.problems.append(f"line {number}: unknown record type {shown(kind)}; skipped")
        except BadField as exc:
            also = " (and its steps)" if kind == "branch" and type(obj.get("id")) is int and obj["id"] in refused else ""
            session.problems.append(f"line {number}: bad {kind} record: {exc}; skipped{also}")
    if session is None:
        raise SessionFileError(f"{p}: no header line: not a recording")
    return session


def _header(obj: dict[str, Any], p: Path, number: int) -> dict[str, Any]:
    """``obj`` if it is a usable header; SessionFileError (one line naming the field) if not."""
    if obj.get("type") != "header" or obj.get("format") != FORMAT:
        raise SessionFileError(f"{p}: line {number}: not an llmtui recording (no {FORMAT} header)")
    version = obj.get("version")
    if type(version) is not int or version not in READABLE:
        raise SessionFileError(f"{p}: line {number}: format version {shown(version)}, "
                               f"this llmtui reads version {' or '.join(map(str, READABLE))}")
    try:
        check_header(obj)
    except BadField as exc:
        raise SessionFileError(f"{p}: line {number}: bad header: {exc}") from None
    return obj


def _branch_of(rec: dict[str, Any], session: Session) -> int:
    """The branch a step or event line names (absent: branch 0), introduced by an earlier branch line."""
    bid = rec.get("branch", 0)
    if type(bid) is not int or bid not in session.branches:
        raise BadField(f"branch: {shown(bid)} is not a branch of this recording (its branch line comes first)")
    return bid


def _add_step(session: Session, bid: int, step: Step, metrics: tuple[int, int], number: int, on_line: bool) -> None:
    """Step ``step`` of branch ``bid``, after the branch's last (a gap is reported and kept: a damaged line)."""
    branch = session.branches[bid]
    of = f" of branch {bid}" if bid else ""
    done = branch.steps[-1].index if branch.steps else branch.fork - 1
    if step.index <= done:
        if bid and not branch.steps:
            raise BadField(f"i: step {step.index}{of} comes before the branch leaves its parent (at step {branch.fork})")
        if step.index < done and (bid or session.version >= 2):  # version 1 said it as it always did
            raise BadField(f"i: step {step.index}{of} out of order, after step {done}")
        raise BadField(f"i: step {step.index}{of} again after step {done} (a repeated line?)")
    if step.index > done + 1:
        missing = f"step {done + 1}" if step.index == done + 2 else f"steps {done + 1}..{step.index - 1}"
        session.problems.append(f"line {number}: step {step.index}{of} follows step {done}: {missing} missing")
    branch.steps.append(step)
    branch.metrics.append(metrics)
    session.current = bid
    if on_line and bid == session.line:
        session.steps.append(step)
        session.metrics.append(metrics)


def _add_branch(session: Session, rec: dict[str, Any], on_line: bool) -> None:
    """A branch line, checked against the tree read so far: its parent comes before it (so no cycle), ids grow,
    and it leaves its parent within the parent's steps."""
    bid, parent, fork, origin = rec["id"], rec["parent"], rec["fork"], rec["origin"]
    if bid in session.branches:
        raise BadField(f"id: branch {bid} again (a duplicate id)")
    if parent == bid:
        raise BadField(f"parent: branch {bid} is its own parent (a cycle)")
    if parent not in session.branches:
        raise BadField(f"parent: no branch {parent} before this line (a branch follows its parent: a cycle, "
                       "or a lost line)")
    newest = max(session.branches)
    if len(session.branches) >= MAX_BRANCHES:
        raise BadField(f"id: more than {MAX_BRANCHES:,} branches in one tree")
    if bid < newest:
        raise BadField(f"id: branch {bid} after branch {newest} (ids only grow)")
    p = session.branches[parent]
    if fork > p.end:
        have = f"steps {p.fork}..{p.end - 1}" if p.steps else "no steps yet"
        raise BadField(f"fork: step {fork} is beyond branch {parent}'s length (it has {have})")
    if fork < p.fork:
        raise BadField(f"fork: step {fork} is before branch {parent} leaves its own parent (at step {p.fork})")
    if p.depth >= MAX_DEPTH:
        raise BadField(f"parent: branch {bid} would be {p.depth + 1} forks deep (at most {MAX_DEPTH})")
    info = {key: rec[key] for key in ("preset", "seed", "max_tokens") if key in rec}
    session.branches[bid] = RecordedBranch(bid, parent, fork, origin, info=info, depth=p.depth + 1)
    session.current = bid
    if on_line and parent == session.line and origin != "B":  # the run went on from this choice (B: A/B's side)
        keep = next((k for k, s in enumerate(session.steps) if s.index >= fork), len(session.steps))
        del session.steps[keep:]
        del session.metrics[keep:]
        session.line = bid


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
