"""The screens the app's keys open over the dashboard: models, anatomy, presets, tokenizer, settings, the
labs, sessions and replays (open, fork, leave), themes, help and the Learn path. A mixin of
:class:`~tui.app.app.LlmTuiApp`: each opens a screen, and engine work they need runs in a worker while no
generation uses the engine."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from textual import work
from textual.widgets import Static
from textual.worker import Worker

from ..config import app_dirs, save_state
from ..engine.errors import EngineError
from ..engine.thread import engine_thread
from ..safe_text import visible
from .keys import help_rows


class Tools:
    """The app's screens (mixed into the app: ``self`` is the :class:`LlmTuiApp`)."""

    app: Any

    # -- models ---------------------------------------------------------------------------------------

    def action_models(self) -> None:
        if self.discover is None:
            self.notify("model discovery is not available here", severity="warning")
            return
        self._find_models()

    @work(thread=True, exclusive=True, group="models", exit_on_error=False)
    def _find_models(self) -> None:
        from .screens.models import ModelPicker

        entries = [*self.discover(), *self.remote.remotes.entries()]
        current = self.model_label if self.engine is not None else "nothing"  # a failed load left only its name
        self.call_from_thread(self.push_screen, ModelPicker(entries, current, self.loaded_paths(),
                                                            add_url=self.remote.entry_for_url),
                              self.use_picked_model)

    def use_picked_model(self, entry: Any) -> None:
        """The model picker's answer (None: closed without a choice)."""
        if entry is not None:
            self.switch_model(entry)

    def model_file(self) -> str | None:
        """The loaded model's GGUF file, if there is one on disk (a fake engine has none)."""
        path = getattr(self.engine, "path", None)
        if path is None or not str(path).endswith(".gguf") or not os.path.exists(path):
            return None
        return str(path)

    def action_probe(self) -> None:
        self.remote.toggle_probe()

    def action_fleet(self) -> None:
        self.remote.open_fleet()

    def action_anatomy(self) -> None:
        path = self.model_file()
        if path is None:
            self.notify("no model file to inspect", severity="warning")
            return
        self.notify("reading the model's tensors…", timeout=2)
        self._read_anatomy(path)

    @work(thread=True, exclusive=True, group="anatomy", exit_on_error=False)
    def _read_anatomy(self, path: str) -> None:
        from ..engine.anatomy import read_anatomy
        from .screens.anatomy import AnatomyScreen

        try:
            anatomy = read_anatomy(path, app_dirs().cache)
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self.push_screen, AnatomyScreen(anatomy))

    # -- presets ------------------------------------------------------------------------------------------

    def action_presets(self) -> None:
        from .screens.presets import PresetScreen

        self.push_screen(PresetScreen(self.catalog, self.preset, self._preset_edited, self._save_preset),
                         self._preset_picked)

    def _preset_picked(self, preset: Any) -> None:
        if preset is not None and preset is not self.preset:
            self.set_preset(preset)

    def _preset_edited(self, preset: Any) -> None:
        """A parameter changed in the editor: use it now and re-sample the current step."""
        self.set_preset(preset)
        run = self.dashboard.model
        if (self.running and run.pending is not None) or (not self.running and run.steps):
            self.dashboard.action_resample()

    def _save_preset(self, preset: Any) -> str:
        from ..sampling.presets import load_presets, save_preset

        path = save_preset(preset, app_dirs().presets)
        self.catalog = load_presets(app_dirs().presets)
        return str(path)

    # -- tokenizer and settings -----------------------------------------------------------------------------

    def action_tokenizer(self) -> None:
        if self.engine is None:
            return
        from .screens.tokenizer import TokenizerScreen

        self.push_screen(TokenizerScreen(self.dashboard.query_one("#prompt").value, self.tokenizer_job))

    def tokenizer_job(self, text: str, add_bos: bool | None, special: bool, done: Callable[[Any], None]) -> None:
        """Tokenize and compare next-token top-k for text variants, in the engine's thread."""
        if self.running:
            done(EngineError("stop the generation first: the inspector uses the model"))
            return
        self._run_tokenizer(text, add_bos, special, done)

    @work(thread=True, exclusive=True, group="tokenizer", exit_on_error=False)
    def _run_tokenizer(self, text: str, add_bos: bool | None, special: bool, done: Callable[[Any], None]) -> None:
        from ..engine.inspect_tokens import inspect_text

        engine, controller = self.engine, self.controller

        def inspect() -> Any:
            return inspect_text(engine, text, add_bos=add_bos, parse_special=special)

        try:
            result = engine_thread().call(lambda: controller.exclusive(inspect))
        except EngineError as exc:
            result = exc
        self.call_from_thread(done, result)

    def action_settings(self) -> None:
        if self.engine is None:
            return
        from .screens.settings import SettingsScreen

        self.push_screen(SettingsScreen(self.settings, self.context_policy, self.n_keep), self._settings_chosen)

    def _settings_chosen(self, result: Any) -> None:
        if result is None:
            return
        settings, policy, n_keep = result
        self.set_context_policy(policy, n_keep)
        if settings != self.settings:
            self.apply_settings(settings)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def apply_settings(self, settings: Any) -> None:
        """Recreate the context with new settings; the model stays loaded (and mapped)."""
        engine, controller = self.engine, self.controller
        controller.stop()
        t0 = time.perf_counter()
        try:
            controller.exclusive(lambda: engine.recreate_context(settings))
        except EngineError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        ms = (time.perf_counter() - t0) * 1000.0
        self.settings = settings
        self.call_from_thread(self._settings_applied, ms)

    def _settings_applied(self, ms: float) -> None:
        self.load_info = f"context recreated in {ms:,.0f} ms"
        self.dashboard.clear_run("a new context (the cache is empty): type a prompt and press Enter")
        self.notify(f"new context: n_ctx {self.engine.n_ctx:,}, KV {self.settings.type_k}/{self.settings.type_v}, "
                    f"threads {self.settings.threads}", timeout=4)

    # -- labs ------------------------------------------------------------------------------------------------

    def _lab_model(self) -> str | None:
        path = self.model_file()
        if path is None:
            self.notify("the labs need a local model file: this is a remote server (m picks a local model)"
                        if self.remote.attached is not None else "the labs need a loaded model", severity="warning")
        return path

    def action_quant_lab(self) -> None:
        path = self._lab_model()
        if path:
            from .screens.labs import QuantLab

            self.push_screen(QuantLab(path, self.run_guarded, on_result=self.recorder.lab))

    def action_perf_lab(self) -> None:
        path = self._lab_model()
        if path:
            from ..engine.lab import gpu_offload_available
            from ..engine.settings import default_threads
            from .screens.labs import PerfLab

            self.push_screen(PerfLab(path, default_threads(), self.run_guarded, gpu_offload_available(),
                                     on_result=self.recorder.lab))

    def action_rag(self, what: str = "lab") -> None:
        """The RAG lab (R), or retrieval in chat on and off again (U): :mod:`tui.app.rag_host`."""
        if what == "toggle":
            self.rag.toggle()
            return
        from .screens.rag import RagLab

        self.push_screen(RagLab(self.rag, self.rag.lab_directory()))

    def action_ab(self) -> None:
        """The A/B split view: two presets on this model, or this model and a variant of it, in lockstep."""
        if self.controller is None or self.engine is None or not hasattr(self.engine, "decode_rows"):
            self.notify("A/B needs a loaded local model (m picks one)" if self.engine is None else
                        "A/B needs a local model: a remote server or a replay cannot decode two sequences",
                        severity="warning")
            return
        if self.serving_request:
            self.notify("an API request is running: wait for it, or esc to stop it", severity="warning")
            return
        self._open_ab(self.dashboard.query_one("#prompt").value or self.initial_prompt)

    @work(thread=True, exclusive=True, group="models", exit_on_error=False)
    def _open_ab(self, prompt: str) -> None:
        from .screens.ab import ABScreen, engine_runner

        local = [e for e in (self.discover() if self.discover is not None else []) if e.source != "remote"]
        engine, controller = self.engine, self.controller
        loaded: dict[str, Any] = {}  # side B's model, loaded once for this screen and closed with it

        def load_b(path: str) -> Any:
            if os.path.realpath(path) == os.path.realpath(str(getattr(engine, "path", ""))):
                return engine
            if path not in loaded:
                from ..engine.llama import LlamaEngine

                for other in loaded.values():
                    other.close()
                loaded.clear()
                loaded[path] = LlamaEngine(path, engine.settings)
            return loaded[path]

        def closed(_result: Any = None) -> None:  # freed on the engine thread, after a run that may still end
            import threading

            for other in list(loaded.values()):
                threading.Thread(target=other.close, name="close-ab-model", daemon=True).start()
            loaded.clear()

        def record(request: Any, engine_a: Any, engine_b: Any) -> Any:
            """Recording is on (ctrl+r): the A/B run is a recording of its own (side B a branch)."""
            if not self.recorder.on:
                return None
            from ..config import app_dirs
            from ..record.recorder import ab_recorder

            sessions = app_dirs().sessions
            try:
                sessions.mkdir(parents=True, exist_ok=True)  # a directory: each A/B run gets a new name in it
            except OSError as exc:
                self.call_from_thread(self.notify, f"{sessions}: cannot record there: {exc.strerror or exc}",
                                      severity="error")
                return None
            return ab_recorder(engine_a, sessions, preset_a=request.preset_a, preset_b=request.preset_b,
                               seed=request.seed, engine_b=engine_b, max_tokens=request.max_tokens,
                               report=self._ab_recording)

        screen = ABScreen(prompt, engine_runner(controller, engine, load_b, record), self.catalog.presets,
                          self.preset,
                          local, model_label=self.model_label, max_tokens=min(self.max_tokens, 128),
                          seed=self.settings.seed if self.settings.seed >= 0 else 42,
                          chat=bool(self.chat_mode), n_vocab=engine.n_vocab)
        self.call_from_thread(self.push_screen, screen, closed)

    def _ab_recording(self, event: Any) -> None:  # on the engine thread
        from ..record.recorder import RecordingStarted

        text = f"A/B recorded to {event.path}" if isinstance(event, RecordingStarted) else event.message
        self.call_from_thread(self.notify, text, severity="information" if isinstance(event, RecordingStarted)
                              else "error")

    # -- sessions, themes, help ---------------------------------------------------------------------------------

    def action_sessions(self) -> None:
        from .screens.sessions import SessionsScreen

        self.push_screen(SessionsScreen(app_dirs().sessions), self._session_chosen)

    def _session_chosen(self, path: Any) -> None:
        if path is None:
            return
        from ..record import SessionFileError, read_session

        try:
            session = read_session(path)
        except SessionFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        for problem in session.problems:
            self.notify(f"{path}: {problem}", severity="warning", timeout=8)
        self.open_replay(session, self._fork_load)

    def run_guarded(self, job: Callable[[], Any]) -> Any:
        """Run engine work (a screen's, in a worker thread) while no generation uses the CPU or the engine."""
        controller = self.controller
        if controller is None:
            return engine_thread().call(job)
        controller.stop()
        return engine_thread().call(lambda: controller.exclusive(job))

    def open_replay(self, session: Any, fork_load: Callable[[Any], Any] | None = None) -> None:
        from .replay import Replay

        self.push_screen(Replay(session, fork_load))

    def fork_from_replay(self, loaded: Any, session: Any, at_step: int, prefix: list[int], kept: list[int],
                         steps: list[Any] | None = None, branch: int | None = None) -> None:
        """A replay forked at ``at_step`` of the line shown (``steps``: a recorded branch's path, ``branch`` its
        id): its model becomes the app's, the run continues on the live dashboard (a new recording that names
        its parent)."""
        while len(self.screen_stack) > 1:
            self.pop_screen()
        if self.controller is not None:
            self.controller.stop()  # the engine thread runs the fork once whatever ran has stopped
        self.api.job = None
        self.use_engine(loaded.engine, cold=loaded.cold, ms=loaded.ms)
        self.set_chat(False)  # the fork continues the recorded tokens as they are
        self.entry = None  # the recorded model, not the catalog entry loaded before: m can switch back to it
        self.model_label = visible(loaded.engine.info.name)
        self.live_metrics = self.dashboard.live_metrics = True
        self.recorder.set(True)
        kept_text = "".join(s.text for s in (session.steps if steps is None else steps)[:at_step])
        prompt = session.header.get("prompt", "")
        run_id = self.dashboard.new_run(prompt + kept_text + "⟨fork⟩")
        self.dashboard.query_one("#stream").focus()
        parent = {"file": str(session.path), "fork_step": at_step, **({"branch": branch} if branch else {})}
        self._generate(prompt, run_id, prefix=prefix, history=kept, parent=parent)
        self.notify(f"forked at step {at_step} with {self.preset.name}, seed {self.settings.seed}", timeout=4)

    def leave_replays(self) -> None:
        """Back to the live dashboard from a replay (and whatever is over it): the replay mode's way out."""
        while len(self.screen_stack) > 1 and any(getattr(s, "MODE", "") == "replay" for s in self.screen_stack):
            self.pop_screen()

    def action_next_theme(self) -> None:
        names = [t.name for t in self.extra_themes] or sorted(self.available_themes)
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        save_state(theme=self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        self.push_screen(HelpScreen(help_rows(self.keymap)))

    # -- the Learn path -----------------------------------------------------------------------------------------

    def action_learn(self, question: str | None = None) -> None:
        from ..learn import find, load_questions
        from .screens.learn import LearnScreen

        questions = load_questions()
        current = question or self.learn_question
        if current is not None and all(current != q.id for q in questions):
            try:
                current = find(current).id
            except KeyError as exc:
                self.notify(str(exc.args[0]), severity="error", timeout=8)
                current = None
        self.push_screen(LearnScreen(questions, current, self.learn_findings, self.learn_verdicts),
                         self._learn_chosen)

    def _learn_chosen(self, choice: tuple[str, int] | None) -> None:
        """A question picked: its guess first where it asks for one (predict, then run), then the experiment."""
        if choice is None:
            return
        from ..learn import find
        from ..learn.predict import prediction_for
        from .screens.learn import GuessScreen

        question_id, variant = choice
        prediction = prediction_for(question_id, variant)
        if prediction is None:
            self.run_experiment(question_id, variant)
            return
        self.push_screen(GuessScreen(find(question_id).number, prediction),
                         lambda guess: self.run_experiment(question_id, variant, guess))

    def action_learn_try(self, variant: int) -> None:
        if self.learn_question is None:
            self.notify("no experiment yet: press L (Learn) and run one", severity="warning", timeout=4)
            return
        from ..learn import find

        q = find(self.learn_question)
        if variant > len(q.try_next):
            self.notify(f"{q.number} has no variation {variant}", severity="warning", timeout=3)
            return
        self.run_experiment(q.id, variant)

    def run_experiment(self, question_id: str, variant: int = 0, guess: str | None = None) -> Worker[Any]:
        from .learn_host import run_experiment

        # The screens an experiment opens (a lab, the results, the anatomy) close onto the dashboard, which
        # gives the focus back to what held it, else Textual's auto-focus picks the prompt box: the Learn bar's
        # L, 1 and 2 would be typed there, and the next Enter would generate from them. The token stream
        # holds it instead, as after any run.
        board = self.dashboard
        board.set_focus(board.query_one("#stream"))
        return self.run_worker(run_experiment(self, question_id, variant, guess), group="learn", exclusive=True,
                               exit_on_error=False)

    def leave_learn(self) -> None:
        """The dashboard stops showing an experiment's finding (ctrl+n: Learn mode's way out)."""
        self.learn_question = None
        for widget in self.learn_marked:
            widget.remove_class("-learn")
            widget.border_subtitle = ""
        self.learn_marked.clear()
        self.dashboard.query_one("#learnbar").display = False
        self._repaint_status()

    def show_finding(self, finding: Any, verdict: str = "") -> None:
        from .learn_host import bar_text

        self.learn_question = finding.question
        self.learn_findings[finding.question] = finding
        self.learn_verdicts[finding.question] = verdict
        bar = self.dashboard.query_one("#learnbar", Static)
        bar.update(bar_text(finding, verdict))
        self._repaint_status()
        bar.display = True
