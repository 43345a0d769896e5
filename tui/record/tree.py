"""A recording's token tree (format version 2) as the engine's immutable :class:`~tui.engine.tree.TreeView`.

The reader has checked every branch line against the tree read before it (:mod:`tui.record.reader`); here
the branches are replayed into a :class:`~tui.engine.tree.TokenTree`, which checks once more that every step
follows its branch and every fork lies within its parent. What a damaged file lost stays out: a branch keeps
its steps up to its first gap, and a branch that leaves its parent beyond what the parent kept is left out
with its descendants.
"""

from __future__ import annotations

import math
from typing import Any

from ..engine.errors import EngineError
from ..engine.tree import TokenTree, TreeView
from .reader import Session


def tree_from_session(session: Session) -> TreeView | None:
    """The recording's tree, or None when it holds one branch (a plain run: nothing to branch between)."""
    if len(session.branches) < 2:
        return None
    return session_tree(session)


def session_tree(session: Session) -> TreeView:
    """The recording's tree, however many branches it holds (``export --format tree`` writes even one)."""
    head = session.header
    tree = TokenTree(list(head["prompt_tokens"]), head["prompt"])
    if session.ab is not None:
        tree.branches[0].origin = "A"  # A/B: branch 0 is side A
    for rec in sorted(session.branches.values(), key=lambda b: b.id):
        if rec.id != 0:
            # the file's id: a branch run the recording skipped leaves a gap in the ids
            try:
                tree.fork(rec.parent, rec.fork, rec.origin, rec.id)
            except EngineError:  # its parent, or the parent's step it leaves from, was lost
                continue
        for step in rec.steps:
            try:
                tree.add(rec.id, step)
            except EngineError:  # a gap (a damaged line): the branch ends where it is whole
                break
    tree.current = session.current if session.current in tree.branches else 0
    return tree.view()


def tree_document(session: Session) -> dict[str, Any]:
    """``llmtui export --format tree``: the tree as JSON-ready data (:meth:`TreeView.as_dict`, token texts
    from the recording's pieces), with the model, preset, seed and, for an A/B run, its ``ab`` block."""
    view = session_tree(session)
    head = session.header

    def piece(token: int) -> str:
        return session.piece(token).decode("utf-8", errors="backslashreplace")

    doc = view.as_dict(piece)
    for branch in doc["branches"]:
        for step in branch["steps"]:
            step["p"] = step["p"] if math.isfinite(step["p"]) else None  # a remote run's unknown figure
    ab = session.ab
    if ab is not None:  # what the reader checked, no more (an unknown key could hold a NaN)
        model_b = ab.get("model_b")
        ab = {"mode": ab["mode"], "label_a": ab["label_a"], "label_b": ab["label_b"],
              "preset_b": ab["preset_b"]["name"], "model_b": model_b["name"] if model_b is not None else None}
    return {"format": "llmtui-tree", "recording": str(session.path), "model": head["model"]["name"],
            "preset": head["preset"]["name"], "seed": head["seed"], "ab": ab, **doc}
