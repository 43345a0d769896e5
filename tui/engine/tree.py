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
from dataclasses import dataclass, field
from typing import Any

from .errors import EngineError
from .loop import Step

ORIGINS = ("run", "forced", "resampled", "inserted", "A", "B")


@dataclass(frozen=True, slots=True)
class BranchView:
    id: int
    parent: int | None
    fork: int  # the index (among generated steps) of its first own step
    origin: str  # run | forced | resampled | inserted | A | B
    steps: tuple[Step, ...]  # its own steps, from ``fork`` on
    logprob_before: float  # the parent's path's log-probability up to ``fork``
    viewed: int = 0  # when it was last shown (a counter; the least recently viewed is evicted first)

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
        """Every step from the first generated token to the branch's last (iteratively: no recursion limit)."""
        chain = [self.branch(bid)]
        while chain[-1].parent is not None:
            chain.append(self.branch(chain[-1].parent))
        out: list[Step] = []
        for b, child in zip(reversed(chain), [*reversed(chain[:-1]), None]):
            own = b.steps if child is None else b.steps[:max(0, child.fork - b.fork)]
            out.extend(own)
        return tuple(out)

    def children(self, bid: int | None) -> list[BranchView]:
        return sorted((b for b in self.branches if b.parent == bid), key=lambda b: (b.fork, b.id))

    def depth_first(self) -> list[tuple[int, BranchView]]:
        """(depth, branch) in the order a tree view lists them."""
        out: list[tuple[int, BranchView]] = []

        def walk(bid: int | None, depth: int) -> None:
            for child in self.children(bid):
                out.append((depth, child))
                walk(child.id, depth + 1)

        walk(None, 0)
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
    viewed: int = 0


class TokenTree:
    """The branches of one prompt (engine thread only)."""

    def __init__(self, prompt_tokens: list[int], prompt: str = "") -> None:
        self.prompt_tokens = list(prompt_tokens)
        self.prompt = prompt
        self.branches: dict[int, _Branch] = {0: _Branch(0, None, 0, "run")}
        self.current = 0
        self._clock = 0

    def _get(self, bid: int) -> _Branch:
        b = self.branches.get(bid)
        if b is None:
            raise EngineError(f"no branch {bid} in this tree")
        return b

    def path(self, bid: int) -> list[Step]:
        chain = [self._get(bid)]
        while chain[-1].parent is not None:
            chain.append(self._get(chain[-1].parent))
        out: list[Step] = []
        for b, child in zip(reversed(chain), [*reversed(chain[:-1]), None]):
            out.extend(b.steps if child is None else b.steps[:max(0, child.fork - b.fork)])
        return out

    def tokens(self, bid: int, upto: int | None = None) -> list[int]:
        """The prompt and the branch's generated tokens (the first ``upto`` of them)."""
        return self.prompt_tokens + [s.token for s in self.path(bid)[:upto]]

    def add(self, bid: int, step: Step) -> None:
        """A step of branch ``bid`` was accepted (or pending and then replaced: a stub)."""
        b = self._get(bid)
        expected = b.fork + len(b.steps)
        if step.index != expected:
            raise EngineError(f"step {step.index} does not follow branch {bid} (next is {expected})")
        b.steps.append(step)

    def fork(self, parent: int, at: int, origin: str) -> int:
        """A new branch leaving ``parent`` at step ``at`` (it has no steps yet); it becomes current."""
        p = self._get(parent)
        if not 0 <= at <= p.fork + len(p.steps):
            raise EngineError(f"branch {parent} has no step {at}")
        if origin not in ORIGINS:
            raise EngineError(f"unknown branch origin {origin!r}")
        # a fork at or before the parent's own first step leaves the branch that holds the step before it: a
        # second choice at the step where ``parent`` left is its sibling, not its child
        while p.parent is not None and at <= p.fork:
            p = self._get(p.parent)
        bid = max(self.branches) + 1
        self.branches[bid] = _Branch(bid, p.id, at, origin)
        self.current = bid
        return bid

    def trim(self, bid: int, n: int) -> None:
        """Drop the branch's own steps from path index ``n`` on (a continuation replaces a stub's end)."""
        b = self._get(bid)
        del b.steps[max(0, n - b.fork):]

    def view_of(self, bid: int) -> None:
        """The branch is being shown: it is the most recently viewed."""
        self._clock += 1
        self._get(bid).viewed = self._clock
        self.current = bid

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
            out.append(BranchView(b.id, b.parent, b.fork, b.origin, tuple(b.steps), lp, b.viewed))
        return TreeView(tuple(self.prompt_tokens), self.prompt, tuple(out), self.current)
