"""The token tree: every forced choice or re-sample starts a branch instead of discarding the old path.

A tree has one prompt (the tokens the model reads before the first generated token) and branches. Branch 0
is the first run. A branch leaves its parent at a step index ``fork``: its path is the parent's path up to
``fork`` followed by its own steps. The last step of a branch may be a *stub*: a token that was sampled
and then replaced by another choice at the same step, never decoded; its continuation is generated when
the branch is visited and continued.

:class:`TokenTree` is mutated on the engine thread only; :meth:`TokenTree.view` gives the front end an
immutable :class:`TreeView` (the steps are immutable ``Step`` records, shared, not copied).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Protocol, TypeVar

from .errors import EngineError
from .loop import Step

ORIGINS = ("run", "forced", "resampled", "inserted", "A", "B")


class _Forked(Protocol):
    @property
    def parent(self) -> int | None: ...

    @property
    def fork(self) -> int: ...


BranchT = TypeVar("BranchT", bound=_Forked)


def path_segments(get: Callable[[int], BranchT], bid: int) -> list[tuple[BranchT, int | None]]:
    """The branches a path runs through, from the first run's to branch ``bid`` (``get``: a branch by id), each
    with the step index where the path leaves it for the next (None for ``bid`` itself). Iterative: no
    recursion limit, however deep the tree."""
    chain = [get(bid)]
    while chain[-1].parent is not None:
        chain.append(get(chain[-1].parent))
    chain.reverse()
    return [(b, child.fork) for b, child in pairwise(chain)] + [(chain[-1], None)]


def _own_on_path(steps: Sequence[Step], fork: int, stop: int | None) -> Sequence[Step]:
    """A branch's own steps (``steps``, from ``fork`` on) that a path through it keeps: all of them when the
    path ends there, else those before ``stop``."""
    return steps if stop is None else steps[:max(0, stop - fork)]


@dataclass(frozen=True, slots=True)
class BranchView:
    id: int
    parent: int | None
    fork: int  # the index (among generated steps) of its first own step
    origin: str  # run | forced | resampled | inserted | A | B
    steps: tuple[Step, ...]  # its own steps, from ``fork`` on
    logprob_before: float  # the parent's path's log-probability up to ``fork``

    @property
    def length(self) -> int:
        """Generated steps on its whole path."""
        return self.fork + len(self.steps)

    @property
    def logprob(self) -> float:
        """The cumulative log-probability of its whole path (each token's probability under the chain that
        drew it; a forced token's under the model)."""
        return self.logprob_before + sum(_logp(s) for s in self.steps)

    @property
    def choice(self) -> Step | None:
        """The step where it leaves its parent (None for the first branch)."""
        return self.steps[0] if self.parent is not None and self.steps else None


def _logp(step: Step) -> float:
    return math.log(step.prob) if step.prob > 0 else -math.inf


@dataclass(frozen=True)
class TreeView:
    prompt_tokens: tuple[int, ...]
    prompt: str
    branches: tuple[BranchView, ...]
    current: int

    def branch(self, bid: int) -> BranchView:
        by_id = self.__dict__.get("_by_id")
        if by_id is None:  # built once per view: a recording's tree may hold thousands of branches
            by_id = {b.id: b for b in self.branches}
            object.__setattr__(self, "_by_id", by_id)
        return by_id[bid]

    def path(self, bid: int) -> tuple[Step, ...]:
        """Every step from the first generated token to the branch's last."""
        return tuple(s for b, stop in path_segments(self.branch, bid) for s in _own_on_path(b.steps, b.fork, stop))

    def depth_first(self) -> list[tuple[int, BranchView]]:
        """(depth, branch) in the order a tree view lists them: each branch's children by fork, then id.
        Iterative: no recursion limit, however deep the tree."""
        kids: dict[int | None, list[BranchView]] = {}
        for b in sorted(self.branches, key=lambda b: (b.fork, b.id)):
            kids.setdefault(b.parent, []).append(b)
        out: list[tuple[int, BranchView]] = []
        stack = [(0, b) for b in reversed(kids.get(None, []))]
        while stack:
            depth, b = stack.pop()
            out.append((depth, b))
            stack.extend((depth + 1, child) for child in reversed(kids.get(b.id, [])))
        return out

    def as_dict(self, piece: Any = None) -> dict[str, Any]:
        """The tree as JSON-ready data (``llmtui export --format tree``): branches with their own steps (tokens,
        probabilities) and text from their fork on, and the cumulative log-probability of their whole path (a
        path is its parent's up to ``fork``, then its own: the text is not repeated for every branch)."""
        def text(s: Step) -> str:
            return piece(s.token) if piece is not None else s.text

        return {"prompt": self.prompt, "prompt_tokens": list(self.prompt_tokens), "current": self.current,
                "branches": [{"id": b.id, "parent": b.parent, "fork": b.fork, "origin": b.origin,
                              "length": b.length, "logprob": _finite(b.logprob),
                              "text": "".join(s.text for s in b.steps),
                              "steps": [{"index": s.index, "token": s.token, "text": text(s), "p": s.prob,
                                         "forced": s.forced} for s in b.steps]}
                             for b in self.branches]}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(slots=True)
class _Branch:
    id: int
    parent: int | None
    fork: int
    origin: str
    steps: list[Step] = field(default_factory=list)


class TokenTree:
    """The branches of one prompt (engine thread only)."""

    def __init__(self, prompt_tokens: list[int], prompt: str = "") -> None:
        self.prompt_tokens = list(prompt_tokens)
        self.prompt = prompt
        self.branches: dict[int, _Branch] = {0: _Branch(0, None, 0, "run")}
        self.current = 0

    def _get(self, bid: int) -> _Branch:
        b = self.branches.get(bid)
        if b is None:
            raise EngineError(f"no branch {bid} in this tree")
        return b

    def path(self, bid: int) -> list[Step]:
        return [s for b, stop in path_segments(self._get, bid) for s in _own_on_path(b.steps, b.fork, stop)]

    def tokens(self, bid: int) -> list[int]:
        """The prompt and the branch's generated tokens."""
        return self.prompt_tokens + [s.token for s in self.path(bid)]

    def add(self, bid: int, step: Step) -> None:
        """A step of branch ``bid`` was accepted (or pending and then replaced: a stub)."""
        b = self._get(bid)
        expected = b.fork + len(b.steps)
        if step.index != expected:
            raise EngineError(f"step {step.index} does not follow branch {bid} (next is {expected})")
        b.steps.append(step)

    @property
    def next_id(self) -> int:
        """The id the next fork gets (ids grow with forks: :meth:`view` relies on it)."""
        return max(self.branches) + 1

    def check_fork(self, parent: int, at: int, origin: str) -> int:
        """The branch a new one leaving ``parent`` at step ``at`` hangs from (EngineError if it cannot): a fork
        at or before the parent's own first step leaves the branch that holds the step before it, so a second
        choice at the step where ``parent`` left is its sibling, not its child."""
        p = self._get(parent)
        if not 0 <= at <= p.fork + len(p.steps):
            raise EngineError(f"branch {parent} has no step {at}")
        if origin not in ORIGINS:
            raise EngineError(f"unknown branch origin {origin!r}")
        while p.parent is not None and at <= p.fork:
            p = self._get(p.parent)
        return p.id

    def fork(self, parent: int, at: int, origin: str, bid: int | None = None) -> int:
        """A new branch leaving ``parent`` at step ``at`` (it has no steps yet); it becomes current. ``bid``: its
        id (a recording's, which may skip ids), at least :attr:`next_id`; by default :attr:`next_id`."""
        hangs_from = self.check_fork(parent, at, origin)
        new = self.next_id
        if bid is not None and bid < new:
            raise EngineError(f"branch {bid} is not a new id (ids only grow: the next is {new})")
        bid = new if bid is None else bid
        self.branches[bid] = _Branch(bid, hangs_from, at, origin)
        self.current = bid
        return bid

    def view_of(self, bid: int) -> None:
        """The branch is being shown: it is current."""
        self.current = self._get(bid).id

    def view(self) -> TreeView:
        """Each branch's log-probability before its fork is its parent's before the parent's fork plus the
        parent's own steps up to the fork: one pass over the branches, parents first (ids grow with forks)."""
        before: dict[int, float] = {}
        out = []
        for b in sorted(self.branches.values(), key=lambda x: x.id):
            if b.parent is None or b.parent not in before:
                lp = 0.0
            else:
                parent = self.branches[b.parent]
                lp = before[b.parent] + sum(_logp(s) for s in parent.steps[:max(0, b.fork - parent.fork)])
            before[b.id] = lp
            out.append(BranchView(b.id, b.parent, b.fork, b.origin, tuple(b.steps), lp))
        return TreeView(tuple(self.prompt_tokens), self.prompt, tuple(out), self.current)
