import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One compute thread per process, set before torch is imported (and inherited by every process a test starts):
# the suite runs on two xdist workers, and two torch processes with two OpenMP threads each on two cores spin
# against each other. It also makes the numbers reproducible on any machine: a float sum's order depends on
# the thread count, and 15 denoising steps carry a last-bit difference into the images the snapshots show.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CHEN = SHARED / "data" / "chen2023"


def cli(*args, cwd=None, env=None, timeout=300):
    """Run the installed ``ldm-explore`` in a real subprocess."""
    exe = Path(sys.executable).with_name("ldm-explore")
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=e,
                          timeout=timeout)


def main_here(*args) -> tuple[int, str, str]:
    """The command's ``main(args)`` in this process, for fixtures (no capsys there): (exit code, stdout, stderr).
    A fresh interpreter would spend ten seconds importing diffusers again."""
    import contextlib
    import io

    from ldm_explore.backend.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


class ForkedCli:
    """The command's ``main(args)`` in a forked child of this test process, its stdout and stderr in files of
    ``folder``: a killed or concurrent writer is a real process, without the ten seconds a fresh interpreter
    spends importing diffusers (the console script itself runs in the tests that use :func:`cli`). The child
    starts with Python's default SIGINT and SIGTERM handling, as a fresh process would."""

    def __init__(self, *args, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = folder / "stdout", folder / "stderr"
        self.stdout.write_text(""), self.stderr.write_text("")  # there to read from the start
        self.returncode = None
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                for fd, path in ((1, self.stdout), (2, self.stderr)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_APPEND), fd)
                # none of pytest's descriptors (its capture files, xdist's channel) stay open in the child
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                from ldm_explore.backend.cli import main

                code = main([str(a) for a in args])
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os._exit(code)
        self.pid = pid

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
        return self.returncode

    def send_signal(self, sig) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap the child if it is still running."""
        if self.poll() is None:
            self.send_signal(signal.SIGKILL)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def wait(self, timeout: float = 300) -> tuple[str, str]:
        """The exit code is in ``returncode``; returns (stdout, stderr)."""
        t0 = time.time()
        while self.poll() is None:
            if time.time() - t0 > timeout:
                self.kill()
                raise AssertionError(f"forked `ldm-explore` did not end in {timeout} s: {self.stderr.read_text()}")
            time.sleep(0.05)
        return self.stdout.read_text(), self.stderr.read_text()


@pytest.fixture
def fork_cli():
    """Start :class:`ForkedCli` children; any still running when the test ends (it failed) is killed."""
    started = []

    def start(*args, folder: Path) -> ForkedCli:
        started.append(ForkedCli(*args, folder=folder))
        return started[-1]

    yield start
    for p in started:
        p.kill()


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so that the two workers finish together rather than one waiting on a late start."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from ldm_explore.backend.pipeline.fixtures import build_tiny_pipeline

    d = tmp_path_factory.mktemp("tiny-ddim")
    build_tiny_pipeline(d, scheduler="ddim")
    return d


@pytest.fixture(scope="session")
def tiny_pndm(tmp_path_factory):
    from ldm_explore.backend.pipeline.fixtures import build_tiny_pipeline

    d = tmp_path_factory.mktemp("tiny-pndm")
    build_tiny_pipeline(d, scheduler="pndm")
    return d


@pytest.fixture
def prompt_csv(tmp_path):
    f = tmp_path / "prompts.csv"
    rows = ["prompts,seeds,prompt_inds"] + [f'"a red cube, number {i}",{100 + i},{i}' for i in range(6)]
    f.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return f
