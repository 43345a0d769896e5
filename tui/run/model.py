"""What the panels show, folded from the events of any source of steps (no Textual).

Every producer of tokens — a local run on the controller, a replay, an API
request, later a remote server or a branch — emits the same immutable events
(:mod:`tui.engine.controller`'s ``Started``, ``PromptDone``, ``StepEvent``,
``Resampled``, ``Finished``…). :class:`RunModel` folds them into one state:
the steps, the pending step, the selection, the prompt and reuse figures, the
shifts, the phase. The panels and the status line read it; they never ask
where a step came from. :meth:`RunModel.apply` says what changed, so the front
end redraws only that.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..engine.branching import BranchesEvicted, BranchSwitched, TreeChanged
from ..engine.controller import (
    ChatTurn,
    Finished,
    ListenerFailed,
    PresetChanged,
    PromptDone,
    Resampled,
    Started,
    StepEvent,
)
from ..engine.loop import Step, StopReason
from ..engine.tree import TreeView
from ..record.recorder import RecordingFailed, RecordingStarted
from ..remote.controller import ServerCounters
from ..safe_text import piece_label


class Phase(enum.Enum):
    LOADING = "loading"
    IDLE = "idle"
    PROMPT = "prompt"  # the prompt is being evaluated
    GENERATING = "generating"
    PAUSED = "paused"  # step mode: a pending step waits for space
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    REPLAY = "replay"
    REPLAY_END = "replay end"



def first_token_hint(chat: bool, token: str, how: str = "press c for chat mode (the question becomes a user turn)",
                     can_chat: bool = True) -> str:
    """Why a run ended at its first token with end-of-turn, and how to get an answer (one line)."""
    if chat:
        return (f"the model ended its answer at once ({token}): nothing more to say to that; "
                "rephrase, or try another preset (p)")
    if not can_chat:
        return (f"the model ended at once ({token}): it predicts the end of the text right here, and it has no "
                "chat template to ask it a question; give it text to continue")
    return (f"the model ended at once ({token}): an instruct model reads a bare question as a finished turn; "
            f"{how} to get an answer")


@dataclass(frozen=True, slots=True)
class KvView:
    """The KV gauge's figures (see :meth:`RunModel.kv_view`)."""

    n_ctx: int
    n_past: int
    n_prompt: int
    n_reused: int
    n_keep: int | None
    shifts: tuple[tuple[int, int, int], ...]
    bytes_per_token: float
    allocated: int
    type_k: str
    type_v: str
    shared: tuple[int, ...] = ()  # per position of the shown branch: how many sequences hold its cell


def evicted_notice(branches: tuple[int, ...]) -> str:
    """What the screen says when a full cache freed branches' cells."""
    names = ", ".join(str(b) for b in branches)
    which = f"branch {names}" if len(branches) == 1 else f"branches {names}"
    it = "it is" if len(branches) == 1 else "they are"
    return f"cache full: {which} evicted (least recently viewed): {it} re-evaluated when visited"


@dataclass(slots=True)
class Update:
    """What one batch of events changed (the front end redraws from it)."""

    appended: list[tuple[int, str, float]] = field(default_factory=list)  # new steps: (index, text, p)
    replaced: list[tuple[int, str, float]] = field(default_factory=list)  # re-sampled steps
    pending: Step | None = None  # the step now pending (step mode)
    pending_cleared: bool = False
    prompt: str | None = None  # a new prompt text to show (a chat rendered by its template)
    show: Step | None = None  # the step the panels should show (unless one is selected)
    new_steps: bool = False
    finished: Finished | None = None
    notices: list[tuple[str, str]] = field(default_factory=list)  # (message, severity)
    tree: bool = False  # the token tree or the shown branch changed


@dataclass(frozen=True, slots=True)
class RunResult:
    """A run as it stood when it was read (what :meth:`RunModel.snapshot` gives a caller that waited)."""

    run_id: int
    steps: tuple[Step, ...]
    pending: Step | None
    phase: Phase
    state: str
    summary: dict[str, Any]
    shifts: tuple[tuple[int, int, int], ...]
    chat_turn: ChatTurn | None
    n_prompt: int
    n_reused: int
    preset: str
    record_path: str
    retrieved: Any = None  # a retrieval-augmented turn's tui.rag.Retrieved (the chunks its prompt carried)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def stop_reason(self) -> str | None:
        return self.summary.get("stop_reason")


class RunModel:
    """The current run, as the panels see it."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.detail = "model"  # what the phase is about: "45%", the stop reason, the error…
        self.label = ""  # who runs it: "API #3" for a client's request
        self.run_id = 0  # events of other runs are ignored
        self.steps: list[Step] = []
        self.pending: Step | None = None
        self.selected: int | None = None
        self.n_prompt = 0
        self.n_reused = 0
        self.prompt_tps = 0.0
        self.prompt_ms = 0.0
        self.shifts: list[tuple[int, int, int]] = []  # (step index, n_keep, n_discard)
        self.chat_turn: ChatTurn | None = None
        self.summary: dict[str, Any] = {}  # of the last finished run
        self.preset = ""  # the preset the run samples with (an API request's own, an experiment's)
        self.record_path = ""
        self.token_times: deque[float] = deque(maxlen=64)
        self.can_chat = True  # the model has a chat template (what the first-token hint may suggest)
        self.server: ServerCounters | None = None  # a remote server's last counters (tui.remote)
        self.probes: list[ServerCounters] = []  # probe mode: one per request, what each cost the server
        # the token tree (tui.engine.tree): the latest view, the branch shown (None: a run outside the tree, an
        # API request's) and what the last switch to it cost (the status line's figures, the shared cells)
        self.tree: TreeView | None = None
        self.branch: int | None = None
        self.switched: BranchSwitched | None = None
        self.prompt = ""  # the prompt as the model reads it (a branch run starts from the same text)
        self.n_tree_prompt = 0  # the prompt's tokens (a branch run's Started counts its path before too)
        self.retrieved: Any = None  # a retrieval-augmented turn's tui.rag.Retrieved: the chunks its prompt carries

    # -- lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the last run: its steps, selection, and the prompt/reuse/shift figures."""
        self.steps = []
        self.pending = None
        self.selected = None
        self.n_prompt = 0
        self.n_reused = 0
        self.shifts = []
        self.server = None
        self.probes = []
        self.chat_turn = None  # the new run's turn arrives with its prompt
        self.preset = ""
        self.switched = None  # a branch run's arrives with its prompt; the tree itself outlives the run
        self.retrieved = None  # an augmented turn's arrives with its Started
        self.token_times.clear()

    def new_run(self, phase: Phase = Phase.PROMPT, detail: str = "", label: str = "") -> int:
        """A new run starts: its events will carry the returned id (older runs' events are dropped)."""
        self.reset()
        self.run_id += 1
        self.set_phase(phase, detail)
        self.label = label
        return self.run_id

    def forget_tree(self) -> None:
        """The tree is gone (a new session, another model, a recreated context)."""
        self.tree, self.branch, self.switched = None, None, None

    def set_phase(self, phase: Phase, detail: str = "") -> None:
        self.phase, self.detail = phase, detail

    @property
    def state_text(self) -> str:
        """The phase in words, as the status line says it."""
        p, d = self.phase, self.detail
        text = {
            Phase.LOADING: f"loading {d}".rstrip(),
            Phase.IDLE: "idle",
            Phase.PROMPT: "prompt" if not d else d,
            Phase.GENERATING: "generating",
            Phase.PAUSED: "step mode: space accepts, r re-samples",
            Phase.STOPPING: "stopping",
            Phase.STOPPED: f"stopped: {d}",
            Phase.ERROR: f"error: {d}",
            Phase.REPLAY: "replay",
            Phase.REPLAY_END: f"replay: end{f' ({d})' if d else ''}",
        }[p]
        return f"{self.label} {text}" if self.label else text

    def snapshot(self) -> RunResult:
        return RunResult(self.run_id, tuple(self.steps), self.pending, self.phase, self.state_text, dict(self.summary),
                         tuple(self.shifts), self.chat_turn, self.n_prompt, self.n_reused, self.preset,
                         self.record_path, self.retrieved)

    @property
    def last(self) -> Step | None:
        """The step the cache is at: the pending one, else the last accepted one."""
        return self.pending or (self.steps[-1] if self.steps else None)

    # -- folding events ------------------------------------------------------------------------

    def apply(self, events: list[tuple[int, object]]) -> Update:
        """Fold ``(run id, event)`` pairs (events of other runs are skipped); say what changed."""
        up = Update()
        for run_id, ev in events:
            if run_id == self.run_id:
                self._fold(ev, up)
        return up

    def _fold(self, ev: object, up: Update) -> None:
        if isinstance(ev, StepEvent):
            step = ev.step
            if ev.pending:
                self.pending = step
                self.set_phase(Phase.PAUSED)
                up.appended.append((step.index, step.text, step.prob))
                up.pending = step
            else:
                if self.phase is Phase.PAUSED:  # accepted: the run goes on (step mode off: it no longer pauses)
                    self.set_phase(Phase.GENERATING)
                if self.pending is not None and self.pending.index == step.index:
                    self.pending = None
                    up.pending_cleared = True
                    up.pending = None
                else:
                    up.appended.append((step.index, step.text, step.prob))
                self.steps.append(step)
                self.token_times.append(step.t)
                if step.shift is not None:
                    self.shifts.append((step.index, *step.shift))
                    up.notices.append((f"context shift at step {step.index}: kept {step.shift[0]}, dropped "
                                       f"{step.shift[1]} tokens", "information"))
            up.show = step
            up.new_steps = True
        elif isinstance(ev, Resampled):
            step = ev.step
            if ev.pending:
                self.pending = step
                up.pending = step
            elif self.steps and self.steps[-1].index == step.index:
                self.steps[-1] = step
            up.replaced.append((step.index, step.text, step.prob))
            self.preset = ev.preset
            up.show = step
            draw = f"draw {step.draw}, u={step.trace.draw:.4f}" if step.trace.draw is not None else "deterministic"
            if step.forced:
                up.notices.append((f"forced step {step.index}: {piece_label(step.piece)} (p={step.prob:.3g} under "
                                   "the model); the run goes on from it", "information"))
            else:
                up.notices.append((f"re-sampled step {step.index} with {ev.preset} ({draw}): "
                                   f"{piece_label(step.piece)}", "information"))
        elif isinstance(ev, PromptDone):
            self.n_prompt = ev.n_tokens
            self.prompt_tps = ev.tokens_per_s
            self.prompt_ms = ev.ms  # a remote stream's: the time to its first token
            self.set_phase(Phase.GENERATING)
            up.new_steps = True
        elif isinstance(ev, Started):
            self.set_phase(Phase.PROMPT)
            self.preset = ev.preset
            self.prompt = ev.prompt
            self.retrieved = ev.retrieved
            self.n_tree_prompt = len(ev.prompt_tokens) - len(ev.before)
            up.prompt = ev.prompt
            self._started_branch(ev, up)
        elif isinstance(ev, (TreeChanged, BranchSwitched, BranchesEvicted)):
            self._fold_tree(ev, up)
        elif isinstance(ev, ChatTurn):
            self.chat_turn = ev
            self.n_reused = ev.reused
        elif isinstance(ev, PresetChanged):
            self.preset = ev.preset
            up.notices.append((f"preset: {ev.preset}", "information"))
        elif isinstance(ev, Finished):
            self.summary = dict(ev.summary or {})
            reason = ev.reason.describe() if ev.reason else "?"
            self.set_phase(Phase.STOPPED, reason + (f" ({ev.error})" if ev.error else ""))
            if self.pending is not None:
                self.pending = None
                up.pending_cleared = True
            up.finished = ev
            if ev.error:
                up.notices.append((ev.error, "error"))
            elif ev.reason is StopReason.EOG and self.steps and not any(s.text for s in self.steps):
                first = self.steps[0]
                up.notices.append((first_token_hint(self.chat_turn is not None, piece_label(first.piece),
                                                    can_chat=self.can_chat), "warning"))
        elif isinstance(ev, ServerCounters):
            if ev.note:
                up.notices.append((ev.note, "warning"))
            self.server = ev
            if ev.step >= 0:
                self.probes.append(ev)
                if ev.retokenized:
                    up.notices.append((f"probe {ev.step}: the server read the text back as other tokens than were "
                                       "chosen (it merged them): from here it predicts after its own tokenisation",
                                       "warning"))
            elif ev.prompt_n is not None and not self.n_prompt:
                self.n_prompt = ev.prompt_n + (ev.cache_n or 0)
            if ev.step < 0 and ev.prompt_n and ev.prompt_ms:  # the server's own prompt speed, where it says
                self.prompt_tps = ev.prompt_n * 1000.0 / ev.prompt_ms
            up.new_steps = True
        elif isinstance(ev, RecordingStarted):
            self.record_path = ev.path
        elif isinstance(ev, RecordingFailed):
            self.record_path = ""
            up.notices.append((ev.message, "error"))
        elif isinstance(ev, ListenerFailed):
            up.notices.append((f"a listener of the run failed and was dropped: {ev.message}", "error"))

    def _started_branch(self, ev: Started, up: Update) -> None:
        """Where a run stands in the tree: a new tree, a branch run (its path before the fork is shown at once),
        or a run outside the tree."""
        self.branch = ev.branch
        if ev.new_tree:
            self.tree = None  # a new tree: its view arrives with the first fork or the run's end
        if ev.before:
            self.steps = list(ev.before)
            up.appended.extend((s.index, s.text, s.prob) for s in ev.before)
            up.show = ev.before[-1]

    def _fold_tree(self, ev: object, up: Update) -> None:
        if isinstance(ev, TreeChanged):
            self.tree = ev.tree
            if self.branch is not None:  # a run outside the tree (an API request's) shows no branch
                self.branch = ev.tree.current
            up.tree = True
        elif isinstance(ev, BranchSwitched):
            self.switched = ev
            self.branch = ev.branch
            up.tree = True
        elif isinstance(ev, BranchesEvicted):
            up.notices.append((evicted_notice(ev.branches), "warning"))

    def show_branch(self, tree: TreeView, switched: BranchSwitched) -> Update:
        """The cache now holds branch ``switched.branch``: show its path (what the last one shares is kept)."""
        self.tree, self.branch, self.switched = tree, switched.branch, switched
        self.pending, self.selected = None, None
        self.n_prompt, self.n_reused, self.shifts = len(tree.prompt_tokens), 0, []
        self.n_tree_prompt, self.prompt = len(tree.prompt_tokens), tree.prompt
        up = self.show_steps(list(tree.path(switched.branch)))
        up.tree = True
        return up

    # -- a source without events: the steps of a recording, shown up to a position ---------------

    def show_steps(self, steps: list[Step]) -> Update:
        """Show exactly ``steps`` (a replay's first N): what is beyond N is dropped, what is new appended."""
        up = Update()
        keep = 0
        while keep < min(len(steps), len(self.steps)) and steps[keep] is self.steps[keep]:
            keep += 1
        del self.steps[keep:]
        new = steps[keep:]
        self.steps.extend(new)
        up.appended = [(s.index, s.text, s.prob) for s in new]
        up.show = self.steps[-1] if self.steps else None
        up.new_steps = bool(new)
        return up

    # -- selection --------------------------------------------------------------------------------

    def select(self, index: int | None) -> Step | None:
        """Select step ``index`` (None: follow the live end); the step the panels should show."""
        if index is not None and not 0 <= index < len(self.steps):
            return None
        self.selected = index
        if index is not None:
            return self.steps[index]
        return self.pending or (self.steps[-1] if self.steps else None)

    def neighbour(self, delta: int) -> int | None:
        """The index ``delta`` steps from the selection (or from the live end)."""
        if not self.steps:
            return None
        current = self.selected if self.selected is not None else len(self.steps)
        return min(max(current + delta, 0), len(self.steps) - 1)

    # -- figures --------------------------------------------------------------------------------------

    def kv_view(self, kv: Any, n_ctx: int, engine_n_past: int | None, n_keep: int | None) -> KvView:
        """The KV gauge's figures: ``kv`` the engine's layout (bytes per token, allocated), ``engine_n_past``
        what the cache holds once a run stopped (the last sampled token is never decoded), ``n_keep``
        the policy's kept cells (None: no shift policy)."""
        last = self.last
        n_prompt = self.n_prompt
        if self.shifts:  # after a shift only n_keep prompt tokens remain at the front
            n_prompt = min(n_prompt, self.shifts[-1][1])
        if last is None:
            n_past = self.n_prompt + self.n_reused
        elif self.phase is Phase.STOPPED and self.pending is None and engine_n_past is not None:
            n_past = engine_n_past
        else:
            n_past = last.n_past + 1  # the token being decoded now
        return KvView(n_ctx=n_ctx, n_past=n_past,
                      n_prompt=n_prompt + self.n_reused if not self.shifts else n_prompt,
                      n_reused=self.n_reused, n_keep=n_keep, shifts=tuple(self.shifts),
                      bytes_per_token=kv.bytes_per_token, allocated=kv.allocated, type_k=kv.type_k,
                      type_v=kv.type_v, shared=self.shared_cells())

    def shared_cells(self) -> tuple[int, ...]:
        """Per position of the shown branch, how many sequences hold its cell (as of its last switch)."""
        sw = self.switched
        return sw.active_shared if sw is not None and sw.branch == self.branch else ()

    def throughput(self) -> tuple[float, float] | None:
        """(tokens per second over the recent steps, the last step's ms), once two steps are known."""
        times = self.token_times
        if len(times) < 2 or not self.steps:
            return None
        span = times[-1] - times[0]
        last = self.steps[-1]
        return ((len(times) - 1) / span if span > 0 else 0.0), last.decode_ms + last.sample_ms
