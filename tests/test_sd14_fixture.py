"""The sd14 bundle end to end on a random-weight fixture of its architecture (few channels here; the
full-size fixture is the same command without --small): the models are found where the real ones would be,
the studies' experiment runs on the studies' two prompt files with the properties whose estimators are
present, and the explorer opens the studies' prompts with the probes the experiment published."""

import json
import os

import numpy as np
import pytest

from conftest import CHEN, cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sd14-fixture")]


@pytest.fixture(scope="module")
def fixture_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd14")
    r = cli("fixture", "sd14", "--root", root, "--small", "--only", "pipeline", "depth", "classifier", timeout=600)
    assert r.returncode == 0, r.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in r.stdout.splitlines() if line.startswith("export"))
    assert set(env) == {"HF_HOME", "TORCH_HOME", "CARVEKIT_CACHE"}
    return root, env


def test_models_are_found_where_the_real_ones_would_be(fixture_env):
    root, env = fixture_env
    rows = {m["role"]: m for m in json.loads(cli("models", "--bundle", "sd14", "--json", env=env).stdout)}
    for role in ("pipeline", "depth", "classifier"):
        assert rows[role]["found"] and rows[role]["note"].startswith("random-weight fixture"), rows[role]
        assert rows[role]["where"].startswith(str(root))
    assert "models--CompVis--stable-diffusion-v1-4/snapshots/" in rows["pipeline"]["where"]
    assert not rows["mask"]["found"] and not rows["shading"]["found"]
    # the tokenizer is CLIP's real one: 49,408 tokens, and a prompt splits into its real BPE pieces
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(os.path.join(rows["pipeline"]["where"], "tokenizer"))
    assert len(tok) == 49408 and tok.bos_token_id == 49406 and tok.eos_token_id == tok.pad_token_id == 49407
    assert tok.tokenize("a photograph of an astronaut riding a horse") == \
        ["a</w>", "photograph</w>", "of</w>", "an</w>", "astronaut</w>", "riding</w>", "a</w>", "horse</w>"]
    # a second build into the same root is refused nowhere (it is the fixture's own cache), a real model's is
    snap = root / "hf" / "hub" / "models--CompVis--stable-diffusion-v1-4" / "snapshots"
    real = next(snap.iterdir()) / "ldm_explore_fixture.json"
    real.rename(real.with_suffix(".moved"))
    try:
        r = cli("fixture", "sd14", "--root", root, "--small", "--only", "pipeline")
        assert r.returncode == 2 and "a real model is cached there" in r.stderr
    finally:
        real.with_suffix(".moved").rename(real)


def test_studies_experiment_and_explorer_on_the_fixture(fixture_env, tmp_path):
    root, env = fixture_env
    store = tmp_path / "store"
    r = cli("experiment", "run", "--bundle", "sd14", "--per-split", "2", "--height", "64", "--width", "64",
            "--steps", "3", "--batch-size", "2", "--out", tmp_path / "report", "--cache", store, "--json",
            env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert any(line.startswith("mask: left out: TRACER weights are missing") for line in lines), r.stderr
    assert any(line.startswith("shading: left out: the Intrinsic model is not installed") for line in lines)
    summary = json.loads(r.stdout)
    assert list(summary["properties"]) == ["depth"]  # the one property with its estimator present
    meta = json.loads((tmp_path / "report" / "summary.json").read_text())["meta"]
    assert meta["fixture"] and meta["scheduler"] == "LMSDiscreteScheduler" and meta["steps"] == 3
    assert meta["splits"] == {"train": 2, "val": 2, "test": 2}
    assert "random-weight fixture" in (tmp_path / "report" / "summary.md").read_text()
    # every self-attention layer, forward order, Table-1 names (this small UNet has one per block)
    names = {row["layer"]: row["layer_name"] for row in
             __import__("csv").DictReader(open(tmp_path / "report" / "metrics.csv")) if row["source"] == "probe"}
    assert list(names)[:1] and "Bottleneck, layer 1" in names.values() and "Decoder 4, layer 1" in names.values()
    assert not any((store / "runs").glob("*/*/*/activations.safetensors"))  # nothing kept unless asked
    published = list((store / "probes").rglob("*.safetensors"))
    assert len(published) == 1 and published[0].name == "LMSDiscreteScheduler-3steps.safetensors"

    # the explorer's session (in a process of its own: the caches' locations are read when huggingface_hub
    # loads): the studies' 617 prompts with their splits, and the probes the experiment published, found
    # without a flag
    code = f"""
import json, numpy as np
from ldm_explore.backend.explore.session import ExplorerSession
s = ExplorerSession(bundle="sd14", cache={str(store)!r}, steps=3)
ps = s.read_prompts()
s.load()
a = s.run(ps.select("test")[0])
print(json.dumps({{"n": len(ps), "splits": ps.splits(), "props": list(s.probes.props), "warnings": s.warnings,
                  "device": str(s.bundle.pipe.unet.device), "layers": a.layers, "default": a.default_layer,
                  "finite": bool(np.isfinite(a.probe_maps(a.default_layer)).all())}}))
"""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["n"] == 617 and got["splits"] == {"train": 197, "val": 49, "test": 371}
    assert got["props"] == ["depth"] and any("left out" in w for w in got["warnings"])
    assert got["device"] == "cpu"  # auto: no GPU here
    assert got["layers"] and got["default"] in got["layers"] and got["finite"]


@pytest.mark.skipif(not CHEN.exists(), reason="shared reference data not present")
def test_bad_prompt_files_and_models_are_one_line(fixture_env, tmp_path, monkeypatch, capsys):
    """The command's own main() in this process (its subprocess entry point is tested above): each bad input
    ends in one line and exit code 2, before any model is loaded where it can be."""
    from ldm_explore.backend.cli import main

    root, env = fixture_env
    monkeypatch.setenv("TORCH_HOME", env["TORCH_HOME"])  # VGG-16 is found; the pipeline comes from --model
    train, test = CHEN / "train_split_prompts_seeds.csv", CHEN / "test_split_prompts_seeds.csv"
    base = ["experiment", "run", "--bundle", "sd14", "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "s")]
    for args, msg in (
        (["--prompts", str(tmp_path / "nope.csv"), "--test-prompts", str(test)],
         f"{tmp_path / 'nope.csv'}: no such file"),
        (["--prompts", str(train), "--test-prompts", str(train)],
         f"{train}:2: prompt index 5229800 is also in {train} (line 2): the train and test files must not share prompts"),
        (["--test-prompts", str(test)], "--test-prompts FILE goes with --prompts TRAIN_FILE"),
        (["--model", str(tmp_path)], f"{tmp_path}: not a diffusers pipeline folder (no model_index.json)"),
    ):
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == f"ldm-explore: error: {msg}", err
