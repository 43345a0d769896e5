"""The token tree on the controller: forks, branch runs and switching between branches (no Textual).

Every interactive run starts a :class:`~tui.engine.tree.TokenTree`. A forced choice or a re-sample at a
step forks a branch (the replaced token stays behind as its old branch's last step); a *branch run*
generates from any step of any branch (a candidate chosen there, text typed there, a fresh draw, or simply
continuing the branch); *switching* makes the KV cache hold a branch. Branches are llama.cpp sequences in
one unified cache (:mod:`tui.engine.sequences`): a switch or a branch run evaluates only the tokens after the
longest prefix some resident sequence already holds, and a full cache evicts the least recently viewed
branch (it is re-evaluated when visited again).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import EngineError
from .loop import Step
from .tree import TokenTree, TreeView

_trees = itertools.count(1)  # every tree's keys are its own: (tree serial, branch id)


# -- events ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeChanged:
    """The tree after a fork, a branch run or a switch (what the branch view draws)."""

    tree: TreeView


@dataclass(frozen=True, slots=True)
class BranchSwitched:
    """The KV cache now holds branch ``branch``: what that cost."""

    branch: int
    reused: int  # positions taken from cells already in the cache (shared with other branches)
    evaluated: int  # tokens decoded
    ms: float
    cells_used: int  # distinct cells in use after it
    cells_saved: int  # cells that sharing saved (what separate copies would have used, minus cells_used)
    sequences: int  # resident sequences
    active_shared: tuple[int, ...] = ()  # per position of this branch: how many sequences hold its cell


@dataclass(frozen=True, slots=True)
class BranchesEvicted:
    """The cache was full: these branches' own cells were freed (least recently viewed first)."""

    branches: tuple[int, ...]


# -- what a branch run starts from --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BranchStart:
    """Generate from step ``at`` of branch ``parent``: a new branch whose first steps are ``tokens`` (a chosen
    candidate, typed text: forced), or a fresh draw there (``tokens`` empty); ``extend``: continue ``parent``
    itself from its end."""

    parent: int
    at: int
    tokens: tuple[int, ...] = ()
    origin: str = "forced"
    extend: bool = False


class BranchOps:
    """The controller's tree (a mixin of :class:`tui.engine.controller.Controller`)."""

    engine: Any
    tree: TokenTree | None
    branch_id: int
    _tree_serial: int
    _tree_chat: tuple[Any, int] | None = None  # the conversation a chat run's tree answers, and its length then

    if TYPE_CHECKING:  # the controller's own
        def _send(self, event: object) -> None: ...

        def exclusive(self, job: Any) -> Any: ...

    # -- the engine thread --------------------------------------------------------------------------------

    def _can_branch(self) -> bool:
        return hasattr(self.engine, "attach")

    def _key(self, bid: int) -> tuple[int, int]:
        return (self._tree_serial, bid)

    def _new_tree(self, tokens: Sequence[int], shown: str, chat: Any = None) -> None:
        """A new interactive run: a new tree (``chat``: the conversation whose answer it is, its messages so far)."""
        self.tree = TokenTree(list(tokens), shown)
        self._tree_chat = (chat, len(chat.messages)) if chat is not None else None
        self._tree_serial = next(_trees)
        self.branch_id = 0
        self.tree.view_of(0)
        self._own_sequence(0)

    def _own_sequence(self, bid: int) -> None:
        """The active sequence is now branch ``bid``'s (the fork keeps the cells it had)."""
        seqs = getattr(self.engine, "seqs", None)
        if seqs is not None:
            seqs.keys[seqs.active] = self._key(bid)

    def _fork_pending(self, old: Step, new: Step, origin: str) -> None:
        """The pending step ``old`` was replaced by ``new``: ``old`` stays as its branch's last step (never
        decoded), a new branch goes on from ``new``."""
        if self.tree is not None:
            self.tree.add(self.branch_id, old)
            self._fork_at(old.index, origin)

    def _fork_at(self, index: int, origin: str) -> None:
        """The current branch forks at step ``index``: the new branch is current and owns the active sequence."""
        assert self.tree is not None
        self.branch_id = self.tree.fork(self.branch_id, index, origin)
        self.tree.view_of(self.branch_id)
        self._own_sequence(self.branch_id)

    def _accepted(self, step: Step) -> None:
        if self.tree is not None:
            self.tree.add(self.branch_id, step)
        self._report_evictions()

    def _report_evictions(self) -> None:
        seqs = getattr(self.engine, "seqs", None)
        if seqs is None or self.tree is None or not seqs.evicted:
            return
        serial = self._tree_serial
        gone = tuple(k[1] for k in seqs.take_evicted() if isinstance(k, tuple) and k[0] == serial)
        if gone:
            self._send(BranchesEvicted(gone))

    def _attach(self, bid: int, reserve: int = 0) -> tuple[Any, float]:
        """The cache holds branch ``bid`` but its last token, which is returned to evaluate."""
        assert self.tree is not None
        t0 = time.perf_counter()
        att = self.engine.attach(self.tree.tokens(bid), self._key(bid), reserve=reserve)
        self.tree.view_of(bid)
        return att, (time.perf_counter() - t0) * 1000.0

    def _switched(self, bid: int, att: Any, ms: float) -> BranchSwitched:
        use = self.engine.cell_use()
        ev = BranchSwitched(bid, att.reused, len(att.evaluate), ms, use.used, use.saved, use.sequences,
                            use.active_shared)
        self._send(ev)
        self._report_evictions()
        return ev

    def _start_branch(self, start: BranchStart, max_tokens: int) -> tuple[tuple[Step, ...], list[int], Any]:
        """A branch run's branch (now current): the steps of its path before its first new one, the tokens the
        model reads before that step (the prompt's, then theirs) and the Attached (what to evaluate)."""
        tree = self.tree
        if tree is None:
            raise EngineError("no tree yet: generate first, then branch from a step")
        if not self._can_branch():
            raise EngineError("branching needs a local model (this engine cannot hold several sequences)")
        path = tree.path(start.parent)
        if start.extend:
            at, bid = len(path), start.parent
        else:
            at, bid = start.at, tree.next_id  # the id fork() gives it, once the cache holds it
            tree.check_fork(start.parent, at, start.origin)
        before = tuple(path[:at])
        tokens = tree.prompt_tokens + [s.token for s in before]
        reserve = max(0, min(max_tokens, self.engine.n_ctx - len(tokens) - 1))
        att = self.engine.attach(tokens, self._key(bid), reserve=reserve)  # first: a refusal leaves no branch
        if not start.extend:
            tree.fork(start.parent, at, start.origin, bid)
        tree.view_of(bid)
        self.branch_id = bid
        return before, tokens, att

    # -- front-end entry points (any thread) ------------------------------------------------------------

    def _adopt_in_chat(self, bid: int) -> None:
        """In chat mode, the branch shown is the conversation's answer: the next turn goes on from it (its text
        replaces the answer the tree's first run gave, when the conversation is still at that answer)."""
        link, chat = self._tree_chat, getattr(self, "chat", None)
        if link is None or self.tree is None or link[0] is not chat or chat is None:
            return
        n = link[1]  # messages when the tree began: its first run's answer follows them
        if len(chat.messages) == n + 1 and chat.messages[-1]["role"] == "assistant":
            chat.messages[-1]["content"] = "".join(s.text for s in self.tree.path(bid))

    def switch_branch(self, bid: int) -> BranchSwitched:
        """Make the KV cache hold branch ``bid`` (waits for a running generation to stop first)."""
        def job() -> BranchSwitched:
            tree = self.tree
            if tree is None or bid not in tree.branches:
                raise EngineError(f"no branch {bid} to switch to")
            if not self._can_branch():
                raise EngineError("branching needs a local model (this engine cannot hold several sequences)")
            att, ms = self._attach(bid)
            t0 = time.perf_counter()
            self.engine.decode(list(att.evaluate))
            ms += (time.perf_counter() - t0) * 1000.0
            self.branch_id = bid
            self._adopt_in_chat(bid)
            ev = self._switched(bid, att, ms)
            self._send(TreeChanged(tree.view()))
            return ev

        return self.exclusive(job)

    def tree_view(self) -> TreeView | None:
        return self.tree.view() if self.tree is not None else None

    def resident_branches(self) -> frozenset[int]:
        """The current tree's branches whose cells the cache holds (a sequence is theirs); the others are
        re-evaluated when visited. Read-only, any thread: the keys are copied in one step."""
        seqs = getattr(self.engine, "seqs", None)
        if seqs is None or self.tree is None:
            return frozenset()
        serial = self._tree_serial
        return frozenset(k[1] for k in tuple(seqs.keys.values()) if isinstance(k, tuple) and k[0] == serial)
