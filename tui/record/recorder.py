"""Recording as a listener of a run's events: the engine knows nothing of files.

A :class:`Recorder` is added to a controller's listeners (``controller.listeners``) and writes one session
per run: the header when the run starts, each step once it is accepted (after any re-sample), preset
changes, re-samples and forced choices as events, the stopped event and footer when it finishes.

Runs form a token tree (:mod:`tui.engine.branching`). A fork during a run (a forced or re-sampled step in
step mode) writes the replaced step (a *stub*) as its branch's last step, then a ``branch`` line, and the
run's steps go on in the new branch. A *branch run* (generating from a step of the tree) appends its branch
line, steps and stopped event to the file of its tree's first run instead of opening a new one; an API
request's run (no tree) records as before. The file stays a mirror of the tree: at each
:class:`~tui.engine.branching.TreeChanged` whatever the tree holds and the file lacks is written.

:class:`ABRecorder` records an A/B lockstep run (:mod:`tui.engine.ab`) the same way: side A as branch 0,
side B as a branch (origin "B") from the step where the sides part, each step's figures as an ``ab`` event.

A recording that fails (disk full, unwritable place) is reported through ``report`` and stops recording,
never the generation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..engine.ab import ABFinished, ABStarted, ABStep
from ..engine.branching import TreeChanged
from ..engine.controller import Accepted, Finished, PresetChanged, Resampled, Started
from ..engine.loop import Step
from ..engine.tree import TreeView
from .writer import (
    AppendWriter,
    LineWriter,
    RecordError,
    SessionWriter,
    model_identity,
    session_header,
)


@dataclass(frozen=True, slots=True)
class RecordingStarted:
    path: str


@dataclass(frozen=True, slots=True)
class RecordingFailed:
    message: str


def _put(writer: LineWriter, engine: Any, step: Step, branch: int) -> None:
    """One step line, with the KV bytes the model's cache held for it."""
    layout = engine.kv_layout()
    writer.step(step, kv_bytes=layout.used(step.n_past + 1) if layout is not None else 0, branch=branch)


@dataclass(slots=True)
class _Written:
    """What the file holds of one branch: where it leaves its parent, and how many of its own steps."""

    fork: int
    steps: int = 0

    @property
    def end(self) -> int:
        return self.fork + self.steps


@dataclass(slots=True)
class _TreeFile:
    """The recording of the controller's current token tree: its first run's file, which branch runs append to."""

    path: Path
    seen: set[int]  # token ids whose pieces the file holds
    branches: dict[int, _Written] = field(default_factory=lambda: {0: _Written(0)})
    skipped: set[int] = field(default_factory=set)  # branches whose runs went unrecorded (recording was off)

    def holds(self, parent: int, at: int) -> bool:
        """The file holds branch ``parent`` up to step ``at`` (where a fork from it starts; the controller names
        the parent the tree resolved)."""
        b = self.branches.get(parent)
        return b is not None and at <= b.end


W = TypeVar("W", bound=LineWriter)


class _Recording(Generic[W]):
    """What both recorders share: the open writer, and a failure that stops the recording (said through
    ``report``), never the run."""

    writer: W | None
    report: Callable[[object], None]

    def _write(self, write: Callable[[W], None]) -> None:
        if self.writer is None:
            return
        try:
            write(self.writer)
        except RecordError as exc:
            self._failed(exc)

    def _failed(self, exc: RecordError) -> None:
        self._close()
        self.report(RecordingFailed(str(exc)))

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Recorder(_Recording[LineWriter]):
    """``factory(header) -> SessionWriter`` opens each run's recording (a fixed file, or a new name
    in a directory); ``report`` gets :class:`RecordingStarted` / :class:`RecordingFailed`."""

    def __init__(self, engine: Any, factory: Callable[[dict[str, Any]], SessionWriter],
                 report: Callable[[object], None] = lambda event: None) -> None:
        self.engine = engine
        self.factory = factory
        self.report = report
        self.writer = None  # the current run's
        # read when a run starts: switching recording off mid-run lets the current recording finish
        self.enabled = True
        self.tree: _TreeFile | None = None  # the recording of the current token tree
        self.branch: int | None = None  # the branch the current run's steps go to (None: a run without a tree)
        self._in_run = False
        self._held: Resampled | None = None  # written once it is known whether it forked a branch

    def __call__(self, event: object) -> None:
        if isinstance(event, Accepted):
            self._flush_held()
            step = event.step
            self._write(lambda w: self._step(w, self.branch, step))
        elif isinstance(event, Started):
            self._open(event)
        elif isinstance(event, PresetChanged):
            self._flush_held()
            self._write(lambda w: w.event("preset_changed", event.at_step, branch=self.branch or 0,
                                          preset=event.spec.as_dict()))
        elif isinstance(event, Resampled):
            self._flush_held()
            self._held = event
        elif isinstance(event, TreeChanged):
            self._tree_changed(event.tree)
        elif isinstance(event, Finished):
            self._flush_held()
            self._finish(event)

    # -- runs ----------------------------------------------------------------------------------------------

    def _open(self, ev: Started) -> None:
        self._close()
        self._held = None
        self._in_run = True
        self.branch = None
        if ev.branch is not None and not ev.new_tree:
            self._open_branch_run(ev)
            return
        if ev.branch is not None:
            self.tree = None  # a new tree: its first run's file, if it is recorded
        if not self.enabled:
            return
        try:
            header = session_header(self.engine, ev.spec, ev.seed, ev.given, ev.prompt_tokens,
                                    max_tokens=ev.max_tokens, ignore_eos=ev.ignore_eos, parent=ev.parent,
                                    history=ev.history)
            if ev.retrieved is not None:  # a retrieval-augmented turn: the chunks its prompt carried
                header["retrieval"] = ev.retrieved.as_dict()
            self.writer = self.factory(header)
        except RecordError as exc:
            self.report(RecordingFailed(str(exc)))
            return
        if ev.branch is not None:
            self.branch = ev.branch
            self.tree = _TreeFile(self.writer.path, self.writer.seen)
        self.report(RecordingStarted(str(self.writer.path)))

    def _open_branch_run(self, ev: Started) -> None:
        """A branch run appends to its tree's file: a branch line (a new branch), its steps, a stopped event."""
        tree, bid = self.tree, ev.branch
        if tree is None:  # the tree's first run was not recorded: there is no file to add to
            return
        assert bid is not None
        if not self.enabled:
            tree.skipped.add(bid)
            return
        if ev.fork is not None:
            parent, at, origin = ev.fork
            if not tree.holds(parent, at) or bid in tree.branches:
                self._not_recorded(tree, bid, f"the recording lacks step {at} of branch {parent}")
                return
        else:
            known = tree.branches.get(bid)
            if known is None or bid in tree.skipped or known.end != len(ev.before):
                self._not_recorded(tree, bid, "the recording lacks some of its steps (recording was off)")
                return
        try:
            self.writer = AppendWriter(tree.path, self.engine.piece, tree.seen)
            if ev.fork is not None:
                self.writer.branch_line(bid, parent, at, origin, preset=ev.spec.as_dict(), seed=ev.seed,
                                        max_tokens=ev.max_tokens)
                tree.branches[bid] = _Written(at)
        except RecordError as exc:
            self._failed(exc, tree=True)
            return
        self.branch = bid
        self.report(RecordingStarted(str(tree.path)))

    def _not_recorded(self, tree: _TreeFile, bid: int, why: str) -> None:
        tree.skipped.add(bid)
        self.report(RecordingFailed(f"{tree.path}: branch {bid} is not recorded: {why}"))

    def _step(self, writer: LineWriter, branch: int | None, step: Step) -> None:
        _put(writer, self.engine, step, branch or 0)
        if branch is not None and self.tree is not None and branch in self.tree.branches:
            self.tree.branches[branch].steps += 1

    def _flush_held(self) -> None:
        """A re-sample or forced choice that forked nothing (it replaced the step in place): an event of the
        current branch."""
        held, self._held = self._held, None
        if held is not None:
            self._write(lambda w: self._resampled(w, held, self.branch or 0))

    @staticmethod
    def _resampled(writer: LineWriter, ev: Resampled, branch: int) -> None:
        kind = "forced" if ev.step.forced else "resampled"  # the user's choice, or another draw
        writer.event(kind, ev.step.index, branch=branch, preset=ev.spec.as_dict(), token=ev.step.token)

    def _finish(self, ev: Finished) -> None:
        reason = ev.reason.value if ev.reason else None
        writer, tree, branch = self.writer, self.tree, self.branch
        if writer is not None:
            at = tree.branches[branch].end if tree is not None and branch in tree.branches else writer.steps
            try:
                if isinstance(writer, SessionWriter):
                    writer.finish(reason, ev.error, ev.summary, ev.text, at_step=at, branch=branch or 0)
                else:  # a branch run: its tree's first run wrote the footer
                    writer.event("stopped", at, branch=branch or 0, reason=reason, error=ev.error)
            except RecordError as exc:
                self._failed(exc, tree=branch is not None)
        self._close()
        self.branch = None
        self._in_run = False

    # -- the tree -----------------------------------------------------------------------------------------

    def _tree_changed(self, view: TreeView) -> None:
        held, self._held = self._held, None
        tree = self.tree
        if tree is None:
            return
        if self._in_run:
            writer = self.writer
            if writer is None or self.branch is None:  # this run is not recorded into the tree
                return
            self._write(lambda w: self._catch_up(w, view, held))
            if self.writer is not None and self.tree is not None:
                if view.current not in self.tree.branches:
                    self._failed(RecordError(f"{tree.path}: the recording lost branch {view.current}: it stops here"),
                                 tree=True)
                else:
                    self.branch = view.current
            return
        # between runs: a re-sample of the last step forked a branch (a switch adds nothing)
        if not self.enabled or not self._behind(view):
            return
        try:
            writer = AppendWriter(tree.path, self.engine.piece, tree.seen)
        except RecordError as exc:
            self._failed(exc, tree=True)
            return
        try:
            self._catch_up(writer, view, held)
        except RecordError as exc:
            self._failed(exc, tree=True)
        finally:
            writer.close()

    def _behind(self, view: TreeView) -> bool:
        """Whether the tree holds a branch or step (not of an unrecorded run) that the file lacks."""
        tree = self.tree
        assert tree is not None
        for b in view.branches:
            known = tree.branches.get(b.id)
            if b.id not in tree.skipped and (known is None or len(b.steps) > known.steps):
                return True
        return False

    def _catch_up(self, writer: LineWriter, view: TreeView, held: Resampled | None) -> None:
        """Write what the tree holds and the file lacks: a stub (the step a fork replaced), a new branch's line,
        the one step a re-sample after the run made; then the re-sample or forced choice that forked it."""
        tree = self.tree
        assert tree is not None
        created: set[int] = set()
        for b in sorted(view.branches, key=lambda x: x.id):
            if b.id in tree.skipped:
                continue
            known = tree.branches.get(b.id)
            if known is None:
                parent = tree.branches.get(b.parent) if b.parent is not None else None
                if parent is None or b.parent in tree.skipped or not parent.fork <= b.fork <= parent.end:
                    continue
                writer.branch_line(b.id, b.parent, b.fork, b.origin)
                known = tree.branches[b.id] = _Written(b.fork)
                created.add(b.id)
            for step in b.steps[known.steps:]:
                self._step(writer, b.id, step)
        if held is not None:
            branch = view.current if view.current in created else self.branch
            if branch is not None:
                self._resampled(writer, held, branch)

    # -- writing -----------------------------------------------------------------------------------------

    def _failed(self, exc: RecordError, *, tree: bool | None = None) -> None:
        """Recording stops; ``tree``: the tree's too (its file would no longer mirror it; by default, when the
        current run records into the tree). The run goes on."""
        if tree is None:
            tree = self.branch is not None
        if tree:
            self.tree = None
        super()._failed(exc)


# -- A/B runs -----------------------------------------------------------------------------------------------------


class ABRecorder(_Recording[SessionWriter]):
    """Records one A/B lockstep run (an ``emit`` of :class:`tui.engine.ab.ABRun`): the header with an ``ab``
    block (mode, labels, side B's preset, seed and model), side A's steps as branch 0, side B's as branch 1
    (origin "B") from the step where the sides part (before it B took A's tokens), and each step's figures
    as an ``ab`` event (kl, entropy_a, entropy_b, top1_agree, diverged, decodes)."""

    def __init__(self, engine: Any, factory: Callable[[dict[str, Any]], SessionWriter], *, preset_a: Any,
                 preset_b: Any, seed: int, engine_b: Any = None, seed_b: int | None = None, max_tokens: int = 0,
                 ignore_eos: bool = False, report: Callable[[object], None] = lambda event: None) -> None:
        self.engine, self.engine_b = engine, engine_b
        self.factory = factory
        self.presets = (preset_a, preset_b)
        self.seeds = (seed, seed if seed_b is None else seed_b)
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.report = report
        self.writer = None
        self.parted_at: int | None = None  # the step where side B's branch starts
        self._steps_a = 0

    def __call__(self, event: object) -> None:
        if isinstance(event, ABStarted):
            self._open(event)
        elif isinstance(event, ABStep):
            self._write(lambda w: self._step(w, event))
        elif isinstance(event, ABFinished):
            summary = event.summary
            text = summary.get("text_a") or ""
            self._write(lambda w: w.finish(summary.get("stop_reason"), summary.get("error"), summary, text,
                                           at_step=self._steps_a))
            self.writer = None

    def _open(self, ev: ABStarted) -> None:
        self._close()
        self.parted_at, self._steps_a = None, 0
        preset_a, preset_b = self.presets
        try:
            header = session_header(self.engine, preset_a, self.seeds[0], ev.prompt, ev.prompt_tokens,
                                    max_tokens=self.max_tokens, ignore_eos=self.ignore_eos)
            header["ab"] = {"mode": ev.mode, "label_a": ev.label_a, "label_b": ev.label_b,
                            "preset_b": preset_b.as_dict(), "seed_b": self.seeds[1],
                            "model_b": model_identity(self.engine_b) if self.engine_b is not None else None}
            self.writer = self.factory(header)
        except RecordError as exc:
            self.report(RecordingFailed(str(exc)))
            return
        self.report(RecordingStarted(str(self.writer.path)))

    def _step(self, writer: SessionWriter, ev: ABStep) -> None:
        if ev.a is not None:
            _put(writer, self.engine, ev.a, 0)
            self._steps_a = ev.a.index + 1
        if ev.b is not None and ev.diverged:
            if self.parted_at is None:
                self.parted_at = ev.index
                writer.branch_line(1, 0, ev.index, "B", preset=self.presets[1].as_dict(), seed=self.seeds[1],
                                   max_tokens=self.max_tokens)
            _put(writer, self.engine_b or self.engine, ev.b, 1)
        writer.event("ab", ev.index, kl=ev.kl, entropy_a=ev.entropy_a, entropy_b=ev.entropy_b,
                     top1_agree=ev.top1_agree, diverged=ev.diverged, decodes=ev.decodes)


def ab_recorder(engine: Any, target: str | os.PathLike[str], *, preset_a: Any, preset_b: Any, seed: int,
                engine_b: Any = None, seed_b: int | None = None, max_tokens: int = 0, ignore_eos: bool = False,
                report: Callable[[object], None] = lambda event: None) -> ABRecorder:
    """A listener that records an A/B run (pass it as, or call it from, :class:`~tui.engine.ab.ABRun`'s
    ``emit``): to ``target`` itself (a new file), or under a new name in ``target`` when it is a directory."""
    where = Path(target)

    def factory(header: dict[str, Any]) -> SessionWriter:
        if where.is_dir():
            return SessionWriter.new_in(where, f"ab-{engine.info.name}", header, engine.piece)
        return SessionWriter(where, header, engine.piece)

    return ABRecorder(engine, factory, preset_a=preset_a, preset_b=preset_b, seed=seed, engine_b=engine_b,
                      seed_b=seed_b, max_tokens=max_tokens, ignore_eos=ignore_eos, report=report)
