"""Run store: round trip, atomicity, corruption, killed writers, Ctrl-C, two processes, resume."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import cli
from ldm_explore.backend.pipeline.generate import GenerationSettings, generate
from ldm_explore.backend.pipeline.layers import resolve_layers
from ldm_explore.backend.pipeline.loading import load_pipeline
from ldm_explore.backend.pipeline.runner import generate_into_store, run_key
from ldm_explore.backend.prompts import Prompt, PromptSet
from ldm_explore.cache.store import RunStore

LAYER = "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0"


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return load_pipeline(tiny_model, device="cpu")


def test_round_trip(pipe, tmp_path):
    store = RunStore(tmp_path / "s")
    s = GenerationSettings(steps=4, layers=(LAYER,))
    r = generate(pipe, [Prompt(3, "a red cube", 9)], s)[0]
    key = run_key(pipe, r.prompt, s)
    assert not store.has(key) and store.get(key) is None
    store.put(key, r, s.to_dict())
    e = store.get(key)
    assert store.has(key) and e.num_steps == 4
    assert np.array_equal(e.final, r.final) and np.array_equal(e.xt_images, r.xt_images)
    assert np.array_equal(e.x0_images, r.x0_images) and np.array_equal(e.latents, r.latents)
    assert np.array_equal(e.activations()[LAYER], r.activations[LAYER])
    assert e.manifest["prompt"]["prompt"] == "a red cube" and e.meta["timesteps"] == r.timesteps
    assert store.entries(pipe.model_id) == [key]


def test_truncated_or_edited_entry_is_reported_and_not_shown(pipe, tmp_path):
    msgs = []
    store = RunStore(tmp_path / "s", on_corrupt=msgs.append)
    s = GenerationSettings(steps=3)
    for name, damage in [("images.safetensors", "truncate"), ("latents.safetensors", "flip"),
                         ("manifest.json", "truncate")]:
        r = generate(pipe, [Prompt(1, "a cube", 5)], s)[0]
        key = run_key(pipe, r.prompt, s)
        d = store.put(key, r, s.to_dict())
        f = d / name
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1]))
        assert store.get(key) is None, name
        assert not store.has(key) and not d.exists()
        assert msgs and "set aside to be recomputed" in msgs[-1]
        msgs.clear()
    assert len(list((tmp_path / "s" / "corrupt").iterdir())) == 3


def test_foreign_folder_is_refused(tmp_path, prompt_csv):
    (tmp_path / "mine.txt").write_text("x")
    r = cli("generate", "--model", "x/y", "--prompts", prompt_csv, "--cache", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"ldm-explore: error: {tmp_path}: folder is not empty and not an ldm-explore run store (no STORE.json)"


def test_a_store_another_process_is_creating_opens(tmp_path):
    """Two processes opening a new store at once: one may see the other's folders before its STORE.json."""
    root = tmp_path / "s"
    for sub in ("runs", "tmp", "locks"):
        (root / sub).mkdir(parents=True)
    (root / ".STORE.json.123.abcd.tmp").write_text("")
    RunStore(root)
    assert json.loads((root / "STORE.json").read_text())["format"]


def test_generate_cli_resumes_and_recomputes_a_corrupt_entry(pipe, prompt_csv, tmp_path, capsys):
    """The command's main() in this process (its console script runs in test_foreign_folder_is_refused)."""
    from ldm_explore.backend.cli import main

    cache = tmp_path / "store"
    # two runs stored before (in-process, with the settings the command below uses)
    settings = GenerationSettings(steps=3, layers=resolve_layers(pipe.unet, ["self-attention"]))
    counts = generate_into_store(pipe, PromptSet.read(prompt_csv)[:2], settings, RunStore(cache))
    assert counts == {"generated": 2, "cached": 0}
    store = RunStore(cache)
    keys = store.entries()
    assert len(keys) == 2 and len(store.get(keys[0]).activations()) == 7
    # damage one entry, then run the whole file: 4 new + 1 recomputed, 1 reused
    f = store.path(keys[0]) / "activations.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    code = main(["generate", "--model", pipe.model_id, "--prompts", str(prompt_csv), "--cache", str(cache),
                 "--steps", "3", "--layers", "self-attention"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "6 runs: 5 generated, 1 already stored" in err
    assert "corrupt run-store entry" in err
    assert len(RunStore(cache).entries()) == 6


def _start(fork_cli, tiny_model, prompts, cache, steps="40"):
    """``ldm-explore generate`` in a forked child (see conftest.ForkedCli)."""
    return fork_cli("generate", "--model", tiny_model, "--prompts", prompts, "--cache", cache, "--steps", steps,
                     "--layers", "self-attention", folder=Path(cache).parent / f"writer-{time.monotonic_ns()}")


def _wait_for_entries(cache, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(list((Path(cache) / "runs").glob("*/*/*/manifest.json"))) >= n:
            return
        assert proc.poll() is None, proc.wait()
        time.sleep(0.05)
    raise AssertionError("no entry appeared")


def _all_valid(cache, steps=40):
    store = RunStore(cache)
    keys = store.entries()
    for k in keys:
        assert store.load(k).num_steps == steps  # raises on any corrupt entry
    assert list((Path(cache) / "tmp").iterdir()) == []  # staging of dead writers cleaned on open
    return keys


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_writer_leaves_no_half_entry(pipe, tiny_model, tmp_path, sig, fork_cli):
    rows = ["prompts,seeds,prompt_inds"] + [f"prompt number {i},{i},{i}" for i in range(40)]
    pf = tmp_path / "p.csv"
    pf.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "store"
    proc = _start(fork_cli, tiny_model, pf, cache)
    _wait_for_entries(cache, 2, proc)
    proc.send_signal(sig)
    out, err = proc.wait(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.strip().endswith("ldm-explore: interrupted")
        assert "Traceback" not in err
    else:
        assert proc.returncode == -9
    done = _all_valid(cache)
    assert 2 <= len(done) < 40
    # rerunning resumes: the finished entries are kept, the next one is generated (here in-process, with the
    # settings the command used; test_generate_cli_resumes_and_recomputes_a_corrupt_entry resumes through it)
    settings = GenerationSettings(steps=40, layers=resolve_layers(pipe.unet, ["self-attention"]))
    prompts = PromptSet.read(pf)[: len(done) + 1]
    assert generate_into_store(pipe, prompts, settings, RunStore(cache)) == {"generated": 1, "cached": len(done)}


@pytest.mark.slow
def test_two_processes_share_one_store(tiny_model, tmp_path, fork_cli):
    rows = ["prompts,seeds,prompt_inds"] + [f"prompt number {i},{i},{i}" for i in range(6)]
    pf = tmp_path / "p.csv"
    pf.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "store"
    RunStore(cache)
    a, b = _start(fork_cli, tiny_model, pf, cache, steps="8"), _start(fork_cli, tiny_model, pf, cache, steps="8")
    (_, ea), (_, eb) = a.wait(timeout=300), b.wait(timeout=300)
    assert a.returncode == b.returncode == 0, (ea, eb)
    gen = [int(e.split(" runs: ")[1].split(" generated")[0]) for e in (ea, eb)]
    assert sum(gen) == 6  # every entry computed exactly once
    assert len(_all_valid(cache, steps=8)) == 6


def test_in_process_resume_counts(pipe, tmp_path):
    store = RunStore(tmp_path / "s")
    ps = PromptSet([Prompt(i, f"p {i}", i) for i in range(3)])
    s = GenerationSettings(steps=2)
    assert generate_into_store(pipe, ps[:2], s, store) == {"generated": 2, "cached": 0}
    assert generate_into_store(pipe, ps, s, store, batch_size=2) == {"generated": 1, "cached": 2}
    # another settings key is another run
    assert generate_into_store(pipe, ps[:1], GenerationSettings(steps=3), store)["generated"] == 1


def test_run_key_names_revision_dtype_device_and_scheduler(pipe, tiny_model, tmp_path):
    import shutil

    from ldm_explore.backend.pipeline.loading import model_revision
    from ldm_explore.backend.pipeline.runner import pipe_signature

    p, s = Prompt(0, "a cube", 1), GenerationSettings(steps=2)
    sig = pipe_signature(pipe)
    assert sig == {"revision": model_revision(tiny_model), "dtype": "float32", "device": "cpu",
                   "scheduler": "DDIMScheduler"}
    key = run_key(pipe, p, s).settings_key
    for field, other in (("revision", "0123456789ab"), ("dtype", "float16"), ("device", "cuda"),
                         ("scheduler", "PNDMScheduler")):
        assert s.key({**sig, field: other}) != key, field
    # the same architecture with other weights (a retrained model) is another revision
    other = tmp_path / "retrained"
    shutil.copytree(tiny_model, other)
    from safetensors.torch import load_file, save_file

    f = other / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(f))
    sd = {k: v + 0.01 if v.is_floating_point() else v for k, v in sd.items()}
    save_file(sd, str(f))
    assert model_revision(other) != model_revision(tiny_model)
    # a Hugging Face snapshot is named by its commit
    snap = tmp_path / "models--a--b" / "snapshots" / "3f2a9c"
    snap.mkdir(parents=True)
    assert model_revision(snap) == "3f2a9c"
