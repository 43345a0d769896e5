"""The replay player: a recording shown in the dashboard's panels, a source of steps like a live run.

A :class:`Replay` screen goes over the live dashboard (the app's model stays
loaded underneath). The same keys mean what a player needs: space plays or
pauses, ←/→ step, +/- set the speed, ``g`` jumps, ``f`` forks (continues with
the model from the current step, on the live dashboard), esc pauses and then
leaves. The generation keys say that this is a replay.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.screen import Screen

from ..engine.errors import EngineError
from ..record.replay import ReplayEngine
from ..run import Phase
from .dashboard import Dashboard
from .keys import screen_binding
from .widgets.graphs import MemoryGraph, ThroughputGraph
from .widgets.panels import ChainTrace, TopKHistogram
from .widgets.token_stream import TokenStream

HELP = "replay: space plays, → steps, g jumps, f forks"
TICK_HZ = 30


class Replay(Dashboard):
    # the table's keys with the player's meanings (what the footer shows); generation keys say "a replay"
    BINDINGS = [
        screen_binding("gen.step", "step", "Play/Pause"),
        screen_binding("select.prev", "select(-1)", "Back", show=False),
        screen_binding("select.next", "select(1)", "Forward", show=False),
        screen_binding("temp.up", "temperature(1)", "Faster"),
        screen_binding("temp.down", "temperature(-1)", "Slower"),
        screen_binding("replay.jump", "jump", "Jump"),
        screen_binding("replay.fork", "fork", "Fork"),
        screen_binding("gen.stop", "stop", "Pause/Leave"),
        *(screen_binding(bid, action, show=False) for bid, action in (
            ("gen.step_mode", "step_mode"), ("gen.resample", "resample"), ("chat.toggle", "chat"),
            ("session.new", "new_session"))),
    ]

    def __init__(self, session: Any, fork_load: Any = None) -> None:
        super().__init__(session.header.get("prompt", ""), live_metrics=False)
        self.session = session
        self.replay_engine = ReplayEngine(session)
        self.fork_load = fork_load  # (session) -> Loaded: the recorded model, for forking
        self.position = 0
        self.steps, self.metrics_line = session.steps, session.metrics  # the line played: the run's, or a branch's
        self.shown_branch: int = session.line
        self.playing = False
        self.speed = 20.0  # tokens per second
        self._due = 0.0

    @property
    def engine(self) -> Any:
        return self.replay_engine

    @property
    def preset_name(self) -> str:
        return str(self.session.header["preset"].get("name", "recorded"))

    WAITING = HELP

    MODE = "replay"

    def identity(self) -> tuple[str, int, int]:
        head = self.session.header
        return (str(head["model"]["name"]), int(head.get("seed", 0)),
                int(head.get("engine", {}).get("n_threads", 0)))

    def on_mount(self) -> None:
        super().on_mount()
        self._tick = self.set_interval(1 / TICK_HZ, self._advance, pause=True)
        self.reset_run(Phase.REPLAY)
        self.model.n_prompt = len(self.session.header.get("prompt_tokens", []))
        self.query_one(TokenStream).set_prompt(self.session.header.get("prompt", ""))
        self.query_one(TokenStream).focus()
        self.update_kv()
        self.sync_phase()

    def mode_text(self) -> str:
        branch = f" branch {self.shown_branch} of {len(self.session.branches)} (T: tree)" if len(
            self.session.branches) > 1 else ""
        return (f"REPLAY {self.position}/{len(self.steps)}{branch} {'▶' if self.playing else '⏸'} "
                f"{self.speed:g} tok/s (esc: {'pause' if self.playing else 'leave the replay'})")

    @property
    def active_bindings(self) -> dict[str, Any]:
        return Screen.active_bindings.fget(self)  # the player's own keys, all listed

    # -- playing ---------------------------------------------------------------------------------------

    def _advance(self) -> None:
        if not self.playing:
            return
        self._due += self.speed / TICK_HZ
        n = int(self._due)
        if n:
            self._due -= n
            self.goto(self.position + n)

    def goto(self, position: int) -> None:
        """Show the first ``position`` recorded steps (forwards or backwards)."""
        session, steps = self.session, self.steps
        position = min(max(position, 0), len(steps))
        stream = self.query_one(TokenStream)
        before = self.position
        up = self.model.show_steps(steps[:position])
        if position < before:
            stream.truncate_to(position)
        elif up.appended:
            stream.append_many(up.appended)
            memory, throughput = self.panel(MemoryGraph), self.panel(ThroughputGraph)
            for s, (rss, kv) in zip(steps[before:position], self.metrics_line[before:position]):
                memory.add(s.index, rss, kv)
                throughput.add(s.index, 1000.0 / max(1e-3, s.decode_ms + s.sample_ms), s.decode_ms + s.sample_ms)
            self.metrics.dirty = True  # redrawn by the plot timer
        self.position = position
        if position >= len(steps) and self.playing:
            self.pause()
            end = session.footer.get("stop_reason") if session.footer else "the recording was cut off"
            self.model.set_phase(Phase.REPLAY_END, str(end))
        if self.model.steps:
            self.show_step(self.model.steps[-1])
        else:
            self.query_one(TopKHistogram).clear(HELP)
            self.query_one(ChainTrace).clear()
        self.update_kv()
        self.sync_phase()

    def pause(self) -> None:
        self.playing = False
        self._tick.pause()
        self.update_status()

    # -- the keys ------------------------------------------------------------------------------------

    def action_step(self) -> None:  # space: play / pause
        if self.playing:
            self.pause()
            return
        if self.position >= len(self.steps):
            self.goto(0)
        self.playing = True
        self._tick.resume()
        self.update_status()

    def action_select(self, delta: int) -> None:  # ← / →: one step back / forward
        self.pause()
        self.goto(self.position + delta)

    def action_temperature(self, delta: float) -> None:  # + / -: the speed
        self.speed = min(400.0, self.speed * 2) if delta > 0 else max(1.0, self.speed / 2)
        self.update_status()

    def action_stop(self) -> None:  # esc: out of the prompt box; pause; paused, leave the replay
        if self.focused is self.query_one("#prompt"):
            self.query_one(TokenStream).focus()
        elif self.playing:
            self.pause()
        elif len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()

    def action_jump(self) -> None:
        from .screens.sessions import JumpScreen

        self.app.push_screen(JumpScreen(len(self.steps)), lambda n: n is not None and self.goto(n))

    # -- the recorded tree --------------------------------------------------------------------------------

    def action_branches(self) -> None:  # T: the recording's tree
        from ..record.tree import tree_from_session
        from .screens.branches import BranchScreen

        tree = tree_from_session(self.session)
        if tree is None:
            self.app.notify("this recording holds one run: no branches to show", severity="warning")
            return
        self.app.push_screen(BranchScreen(tree, self.shown_branch, None, note="↑/↓ move · Enter plays that branch "
                                          "from its first step · Esc closes"), self._recorded_branch)

    def _recorded_branch(self, choice: tuple[str, int] | None) -> None:
        if choice is None:
            return
        if choice[0] == "continue":
            self.app.notify("this is a replay: Enter plays a branch; f forks the shown step with the model",
                            severity="warning")
            return
        self.show_branch(choice[1])

    def action_branch(self, delta: int) -> None:  # { / }: the previous / next recorded branch
        order = sorted(self.session.branches)
        if len(order) < 2:
            self.app.notify("this recording holds one run: no branches to show", severity="warning")
            return
        self.show_branch(order[(order.index(self.shown_branch) + delta) % len(order)])

    def show_branch(self, bid: int) -> None:
        """Play branch ``bid`` of the recorded tree: its path, shown up to where it leaves the one shown."""
        self.pause()
        steps, metrics = self.session.branch_line(bid)
        keep = 0
        while keep < min(len(steps), len(self.steps), self.position) and steps[keep] is self.steps[keep]:
            keep += 1
        self.goto(keep)
        self.steps, self.metrics_line, self.shown_branch = steps, metrics, bid
        self.goto(len(steps))
        self.update_status()

    def action_candidates(self) -> None:
        self._not_here()

    action_insert_text = action_candidates

    def _not_here(self) -> None:
        self.app.notify("this is a replay: f forks it to generate with the model from here; esc leaves it",
                        severity="warning")

    action_step_mode = action_resample = action_chat = _not_here

    def action_new_session(self) -> None:  # ctrl+n: clear everything, the replay included
        self.app.leave_replays()
        self.app.dashboard.action_new_session()

    def submit(self, prompt: str) -> None:  # the prompt's Enter
        self._not_here()

    def action_fork(self) -> None:
        if self.fork_load is None:
            self.app.notify("forking needs the model: run `llmtui replay FILE` where the model is installed",
                            severity="warning")
            return
        self.pause()
        self._fork(self.position)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _fork(self, at_step: int) -> None:
        from ..record.tools import fork_prefix

        try:
            loaded = self.fork_load(self.session)
        except EngineError as exc:
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=10)
            return
        try:
            prefix, kept = fork_prefix(self.session, at_step, loaded.engine, self.steps)
        except EngineError as exc:
            loaded.engine.close()
            self.app.call_from_thread(self.app.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self.app.fork_from_replay, loaded, self.session, at_step, prefix, kept, self.steps,
                                  self.shown_branch)
