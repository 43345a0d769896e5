"""The paths not taken on the dashboard (issue 21), driven by Pilot on the deterministic fake engine: choosing a
candidate in the histogram (at the pending step it forks; at a past step it starts a branch run that shows
the path before the fork), typed text, re-sampling a past step, the tree view, switching branches, the
shared cells on the KV map and the eviction notice of a full cache."""

from __future__ import annotations

from tests.conftest import generate, make_app, ready, until
from tui.app.app import LlmTuiApp
from tui.app.screens.branches import BranchScreen, InsertTextScreen, branch_rows
from tui.app.status import branch_info
from tui.app.themes import load_themes, shipped_theme_dir
from tui.app.widgets.panels import TopKHistogram
from tui.app.widgets.token_stream import TokenStream
from tui.engine import EngineSettings
from tui.engine.fake import FakeEngine
from tui.run import Phase, RunModel
from tui.safe_text import piece_label
from tui.sampling.presets import BUILTIN_PRESETS, load_presets


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def stream_matches_steps(app) -> bool:
    return app.query_one(TokenStream).text() == "".join(s.text for s in app.current.steps)


async def finished(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: not app.running and app.current.phase is Phase.STOPPED)
    await pilot.pause(0.05)


async def choose_below(pilot, index: int) -> int:
    """Select step ``index``, move the histogram's cursor one row down from the token chosen there and press
    Enter; the candidate's token id."""
    app = pilot.app
    app.dashboard.select_step(index)
    app.query_one(TokenStream).focus()
    await pilot.press("enter")  # the candidates take the keys
    hist = app.query_one(TopKHistogram)
    assert hist.has_focus and hist.step is app.current.steps[index]
    await pilot.press("down")
    token = hist.tokens[hist.cursor]
    assert token != app.current.steps[index].token
    await pilot.press("enter")
    return token


async def test_choosing_a_candidate_at_the_pending_step_forks_and_the_stream_shows_it() -> None:
    app = make_app(max_tokens=20)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("s", "space", "space", "space")
        await until(pilot, lambda: app.current.pending is not None and app.current.pending.index == 2)
        old = app.current.pending
        await pilot.press("enter")
        hist = app.query_one(TopKHistogram)
        assert hist.has_focus and hist.pending and hist.step is old
        assert hist.tokens[hist.cursor] == old.token  # the cursor starts on the token the step chose
        assert "is step 2's token" in str(hist.border_subtitle)
        await pilot.press("down")
        token = hist.tokens[hist.cursor]
        label = piece_label(app.engine.piece(token))
        assert str(hist.border_subtitle) == f"Enter: force {label} at step 2"
        cursor_line = hist._build(60)[TopKHistogram.HEAD_LINES + hist.cursor]
        assert cursor_line[0][0].startswith("›") and cursor_line[0][1] == "hist--cursor"  # the cursor is drawn
        await pilot.press("enter")
        await until(pilot, lambda: app.current.tree is not None and len(app.current.tree.branches) == 2)
        forced = app.current.pending
        assert forced.index == 2 and forced.token == token and forced.forced
        assert app.query_one(TokenStream).text().endswith(forced.text)
        tree = app.current.tree
        assert tree.branch(0).steps[-1] is old  # the replaced token stays, as branch 0's last step
        assert tree.branch(1).parent == 0 and tree.branch(1).fork == 2 and tree.branch(1).origin == "forced"
        assert app.current.branch == 1 and "branch 1 of 2" in app.query_one("#status").text
        await pilot.press("s")  # step mode off: the run goes on from the forced token
        await finished(pilot)
        assert app.current.steps[2].token == token and len(app.current.steps) == 20


async def test_choosing_at_a_past_step_runs_a_branch_that_starts_with_the_path_before_it() -> None:
    app = make_app(max_tokens=12)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        first = list(app.current.steps)
        hist = app.query_one(TopKHistogram)
        app.dashboard.select_step(9)
        app.query_one(TokenStream).focus()
        await pilot.press("enter", "down")
        token = hist.tokens[hist.cursor]
        assert str(hist.border_subtitle) == f"Enter: continue with {piece_label(app.engine.piece(token))} from step 9"
        await pilot.press("enter")
        await until(pilot, lambda: app.current.run_id and len(app.current.steps) > 9 and app.current.steps[9].forced)
        await finished(pilot)
        steps = app.current.steps
        assert steps[:9] == first[:9]  # the path before the fork, the very same steps
        assert steps[9].token == token and steps[9].forced and [s.index for s in steps] == list(range(9 + 12))
        assert stream_matches_steps(app)
        assert app.query_one(TokenStream).text().startswith("".join(s.text for s in first[:9]))
        tree = app.current.tree
        assert [b.id for b in tree.branches] == [0, 1] and tree.branch(1).fork == 9 and app.current.branch == 1
        sw = app.current.switched
        assert sw.branch == 1 and sw.reused == 3 + 9 - 1 and sw.evaluated == 1  # the prompt and 9 steps, less one
        status = app.query_one("#status").text
        shared = sum(1 for n in sw.active_shared if n > 1)
        assert shared and (f"branch 1 of 2 (T: tree) · reused {sw.reused} cells, evaluated 1 · {sw.sequences} "
                           f"sequences share {shared} cells") in status
        kv = [run[0][0] + run[1][0] if len(run) > 1 else run[0][0] for run in app.query_one("#kv")._build(40)]
        assert any(line.startswith(f"▓ shared with other branches {shared}") for line in kv)


async def test_the_tree_view_lists_the_branches_and_enter_switches_to_one() -> None:
    app = make_app(max_tokens=10)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        branch0 = list(app.current.steps)
        token = await choose_below(pilot, 4)
        await until(pilot, lambda: len(app.current.steps) > 4 and app.current.steps[4].token == token)
        await finished(pilot)
        await until(pilot, lambda: app.current.tree is not None and len(app.current.tree.branches) == 2)
        app.query_one(TokenStream).focus()
        await pilot.press("T")
        screen = app.screen
        assert isinstance(screen, BranchScreen)
        table = screen.query_one("#tree")
        assert table.row_count == 2
        rows = dict(branch_rows(app.current.tree, app.current.branch, app.dashboard.resident()))
        assert rows[0][:4] == ("0", "", "run", "the prompt") and rows[0][7] == "10"
        chosen = app.current.tree.branch(1).choice
        assert rows[1][0] == "  └ 1" and rows[1][1] == "●" and rows[1][2:5] == ("forced", "0 @ step 4",
                                                                                 piece_label(chosen.piece))
        assert rows[1][5] == f"{chosen.prob:.3f}" and rows[1][6] == f"{app.current.tree.branch(1).logprob:.2f}"
        assert rows[1][7] == str(4 + 10) and rows[1][8] == "in cache"
        assert [str(c) for c in table.get_row_at(1)] == list(rows[1])  # what is drawn
        assert table.cursor_row == 1  # on the branch shown
        await pilot.press("up", "enter")  # switch to branch 0
        await until(pilot, lambda: app.current.branch == 0 and app.current.switched is not None
                    and app.current.switched.branch == 0)
        await pilot.pause(0.05)
        assert not isinstance(app.screen, BranchScreen)
        assert [s.token for s in app.current.steps] == [s.token for s in branch0]
        assert stream_matches_steps(app)
        assert app.query_one(TopKHistogram).step is app.current.steps[-1]
        sw = app.current.switched
        assert sw.evaluated >= 1 and sw.reused + sw.evaluated == 3 + 10
        assert (f"branch 0 of 2 (T: tree) · reused {sw.reused} cells, evaluated {sw.evaluated} · "
                in app.query_one("#status").text)
        assert app.current.state_text == "idle"  # nothing runs: the cache holds the branch shown
        await pilot.press("right_curly_bracket")  # the next branch without the view
        await until(pilot, lambda: app.current.branch == 1 and app.current.switched.branch == 1)
        await pilot.pause(0.05)
        assert app.current.steps[4].token == token and stream_matches_steps(app)
        last = app.current.steps[-1]
        await pilot.press("r")  # after a switch the last step's logits are gone: r draws again on a new branch
        await until(pilot, lambda: app.current.tree is not None and len(app.current.tree.branches) == 3)
        await finished(pilot)
        resampled = app.current.tree.branch(2)
        assert (resampled.parent, resampled.fork, resampled.origin) == (1, last.index, "resampled")


async def test_continuing_a_branch_from_the_tree_view_grows_it() -> None:
    app = make_app(max_tokens=6)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)
        await choose_below(pilot, 2)
        await until(pilot, lambda: app.current.run_id and len(app.current.steps) > 2 and app.current.steps[2].forced)
        await finished(pilot)
        app.query_one(TokenStream).focus()
        await pilot.press("T", "up", "c")  # continue branch 0 from its end
        await until(pilot, lambda: len(app.current.steps) == 12)
        await finished(pilot)
        await until(pilot, lambda: app.current.tree.branch(0).length == 12)
        assert app.current.branch == 0 and stream_matches_steps(app)


async def at_past_step(pilot, index: int, key: str) -> list:
    """Generate, select step ``index`` and press ``key`` on the token stream; the run's steps before the key."""
    app = pilot.app
    await ready(pilot)
    await generate(pilot)
    first = list(app.current.steps)
    app.dashboard.select_step(index)
    app.query_one(TokenStream).focus()
    await pilot.press(key)
    return first


async def test_typed_text_is_forced_from_the_selected_step_and_bad_text_is_refused() -> None:
    app = make_app(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        first = await at_past_step(pilot, 5, "x")
        assert isinstance(app.screen, InsertTextScreen)
        await pilot.press("enter")  # nothing typed
        await until(pilot, lambda: any("nothing to insert" in n for n in notices(app)))
        await pilot.press("x")
        app.screen.query_one("#insert").value = " ".join(["storm"] * 600)
        await pilot.press("enter")
        await until(pilot, lambda: any("do not fit the context (512)" in n for n in notices(app)))
        assert app.current.steps == first  # nothing ran
        await pilot.press("x")
        app.screen.query_one("#insert").value = "lighthouse keeper"
        await pilot.press("enter")
        await until(pilot, lambda: len(app.current.steps) > 7 and app.current.steps[6].forced)
        await finished(pilot)
        steps = app.current.steps
        expected = app.engine.tokenize("lighthouse keeper", add_bos=False)
        assert [s.token for s in steps[5:7]] == expected and all(s.forced for s in steps[5:7])
        assert steps[:5] == first[:5] and len(steps) == 5 + 2 + 8  # the text, then max_tokens more
        branch = app.current.tree.branch(app.current.branch)
        assert branch.origin == "inserted" and branch.fork == 5
        assert "lighthouse keeper" in app.query_one(TokenStream).text()


async def test_r_on_a_past_step_resamples_it_on_a_new_branch() -> None:
    app = make_app(max_tokens=8, preset="creative")
    async with app.run_test(size=(120, 40)) as pilot:
        first = await at_past_step(pilot, 3, "r")
        await until(pilot, lambda: app.current.tree is not None and len(app.current.tree.branches) == 2
                    and app.current.phase is Phase.STOPPED)
        await finished(pilot)
        branch = app.current.tree.branch(app.current.branch)
        assert branch.origin == "resampled" and branch.fork == 3 and branch.parent == 0
        assert app.current.steps[:3] == first[:3] and len(app.current.steps) == 3 + 8 and stream_matches_steps(app)


def test_the_run_model_folds_a_branch_run_and_the_tree_events() -> None:
    """No Textual: a branch run's Started shows its path before the fork at once; the tree, the switch's
    figures and an eviction are kept or said."""
    from tui.engine import Generation
    from tui.engine.branching import BranchesEvicted, BranchSwitched, TreeChanged
    from tui.engine.controller import Started, StepEvent
    from tui.engine.tree import TokenTree

    eng = FakeEngine(EngineSettings(n_ctx=512))
    steps = list(Generation(eng, eng.tokenize("the cat"), BUILTIN_PRESETS["greedy"].build(eng.build_context(1)),
                            max_tokens=6))
    m = RunModel()
    m.new_run()
    m.apply([(m.run_id, Started("the cat", (1, 2), "greedy", 1, False, branch=0, new_tree=True))])
    m.apply([(m.run_id, StepEvent(s)) for s in steps])
    tree = TokenTree([1, 2], "the cat")
    for s in steps:
        tree.add(0, s)
    tree.fork(0, 3, "forced")
    m.apply([(m.run_id, TreeChanged(tree.view()))])
    assert m.branch == 1 and len(m.tree.branches) == 2
    m.new_run()  # the branch run: its Started carries the path before step 3
    up = m.apply([(m.run_id, Started("the cat", (1, 2, *[s.token for s in steps[:3]]), "greedy", 1, False,
                                     before=tuple(steps[:3]), branch=1, fork=(0, 3, "forced")))])
    assert m.steps == steps[:3] and [a[0] for a in up.appended] == [0, 1, 2] and m.n_tree_prompt == 2
    assert m.tree is not None  # the same tree: kept through the new run
    up = m.apply([(m.run_id, BranchSwitched(1, 4, 1, 9.4, 9, 4, 2, (2, 2, 2, 2, 1))),
                  (m.run_id, BranchesEvicted((0,)))])
    assert m.switched.reused == 4 and m.shared_cells() == (2, 2, 2, 2, 1) and up.tree
    assert branch_info(m, "T") == ("branch 1 of 2 (T: tree) · reused 4 cells, evaluated 1 (9 ms) · 2 sequences "
                                   "share 4 cells")
    assert up.notices == [("cache full: branch 0 evicted (least recently viewed): it is re-evaluated when visited",
                           "warning")]
    m.new_run()
    m.apply([(m.run_id, Started("other", (5,), "greedy", 1, False, branch=0, new_tree=True))])  # a new tree
    assert m.tree is None and m.switched is None and m.branch == 0


def small_app(n_ctx: int, max_tokens: int) -> LlmTuiApp:
    settings = EngineSettings(n_ctx=n_ctx, seed=7)
    return LlmTuiApp(engine_factory=lambda: FakeEngine(settings), model_label="fake", settings=settings,
                     preset=BUILTIN_PRESETS["balanced"], catalog=load_presets(None), max_tokens=max_tokens,
                     themes=load_themes(shipped_theme_dir()).themes, live_metrics=False)


async def test_a_full_cache_evicts_the_least_recently_viewed_branch_and_says_so() -> None:
    app = small_app(n_ctx=48, max_tokens=20)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await generate(pilot)  # branch 0: 3 + 20 cells
        for _ in range(2):  # each branch forks at step 1: its own 20 tokens fit beside one other, not two
            n = len(app.current.tree.branches) if app.current.tree else 1
            await choose_below(pilot, 1)
            await until(pilot, lambda n=n: app.current.tree is not None and len(app.current.tree.branches) == n + 1)
            await finished(pilot)
        await until(pilot, lambda: any(n.startswith("cache full: branch 0 evicted (least recently viewed)")
                                       for n in notices(app)))
        assert "it is re-evaluated when visited" in next(n for n in notices(app) if n.startswith("cache full"))
        resident = app.dashboard.resident()
        assert 0 not in resident and app.current.branch in resident
        app.query_one(TokenStream).focus()
        await pilot.press("T")
        rows = dict(branch_rows(app.current.tree, app.current.branch, resident))
        assert rows[0][8] == "re-evaluated on visit" and rows[app.current.branch][8] == "in cache"
