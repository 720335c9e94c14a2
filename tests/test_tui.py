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


def make_app(tmp_path, **kw):
    return SpyApp(ExplorerSession(cache=str(tmp_path / "store")), renderer="halfcell",
                  export_dir=tmp_path / "export", **kw)


def test_bindings_worker_and_export(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.query_one(PromptTable)
            assert table.row_count == 800  # the bundle's prompt file, shown before the models load
            await wait_for(pilot, lambda: app.session.bundle is not None)
            assert "ready" in app.sub_title
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
            await wait_for(pilot, lambda: len(list((tmp_path / "export").glob("*"))) == 3)
            # q quits
            await pilot.press("q")
        files = sorted((tmp_path / "export").iterdir())
        grid = next(f for f in files if f.name.endswith("grid.png"))
        im = Image.open(grid)
        assert im.width > 15 * 64 and im.height > 7 * 64  # 15 step columns (+ final), 7 rows
        rows = list(csv.DictReader(open(next(f for f in files if f.suffix == ".csv"))))
        assert len(rows) == 15 and "mask dice (probe)" in rows[0]
        Image.open(next(f for f in files if f.name.endswith("curves.png"))).verify()

    asyncio.run(go())


def test_cancel_on_prompt_switch_and_cache_hit(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.session.bundle is not None)
            ps = app.session.prompts
            first, second = ps[3], ps[4]
            got = app.main.previews
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
            table = app.query_one(PromptTable)
            assert table.get_cell(str(second.index), "cached") == "✓"

    asyncio.run(go())


def test_custom_prompt_names_unknown_words(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(110, 32)) as pilot:
            await wait_for(pilot, lambda: app.session.bundle is not None)
            app.query_one("#custom-prompt").value = "a large shiny red teapot on the left, lit from the left"
            app.query_one("#custom-seed").value = "7"
            app.query_one("#custom-prompt").focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.main.analysis is not None)
            msgs = [n.message for n in app._notifications]
            assert any("shiny, teapot" in m for m in msgs), msgs
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
        await wait_for(pilot, lambda: app.session.bundle is not None)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.main.analysis is not None)
        await pilot.press("home", "right", "right")
        await wait_for(pilot, lambda: not app._notifications, timeout=30)
        await pilot.pause(0.2)

    return app, run_before


@pytest.mark.parametrize("size", [(100, 30), (160, 48)])
def test_snapshot_main_screen(snap_compare, tmp_path, size):
    app, before = _ready_app(tmp_path)
    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.skipif(shutil.which("tmux") is None,
                    reason="tmux is not installed (make test installs it when run as root on Debian/Ubuntu)")
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
        assert "a large blue cylin" in pane()  # the first prompt (narrow layout below 130 columns)
        subprocess.run(["tmux", "send-keys", "-t", name, "Enter"], check=True)
        until("emerges at step")
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
            await wait_for(pilot, lambda: app.session.bundle is not None)
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
