"""Recordings of token trees and A/B runs (issue 21, format version 2), on the real SmolLM2.

A root run in step mode forks a branch (a forced candidate: the replaced step stays as branch 0's stub), a
branch run from a past step appends to the same file, and the tree read back from the file is the
controller's; ``export --format tree`` writes it; a hostile tree is one problem line each, never a traceback;
a version 1 file reads as it always did; an A/B run is one recording (side B a branch where the sides part).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import run
from tests.test_engine import native_greedy
from tests.test_record_fuzz import _walk_and_change, check, fuzz
from tui.engine.branching import BranchStart
from tui.engine.controller import Advance, Controller, SetStepMode, StepEvent
from tui.record import SessionFileError, SessionWriter, read_session
from tui.record.recorder import Recorder, RecordingFailed, RecordingStarted, ab_recorder
from tui.record.replay import ReplayEngine
from tui.record.tools import export_html, export_markdown, export_tree, fork_prefix, verify
from tui.record.tree import tree_from_session
from tui.sampling.presets import BUILTIN_PRESETS

PROMPT = "The capital of France is"
N = 10  # tokens of the root run
FORK = 2  # the step mode run forces its pending step 2
AT = 1  # the branch run starts at step 1 of branch 0
BRANCH_TOKENS = 6


def shape(view: Any) -> list[tuple]:
    """What a tree is: ids, parents, forks, origins and each branch's own (index, token) steps."""
    return [(b.id, b.parent, b.fork, b.origin, [(s.index, s.token) for s in b.steps]) for b in view.branches]


@pytest.fixture(scope="module")
def tree_run(engine, tmp_path_factory) -> dict[str, Any]:
    """A greedy root run in step mode whose pending step FORK becomes the model's second choice, then a branch run
    from step AT of branch 0 with " London" forced: one recording."""
    path = tmp_path_factory.mktemp("tree") / "tree.jsonl"
    reports: list[object] = []
    seen: dict[str, Any] = {}

    def emit(ev: object) -> None:  # on the run's thread, before the controller waits for a command
        if isinstance(ev, StepEvent) and ev.pending:
            if ev.step.index < FORK:
                ctl.send(Advance())
            elif ev.step.index == FORK and "pending" not in seen:
                seen["pending"] = ev.step
                ctl.force(int(ev.step.trace.top_ids[1]))  # not the model's pick: its runner-up
                ctl.send(SetStepMode(False))

    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=emit, max_tokens=N)
    ctl.listeners.append(Recorder(engine, lambda header: SessionWriter(path, header, engine.piece), reports.append))
    stats = ctl.run(PROMPT, step_mode=True)
    assert stats.generated == N
    line = list(ctl.last.history)
    london = engine.tokenize(" London", add_bos=False)[0]
    ctl.run("", branch=BranchStart(parent=0, at=AT, tokens=(london,)), max_tokens=BRANCH_TOKENS)
    return {"ctl": ctl, "path": path, "line": line, "pending": seen["pending"], "london": london,
            "reports": reports, "lines": path.read_text(encoding="utf-8").splitlines()}


def test_the_tree_read_back_is_the_controllers_tree(tree_run: dict[str, Any], engine) -> None:
    ctl, path = tree_run["ctl"], tree_run["path"]
    s = read_session(path)
    assert s.problems == [] and s.version == 2 and s.complete
    assert tree_run["reports"] == [RecordingStarted(str(path))] * 2  # the branch run appended to the same file
    live = ctl.tree_view()
    assert [(b.id, b.parent, b.fork, b.origin) for b in live.branches] == [
        (0, None, 0, "run"), (1, 0, FORK, "forced"), (2, 0, AT, "forced")]
    tree = tree_from_session(s)
    assert tree is not None and shape(tree) == shape(live)
    assert tree.prompt_tokens == live.prompt_tokens
    for b in live.branches:
        assert [x.token for x in tree.path(b.id)] == [x.token for x in live.path(b.id)]
    # branch 0 ends with the stub: the model's own pick at step FORK, replaced and never decoded
    stub = tree.branch(0).steps[-1]
    assert stub.index == FORK and stub.token == tree_run["pending"].token and not stub.forced
    assert tree.branch(1).choice.forced and tree.branch(1).choice.token == int(tree_run["pending"].trace.top_ids[1])
    assert tree.branch(2).choice.token == tree_run["london"]
    assert s.branches[2].info["preset"]["name"] == "greedy" and s.branches[2].info["max_tokens"] == BRANCH_TOKENS
    # the recorded run's line is what it accepted (through the fork), as a version 1 recording kept it
    assert s.line == 1 and s.tokens == tree_run["line"] and [x.index for x in s.steps] == list(range(N))
    prompt = engine.tokenize(PROMPT)
    assert s.tokens[FORK + 1:] == native_greedy(engine, prompt + s.tokens[:FORK + 1], N - FORK - 1)
    result = verify(s, engine)  # the forced choice is replayed from its event
    assert result.ok and result.steps == N
    assert fork_prefix(s, FORK + 1)[1] == s.tokens[:FORK + 1]
    replay = ReplayEngine(s)
    assert replay.piece(s.steps[0].token) == engine.piece(s.steps[0].token)


def test_export_writes_the_tree_and_the_reports_list_the_branches(tree_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "tree.json"
    done = run("export", str(tree_run["path"]), "--format", "tree", "-o", str(out), home=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text(encoding="ascii"))
    live = tree_run["ctl"].tree_view()
    assert doc["format"] == "llmtui-tree" and doc["prompt_tokens"] == list(live.prompt_tokens)
    assert [(b["id"], b["parent"], b["fork"], b["origin"], [(x["index"], x["token"]) for x in b["steps"]])
            for b in doc["branches"]] == shape(live)
    london = next(b for b in doc["branches"] if b["id"] == 2)
    assert london["steps"][0]["text"] == " London" and london["steps"][0]["forced"]
    assert london["logprob"] < next(b for b in doc["branches"] if b["id"] == 0)["logprob"] < 0
    s = read_session(tree_run["path"])
    md = export_markdown(s)
    branches = md.split("## Branches")[1].split("## Steps")[0]
    assert "- branch 0 (run); " in branches and "  - branch 2 (forced) from branch 0 at step 1: chose ` London`" in branches
    assert "  - branch 1 (forced) from branch 0 at step 2" in branches
    page = export_html(s)
    assert "<h2>Branches</h2>" in page and "branch 2 (forced) from branch 0 at step 1" in page
    default = run("export", str(tree_run["path"]), "--format", "tree", home=tmp_path)
    assert default.returncode == 0 and Path(default.stdout.strip()).name == "tree.tree.json"


# -- hostile trees ---------------------------------------------------------------------------------------------


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def _where(records: list[dict], **match: Any) -> int:
    return next(k for k, r in enumerate(records) if all(r.get(key) == value for key, value in match.items()))


def _set(match: dict, **change: Any):
    def mutate(records: list[dict]) -> list[dict]:
        records[_where(records, **match)].update(change)
        return records
    return mutate


def _last_step_of_branch_2_goes_back(records: list[dict]) -> list[dict]:
    k = max(k for k, r in enumerate(records) if r["type"] == "step" and r.get("branch") == 2)
    records[k]["i"] = AT + 1
    return records


def _branch_2_twice(records: list[dict]) -> list[dict]:
    k = _where(records, type="branch", id=2)
    return records[:k + 1] + [dict(records[k])] + records[k + 1:]


def _a_later_id_first(records: list[dict]) -> list[dict]:
    k = _where(records, type="branch", id=2)
    return records[:k] + [{**records[k], "id": 5}] + records[k:]


def _branch_0_introduced(records: list[dict]) -> list[dict]:
    k = _where(records, type="branch", id=2)
    return records[:k] + [{**records[k], "id": 0, "parent": 0}] + records[k:]


HOSTILE = {
    "unknown parent": (_set({"type": "branch", "id": 2}, parent=7), "parent: no branch 7 before this line"),
    "fork beyond the parent": (_set({"type": "branch", "id": 2}, fork=50),
                               "fork: step 50 is beyond branch 0's length (it has steps 0..2)"),
    "a cycle": (_set({"type": "branch", "id": 2}, parent=2), "parent: branch 2 is its own parent (a cycle)"),
    # branch 1 refused: the run's line is branch 0's steps up to its stub
    "a cycle through a later branch": (_set({"type": "branch", "id": 1}, parent=2), "parent: no branch 2 before",
                                       FORK + 1),
    "duplicate id": (_branch_2_twice, "id: branch 2 again (a duplicate id)"),
    "ids that go back": (_a_later_id_first, "id: branch 2 after branch 5 (ids only grow)"),
    "step out of order": (_last_step_of_branch_2_goes_back, "out of order, after step"),
    "step of an unknown branch": (_set({"type": "step", "branch": 2, "i": AT + BRANCH_TOKENS - 1}, branch=9),
                                  "branch: 9 is not a branch of this recording"),
    "event of an unknown branch": (_set({"type": "event", "kind": "stopped", "branch": 2}, branch=-1),
                                   "branch: expected a whole number"),
    "unknown origin": (_set({"type": "branch", "id": 2}, origin="\x1b[2Jevil"), "origin: expected one of run,"),
    "branch 0 introduced": (_branch_0_introduced, "id: expected a whole number in 1.."),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_tree_is_one_clear_line_and_keeps_the_rest(tree_run: dict[str, Any], tmp_path: Path,
                                                             name: str) -> None:
    mutate, message, *line = HOSTILE[name]
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mutate(_records(tree_run["lines"]))), encoding="utf-8")
    s = read_session(path)
    assert len(s.problems) == 1, s.problems
    problem = s.problems[0]
    assert message in problem and "\n" not in problem and "\x1b" not in problem and problem.endswith(
        ("skipped", "skipped (and its steps)")), problem
    tree = tree_from_session(s)  # whatever the file held, the tree is one the engine's TokenTree accepts
    assert tree is not None and tree.branch(0).steps
    for b in tree.branches:
        assert [x.index for x in b.steps] == list(range(b.fork, b.fork + len(b.steps)))
        if b.parent is not None:
            assert tree.branch(b.parent).fork <= b.fork <= tree.branch(b.parent).length
    assert len(s.steps) == (line[0] if line else N)  # the recorded run's line is untouched
    export_markdown(s), export_html(s), json.loads(export_tree(s))


@fuzz(200)
@given(data=st.data())
def test_mutated_tree_recordings_read_build_and_export(tree_run: dict[str, Any], tmp_path_factory, data) -> None:
    """Whatever is changed, dropped, doubled or swapped in a tree's recording, it reads (or is one error), its tree
    is one the engine's TokenTree builds, and the three exports are written."""
    lines = list(tree_run["lines"])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        k = data.draw(st.integers(1, len(lines) - 1), label="line")  # the header's own checks are test_record_fuzz's
        op = data.draw(st.sampled_from(["delete", "duplicate", "swap", "change", "change", "branch"]), label="op")
        if op == "delete":
            del lines[k]
        elif op == "duplicate":
            lines.insert(data.draw(st.integers(1, len(lines))), lines[k])
        elif op == "swap":
            j = data.draw(st.integers(1, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
        else:
            obj = json.loads(lines[k])
            if op == "branch":  # the tree's own fields: ids, parents, forks, a step's or event's branch
                key = data.draw(st.sampled_from(["id", "parent", "fork", "branch", "i"]))
                obj[key] = data.draw(st.one_of(st.integers(-2, 12), st.sampled_from([None, "1", 2**40, [1], 1.5])))
            else:
                _walk_and_change(data, obj)
            lines[k] = json.dumps(obj)
    path = tmp_path_factory.mktemp("mutated") / "tree.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass")
    check(path)
    s = read_session(path)
    tree = tree_from_session(s)
    if tree is not None:
        for depth, b in tree.depth_first():
            assert [x.index for x in b.steps] == list(range(b.fork, b.fork + len(b.steps)))
            assert len(tree.path(b.id)) == b.length
    doc = json.loads(export_tree(s))
    assert len(doc["branches"]) == (len(tree.branches) if tree is not None else 1)


def test_a_truncated_tree_keeps_what_it_had(tree_run: dict[str, Any], tmp_path: Path) -> None:
    lines = tree_run["lines"]
    records = _records(lines)
    k = max(k for k, r in enumerate(records) if r["type"] == "step" and r.get("branch") == 2)  # its last step
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:k]) + "\n" + lines[k][: len(lines[k]) // 2], encoding="utf-8")
    s = read_session(cut)
    assert s.problems == [f"line {k + 1}: truncated last line (the session was cut off); skipped"]
    tree = tree_from_session(s)
    live = tree_run["ctl"].tree_view()
    assert shape(tree)[:2] == shape(live)[:2]
    assert shape(tree)[2][4] == shape(live)[2][4][:-1]  # branch 2 lost its last step, and only that
    assert s.tokens == tree_run["line"]


def test_a_hostile_ab_header_is_one_error_naming_the_field(tree_run: dict[str, Any], tmp_path: Path) -> None:
    records = _records(tree_run["lines"])
    records[0]["ab"] = {"mode": "three", "label_a": "a", "label_b": "b", "preset_b": records[0]["preset"]}
    path = tmp_path / "ab.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(SessionFileError, match=r"line 1: bad header: ab.mode: expected presets or models, got 'three'"):
        read_session(path)


def test_a_version_1_file_reads_and_verifies_as_before(engine, tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda e: None, max_tokens=8)
    ctl.listeners.append(Recorder(engine, lambda header: SessionWriter(path, header, engine.piece)))
    ctl.run(PROMPT)
    records = _records(path.read_text(encoding="utf-8").splitlines())
    assert records[0]["version"] == 2 and not any(r["type"] == "branch" or "branch" in r for r in records)
    records[0]["version"] = 1  # a plain run's lines are what version 1 wrote
    # and what version 1 made of lines it did not know: a branch line is an unknown record, a branch key nothing
    k = _where(records, type="step", i=3)
    records[k]["branch"] = 4
    records.insert(k, {"type": "branch", "id": 1, "parent": 0, "fork": 1, "origin": "forced"})
    v1 = tmp_path / "v1.jsonl"
    v1.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    s = read_session(v1)
    assert s.version == 1 and s.problems == [f"line {k + 1}: unknown record type 'branch'; skipped"]
    assert s.tokens == ctl.last.history and len(s.steps) == 8 and s.complete
    assert tree_from_session(s) is None and list(s.branches) == [0]
    assert verify(s, engine).ok
    assert "## Branches" not in export_markdown(s)
    records[0]["version"] = 3
    v3 = tmp_path / "v3.jsonl"
    v3.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(SessionFileError, match="format version 3, this llmtui reads version 1 or 2"):
        read_session(v3)


def test_a_branch_run_after_recording_was_switched_off_is_not_recorded(engine, tmp_path: Path) -> None:
    path = tmp_path / "off.jsonl"
    reports: list[object] = []
    recorder = Recorder(engine, lambda header: SessionWriter(path, header, engine.piece), reports.append)
    ctl = Controller(engine, BUILTIN_PRESETS["greedy"], seed=1, emit=lambda e: None, max_tokens=4)
    ctl.listeners.append(recorder)
    ctl.run(PROMPT)
    recorder.enabled = False
    ctl.run("", branch=BranchStart(parent=0, at=1, tokens=(engine.tokenize(" a", add_bos=False)[0],)))
    recorder.enabled = True  # on again: a branch of the unrecorded branch cannot be added to the file
    ctl.run("", branch=BranchStart(parent=1, at=3, origin="resampled"))
    s = read_session(path)
    assert s.problems == [] and list(s.branches) == [0] and len(s.steps) == 4
    assert [type(r) for r in reports] == [RecordingStarted, RecordingFailed]
    assert "branch 2 is not recorded: the recording lacks step 3 of branch 1" in reports[1].message


# -- A/B ----------------------------------------------------------------------------------------------------------


def test_an_ab_run_is_one_recording_with_side_b_as_a_branch(engine, tmp_path: Path) -> None:
    from tui.engine.ab import ABRun

    greedy, creative = BUILTIN_PRESETS["greedy"], BUILTIN_PRESETS["creative"]
    ctx = engine.build_context(3)
    reports: list[object] = []
    listen = ab_recorder(engine, tmp_path, preset_a=greedy, preset_b=creative, seed=3, max_tokens=12,
                         report=reports.append)
    prompt = engine.tokenize("Once upon a time")
    result = ABRun(engine, greedy.build(ctx), creative.build(ctx), max_tokens=12, emit=listen, label_a="greedy",
                   label_b="creative").run(prompt, "Once upon a time")
    (started,) = reports
    path = Path(started.path)
    assert path.parent == tmp_path and path.name.endswith(".jsonl")  # a new name in the directory
    d = result.summary["diverged_at"]
    assert d is not None and len(result.steps) == 12
    s = read_session(path)
    assert s.problems == [] and s.complete and s.ab["mode"] == "presets"
    assert (s.ab["label_a"], s.ab["label_b"], s.ab["preset_b"]["name"], s.ab["model_b"]) == (
        "greedy", "creative", "creative", None)
    a_tokens = [x.a.token for x in result.steps]
    b_tokens = [x.b.token for x in result.steps]
    assert s.tokens == a_tokens and s.line == 0  # the line is side A's
    assert (s.branches[1].parent, s.branches[1].fork, s.branches[1].origin) == (0, d, "B")
    assert [x.token for x in s.branches[1].steps] == b_tokens[d:]
    ab = [e for e in s.events if e["kind"] == "ab"]
    assert [e["at_step"] for e in ab] == list(range(12))
    assert [e["kl"] for e in ab] == [x.kl for x in result.steps] and ab[d + 1]["kl"] > 0
    assert [e["top1_agree"] for e in ab] == [x.top1_agree for x in result.steps]
    assert [e["diverged"] for e in ab] == [x.diverged for x in result.steps]
    tree = tree_from_session(s)
    assert [(b.id, b.origin) for b in tree.branches] == [(0, "A"), (1, "B")]
    assert [x.token for x in tree.path(1)] == b_tokens  # before the sides parted, B took A's tokens
    doc = json.loads(export_tree(s))
    assert doc["ab"]["label_b"] == "creative" and [b["origin"] for b in doc["branches"]] == ["A", "B"]
    md = export_markdown(s)
    assert f"A/B of two presets: A = greedy, B = creative (preset creative); the sides parted at step {d}" in md
    assert "  - branch 1 (B) from branch 0 at step" in md


async def test_a_replay_shows_the_recorded_tree_and_plays_its_branches(tree_run: dict[str, Any]) -> None:
    from tests.conftest import until
    from tui.app.app import LlmTuiApp
    from tui.app.screens.branches import BranchScreen
    from tui.app.widgets.token_stream import TokenStream
    from tui.sampling.presets import load_presets

    session = read_session(tree_run["path"])
    engine = ReplayEngine(session)
    app = LlmTuiApp(engine_factory=lambda: engine, model_label="replay", settings=engine.settings,
                    preset=BUILTIN_PRESETS["greedy"], catalog=load_presets(None), replay=session, live_metrics=False)
    async with app.run_test(size=(140, 44)) as pilot:
        await until(pilot, lambda: app.current.state_text == "replay")
        replay = app.screen
        await pilot.press("T")
        await until(pilot, lambda: isinstance(app.screen, BranchScreen))
        view = app.screen
        assert sorted(view.ids) == [0, 1, 2] and view.resident is None  # a recording: no cache behind it
        view.query_one("DataTable").move_cursor(row=view.ids.index(2))
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is replay and replay.shown_branch == 2)
        live = tree_run["ctl"].tree_view()
        stream = replay.query_one(TokenStream)
        assert [s.token for s in replay.model.steps] == [s.token for s in live.path(2)]
        assert stream.text() == "".join(s.text for s in live.path(2))
        assert "branch 2 of 3 (T: tree)" in replay.mode_text()
        await pilot.press("left_curly_bracket")  # { : the previous recorded branch
        assert replay.shown_branch == 1 and [s.token for s in replay.model.steps] == [
            s.token for s in live.path(1)]
