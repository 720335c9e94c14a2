"""Explorer latency: launch to the first complete frame, and a step key press to the redrawn step view.

    python benchmarks/tui_latency.py [--presses 40]

"First complete frame": from interpreter start (imports included) until the app has drawn its screen with
the prompt table filled (models still loading in the background, as a user sees it).

"Step redraw": a cached run is open; a right/left key event is posted to the app's driver (as a terminal
would) and the clock stops when the compositor has produced the frame that shows the new step, encoded to
the terminal's byte stream (the app's ``_display`` hook, which in a real terminal writes those bytes).
Every frame is timestamped, so there is no polling granularity; Textual's own frame pacing (at most one
screen update per 1/60 s) is part of the figure, as it is of what a user sees. Steps are timed both on a
first visit (tiles built from the run's arrays) and on revisits (scrubbing back and forth).
"Stored run opens": a second, fresh process on the same run store (the first pass stored its run) presses
Enter on that prompt as soon as the table is drawn; the clock stops when the run's step view is shown, and
the pipeline's loading is timed in the same process (the run opens before it: no diffusers import needed).
Halfcell renderer, 120x36 terminal. Targets: first frame <= 3 s, models loaded <= 8 s, median step redraw
<= 50 ms.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

from ldm_explore.backend.cli import OneLineParser  # noqa: E402  (argparse's own errors: one line, exit 2)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def stored(cache: str) -> None:
    """The second pass, in a fresh process: open the stored run of the first pass while the pipeline loads."""
    import textual_image.widget  # noqa: F401

    from ldm_explore.backend.explore.session import ExplorerSession
    from ldm_explore.tui.app import ExplorerApp
    from ldm_explore.tui.widgets import PromptTable

    app = ExplorerApp(ExplorerSession(cache=cache), renderer="halfcell")

    async def go():
        async with app.run_test(size=(120, 36)) as pilot:
            while app.query_one(PromptTable).row_count == 0:
                await pilot.pause(0.005)
            await pilot.press("enter")  # the first prompt: stored by the first pass
            while app.main.analysis is None:
                await asyncio.sleep(0.01)
            shown, pipeline_then = time.perf_counter() - T_START, app.session.bundle is not None
            while app.session.bundle is None:
                await asyncio.sleep(0.05)
            return shown, pipeline_then, time.perf_counter() - T_START

    shown, pipeline_then, loaded = asyncio.run(go())
    print(f"fresh launch, Enter at once on a stored run: shown after {shown:.2f} s "
          f"({'after' if pipeline_then else 'before'} the pipeline was loaded, at {loaded:.1f} s)")


def main():
    ap = OneLineParser()
    ap.add_argument("--presses", type=int, default=40)
    ap.add_argument("--stored", metavar="CACHE", help=argparse.SUPPRESS)  # the second pass (internal)
    a = ap.parse_args()
    if a.stored:
        return stored(a.stored)
    import textual_image.widget  # noqa: F401
    from textual import events

    from ldm_explore.backend.explore.session import ExplorerSession
    from ldm_explore.tui.app import ExplorerApp
    from ldm_explore.tui.widgets import PromptTable, StepView

    class TimedApp(ExplorerApp):
        frames: list = []

        def _display(self, screen, renderable):
            super()._display(screen, renderable)
            if renderable is not None and hasattr(renderable, "render_segments"):
                renderable.render_segments(self.console)  # what a real terminal would be sent
                self.frames.append(time.perf_counter())

    cache = tempfile.mkdtemp()
    app = TimedApp(ExplorerSession(cache=cache), renderer="halfcell")

    async def go():
        async with app.run_test(size=(120, 36)) as pilot:
            while app.query_one(PromptTable).row_count == 0:
                await pilot.pause(0.005)
            await pilot.pause()
            first = time.perf_counter() - T_START
            # plain sleeps while waiting: a pilot pause makes the app process its queue and repaint, which slows
            # the loading thread (GIL) by seconds; a user waiting does no such thing
            while not app.session.opened:
                await asyncio.sleep(0.02)
            opened = time.perf_counter() - T_START
            while app.session.bundle is None:
                await asyncio.sleep(0.05)
            loaded = time.perf_counter() - T_START
            await pilot.press("enter")
            while app.main.analysis is None:
                await pilot.pause(0.05)
            await pilot.press("home")
            await pilot.pause(0.3)
            view = app.query_one(StepView)

            async def timed(key):
                app.frames.clear()
                before = view.step
                t = time.perf_counter()
                app._driver.send_message(events.Key(key, None))
                while view.step == before or not app.frames:
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.15)  # let any follow-up frame land: the last one is the full redraw
                return app.frames[-1] - t

            fresh, again = [], []
            n = view.total
            for i in range(n - 1):  # first visit of every step
                fresh.append(await timed("right"))
            for i in range(a.presses):  # scrubbing back and forth over visited steps
                again.append(await timed("left" if (i // (n - 1)) % 2 == 0 else "right"))
            return first, opened, loaded, fresh, again

    first, opened, loaded, fresh, again = asyncio.run(go())
    ms = lambda xs: f"median {statistics.median(xs) * 1000:.1f} ms, p90 {sorted(xs)[int(0.9 * len(xs))] * 1000:.1f} ms"
    print(f"launch to first complete frame: {first:.2f} s (target <= 3 s); stored runs open after {opened:.1f} s; "
          f"models loaded after {loaded:.1f} s (target <= 8 s)")
    print(f"step key -> redrawn step view, revisited steps: {ms(again)} over {len(again)} presses "
          f"(target <= 50 ms)")
    print(f"step key -> redrawn step view, first visit of a step: {ms(fresh)} over {len(fresh)} presses")
    import subprocess
    import sys

    subprocess.run([sys.executable, __file__, "--stored", cache], check=True)


if __name__ == "__main__":
    main()
