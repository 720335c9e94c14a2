"""The experiment engine end to end on the shipped toyworld bundle (a few prompts per split)."""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from conftest import main_here
from ldm_explore.backend.bundles import load_bundle
from ldm_explore.backend.experiment.baselines import PRIOR, SOURCES, prior_features, shuffled_unet
from ldm_explore.backend.probing.emergence import emergence_step, recognition_step
from ldm_explore.backend.probing.labels import targets
from ldm_explore.backend.probing.ridge import Probes, fit, upsample
from ldm_explore.backend.probing.stats import ProbeStats, area_average
from ldm_explore.backend.prompts import PromptSet
from ldm_explore.cache.store import RunStore

# the report fixture is computed once, on one worker: keep this module's tests together, and start them early
pytestmark = [pytest.mark.xdist_group("experiment"), pytest.mark.slow]


def test_emergence_and_recognition_steps():
    assert emergence_step(np.array([0.1, 0.5, 0.95, 0.85, 0.92, 1.0])) == 4  # dips below 0.9 at step 3
    assert emergence_step(np.array([0.95, 0.99, 1.0])) == 0
    assert emergence_step(np.array([0.5, 0.0])) is None  # no positive final value
    assert recognition_step(np.array([3, 5, 5, 2, 5, 5])) == 4
    assert recognition_step(np.array([1, 1, 1])) == 0


def test_shuffled_unet_keeps_each_tensor_multiset():
    import torch

    lin = torch.nn.Linear(4, 3)
    s = shuffled_unet(lin)
    for a, b in zip(lin.parameters(), s.parameters()):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        assert not torch.equal(a, b)


STEPS = 8  # fewer than the bundle's 15: nothing here depends on the count, and each step costs a decode per view


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The command's main() in this process (its console entry point runs in the distributed test)."""
    d = tmp_path_factory.mktemp("exp")
    code, out, err = main_here("experiment", "run", "--bundle", "toyworld", "--per-split", 2, "--seeds", 2,
                               "--batch-size", 4, "--steps", STEPS, "--out", d / "report", "--cache", d / "store",
                               "--json", "--keep-activations")
    assert "keeping activations in" in err and " per run, " in err
    assert code == 0, err
    return d, json.loads(out)


def test_report_folder(report):
    d, summary = report
    out = d / "report"
    for f in ("summary.md", "summary.json", "metrics.csv", "metrics.json", "probes-real.safetensors",
              "probes-shuffled.safetensors", "probes-latent.safetensors", "probes-prior.safetensors"):
        assert (out / f).exists(), f
    for prop in ("mask", "depth", "shading"):
        from PIL import Image

        assert Image.open(out / f"curves-{prop}.png").size[0] > 300
        assert Image.open(out / f"heatmap-{prop}.png").size[0] > 300
        p = summary["properties"][prop]
        assert set(p["curves"]) == set(SOURCES)
        assert all(len(v["mean"]) == len(v["low"]) == len(v["high"]) == STEPS for v in p["curves"].values())
        for v in p["curves"].values():
            assert all(lo - 1e-9 <= m <= hi + 1e-9 for lo, m, hi in zip(v["low"], v["mean"], v["high"]))
        assert len(set(p["curves"]["spatial-prior probe"]["mean"])) == 1  # the same prediction at every step
        # common footing: one bar for every source, and when the probe beats each
        assert set(p["reaches_relative_bar"]) == set(SOURCES) and set(p["probe_beats"]) == set(SOURCES) - {"probe"}
        assert p["bars"]["relative"]["value"] == pytest.approx(0.9 * p["final"]["probe"]["mean"], abs=1e-4)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["source"] for r in rows} == set(SOURCES)
    assert {r["metric"] for r in rows} == {"dice", "spearman", "pearson", "rmse"}
    assert all(r["n"] == "2" and r["runs"] == "4" for r in rows)  # 2 test prompts at 2 seeds each
    probes = Probes.load(out / "probes-real.safetensors")
    assert probes.meta["train_images"] == 4 and probes.meta["val_images"] == 4
    test_rows = [json.loads(x) for x in (out / "checkpoint" / "test-rows.jsonl").read_text().splitlines()]
    by_prompt = {}
    for r in test_rows:
        by_prompt.setdefault(r["index"], []).append(r["seed"])
    assert len(by_prompt) == 2 and all(len(set(v)) == 2 for v in by_prompt.values())
    text = (out / "summary.md").read_text()
    assert "equals the target at the last step by construction" in text and "bootstrap" in text


def test_scores_match_an_independent_recomputation(report):
    """Re-score one test image from the stored run with scipy, and compare with metrics.csv's row."""
    d, _ = report
    out = d / "report"
    b = load_bundle("toyworld")
    probes = Probes.load(out / "probes-real.safetensors")
    test = [p for p in PromptSet.read(b.prompts) if p.split == "test"][:2]
    store = RunStore(d / "store")
    layer = probes.layers[0]
    per_image = []
    for p in test:  # each prompt's two seeds averaged, then the mean over prompts
        keys = [k for k in store.entries() if k.prompt_index == p.index]
        assert len(keys) == 2
        seeds = []
        for key in keys:
            e = store.get(key)
            y = targets(b.estimators, e.final)
            pred = upsample(probes.predict(layer, e.activations()[layer]), 64, 64)[5, 1]  # step 5, depth
            seeds.append(stats.spearmanr(pred.ravel(), y[1].ravel())[0])
        per_image.append(np.mean(seeds))
    row = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["source"] == "probe" and r["layer"] == layer
           and r["property"] == "depth" and r["metric"] == "spearman" and r["step"] == "5"][0]
    assert float(row["mean"]) == pytest.approx(np.mean(per_image), abs=1e-5)
    assert float(row["std"]) == pytest.approx(np.std(per_image), abs=1e-5)


def test_spatial_prior_probe_is_the_train_mean_map(report):
    """The prior baseline, fitted without penalty from its checkpointed statistics, predicts the per-cell mean of
    the training targets, computed here directly from the stored final images."""
    d, _ = report
    b = load_bundle("toyworld")
    store = RunStore(d / "store")
    train = [p for p in PromptSet.read(b.prompts) if p.split == "train"][:2]
    maps = []
    for p in train:
        for key in [k for k in store.entries() if k.prompt_index == p.index]:  # both seeds
            maps.append(area_average(targets(b.estimators, store.get(key).final), 16, 16))
    want = np.mean(maps, 0)  # (P, 16, 16)
    st = ProbeStats.load(d / "report" / "checkpoint" / "stats-train-prior.safetensors")
    got = fit(st, None, alpha=1e-9).predict(PRIOR, prior_features(STEPS))  # (S, P, 16, 16)
    assert st.images == len(maps) == 4
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-4)


def test_rerun_resumes_without_recomputing(report):
    """A second run into the same folder reads every statistic and test row from the checkpoint (in-process here:
    the fixture ran the command) and reports the same figures."""
    from ldm_explore.backend.experiment.engine import Config, run_experiment

    d, summary = report
    ck = d / "report" / "checkpoint"
    again = run_experiment("toyworld", per_split=2, out=d / "report",
                           cfg=Config(batch=4, keep_activations=True, seeds=2, steps=STEPS), device="cpu", store=RunStore(d / "store"))
    assert json.loads(json.dumps(again["properties"])) == summary["properties"]
    assert (ck / "test-rows.jsonl").read_text().count("\n") == 4  # no test run scored twice


@pytest.mark.parametrize("spill", [False, True])
def test_activation_buffer_holds_what_the_recorder_copies(tiny_model, spill, tmp_path):
    """A batch's activations kept by the experiment's buffer (on the device, or spilled to a file) are exactly
    those the recorder copies to the host."""
    from ldm_explore.backend.experiment.buffer import ActivationBuffer
    from ldm_explore.backend.pipeline.generate import GenerationSettings, generate
    from ldm_explore.backend.pipeline.layers import default_layers
    from ldm_explore.backend.pipeline.loading import load_pipeline
    from ldm_explore.backend.prompts import Prompt

    pipe = load_pipeline(tiny_model, device="cpu")
    prompts = [Prompt(0, "a red cube", 1), Prompt(1, "a blue cone", 2)]
    s = GenerationSettings(steps=3, layers=default_layers(pipe.unet))
    host = generate(pipe, prompts, s, decode=False)
    with ActivationBuffer("cpu", spill=spill, folder=tmp_path) as buf:
        runs = generate(pipe, prompts, s, decode=False, sink=buf)
        assert all(r.activations == {} for r in runs) and buf.bad() == {}
        assert len(list(tmp_path.iterdir())) == 0  # an anonymous temporary file: nothing left behind
        for layer in s.layers:
            for step in range(3):
                got = buf.get(layer, step)
                for b in range(2):
                    np.testing.assert_array_equal(got[b].numpy(), host[b].activations[layer][step])
            np.testing.assert_array_equal(buf.run(layer, 1), host[1].activations[layer])
        assert buf.nbytes == sum(h.activations[layer].nbytes for h in host for layer in s.layers)


def test_a_run_with_a_non_finite_activation_is_named_and_left_out(tmp_path):
    from ldm_explore.backend.experiment.buffer import ActivationBuffer
    from ldm_explore.backend.experiment.engine import Batch, Config, Experiment
    from ldm_explore.backend.pipeline.generate import generate

    b = load_bundle("toyworld", device="cpu")
    ps = PromptSet.read(b.prompts).per_split(2)
    notes = []
    ex = Experiment(b, ps, tmp_path / "r", RunStore(tmp_path / "s"), b.layers[:2],
                    Config(steps=4, baselines=False), notify=notes.append)
    poisoned = (b.layers[1], 2)

    def sink(layer, step, t):  # the second run's output turns non-finite at one layer and step
        if (layer, step) == poisoned:
            t = t.clone()
            t[1, 0, 0, 0] = float("nan")
        buf(layer, step, t)

    st = {"real": ProbeStats(b.properties)}
    with ActivationBuffer("cpu") as buf:
        runs = generate(b.pipe, list(ps.select("train")), ex.rec, decode=False, sink=sink)
        ex._accumulate(ex._checked(Batch(runs, buf)), st)
    p = runs[1].prompt
    assert notes == [f"prompt {p.index} (seed {p.seed}): activation of {b.layers[1]} at step 2 is not finite; "
                     "left out of the sums"]
    assert st["real"].images == 1 and all(np.isfinite(v).all() for v in st["real"].to_tensors().values())
    # the sums are the first run's alone (recorded here in the same batch, so with the same arithmetic)
    host = generate(b.pipe, list(ps.select("train")), ex.rec, decode=False)[0]
    one = ProbeStats(b.properties)
    one.add_run({k: v for k, v in host.activations.items() if k in b.layers[:2]}, targets(b.estimators, host.final))
    for k, v in one.to_tensors().items():  # (the labels were computed for the batch at once: float32 last bits)
        np.testing.assert_allclose(st["real"].to_tensors()[k], v, rtol=1e-6, atol=1e-6)


def test_a_rerun_with_another_configuration_stops_with_one_line(report, capsys):
    """The checkpoint records the configuration; resuming it with another one would merge two experiments."""
    from ldm_explore.backend.cli import main

    d, _ = report
    args = ["experiment", "run", "--bundle", "toyworld", "--per-split", "2", "--seeds", "2", "--batch-size", "4",
            "--steps", str(STEPS), "--out", str(d / "report"), "--cache", str(d / "store")]
    assert main(args + ["--guidance", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ldm-explore: error: {d / 'report'}: made with another configuration (guidance 7.5 -> 5.0); "
                   "choose another --out, or --fresh to start this one over"), err
    assert main(args + ["--per-split", "3"]) == 2  # other prompts: their hash differs
    assert "prompts_sha256" in capsys.readouterr().err
    assert main(args + ["--seeds", "3"]) == 2
    assert "seeds 2 -> 3" in capsys.readouterr().err
    cfg = json.loads((d / "report" / "checkpoint" / "configuration.json").read_text())
    assert cfg["guidance"] == 7.5 and cfg["steps"] == STEPS and len(cfg["layers"]) == 10 and cfg["revision"]
    assert cfg["seeds"] == 2


def test_a_checkpoint_from_before_a_new_setting_resumes_at_its_default(tmp_path):
    """A configuration.json written before --seeds existed holds no "seeds": it was one seed, so a rerun with
    one seed resumes it and a rerun with two stops naming the difference."""
    from ldm_explore.backend.errors import UserError
    from ldm_explore.backend.experiment.checkpoint import Checkpoint

    ck = Checkpoint(tmp_path / "r" / "checkpoint")
    (ck.folder / "configuration.json").write_text(json.dumps({"steps": 15, "guidance": 7.5}))
    ck.guard({"steps": 15, "guidance": 7.5, "seeds": 1}, defaults={"seeds": 1})
    with pytest.raises(UserError, match=r"made with another configuration \(seeds 1 -> 2\)"):
        ck.guard({"steps": 15, "guidance": 7.5, "seeds": 2}, defaults={"seeds": 1})


def test_statistics_files_record_their_runs(tmp_path):
    """The runs a checkpoint holds are written in the same file as their sums (one atomic write); an older
    checkpoint's separate list of prompt indices reads as seed 0; sums holding more runs than recorded (a
    crash between two writes of an older version) stop with one line instead of resuming twice-counted."""
    from ldm_explore.backend.errors import UserError
    from ldm_explore.backend.experiment.checkpoint import Checkpoint

    ck = Checkpoint(tmp_path / "c")
    st = ProbeStats(("mask",))
    st.add_run({"l": np.ones((2, 2, 2, 3), np.float32)}, np.zeros((1, 4, 4), np.float32))
    ck.save_stats("train", {"real": st}, {"4:0"})
    assert not (ck.folder / "stats-train-done.json").exists()
    got, done = ck.load_stats("train", ("real", "latent"), ("mask",))
    assert done == {"4:0"} and got["real"].images == 1 and "latent" not in got
    ProbeStats.save(st, ck.stats_file("train", "real"))  # as an older version wrote it
    (ck.folder / "stats-train-done.json").write_text("[4]")
    assert ck.load_stats("train", ("real",), ("mask",))[1] == {"4:0"}
    st.images = 2
    ProbeStats.save(st, ck.stats_file("train", "real"))
    with pytest.raises(UserError, match="holds 2 runs but records 1"):
        ck.load_stats("train", ("real",), ("mask",))
