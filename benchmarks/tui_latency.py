"""Explorer latency: launch to the first complete frame, and a step key press to the redrawn step view.

    python benchmarks/tui_latency.py [--presses 40]

"First complete frame": from interpreter start (imports included) until the app has drawn its screen with
the prompt table filled (models still loading in the background, as a user sees it). "Step redraw": a
cached run is open; each right/left press is timed until Textual has processed it and refreshed the
screen (pilot.pause waits for the message queue to drain and the screen to be idle). Halfcell renderer,
120x36 terminal. Targets: first frame <= 3 s, median step redraw <= 50 ms.
"""

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presses", type=int, default=40)
    a = ap.parse_args()
    import textual_image.widget  # noqa: F401

    from ldm_explore.backend.session import ExplorerSession
    from ldm_explore.tui.app import ExplorerApp
    from ldm_explore.tui.widgets import PromptTable

    cache = tempfile.mkdtemp()
    app = ExplorerApp(ExplorerSession(cache=cache), renderer="halfcell")

    async def go():
        async with app.run_test(size=(120, 36)) as pilot:
            while app.query_one(PromptTable).row_count == 0:
                await pilot.pause(0.005)
            await pilot.pause()
            first = time.perf_counter() - T_START
            while app.session.bundle is None:
                await pilot.pause(0.05)
            loaded = time.perf_counter() - T_START
            await pilot.press("enter")
            while app.analysis is None:
                await pilot.pause(0.05)
            await pilot.press("home")
            await pilot.pause(0.2)
            async def timed(key):
                t = time.perf_counter()
                await pilot.press(key)
                await pilot.pause()
                return time.perf_counter() - t

            for i in range(28):  # first visits build each step's images once; time the cached redraws after
                await pilot.press("right" if (i // 14) % 2 == 0 else "left")
            times, idle = [], []
            for i in range(a.presses):
                times.append(await timed("right" if (i // 14) % 2 == 0 else "left"))
                idle.append(await timed("z"))  # an unbound key: the harness's own round trip
            return first, loaded, times, idle

    first, loaded, times, idle = asyncio.run(go())
    print(f"launch to first complete frame: {first:.2f} s (target <= 3 s); models loaded after {loaded:.1f} s")
    med, base = statistics.median(times), statistics.median(idle)
    print(f"step key -> redrawn step view, cached run: median {med * 1000:.1f} ms, "
          f"p90 {sorted(times)[int(0.9 * len(times))] * 1000:.1f} ms over {len(times)} presses (target <= 50 ms)")
    print(f"  an unbound key's round trip through the same harness: median {base * 1000:.1f} ms; "
          f"the step view's own share: {(med - base) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
