import os
import subprocess
import sys
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
