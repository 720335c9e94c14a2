"""The sd14 bundle end to end on a random-weight fixture of its architecture (few channels here; the
full-size fixture is the same command without --small): the models are found where the real ones would be,
the studies' experiment runs on the studies' two prompt files with the properties whose estimators are
present, and the explorer opens the studies' prompts with the probes the experiment published."""

import json
import os

import numpy as np
import pytest

from conftest import CHEN, main_here

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sd14-fixture")]


@pytest.fixture(scope="module")
def fixture_env(tmp_path_factory):
    """The command's main() in this process (the console entry point runs in tests/test_sd14.py)."""
    root = tmp_path_factory.mktemp("sd14")
    code, out, err = main_here("fixture", "sd14", "--root", root, "--small", "--only", "pipeline", "depth",
                               "classifier")
    assert code == 0, err
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export"))
    assert set(env) == {"HF_HOME", "TORCH_HOME", "CARVEKIT_CACHE"}
    return root, env


@pytest.fixture
def fixture_caches(fixture_env, monkeypatch):
    """This process's caches pointed at the fixture (the lookups read the environment when they run)."""
    root, env = fixture_env
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return root, env


def test_models_are_found_where_the_real_ones_would_be(fixture_caches, capsys):
    from ldm_explore.backend.cli import main

    root, env = fixture_caches
    assert main(["models", "--bundle", "sd14", "--json"]) == 0
    rows = {m["role"]: m for m in json.loads(capsys.readouterr().out)}
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
    # the fixture writes into its own caches only: a snapshot without its marker (a real model) is refused
    from ldm_explore.backend.bundles.fixture import _snapshot
    from ldm_explore.backend.errors import UserError

    import hashlib

    hub = root / "hf" / "hub"
    rev = hashlib.sha1(b"ldm-explore fixture a/real").hexdigest()  # where the fixture would write a/real
    (hub / "models--a--real" / "snapshots" / rev).mkdir(parents=True)
    with pytest.raises(UserError, match="a real model is cached there"):
        _snapshot(hub, "a/real")


def test_studies_experiment_and_explorer_on_the_fixture(fixture_caches, tmp_path, capsys):
    """The command's main() in this process."""
    from ldm_explore.backend.cli import main

    store = tmp_path / "store"
    assert main(["experiment", "run", "--bundle", "sd14", "--per-split", "2", "--height", "64", "--width", "64",
                 "--steps", "3", "--batch-size", "2", "--out", str(tmp_path / "report"), "--cache", str(store),
                 "--json"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert any(line.startswith("mask: left out: TRACER weights are missing") for line in lines), err
    assert any(line.startswith("shading: left out: the Intrinsic model is not installed") for line in lines)
    summary = json.loads(out.strip().splitlines()[-1])
    assert list(summary["properties"]) == ["depth"]  # the one property with its estimator present
    meta = json.loads((tmp_path / "report" / "summary.json").read_text())["meta"]
    assert meta["fixture"] and meta["scheduler"] == "LMSDiscreteScheduler" and meta["steps"] == 3
    assert meta["splits"] == {"train": 2, "val": 2, "test": 2}
    assert "random-weight fixture" in (tmp_path / "report" / "summary.md").read_text()
    # every self-attention layer, forward order, Table-1 names (this small UNet has one per block)
    import csv

    names = list(dict.fromkeys(row["layer_name"] for row in csv.DictReader(open(tmp_path / "report" / "metrics.csv"))
                               if row["source"] == "probe"))
    assert names[0] == "Encoder 1, layer 1" and names[-1] == "Decoder 4, layer 2" and "Bottleneck, layer 1" in names
    assert not any((store / "runs").glob("*/*/*/activations.safetensors"))  # nothing kept unless asked
    published = list((store / "probes").rglob("*.safetensors"))
    assert len(published) == 1 and published[0].name == "LMSDiscreteScheduler-3steps.safetensors"

    # the explorer's session: the studies' 617 prompts with their splits, the probes the experiment published
    # found without a flag, on the device the batch CLI would choose
    from ldm_explore.backend.explore.session import ExplorerSession

    s = ExplorerSession(bundle="sd14", cache=str(store), steps=3)
    ps = s.read_prompts()
    assert len(ps) == 617 and ps.splits() == {"train": 197, "val": 49, "test": 371}
    s.load()
    assert s.probes is not None and s.probes.props == ("depth",) and any("left out" in w for w in s.warnings)
    assert str(s.bundle.pipe.unet.device) == "cpu"  # auto: no GPU here
    a = s.run(ps.select("test")[0])
    assert a.props == ("depth",) and a.layers and a.default_layer in a.layers
    assert np.isfinite(a.probe_maps(a.default_layer)).all()


def test_sd21_v_prediction_with_the_sd14_models(fixture_caches, tmp_path):
    """experiment run --model: a Stable Diffusion 2.1-shaped pipeline (OpenCLIP-H-style text encoder, linear
    projections, v-prediction), few channels, judged by the sd14 bundle's off-the-shelf models."""
    from ldm_explore.backend.bundles.fixture import build_pipeline
    from ldm_explore.backend.experiment.engine import Config, run_experiment

    model = build_pipeline(tmp_path / "sd21", "sd21", small=True)
    assert json.loads((model / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"
    summary = run_experiment("sd14", model=str(model), per_split=1, out=tmp_path / "report",
                             cfg=Config(steps=3, height=64, width=64, batch=1, baselines=False),
                             cache=tmp_path / "store", scheduler="ddim")
    assert summary["meta"]["model"] == str(model.resolve()) and list(summary["properties"]) == ["depth"]
    assert all(np.isfinite(v["mean"]).all() for v in summary["properties"]["depth"]["curves"].values())


@pytest.mark.skipif(not CHEN.exists(), reason="shared reference data not present")
def test_bad_prompt_files_and_models_are_one_line(fixture_env, tmp_path, monkeypatch, capsys):
    """The command's own main() in this process (its console entry point runs in tests/test_sd14.py): each bad input
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
