"""The main screen: the prompt browser on the left, the step view of the open run on the right."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input

from ..messages import Loaded, PartsOpened, RunFailed, RunReady, StepPreview
from ..widgets.prompt_table import PromptTable, SearchBox
from ..widgets.step_view import StepView
from .export import ExportScreen
from .compare import CompareScreen
from .layers import LayerStepScreen
from .settings import SettingsScreen
from .zoom import ZoomScreen


class MainScreen(Screen):
    BINDINGS = [
        Binding("left", "step(-1)", "step -", priority=True, show=False),  # arrows: in ? help; the footer
        Binding("right", "step(1)", "step +", priority=True, show=False),  # keeps room for the views at 100 cols
        Binding("home", "step_to(0)", "first", priority=True, show=False),
        Binding("end", "step_to(-1)", "last", priority=True, show=False),
        Binding("slash", "search", "search", show=False),
        Binding("escape", "leave_input", "back to the prompts", show=False),  # out of the search / custom boxes  # the search box itself says "/ search prompts"
        Binding("v", "toggle_view", "view"),
        Binding("l", "next_layer", "layer"),
        Binding("s", "settings", "settings"),
        Binding("b", "back", "back"),
        Binding("z", "zoom", "zoom"),
        Binding("c", "compare", "compare"),
        Binding("x", "layer_step", "layers"),
        Binding("e", "export", "export"),
    ]

    def __init__(self, session, renderer: str, export_dir: Path):
        super().__init__()
        self.session = session
        self.renderer = renderer
        self.export_dir = export_dir
        self.analysis = None
        self.running_index: int | None = None
        self.queued = None  # a prompt chosen while the models load: it runs when they are loaded
        self.shown = None  # (prompt, settings) of the run on screen
        self.history: list = []  # the runs shown before it, with their settings: 'b' goes back

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="left"):
            yield SearchBox(placeholder="/ search prompts", id="search")
            yield PromptTable(id="prompts")
            with Horizontal(id="custom"):
                yield Input(placeholder="your prompt (Enter runs)", id="custom-prompt")
                yield Input(placeholder="seed", id="custom-seed", type="integer")
        with Vertical(id="right"):
            yield StepView(self.renderer, id="view")
        yield Footer()

    def on_resize(self, event) -> None:
        self._fit(event.size)

    def _fit(self, size) -> None:
        """Relayout for the terminal's size: a narrower prompt browser below 130 columns; below 40 rows the
        legend and sparklines give their lines to the images and the table."""
        self.set_class(size.width < 130, "narrow")
        self.set_class(size.height < 40, "short")

    # --- start-up: prompts at once, models in a worker --------------------------------------------
    def on_mount(self) -> None:
        self._fit(self.app.size)
        self.app.sub_title = f"{self.session.bundle_name}: loading models…"
        try:
            ps = self.session.read_prompts()
            self.query_one(PromptTable).fill(ps, set())
        except Exception as e:  # a bad prompt file is a message, not a crash
            self.notify(str(e), severity="error", timeout=15)
        self.query_one(PromptTable).focus()
        self.load_models()

    @work(thread=True, exclusive=True, group="load")
    def load_models(self) -> None:
        try:
            self.session.open_parts()
            self.post_message(PartsOpened())
            self.session.load_pipeline()
            self.post_message(Loaded())
        except Exception as e:
            self.post_message(Loaded(error=" ".join(str(e).split())))

    def on_parts_opened(self, msg: PartsOpened) -> None:
        self.app.sub_title = f"{self.session.bundle_name}: stored runs open; loading the pipeline…"
        self.refresh_cached()
        if self.queued is not None and self.session.is_cached(self.queued):
            prompt, self.queued = self.queued, None
            self.start_run(prompt)

    def on_loaded(self, msg: Loaded) -> None:
        if msg.error:
            self.app.sub_title = f"{self.session.bundle_name}: not loaded"
            self.notify(msg.error, severity="error", timeout=30)
            return
        self.app.sub_title = f"{self.session.bundle_name}: ready"
        for w in self.session.warnings:
            self.notify(w, severity="warning", timeout=10)
        self.refresh_cached()
        if self.queued is not None:
            prompt, self.queued = self.queued, None
            self.start_run(prompt)

    def refresh_cached(self) -> None:
        """Refill the prompt table: the search box's filter, ✓ on the prompts the store holds (none before it
        is open)."""
        if self.session.prompts is None:
            return
        cached = {p.index for p in self.session.prompts if self.session.is_cached(p)}  # is_cached: False until open
        self.query_one(PromptTable).fill(self.session.prompts, cached, self.query_one(SearchBox).value)

    # --- choosing and running prompts -------------------------------------------------------------
    @on(DataTable.RowSelected, "#prompts")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        if self.session.prompts is None:
            return
        self.start_run(self.session.prompts.by_index(int(event.row_key.value)))

    def start_run(self, prompt) -> None:
        if not self.session.ready and not (self.session.opened and self.session.is_cached(prompt)):
            self.queued = prompt  # a stored run opens as soon as the store is; a new one waits for the pipeline
            self.query_one(StepView).queued(prompt)
            self.notify(f"#{prompt.index} runs as soon as the models are loaded")
            return
        self.running_index = prompt.index
        self.query_one(StepView).begin(prompt, self.session.steps)
        self.run_prompt(prompt)

    @work(thread=True, exclusive=True, group="run")
    def run_prompt(self, prompt) -> None:
        from textual.worker import get_current_worker

        from ldm_explore.backend.explore.session import RunCancelled

        worker = get_current_worker()
        try:
            a = self.session.open(prompt)
            if a is None:
                a = self.session.run(prompt, lambda i, n, img: self.post_message(StepPreview(i, n, img)),
                                     cancelled=lambda: worker.is_cancelled)
            if not worker.is_cancelled:
                self.post_message(RunReady(a, prompt.index))
        except RunCancelled:
            pass
        except Exception as e:
            if not worker.is_cancelled:
                self.post_message(RunFailed(" ".join(str(e).split()) or type(e).__name__))

    def on_step_preview(self, msg: StepPreview) -> None:
        self.query_one(StepView).preview(msg.step, msg.total, msg.image)

    def on_run_ready(self, msg: RunReady) -> None:
        if msg.index != self.running_index:
            return
        self.analysis = msg.analysis
        shown = (msg.analysis.prompt, self.session.current())
        if self.shown is not None and self.shown != shown and (not self.history or self.history[-1] != self.shown):
            self.history.append(self.shown)
        self.shown = shown
        self.query_one(StepView).show_run(msg.analysis)
        self.refresh_cached()

    def on_run_failed(self, msg: RunFailed) -> None:
        self.notify(f"run failed: {msg.error}", severity="error", timeout=20)

    @on(Input.Submitted, "#custom-prompt, #custom-seed")
    def custom_submitted(self, event: Input.Submitted) -> None:
        text = self.query_one("#custom-prompt", Input).value
        seed_s = self.query_one("#custom-seed", Input).value.strip() or "0"
        try:
            prompt = self.session.custom_prompt(text, int(seed_s))
        except ValueError:
            self.notify(f"seed {seed_s!r} is not an integer", severity="error")
            return
        except Exception as e:
            self.notify(str(e), severity="error")
            return
        unknown = self.session.unknown_words(prompt.prompt)
        if unknown:
            self.notify(f"not in the {self.session.bundle_name} vocabulary: {', '.join(unknown)} "
                        "(the model reads them letter by letter)", severity="warning", timeout=10)
        self.start_run(prompt)

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        self.refresh_cached()

    @on(Input.Submitted, "#search")
    def search_done(self, event: Input.Submitted) -> None:
        self.query_one(PromptTable).focus()

    # --- keys -------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("step", "step_to", "toggle_view", "next_layer", "export", "search", "layer_step", "zoom", "settings", "back", "compare") \
                and isinstance(self.focused, Input):
            return False  # typing: the key goes to the input
        return True

    def action_step(self, delta: int) -> None:
        self.query_one(StepView).move(delta)

    def action_step_to(self, step: int) -> None:
        self.query_one(StepView).goto(step)

    def action_toggle_view(self) -> None:
        v = self.query_one(StepView)
        v.view = "x0" if v.view == "xt" else "xt"

    def action_next_layer(self) -> None:
        self.query_one(StepView).next_layer()

    def action_settings(self) -> None:
        if not self.session.ready:
            self.notify("settings can change once the models are loaded", severity="warning")
            return
        prompt = self.shown[0] if self.shown else None

        def done(new):
            if new is None:
                return
            seed = new.pop("seed")
            target = prompt
            if target is not None and seed is not None and seed != target.seed:
                import dataclasses

                target = dataclasses.replace(target, seed=seed)
            self.reconfigure(new, target)

        self.app.push_screen(SettingsScreen(self.session.current(), prompt.seed if prompt else None,
                                            self.session.schedulers()), done)

    def action_back(self) -> None:
        if not self.history:
            self.notify("no earlier run to go back to", severity="warning")
            return
        prompt, settings = self.history.pop()  # the run we leave is pushed when the other one shows: b toggles
        self.reconfigure(settings, prompt)

    @work(thread=True, exclusive=True, group="configure")
    def reconfigure(self, settings: dict, prompt) -> None:
        """Apply new settings (waits for a run in progress to let go of the pipeline), then run or open
        ``prompt`` with them."""
        try:
            self.session.configure(**settings)
        except Exception as e:
            self.app.call_from_thread(self.notify, f"settings not applied: {e}", severity="error")
            return
        c = self.session.current()
        self.app.call_from_thread(self.notify, f"next runs: {c['steps']} steps, guidance {c['guidance']}, "
                                               f"{c['scheduler']}{self._probe_note(c['steps'])}")
        if prompt is not None:
            self.app.call_from_thread(self.start_run, prompt)

    def action_compare(self) -> None:
        self._open_run_view(CompareScreen, "compare")

    def action_zoom(self) -> None:
        self._open_run_view(ZoomScreen, "zoom into")

    def _open_run_view(self, screen, what: str) -> None:
        """A screen on the open run at the current layer, view and step; the step it closes at is kept."""
        if self.analysis is None:
            self.notify(f"nothing to {what} yet: run a prompt first", severity="warning")
            return
        v = self.query_one(StepView)

        def done(step):
            if step is not None:
                v.goto(step)

        self.app.push_screen(screen(self.analysis, v.layer, v.view, v.step, self.renderer), done)

    def action_layer_step(self) -> None:
        v = self.query_one(StepView)

        def done(where):
            if where is not None:
                v.show_layer(*where)

        self.app.push_screen(LayerStepScreen(self.session.report, v.layer, v.step), done)

    def _probe_note(self, steps: int) -> str:
        """Why runs at these settings will show no probe maps, if they will not."""
        probes = self.session.probes
        if probes is None:
            return " (no probes fitted for these)"
        fitted = probes.meta.get("steps")
        if fitted is not None and fitted != steps:
            return (f" (the probes are fitted for {fitted} steps: none shown; `ldm-explore experiment run --steps "
                    f"{steps}` fits them)")
        return ""

    def action_search(self) -> None:
        self.query_one(SearchBox).focus()

    def action_leave_input(self) -> None:
        """Escape in the search or custom-prompt box: back to the table, the text kept (else every key after
        / or Tab would go on typing)."""
        if isinstance(self.focused, Input):
            self.query_one(PromptTable).focus()

    def action_export(self) -> None:
        if self.analysis is None:
            self.notify("nothing to export yet: run a prompt first", severity="warning")
            return
        v = self.query_one(StepView)
        what = (self.analysis, v.layer, v.view)  # read here, on the UI thread, not in the export worker

        def done(folder):
            if folder is not None:
                self.do_export(folder, *what)

        self.app.push_screen(ExportScreen(self.export_dir), done)

    @work(thread=True, group="export")
    def do_export(self, folder: Path, analysis, layer, view) -> None:
        from ldm_explore.backend.explore.export import export

        try:
            files = export(analysis, folder, layer, view)
            self.app.call_from_thread(self.notify, "exported: " + ", ".join(str(f) for f in files), timeout=15)
        except Exception as e:
            self.app.call_from_thread(self.notify, f"export failed: {e}", severity="error")
