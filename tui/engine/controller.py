"""Drives generations for an interactive front end (no Textual here).

The front end calls :meth:`Controller.run` in a worker thread and talks to it
through thread-safe commands; the controller reports back through ``emit``
with immutable events. It adds what a dashboard needs on top of the plain
generation loop: step mode (one token per command, the pending step shown
before it is accepted), switching preset or temperature mid-generation, and
re-sampling a step with another preset without decoding again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sampling.errors import SamplingError
from .branching import BranchOps, BranchStart, TreeChanged
from .chat import reusable_prefix
from .errors import EngineError
from .loop import CONTEXT_POLICIES, Generation, GenerationStats, Step, StopReason


# -- events (controller -> front end) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    prompt: str  # as the model reads it (a chat rendered by its template)
    prompt_tokens: tuple[int, ...]
    preset: str
    seed: int
    step_mode: bool
    # what a recording of the run needs
    given: str = ""  # the prompt as given
    spec: Any = None  # the Preset
    max_tokens: int = 0
    ignore_eos: bool = False
    parent: dict[str, Any] | None = None
    history: tuple[int, ...] = ()  # tokens the chain had accepted before step 0 (a fork's kept tokens)
    before: tuple[Step, ...] = ()  # a branch run: the steps of its path before its first new one
    branch: int | None = None  # the tree's branch this run generates (None: not a tree run, an API request)
    fork: tuple[int, int, str] | None = None  # a new branch: (the parent it leaves, step index, origin)
    new_tree: bool = False  # this run starts a new token tree (the last one is forgotten)
    retrieved: Any = None  # a retrieval-augmented turn's tui.rag.Retrieved: the chunks its prompt carries


@dataclass(frozen=True, slots=True)
class PromptDone:
    n_tokens: int
    ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.n_tokens * 1000.0 / self.ms if self.ms > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A chat turn's prompt: how much of the cache was reused."""

    reused: int
    evaluated: int
    dropped_turns: int
    saved_ms: float  # prompt processing the reuse saved (at this turn's measured rate)


@dataclass(frozen=True, slots=True)
class StepEvent:
    step: Step
    pending: bool = False  # step mode: shown before it is accepted


@dataclass(frozen=True, slots=True)
class Accepted:
    """A step is final (after any re-sample) and its token is in the history: what a recording keeps."""

    step: Step


@dataclass(frozen=True, slots=True)
class ListenerFailed:
    """A listener of the run (a recorder, say) raised: it was dropped, the run went on."""

    message: str


@dataclass(frozen=True, slots=True)
class Resampled:
    step: Step  # replaces the step with the same index
    preset: str
    pending: bool
    spec: Any = None  # the Preset


@dataclass(frozen=True, slots=True)
class PresetChanged:
    preset: str
    spec: Any = None  # the Preset
    at_step: int = 0  # the first step it samples


@dataclass(frozen=True, slots=True)
class Finished:
    reason: StopReason | None
    error: str | None
    summary: dict[str, Any]
    text: str


# -- commands (front end -> controller) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advance:
    """Step mode: accept the pending token and produce the next one."""


@dataclass(frozen=True, slots=True)
class SetStepMode:
    on: bool


@dataclass(frozen=True, slots=True)
class SetPreset:
    preset: Any  # tui.sampling.presets.Preset


@dataclass(frozen=True, slots=True)
class Resample:
    preset: Any


@dataclass(frozen=True, slots=True)
class Force:
    """Step mode: the pending step becomes ``token`` (a candidate the user chose); the run goes on from it.
    ``index``: the step the user chose it at (a command that arrives once another step is pending is dropped)."""

    token: int
    index: int | None = None


@dataclass(slots=True)
class RunState:
    """What the last run left behind (for re-sampling its last step)."""

    history: list[int] = field(default_factory=list)  # accepted generated tokens
    last_logits: np.ndarray | None = None
    chain: Any = None  # the chain that drew the last token (a re-sample draws on from its generator)
    tree_key: tuple[int, int] | None = None  # (tree serial, branch) when the run was the tree's: its last step


class Controller(BranchOps):
    def __init__(self, engine: Any, preset: Any, *, seed: int, emit: Callable[[object], None],
                 max_tokens: int = 512, ignore_eos: bool = False, context_policy: str = "stop",
                 n_keep: int = -1) -> None:
        self.engine = engine
        self.preset = preset
        self.seed = seed
        self.emit = emit
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.cancel = threading.Event()  # the current run's
        self.commands: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()  # one run at a time on the engine
        self.run_id = 0
        self.step_mode = False
        self.running = False
        self.last = RunState()
        # see every event before the front end does (on the run's thread): a recorder, a logger
        self.listeners: list[Callable[[object], None]] = []
        self.context_policy = context_policy  # stop | shift (generation); chats may also drop old turns
        self.n_keep = n_keep
        self.chat: Any = None  # a ChatSession when in chat mode
        self._run_preset: Any = None
        self._run_listener: Callable[[object], None] | None = None
        self.tree = None  # the token tree of the last interactive run (tui.engine.branching)
        self.branch_id = 0
        self._tree_serial = 0
        self._tree_run = False  # the current run adds its steps to the tree
        self._retrieved: Any = None  # the current run's retrieval (tui.rag.Retrieved), if it is augmented

    @property
    def active_preset(self) -> Any:
        """The preset the current run samples with."""
        return self._run_preset or self.preset

    # -- thread-safe entry points for the front end ------------------------------------------

    def send(self, command: object) -> None:
        self.commands.put(command)

    def exclusive(self, job: Callable[[], Any]) -> Any:
        """Run ``job`` while no run uses the engine (a run started meanwhile waits for it). The cache then
        no longer holds the last run: re-sampling its last step is no longer possible."""
        with self._lock:
            try:
                return job()
            finally:
                self.last = RunState()

    def wait_idle(self) -> None:
        """Block until the current run (if any) has finished with the engine."""
        with self._lock:
            return

    def stop(self) -> None:
        self.cancel.set()
        self.commands.put(None)  # wakes a step-mode wait

    def force(self, token: int, index: int | None = None) -> None:
        """Step mode: make the pending step ``token`` (a candidate the user chose). EngineError for an id
        outside the vocabulary, before anything is sent."""
        n_vocab = self.engine.n_vocab
        if not 0 <= token < n_vocab:
            raise EngineError(f"token {token} is not in this model's vocabulary (0..{n_vocab - 1:,})")
        self.send(Force(int(token), index))

    # -- chains ---------------------------------------------------------------------------

    def build_chain(self, preset: Any, history: Sequence[int], after: Any = None) -> Any:
        """A fresh chain for ``preset`` that has seen ``history`` (penalties, DRY remember it); ``after``: the
        chain it replaces mid-run, whose random numbers it continues (a re-sample draws a new one)."""
        chain = preset.build(self.engine.build_context(self.seed), seen=history)
        return chain.continue_draws(after) if after is not None else chain

    # -- the run (worker thread) ---------------------------------------------------------------

    def run(self, prompt: str, *, step_mode: bool = False, add_bos: bool | None = None,
            parse_special: bool = False, run_id: int = 0, prefix: Sequence[int] | None = None,
            history: Sequence[int] = (), parent: dict[str, Any] | None = None, preset: Any = None,
            seed: int | None = None, max_tokens: int | None = None,
            listener: Callable[[object], None] | None = None, cancel: threading.Event | None = None,
            reuse: bool = False, branch: BranchStart | None = None, retrieved: Any = None) -> GenerationStats:
        """Generate from ``prompt``; events carry ``run_id`` (see ``emit``).

        A run started while another is finishing waits for it: the engine is
        never used by two threads. ``stop()`` always reaches the newest run.
        ``preset``/``seed``/``max_tokens`` apply to this run only (an API
        request); ``listener`` also gets every event of this run; ``reuse``
        keeps the part of the KV cache that ``prefix`` shares with what it holds; ``branch`` generates from
        a step of the token tree (:mod:`tui.engine.branching`); ``retrieved``: the chunks a retrieval-augmented
        ``prompt`` carries (:class:`tui.rag.Retrieved`, shown and recorded with the run).
        """
        self.cancel = cancel = cancel or threading.Event()
        with self._lock:
            self.cancel = cancel  # a run that waited for the lock is the newest
            self.run_id = run_id
            self._drain()
            self.step_mode = step_mode
            self.running = True
            saved = (self.seed, self.max_tokens)
            self._run_preset = preset  # this run's own (an API request's); self.preset stays the front end's
            self._run_listener = listener
            if seed is not None:
                self.seed = seed
            if max_tokens is not None:
                self.max_tokens = max_tokens
            self._tree_run = branch is not None or listener is None
            self._retrieved = retrieved
            try:
                return self._run(prompt, cancel, step_mode, add_bos, parse_special, prefix, list(history), parent,
                                 reuse, branch)
            finally:
                self.running = False
                self._run_preset = None
                self._run_listener = None
                self.seed, self.max_tokens = saved

    def _send(self, event: object) -> None:
        """Every event: the listeners (a recorder), this run's own listener (an API request), the front end.
        A listener that fails is a bug: it is dropped and reported, and the run goes on."""
        for listen in list(self.listeners):
            try:
                listen(event)
            except Exception as exc:
                self.listeners.remove(listen)
                self.emit(ListenerFailed(f"{type(exc).__name__}: {exc}"))
        if self._run_listener is not None:
            self._run_listener(event)
        if not isinstance(event, Accepted):  # the front end shows steps from StepEvent
            self.emit(event)

    def reusable_prefix(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens`` the KV cache already holds, in order (at least one is always evaluated)."""
        return reusable_prefix(self.engine, list(tokens))

    def _run(self, prompt: str, cancel: threading.Event, step_mode: bool, add_bos: bool | None,
             parse_special: bool, prefix: Sequence[int] | None, history: list[int],
             parent: dict[str, Any] | None, reuse: bool = False,
             branch: BranchStart | None = None) -> GenerationStats:
        eng = self.engine
        if cancel.is_set():
            stats = GenerationStats(stop_reason=StopReason.CANCELLED)
            self._send(Finished(StopReason.CANCELLED, None, stats.summary(), ""))
            return stats
        chat = self.chat  # the conversation this run belongs to (chat mode may change while it runs)
        try:
            plan = None
            n_reuse = 0
            start, before, forced, fork = 0, (), (), None
            if branch is not None:
                before, tokens, att = self._start_branch(branch, self.max_tokens)
                tree = self.tree
                assert tree is not None
                start, history, shown, forced = len(before), [s.token for s in before], tree.prompt, branch.tokens
                n_reuse = att.reused
                if not branch.extend:  # the parent the tree gave it (a choice at a fork's own step is a sibling)
                    fork = (tree.branches[self.branch_id].parent, branch.at, branch.origin)
                    if branch.origin == "resampled":
                        self.seed = (self.seed + 7919 * self.branch_id) & 0xFFFFFFFF  # a fresh draw there
            elif chat is not None and prefix is None:
                plan = chat.prepare(prompt)  # cuts the cache to the shared prefix
                tokens = plan.tokens
                shown = plan.text
            else:
                tokens = list(prefix) if prefix is not None else eng.tokenize(
                    prompt, add_bos=add_bos, parse_special=parse_special)
                if reuse and not history:
                    n_reuse = self.reusable_prefix(tokens)
                if n_reuse:
                    eng.truncate(n_reuse)  # llama_memory_seq_rm from n_reuse on
                else:
                    eng.clear()
                shown = prompt
            if branch is None and self._tree_run:
                self._new_tree(tokens, shown, chat if plan is not None else None)
            chain = self.build_chain(self.active_preset, history)
            policy = self.context_policy if self.context_policy in CONTEXT_POLICIES else "stop"

            def prompt_done(st: GenerationStats) -> None:
                self._send(PromptDone(st.prompt_tokens, st.prompt_ms))
                per_token = st.prompt_ms / max(1, st.prompt_tokens)
                if plan is not None:
                    self._send(ChatTurn(plan.reused, st.prompt_tokens, plan.dropped_turns, plan.reused * per_token))
                elif n_reuse:  # an API request that continues a conversation already in the cache, a branch
                    self._send(ChatTurn(n_reuse, st.prompt_tokens, 0, n_reuse * per_token))
                if branch is not None:
                    self._switched(self.branch_id, att, st.prompt_ms)

            evaluate = plan.evaluate if plan is not None else tokens[n_reuse:]
            gen = Generation(
                eng, evaluate, chain, max_tokens=self.max_tokens,
                cancel=cancel, ignore_eos=self.ignore_eos, eog_tokens=eng.eog_tokens() if self.ignore_eos else (),
                on_prompt_done=prompt_done, context_policy=policy,
                n_keep=self.n_keep, start=start,
            )
            self._send(Started(shown, tuple(tokens), self.active_preset.name, self.seed, step_mode, given=prompt,
                               spec=self.active_preset, max_tokens=self.max_tokens, ignore_eos=self.ignore_eos,
                               parent=parent, history=tuple(history), before=before,
                               branch=self.branch_id if self._tree_run else None, fork=fork,
                               new_tree=branch is None and self._tree_run, retrieved=self._retrieved))
            for step in gen:
                if step.index - start < len(forced):  # typed text or a chosen candidate: forced, in order
                    step = gen.force(forced[step.index - start])
                if self.step_mode:
                    self._send(StepEvent(step, pending=True))
                    self._wait_for_advance(gen, history)
                    step = gen.pending or step
                    self._send(StepEvent(step))  # accepted
                else:
                    self._send(StepEvent(step))
                    self._apply_commands(gen, history, block=False)
                    step = gen.pending or step
                history.append(step.token)
                self._send(Accepted(step))
                if self._tree_run:
                    self._accepted(step)
            stats = gen.stats
            if plan is not None:
                chat.finish(stats.text)
            tree_key = (self._tree_serial, self.branch_id) if self._tree_run and self.tree is not None else None
            self.last = RunState(history=history, last_logits=gen.last_logits, chain=gen.sampler, tree_key=tree_key)
            if tree_key is not None:
                if branch is not None:
                    self._adopt_in_chat(self.branch_id)
                self._send(TreeChanged(self.tree.view()))
        except EngineError as exc:
            self.last = RunState()  # what the cache holds is not this run's: nothing to re-sample
            error = str(exc)
            stats = GenerationStats(stop_reason=StopReason.ERROR, error=error)
            self._send(Finished(StopReason.ERROR, error, stats.summary(), ""))
            return stats
        self._send(Finished(stats.stop_reason, stats.error, stats.summary(), stats.text))
        return stats

    def _drain(self) -> None:
        while True:
            try:
                self.commands.get_nowait()
            except queue.Empty:
                return

    def _wait_for_advance(self, gen: Generation, history: list[int]) -> None:
        while not gen.cancel.is_set():
            cmd = self.commands.get()
            if cmd is None or isinstance(cmd, Advance):
                return
            if isinstance(cmd, SetStepMode) and not cmd.on:
                self.step_mode = False
                return
            self._handle(cmd, gen, history, pending=True)

    def _apply_commands(self, gen: Generation, history: list[int], *, block: bool) -> None:
        while True:
            try:
                cmd = self.commands.get(block=block)
            except queue.Empty:
                return
            if isinstance(cmd, SetStepMode):
                self.step_mode = cmd.on
                if cmd.on and gen.pending is not None:
                    # switching on mid-run: pause before the *next* token (this one is already shown)
                    return
                return
            if cmd is not None and not isinstance(cmd, Advance):
                self._handle(cmd, gen, history, pending=False)

    def _handle(self, cmd: object, gen: Generation, history: list[int], *, pending: bool) -> None:
        if isinstance(cmd, SetPreset):
            self.preset = cmd.preset
            gen.sampler = self.build_chain(cmd.preset, history, after=gen.sampler)
            self._send(PresetChanged(cmd.preset.name, cmd.preset, len(history) + 1))
        elif isinstance(cmd, Resample):
            self.preset = cmd.preset
            old = gen.pending
            step = gen.resample(self.build_chain(cmd.preset, history, after=gen.sampler))
            self._send(Resampled(step, cmd.preset.name, pending=pending, spec=cmd.preset))
            self._forked(old, step, "resampled")
        elif isinstance(cmd, Force):
            if cmd.index is not None and (gen.pending is None or gen.pending.index != cmd.index):
                return  # chosen at a step that is no longer pending: not applied to another one
            old = gen.pending
            step = gen.force(cmd.token)  # checked by force() below: a bad id never reaches here
            self._send(Resampled(step, self.active_preset.name, pending=pending, spec=self.active_preset))
            self._forked(old, step, "forced")

    def _forked(self, old: Step | None, new: Step, origin: str) -> None:
        """A step was replaced: in a tree run, the old choice stays as its branch's end; a branch goes on."""
        if self._tree_run and old is not None and self.tree is not None:
            self._fork_pending(old, new, origin)
            self._send(TreeChanged(self.tree.view()))

    # -- after a run ------------------------------------------------------------------------------

    def resample_last(self, preset: Any, last: Step) -> Step:
        """Re-sample the last step of the finished run with ``preset`` (its logits were kept)."""
        if not self._lock.acquire(blocking=False):
            raise EngineError("stop the generation first (or use step mode)")
        try:
            return self._resample_last(preset, last)
        finally:
            self._lock.release()

    def _resample_last(self, preset: Any, last: Step) -> Step:
        if self.last.last_logits is None or not self.last.history:
            raise EngineError("nothing to re-sample yet: generate first")
        history = self.last.history[:-1]
        chain = self.build_chain(preset, history, after=self.last.chain)
        t0 = time.perf_counter()
        try:
            trace = chain.sample(self.last.last_logits)
        except SamplingError as exc:
            raise EngineError(str(exc)) from None
        sample_ms = (time.perf_counter() - t0) * 1000.0
        eng = self.engine
        piece = eng.piece(trace.token)
        step = Step(
            index=last.index, token=trace.token, piece=piece,
            text="" if eng.is_eog(trace.token) else piece.decode("utf-8", errors="replace"),
            prob=trace.prob, trace=trace, decode_ms=last.decode_ms, sample_ms=sample_ms,
            n_past=last.n_past, n_ctx=last.n_ctx, is_eog=eng.is_eog(trace.token), t=time.perf_counter(),
            draw=last.draw + 1,
        )
        self.last.history[-1] = trace.token
        self.last.chain = chain
        self.preset = preset
        self._send(Resampled(step, preset.name, pending=False, spec=preset))
        tree = self.tree
        if (tree is not None and self.last.tree_key == (self._tree_serial, self.branch_id)
                and [s.index for s in tree.path(self.branch_id)[-1:]] == [last.index]):
            self._fork_at(last.index, "resampled")
            tree.add(self.branch_id, step)
            self.last.tree_key = (self._tree_serial, self.branch_id)  # a further re-sample forks from this one
            self._adopt_in_chat(self.branch_id)
            self._send(TreeChanged(tree.view()))
        return step
