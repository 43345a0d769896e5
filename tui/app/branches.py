"""The paths not taken, on the dashboard (a mixin of :class:`~tui.app.dashboard.Dashboard`, as
:mod:`tui.app.conversation` is for the app's chat mode).

Choosing a candidate in the top-k histogram at the *pending* step (step mode) forces it: the controller forks
a branch and the run goes on. Choosing at a *past* step, typing text to insert there (x) or re-sampling it
(r) starts a *branch run* from that step: the panels show the path before the fork at once, then the new
tokens. The tree view (T) lists the branches; switching (Enter there, or ``{``/``}`` here) makes the KV cache
hold a branch and shows its path; the status line says what the switch reused and evaluated. Engine work (a
switch, tokenizing typed text) runs on the engine thread from a thread worker; a running generation is
stopped first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work

from ..engine.branching import BranchStart, BranchSwitched
from ..engine.errors import EngineError
from ..engine.thread import engine_thread
from ..engine.tree import TreeView
from ..run import Phase, RunModel
from ..safe_text import piece_label
from .screens.branches import BranchScreen, InsertTextScreen
from .widgets.panels import TopKHistogram
from .widgets.token_stream import TokenStream


class Branches:
    """The dashboard's branch actions (``self`` is the :class:`Dashboard`)."""

    app: Any
    model: RunModel
    engine: Any

    if TYPE_CHECKING:  # the dashboard's own
        def query_one(self, *a: Any) -> Any: ...
        def fold(self) -> None: ...
        def show_step(self, step: Any, *, pending: bool = False) -> None: ...
        def update_kv(self) -> None: ...
        def sync_phase(self) -> None: ...

    # -- can it branch now? -----------------------------------------------------------------------------

    def _why_not(self, *, cache: bool = True, on_tree: bool = True) -> str | None:
        """Why the dashboard cannot branch now (None: it can). ``cache``: the step needs the KV cache's
        sequences (a branch run, a switch), not only the pending step; ``on_tree``: the run shown must be a
        branch of the tree (an API request's is not)."""
        app = self.app
        if getattr(self, "MODE", "live") != "live":
            return "this is a replay: f forks it to generate with the model; branches grow on the live dashboard"
        if app.controller is None or app.engine is None:
            return "no model yet: m picks one"
        if cache and not hasattr(app.engine, "attach"):
            return "branching needs a local model (a server cannot hold several sequences in its cache)"
        if app.serving_request:
            return "an API request is running: wait for it, or esc to stop it"
        if self.model.tree is None and (not on_tree or self.model.branch is None):
            return "no tree yet: generate first, then choose a candidate at a step (Enter, ↑/↓, Enter)"
        if on_tree and self.model.branch is None:
            return "this run is not part of the tree (an API request's): T lists the tree's branches"
        return None

    def _refused(self, **kw: bool) -> bool:
        why = self._why_not(**kw)
        if why is not None:
            self.app.notify(why, severity="warning")
        return why is not None

    # -- choosing a candidate ----------------------------------------------------------------------------

    def action_candidates(self) -> None:
        """Enter on the dashboard: the histogram's candidates take the keys (↑/↓, Enter)."""
        hist = self.query_one(TopKHistogram)
        if hist.step is None:
            self.app.notify("no step to choose at yet: generate first (s: step mode pauses at each token)",
                            severity="warning")
            return
        hist.focus()

    def on_histogram_chosen(self, event: TopKHistogram.Chosen) -> None:
        self.choose(event.step, event.token, pending=event.pending)

    def choose(self, step: Any, token: int, *, pending: bool) -> None:
        """``token`` at ``step``: forced if the step is pending, else a branch run from that step."""
        app = self.app
        label = piece_label(self.engine.piece(token))
        if token == step.token:
            app.notify(f"{label} is already step {step.index}'s token: ↑/↓ pick another candidate",
                       severity="warning")
            return
        if pending:
            if self._refused(cache=False):
                return
            if self.model.pending is not step:
                app.notify(f"step {step.index} is no longer pending", severity="warning")
                return
            try:
                app.controller.force(token, step.index)  # the controller forks: the old token stays on its branch
            except EngineError as exc:
                app.notify(str(exc), severity="warning")
            return
        steps = self.model.steps
        if not (step.index < len(steps) and steps[step.index] is step):
            app.notify(f"step {step.index} is not on the branch shown: select a step of it (←/→)",
                       severity="warning")
            return
        self.branch_from(step.index, (token,), "forced")

    def branch_from(self, at: int, tokens: tuple[int, ...], origin: str, parent: int | None = None,
                    **run: Any) -> int | None:
        """A branch run from step ``at`` of branch ``parent`` (the one shown): ``tokens`` forced first (none: a
        fresh draw there). A running generation is stopped first."""
        if self._refused():
            return None
        start = BranchStart(parent=self.model.branch if parent is None else parent, at=at, tokens=tuple(tokens),
                            origin=origin)
        return self.app.start_generation(self._tree_prompt(), branch=start, **run)

    def _tree_prompt(self) -> str:
        """The text a branch run shows as its prompt: the tree's (as the model reads it)."""
        tree = self.model.tree
        return (tree.prompt if tree is not None else self.model.prompt) or self.query_one("#prompt").value

    def resample_at(self, index: int) -> None:
        """r on a past step: a fresh draw there, on a new branch."""
        self.branch_from(index, (), "resampled")

    # -- typed text --------------------------------------------------------------------------------------

    def action_insert_text(self) -> None:
        """x: text to insert at the selected step (the pending one, else after the last)."""
        if self._refused():
            return
        m = self.model
        if m.selected is not None:
            at = m.selected
            what = f"in place of {piece_label(m.steps[at].piece)}" + (" and what follows it" if at < len(m.steps) - 1
                                                                       else "")
        elif m.pending is not None:
            at, what = m.pending.index, f"in place of the pending {piece_label(m.pending.piece)}"
        else:
            at, what = len(m.steps), "after the last step"
        parent = m.branch
        note = (f"{what}: its tokens are forced, then generation goes on with the preset (a new branch of "
                f"branch {parent}); Esc cancels")
        self.app.push_screen(InsertTextScreen(f"text to insert at step {at}", note),
                             lambda text: self._insert(parent, at, text))

    def _insert(self, parent: int, at: int, text: str | None) -> None:
        if text is None:
            return
        if not text:
            self.app.notify("nothing to insert: type some text", severity="warning")
            return
        self._tokenize_insert(parent, at, text)

    @work(thread=True, exclusive=True, group="branch", exit_on_error=False)
    def _tokenize_insert(self, parent: int, at: int, text: str) -> None:
        app = self.app
        if app.running:
            app.controller.stop()  # the engine thread is the run's until it stops
        engine = app.engine
        try:
            tokens = engine_thread().call(engine.tokenize, text, add_bos=False)
        except EngineError as exc:
            app.call_from_thread(app.notify, str(exc), severity="warning")
            return
        app.call_from_thread(self._insert_tokens, parent, at, tuple(tokens))

    def _insert_tokens(self, parent: int, at: int, tokens: tuple[int, ...]) -> None:
        n_ctx = self.app.engine.n_ctx
        tree = self.model.tree
        n_prompt = len(tree.prompt_tokens) if tree is not None else self.model.n_tree_prompt
        need = n_prompt + at + len(tokens)
        if not tokens or need >= n_ctx:
            self.app.notify(f"the text is {len(tokens)} tokens: with the prompt ({n_prompt}) and the {at} steps "
                            f"before it, {need} do not fit the context ({n_ctx:,}): shorten it", severity="warning")
            return
        self.branch_from(at, tokens, "inserted", parent, max_tokens=self.app.max_tokens + len(tokens))

    # -- the tree: view, switch, continue ---------------------------------------------------------------

    def resident(self) -> frozenset[int]:
        """The tree's branches whose cells the cache holds."""
        ctl = self.app.controller
        return ctl.resident_branches() if ctl is not None else frozenset()

    def action_branches(self) -> None:
        """T: the tree view."""
        tree = self.model.tree
        if tree is None:
            self.app.notify("no branches yet: choose a candidate at a step (Enter, ↑/↓, Enter), type text to "
                            "insert (x) or re-sample a past step (r)", severity="warning")
            return
        self.app.push_screen(BranchScreen(tree, self.model.branch, self.resident()), self._tree_chosen)

    def _tree_chosen(self, choice: tuple[str, int] | None) -> None:
        if choice is None:
            return
        what, bid = choice
        if what == "continue":
            self.continue_branch(bid)
        else:
            self.switch_branch(bid)

    def refresh_tree_view(self) -> None:
        """The tree changed: an open tree view follows."""
        screen = self.app.screen
        if isinstance(screen, BranchScreen) and self.model.tree is not None:
            screen.update_tree(self.model.tree, self.model.branch, self.resident())

    def action_branch(self, delta: int) -> None:
        """{ / }: the previous / next branch (in the tree view's order), without opening the view."""
        tree = self.model.tree
        if tree is None or len(tree.branches) < 2:
            self.app.notify("one branch only: choose another candidate at a step (Enter, ↑/↓, Enter) to fork",
                            severity="warning")
            return
        order = [b.id for _, b in tree.depth_first()]
        current = self.model.branch if self.model.branch in order else tree.current
        self.switch_branch(order[(order.index(current) + delta) % len(order)])

    def switch_branch(self, bid: int) -> None:
        """The cache holds branch ``bid`` and the panels show its path (a running generation stops first)."""
        if self._refused(on_tree=False):
            return
        if self.app.running:
            self.app.controller.stop()
        self._switch(bid, self.model.run_id)

    @work(thread=True, exclusive=True, group="branch", exit_on_error=False)
    def _switch(self, bid: int, run_id: int) -> None:
        app = self.app
        ctl = app.controller

        def job() -> tuple[BranchSwitched, TreeView | None]:
            return ctl.switch_branch(bid), ctl.tree_view()

        try:
            switched, tree = engine_thread().call(job)
        except EngineError as exc:
            app.call_from_thread(app.notify, str(exc), severity="warning")
            return
        if tree is not None:
            app.call_from_thread(self.show_branch, tree, switched, run_id)

    def show_branch(self, tree: TreeView, switched: BranchSwitched, run_id: int | None = None) -> None:
        """Show the branch the cache now holds: its whole path, the panels at its last step (unless a run
        started meanwhile: the panels are that run's)."""
        if run_id is not None and run_id != self.model.run_id:
            return
        self.fold()  # what the stopped run still had queued comes first
        stream = self.query_one(TokenStream)
        self.model.show_branch(tree, switched)
        self.model.set_phase(Phase.IDLE)  # nothing runs: the cache holds the branch shown
        stream.set_prompt(tree.prompt)
        stream.select(None)
        stream.set_pending(None)
        stream.append_many([(s.index, s.text, s.prob) for s in self.model.steps])
        stream.follow_latest()
        if self.model.steps:
            self.show_step(self.model.steps[-1])
        self.update_kv()
        self.sync_phase()
        self.refresh_tree_view()

    def continue_branch(self, bid: int) -> None:
        """Generate on from the end of branch ``bid`` (the same branch grows)."""
        if self._refused(on_tree=False):
            return
        self.app.start_generation(self._tree_prompt(), branch=BranchStart(parent=bid, at=0, extend=True))
