"""The explorer through Textual's pilot: bindings, worker lifecycle, export; snapshots; a tmux smoke test."""

import asyncio
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from textual.widgets import Input

from ldm_explore.backend.explore.session import ExplorerSession
from ldm_explore.tui.app import ExplorerApp
from ldm_explore.tui.messages import StepPreview
from ldm_explore.tui.screens import MainScreen
from ldm_explore.tui.widgets import PromptTable, StepStrip, StepView


async def wait_for(pilot, cond, timeout=120.0):
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, "timed out"
        await pilot.pause(0.05)


class SpyScreen(MainScreen):
    """Records the live step previews it is posted (Textual dispatches handlers through the class)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.previews = []

    def on_step_preview(self, msg: StepPreview) -> None:
        self.previews.append(msg.step)
        super().on_step_preview(msg)


class SpyApp(ExplorerApp):
    MAIN_SCREEN = SpyScreen


async def open_first_run(pilot, app):
    """Once the models are loaded, run the selected prompt and wait for its analysis."""
    await wait_for(pilot, lambda: app.session.ready)
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.main.analysis is not None)


def make_app(tmp_path, **kw):
    return SpyApp(ExplorerSession(cache=str(tmp_path / "store")), renderer="halfcell",
                  export_dir=tmp_path / "export", **kw)


def test_bindings_worker_and_export(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.query_one(PromptTable)
            assert table.row_count == 800  # the bundle's prompt file, shown before the models load
            await wait_for(pilot, lambda: app.session.ready)
            await wait_for(pilot, lambda: "ready" in app.sub_title)
            # run the first prompt: steps arrive live, then the analysed run
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert app.main.previews == list(range(15))  # every step posted as it came
            v = app.query_one(StepView)
            assert v.step == 14 and app.query_one(StepStrip).filled == 15
            assert v.layer in app.main.analysis.layers
            # keys: left / right / Home / End
            await pilot.press("left", "left")
            assert v.step == 12
            await pilot.press("home")
            assert v.step == 0
            await pilot.press("right")
            assert v.step == 1 and app.query_one(StepStrip).current == 1
            # a revisited step is drawn from the tiles' line cache: the very same screen, and not another step's
            await pilot.pause()
            shot1 = app.export_screenshot()
            await pilot.press("right")
            await pilot.pause()
            assert app.export_screenshot() != shot1
            await pilot.press("left")
            await pilot.pause()
            assert app.export_screenshot() == shot1
            await pilot.press("end")
            assert v.step == 14
            # v toggles x_t / x0 and changes what the image tile shows
            xt_img = np.asarray(app.query_one("#t-image .tile-image").image)
            await pilot.press("v")
            assert v.view == "x0"
            await pilot.press("home")
            x0_first = np.asarray(app.query_one("#t-image .tile-image").image)
            assert np.array_equal(x0_first, app.main.analysis.images["x0"][0])
            await pilot.press("v")
            assert v.view == "xt"
            # l cycles through the fitted layers
            first = v.layer
            seen = {first}
            for _ in range(len(app.main.analysis.layers) - 1):
                await pilot.press("l")
                seen.add(v.layer)
            assert seen == set(app.main.analysis.layers)
            await pilot.press("l")
            assert v.layer == first
            # ? opens help, escape closes it
            await pilot.press("question_mark")
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            assert app.screen is app.main
            # / focuses search, typing filters, Enter returns to the table
            await pilot.press("slash")
            assert app.focused.id == "search"
            await pilot.press(*"sphere")
            assert 0 < table.row_count < 800
            await pilot.press("enter")
            assert app.focused is table
            # e exports into the chosen folder
            await pilot.press("e")
            assert type(app.screen).__name__ == "ExportScreen"
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(list((tmp_path / "export").glob("*"))) == 4)
            # q quits
            await pilot.press("q")
        files = sorted((tmp_path / "export").iterdir())
        grid = next(f for f in files if f.name.endswith("grid.png"))
        im = Image.open(grid)
        assert im.width > 15 * 64 and im.height > 7 * 64  # 15 step columns (+ final), 7 rows
        rows = list(csv.DictReader(open(next(f for f in files if f.suffix == ".csv"))))
        assert len(rows) == 15 and "mask dice (probe)" in rows[0]
        Image.open(next(f for f in files if f.name.endswith("curves.png"))).verify()
        gif = Image.open(next(f for f in files if f.name.endswith("denoising.gif")))
        assert gif.is_animated and gif.n_frames == 15 and gif.info["loop"] == 0
        assert gif.width >= 7 * 128  # image, then probe and off-the-shelf for three properties

    asyncio.run(go())


def test_export_a_split_with_progress_and_resume(tmp_path, capsys):
    """export --split writes every prompt's four files; a rerun skips what is there and redoes what is missing."""
    from ldm_explore.backend.bundles import prompt_files
    from ldm_explore.backend.cli import main
    from ldm_explore.backend.prompts import read_prompts

    ps = read_prompts(*prompt_files("toyworld"))
    f = tmp_path / "p.csv"
    rows = [(p.prompt, p.seed, p.index, s) for p, s in zip(list(ps)[:3], ("train", "test", "test"))]
    f.write_text("prompts,seeds,prompt_inds,split\n" + "".join(f'"{a}",{b},{c},{d}\n' for a, b, c, d in rows))
    args = ["export", "--prompts", str(f), "--split", "test", "--out", str(tmp_path / "x"), "--cache",
            str(tmp_path / "s"), "--device", "cpu"]
    assert main(args) == 0
    files = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert len(files) == 8 and all(f"prompt{rows[1][2]}-" in n or f"prompt{rows[2][2]}-" in n for n in files)
    assert "2 prompts exported" in capsys.readouterr().out
    gone = next((tmp_path / "x").glob(f"prompt{rows[2][2]}-*-denoising.gif"))
    gone.unlink()
    assert main(args) == 0
    assert "1 of 2 prompts already exported" in capsys.readouterr().err and gone.exists()
    with pytest.raises(SystemExit) as e:  # one or the other: argparse's usage line, exit 2
        main(["export", "--prompt-index", "5", "--split", "test"])
    assert e.value.code == 2


def test_cancel_on_prompt_switch_and_cache_hit(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.session.ready)
            ps = app.session.prompts
            first, second = ps[3], ps[4]
            got = app.main.previews
            table = app.query_one(PromptTable)
            table.move_cursor(row=6)  # where a user browsing the table has got to
            app.main.start_run(first)
            await wait_for(pilot, lambda: len(got) >= 2)
            app.main.start_run(second)  # switching cancels the running one
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert app.main.analysis.prompt.index == second.index
            assert not app.session.is_cached(first)  # the cancelled run left nothing in the store
            assert app.session.is_cached(second)
            # revisiting a cached prompt is instant: no step previews, straight to the run
            got.clear()
            app.main.analysis = None
            t0 = time.time()
            app.main.start_run(second)
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert got == [] and time.time() - t0 < 5
            assert table.get_cell(str(second.index), "cached") == "✓"
            assert table.cursor_row == 6  # the ✓ column was updated in place: the cursor stayed where it was
        return second

    second = asyncio.run(go())

    # a later session on the same store opens the stored run before its pipeline is loaded; a new one waits
    import threading

    gate = threading.Event()

    class SlowPipeline(ExplorerSession):
        def load_pipeline(self):
            gate.wait(60)
            super().load_pipeline()

    async def later():
        app = SpyApp(SlowPipeline(cache=str(tmp_path / "store")), renderer="halfcell")
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.session.opened)
            assert not app.session.ready and app.session.is_cached(second)
            app.main.start_run(second)
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert app.main.analysis.prompt.index == second.index and app.session.bundle is None
            assert app.main.analysis.probes is not None and app.main.analysis.layers  # probes came with the parts
            app.main.start_run(app.session.prompts[5])  # not stored: waits for the pipeline
            assert app.main.queued == app.session.prompts[5]
            gate.set()  # the queued prompt starts once the pipeline is there
            await wait_for(pilot, lambda: app.main.running_index == app.session.prompts[5].index)
            assert app.session.ready and app.main.queued is None

    asyncio.run(later())


def test_custom_prompt_names_unknown_words(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.session.ready)
            app.query_one("#custom-prompt").value = "a large shiny red teapot on the left, lit from the left"
            app.query_one("#custom-seed").value = "7"
            app.query_one("#custom-prompt").focus()
            await pilot.press("enter")
            msgs = [n.message for n in app._notifications]  # said at once (it expires before a slow run ends)
            assert any("shiny, teapot" in m for m in msgs), msgs
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert app.main.analysis.prompt.seed == 7
            # keys typed into an input are text, not commands
            app.query_one("#custom-prompt").focus()
            await pilot.press("q", "l")
            assert app.is_running and app.query_one("#custom-prompt").value.endswith("ql")

    asyncio.run(go())


def test_errors_are_messages(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompts,seeds\nhello,notanumber\n")

    async def go():
        app = ExplorerApp(ExplorerSession(cache=str(tmp_path / "s"), prompts=str(bad)), renderer="halfcell")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.2)
            msgs = [n.message for n in app._notifications]
            assert any("bad.csv:2: field 'seeds': 'notanumber' is not an integer" in m for m in msgs), msgs
            await pilot.press("e")  # nothing to export: a message, no crash
            assert app.is_running

    asyncio.run(go())


def _ready_app(tmp_path):
    app = make_app(tmp_path)

    async def run_before(pilot):
        await open_first_run(pilot, app)
        await pilot.press("home", "right", "right")
        app.clear_notifications()  # what waiting out their timeout gave, seconds sooner
        await pilot.pause(0.2)

    return app, run_before


@pytest.mark.parametrize("size", [(100, 30), (160, 48), (240, 67)])
def test_snapshot_main_screen(snap_compare, tmp_path, size):
    app, before = _ready_app(tmp_path)
    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.skipif(shutil.which("tmux") is None,
                    reason="tmux is not installed (make test installs it when run as root on Debian/Ubuntu)")
@pytest.mark.slow
def test_smoke_in_a_real_tmux_terminal(tmp_path):
    exe = Path(sys.executable).with_name("ldm-explore")
    name = f"ldmx{os.getpid()}"
    # COLUMNS/LINES from the test runner would override the real terminal's size
    env = "env -u COLUMNS -u LINES HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1"
    cmd = f"cd {tmp_path} && {env} {exe} --cache {tmp_path / 'store'}; echo EXITED $?; sleep 30"
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "36", cmd], check=True, env=clean)

    def pane():
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True).stdout

    def until(text, timeout=120):
        t0 = time.time()
        while text not in pane():
            assert time.time() - t0 < timeout, f"{text!r} never appeared:\n{pane()}"
            time.sleep(0.3)

    try:
        until("toyworld: ready")
        assert "a large blue" in pane() and "train" in pane()  # the first prompt and its split (narrow layout)
        subprocess.run(["tmux", "send-keys", "-t", name, "Enter"], check=True)
        until("reaches 90% of probe's final")
        assert "14/14" in pane()
        subprocess.run(["tmux", "send-keys", "-t", name, "Home"], check=True)
        until(" 0/14")
        subprocess.run(["tmux", "send-keys", "-t", name, "q"], check=True)
        until("EXITED 0")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_a_property_without_its_model_is_shown_as_such(tmp_path):
    """sd14 without Intrinsic: the run shows mask and depth, and shading's tiles and numbers say there is no model
    (here the toyworld estimators are told to estimate two properties)."""
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.session.ready)
            app.session.bundle.estimators.properties = ("mask", "depth")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.main.analysis is not None)
            a = app.main.analysis
            assert a.props == ("mask", "depth") and a.ots["xt"].shape[1] == 2
            assert a.probe_maps(a.default_layer).shape[1] == 2  # the probes' shading column is not shown
            for wid in ("#f-shading", "#t-shading-ots", "#t-shading-probe"):
                assert app.query_one(wid).caption == "shade: no model"
            assert app.query_one("#t-shading-ots .tile-image").image is None
            assert app.query_one("#t-depth-ots .tile-image").image is not None
            assert "shading" not in str(app.query_one("#emergence").render())

    asyncio.run(go())


def test_a_live_run_stores_what_a_batch_run_stores(tmp_path):
    """The explorer stores its live previews as the run's x_t images (each step decoded once): the bytes are
    those a batch run decodes after, for every step."""
    from ldm_explore.backend.pipeline.generate import generate

    s = ExplorerSession(cache=str(tmp_path / "store"), steps=4)
    s.read_prompts()
    s.load()
    seen = []
    s.run(s.prompts[0], on_step=lambda i, n, img: seen.append((i, n, img)))
    stored = s.store.get(s.key(s.prompts[0]))
    batch = generate(s.bundle.pipe, [s.prompts[0]], s.settings, record=False)[0]
    assert [(i, n) for i, n, _ in seen] == [(i, 4) for i in range(4)]
    np.testing.assert_array_equal(np.stack([img for *_, img in seen]), batch.xt_images)
    np.testing.assert_array_equal(stored.xt_images, batch.xt_images)
    np.testing.assert_array_equal(stored.x0_images, batch.x0_images)
    np.testing.assert_array_equal(stored.final, batch.final)


def test_letterbox():
    from ldm_explore.tui.widgets.images import letterbox

    assert letterbox(40, 10, 1.0) == (20, 10)  # height-bound: 10 rows show 20 columns of a square
    assert letterbox(10, 40, 1.0) == (10, 5)  # width-bound
    assert letterbox(40, 10, 2.0) == (40, 10)


async def check_tiles_keep_their_aspect_ratio(pilot, app):
    """A square image is shown square (about twice as many columns as rows) at any terminal size, centred in
    its tile, never stretched to the tile's box, and grows with the terminal."""
    seen = []
    for size in ((100, 30), (160, 48), (240, 67)):
        await pilot.resize_terminal(*size)
        await pilot.pause(0.3)
        seen.append(app.query_one("#t-image .tile-image").size)
        for wid in ("#t-image", "#t-mask-probe", "#f-depth"):
            tile = app.query_one(wid)
            img = tile.query_one(".tile-image")
            w, h = img.size
            assert abs(w - 2 * h) <= 1, (size, wid, w, h)  # square pixels on 1:2 cells
            assert w <= tile.size.width and h <= tile.size.height - 1
            assert w == tile.size.width or h == tile.size.height - 1  # as large as the tile allows
    assert seen[0].height < seen[1].height < seen[2].height


def test_textual_image_internals_we_use():
    """tui/widgets/images.py swaps images without a relayout through textual-image's private ``_image`` and
    ``_renderable`` (pinned to 0.12.x in pyproject.toml): this fails when a release moves them."""
    import textual_image.widget as tiw

    from ldm_explore.tui.widgets.images import image_class

    for name in ("halfcell", "sixel", "tgp", "unicode", "auto"):
        cls = image_class(name)
        w = cls(None)
        assert hasattr(w, "_image") and hasattr(w, "_renderable"), name
    assert isinstance(tiw.HalfcellImage.image, property) and tiw.HalfcellImage.image.fset is not None
    assert hasattr(tiw.HalfcellImage, "_Renderable")


@pytest.mark.slow
def test_enter_while_loading_queues_the_run_and_random_keys_never_break_the_app(tmp_path, monkeypatch):
    """Enter before the models are loaded runs the prompt when they are; Escape leaves the search box; then 70
    keys at random, 10 in each screen (every binding, during runs, with the help, export, settings, zoom,
    side-by-side and layer x step screens open, across resizes) leave no exception and a consistent screen."""
    import random

    from ldm_explore.tui.screens import MainScreen as Main

    monkeypatch.chdir(tmp_path)  # keys typed into the export screen's path box make relative paths

    keys = ["up", "down", "enter", "left", "right", "home", "end", "v", "l", "x", "p", "o", "e", "escape",
            "question_mark", "slash", "tab", "a", "1", "backspace", "pagedown", "z", "c", "m", "s", "b"]
    rng = random.Random(0)

    import threading

    gate = threading.Event()

    class SlowSession(ExplorerSession):
        """Loads the real models, but only once the test has pressed its keys (in a warm process the load
        would otherwise finish before the first key)."""

        def open_parts(self):
            gate.wait(60)
            super().open_parts()

    async def go():
        app = SpyApp(SlowSession(cache=str(tmp_path / "store")), renderer="halfcell", export_dir=tmp_path / "export")
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("down", "enter")  # the models are still loading
            assert app.session.bundle is None and app.main.queued is not None
            await pilot.press("slash", "c", "u", "b", "e", "escape")
            assert isinstance(app.focused, PromptTable) and app.query_one("#search", Input).value == "cube"
            await pilot.press("x", "escape", "v", "l", "right")
            assert app.is_running  # search and every binding work (or say why not) while loading
            gate.set()
            await wait_for(pilot, lambda: app.main.analysis is not None)
            assert app.main.analysis.prompt.index == app.session.prompts[1].index
            # rounds of 10 random keys, each started from the main screen by opening one screen (pure chance
            # rarely got there: after / the search box takes the letters)
            openers = ["s", "z", "c", "x", "question_mark", "e", "slash"]
            seen = set()
            for i in range(7 * 10):
                if i % 10 == 0:  # Escape leads back to the main screen and out of any text box
                    for _ in range(8):
                        if isinstance(app.screen, Main) and not isinstance(app.focused, Input):
                            break
                        await pilot.press("escape")
                    assert isinstance(app.screen, Main) and not isinstance(app.focused, Input), app.focused
                    await wait_for(pilot, lambda: app.main.analysis is not None)  # a run the keys started
                    await pilot.press(openers[i // 10])
                    await pilot.pause(0.1)
                    seen.add(type(app.screen).__name__)
                if i % 25 == 15:
                    await pilot.resize_terminal(rng.choice([100, 140, 200]), rng.choice([30, 45, 60]))
                await pilot.press(rng.choice(keys))
                if i % 10 == 0:
                    await pilot.pause(0.05)
            assert seen == {"SpyScreen", "HelpScreen", "ExportScreen", "SettingsScreen", "ZoomScreen",
                            "CompareScreen", "LayerStepScreen"}, seen
            while not isinstance(app.screen, Main):
                await pilot.press("escape")
            await pilot.pause(0.5)
            assert app.is_running and app._exception is None
            v = app.query_one(StepView)
            assert 0 <= v.step < v.total
            if app.main.analysis is not None:
                assert v.layer in app.main.analysis.layers

    asyncio.run(go())


def test_zoom_and_layer_step_screens(tmp_path):
    """z shows one property's maps far larger than the main view's tiles; x shows the shipped experiment's
    metric per layer and step, and Enter jumps the main view to the cell under the cursor; then the tiles keep
    their aspect ratio at three terminal sizes."""
    from textual.widgets import DataTable

    from ldm_explore.tui.screens import LayerStepScreen, ZoomScreen

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.session.ready)
            report = app.session.report
            assert report is not None and set(report["layer_step"]) == {"mask", "depth", "shading"}
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.main.analysis is not None)
            v = app.query_one(StepView)
            small = app.query_one("#t-mask-probe .tile-image").size
            await pilot.press("home", "z")
            assert isinstance(app.screen, ZoomScreen)
            await pilot.pause(0.3)
            big = app.screen.query_one("#z-probe .tile-image").size
            assert big.width >= 2.5 * small.width and abs(big.width - 2 * big.height) <= 1
            await pilot.press("p", "right", "right")
            assert app.screen.prop == "depth" and "step 2/14" in str(app.screen.query_one("#zoom-title").render())
            await pilot.press("escape")
            assert app.screen is app.main and v.step == 2
            await pilot.press("x")
            assert isinstance(app.screen, LayerStepScreen)
            await pilot.pause(0.3)
            grid = app.screen.query_one("#ls-grid", DataTable)
            foot = str(app.screen.query_one("#ls-footing").render())
            assert "common footing" in foot and "probe beats it from" in foot
            ls = report["layer_step"]["mask"]
            assert grid.row_count == len(ls["layers"]) + 3  # + off-the-shelf, latent and prior rows
            assert grid.cursor_coordinate.column == 3  # step 2, after the layer names' column
            grid.move_cursor(row=1, column=6)
            await pilot.press("enter")
            assert app.screen is app.main and v.layer == ls["layers"][1] and v.step == 5
            await check_tiles_keep_their_aspect_ratio(pilot, app)

    asyncio.run(go())


def test_settings_make_new_runs_and_b_goes_back(tmp_path):
    """s changes steps (and seed) for a new run in the store; b brings back the run before, from the store."""
    from textual.widgets import Input

    from ldm_explore.tui.screens import SettingsScreen

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(140, 45)) as pilot:
            await open_first_run(pilot, app)
            first = app.main.analysis
            assert first.num_steps == 15 and first.layers
            await pilot.press("s")
            assert isinstance(app.screen, SettingsScreen)
            app.screen.query_one("#set-steps", Input).value = "5"
            seed = app.screen.query_one("#set-seed", Input)
            seed.value = "7"
            seed.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.main.analysis is not first and app.main.analysis.num_steps == 5)
            second = app.main.analysis
            assert second.prompt.seed == 7 and second.prompt.index == first.prompt.index
            assert app.session.current()["steps"] == 5 and not second.layers  # probes are fitted for 15 steps
            assert any("the probes are fitted for 15 steps: none shown" in str(n.message) for n in app._notifications)
            await pilot.press("b")
            await wait_for(pilot, lambda: app.main.analysis is not second and app.main.analysis.num_steps == 15)
            back = app.main.analysis
            assert back.prompt == first.prompt and app.session.current()["steps"] == 15 and back.layers
            assert app.session.is_cached(first.prompt)  # opened from the store, not generated again
            await pilot.press("b")  # the 5-step run is the one before now
            await wait_for(pilot, lambda: app.main.analysis.num_steps == 5)

    asyncio.run(go())


def test_side_by_side_views_layers_and_seeds(tmp_path):
    """c puts the run beside a variant: its x0 view, another layer, the prompt at the next seed (generated in
    the background), each row with its own numbers."""
    from ldm_explore.tui.screens import CompareScreen

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(140, 45)) as pilot:
            await open_first_run(pilot, app)
            a = app.main.analysis
            await pilot.press("end", "c")
            assert isinstance(app.screen, CompareScreen)
            scr = app.screen

            def label(row):
                return str(scr.query_one(f"#cmp-{row}-label").render())

            assert ", xt: P Dice" in label("a") and ", x0: P Dice" in label("b")
            x0 = a.metrics(a.default_layer, "x0")["mask"]["probe"][-1]
            assert f"P Dice {x0:.2f}" in label("b")
            await pilot.press("m")  # two layers
            assert scr.mode == "layers" and label("a").split(":")[0] != label("b").split(":")[0]
            await pilot.press("m")  # two seeds: the other is generated
            await wait_for(pilot, lambda: scr.other_seed is not None)
            await pilot.pause(0.2)
            assert scr.other_seed.prompt.seed == (a.prompt.seed + 1) % 2**32
            assert f"seed {a.prompt.seed + 1}" in label("b") and "running" not in label("b")
            assert app.session.is_cached(scr.other_seed.prompt)  # a run in the store, like any other
            await pilot.press("escape")
            assert app.screen is app.main

    asyncio.run(go())


@pytest.mark.parametrize("renderer", ["sixel", "tgp"])
def test_graphics_protocols_get_the_full_resolution_image_of_the_current_step(tmp_path, renderer, capfd):
    """Where the terminal speaks Sixel or Kitty graphics, a tile is drawn from the run's own image at its full
    resolution, scaled to the tile's pixels (not to half-cells), and stepping shows the new step's image (Sixel
    draws through a child widget that must be handed the new image too)."""
    import re

    from textual.geometry import Region
    from textual_image._terminal import get_cell_size

    async def go():
        app = SpyApp(ExplorerSession(cache=str(tmp_path / "store")), renderer=renderer)
        async with app.run_test(size=(160, 48)) as pilot:
            await open_first_run(pilot, app)
            v = app.query_one(StepView)
            for _ in range(2):
                await pilot.press("right")
                await pilot.pause(0.2)
                img = app.query_one("#t-image .tile-image")
                want = v.analysis.images[v.view][v.step]
                assert img.image.size == want.shape[1::-1]  # the run's own resolution
                assert np.array_equal(np.asarray(img.image), want)
                if renderer == "sixel":
                    (impl,) = img.children
                    assert impl.image is img.image
                    w, h = impl.content_size
                    data = "".join(seg.text for strip in impl.render_lines(Region(0, 0, w, h)) for seg in strip)
                    cell = get_cell_size()
                    raster = re.search(r'"1;1;(\d+);(\d+)', data)
                    assert raster and int(raster[1]) == w * cell.width  # the tile's pixels, not its half-cells
                    assert int(raster[1]) > 2 * want.shape[1] // 2
                else:  # Kitty: the image is transmitted (PNG, in chunks) and placed with placeholder cells
                    capfd.readouterr()
                    cells = "".join(seg.text for seg in app.console.render(img.render()))
                    sent = capfd.readouterr().out
                    assert cells.count("\U0010eeee") == img.content_size.width * img.content_size.height
                    chunks = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", sent)
                    import base64
                    import io

                    png = Image.open(io.BytesIO(base64.b64decode("".join(data for _, data in chunks))))
                    assert png.size[0] >= want.shape[1]  # never fewer pixels than the run's image

    asyncio.run(go())
