"""Run a command under GNU time: its peak resident set size and wall time (the memory benchmarks' probe)."""

import os
import re
import subprocess


def timed(cmd: list[str]) -> tuple[float, str, subprocess.CompletedProcess]:
    """(peak RSS in MiB, wall clock as GNU time prints it, the completed process); offline, output captured."""
    r = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", r.stderr)
    if rss is None or wall is None:
        raise SystemExit(f"{cmd[0]} {cmd[1]}: no GNU time report (is /usr/bin/time GNU time?)\n{r.stderr[-500:]}")
    return int(rss.group(1)) / 1024, wall.group(1), r
