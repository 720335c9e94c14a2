"""The sd14 bundle: inventory and one-line errors offline, loaders on small random-init models."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli
from ldm_explore.backend.errors import ModelNotFoundError
from ldm_explore.backend.bundles.sd14 import DPTDepth, VGG16Classifier, inventory


def test_inventory_offline_names_every_model_and_its_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    inv = {m.role: m for m in inventory()}
    assert set(inv) == {"pipeline", "depth", "mask", "shading", "classifier"}
    assert not any(m.found for m in inv.values())
    assert inv["pipeline"].fetch == "hf download CompVis/stable-diffusion-v1-4"
    assert inv["depth"].fetch == "hf download Intel/dpt-large"
    assert "vgg16(weights='IMAGENET1K_V1')" in inv["classifier"].fetch
    assert "compphoto/Intrinsic" in inv["shading"].fetch
    assert inventory(hybrid=True)[1].fetch == "hf download Intel/dpt-hybrid-midas"


def test_models_and_missing_bundle_through_the_cli(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "TORCH_HOME": str(tmp_path / "torch")}
    r = cli("models", "--bundle", "sd14", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["role"] for x in rows] == ["pipeline", "depth", "mask", "shading", "classifier"]
    r = cli("models", "--bundle", "sd14", env=env)
    if importlib.util.find_spec("carvekit") is None:
        assert "ldm-explore[sd]" in r.stdout  # not eaten as markup
    else:  # the [sd] extra is installed (make test): only TRACER's weights are missing
        assert "tracer_b7_pretrained" in r.stdout and "ldm-explore[sd]" not in r.stdout
    r = cli("experiment", "run", "--bundle", "sd14", "--out", tmp_path / "r", env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == ("ldm-explore: error: sd14 bundle: Stable Diffusion v1.4 "
                                "(CompVis/stable-diffusion-v1-4) is missing; fetch it with `hf download "
                                "CompVis/stable-diffusion-v1-4` (and 1 more: `ldm-explore models --bundle sd14`)")


def test_dpt_loader_on_a_small_random_model(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    cfg = DPTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
                    fusion_hidden_size=16, head_hidden_size=8)
    torch.manual_seed(0)
    DPTForDepthEstimation(cfg).save_pretrained(tmp_path / "dpt")
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "dpt")
    d = DPTDepth(str(tmp_path / "dpt"))
    imgs = (np.random.default_rng(0).random((2, 48, 40, 3)) * 255).astype(np.uint8)
    out = d.depth(imgs)
    assert out.shape == (2, 48, 40) and np.isfinite(out).all() and out.std() > 0
    with pytest.raises(ModelNotFoundError, match="hf download nobody/missing-dpt"):
        DPTDepth("nobody/missing-dpt")


def test_vgg16_loader_and_categories():
    import torchvision

    torch.manual_seed(0)
    sd = torchvision.models.vgg16(weights=None).state_dict()
    c = VGG16Classifier(state_dict=sd)
    from ldm_explore.backend.bundles.base import Classifier

    assert isinstance(c, Classifier)
    assert len(c.classes) == 1000 and c.classes[0] == "tench"
    img = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    p = c(img)
    assert p.shape == (1, 1000) and np.allclose(p.sum(), 1, atol=1e-4)
    top = c.top_k(img, 5)[0]
    assert len(top) == 5 and top[0][1] >= top[4][1]


def test_sd14_parts_satisfy_the_bundle_protocols():
    """The studies' models stand behind the interfaces the toyworld stand-ins have (checked on the class: its
    models need weights this machine cannot fetch)."""
    import inspect
    import typing

    from ldm_explore.backend.bundles.base import Classifier, Estimators
    from ldm_explore.backend.bundles.sd14 import SD14Estimators

    est = object.__new__(SD14Estimators)  # its models need weights: the interface is checked without them
    est.properties = ("depth",)
    assert isinstance(est, Estimators)
    for name in ("all", "mask", "depth", "shading"):
        assert list(inspect.signature(getattr(SD14Estimators, name)).parameters) == ["self", "images"], name
    assert {"__call__", "top_k"} <= set(dir(VGG16Classifier))
    assert list(inspect.signature(VGG16Classifier.top_k).parameters) == ["self", "images", "k"]
    assert typing.get_type_hints(Classifier)["classes"] == list[str]


@pytest.mark.slow
def test_tracer_loader_on_a_random_init_tracer(tmp_path, monkeypatch):
    """carvekit's TracerUniversalB7 with random weights saved where carvekit keeps its checkpoint: the loader
    must read that file (not download), and give a [0, 1] mask at each image's size."""
    pytest.importorskip("carvekit", reason="TRACER is the optional [sd] extra (make test installs it)")
    from carvekit.ml.wrap.tracer_b7 import TracerUniversalB7

    from ldm_explore.backend.bundles.sd14 import TracerMask

    monkeypatch.setenv("CARVEKIT_CACHE", str(tmp_path / "carvekit"))
    with pytest.raises(ModelNotFoundError, match="TRACER weights are missing"):
        TracerMask()
    torch.manual_seed(0)
    ref = TracerUniversalB7(load_pretrained=False, input_image_size=64, model_path="unused")
    f = tmp_path / "carvekit" / "checkpoints" / "tracer_b7" / "tracer_b7.pth"
    f.parent.mkdir(parents=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}, f)
    torch.manual_seed(1)  # a different init: only the file can make the two agree
    m = TracerMask(input_size=64)
    loaded = m.model.state_dict()
    for k, v in ref.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(loaded[k], v.half().float()), k
    imgs = (np.random.default_rng(0).random((2, 48, 40, 3)) * 255).astype(np.uint8)
    out = m.mask(imgs)
    assert out.shape == (2, 48, 40) and out.min() >= 0 and out.max() <= 1


# a stand-in for compphoto/Intrinsic's package with its documented contract: load_models(name) reads weights
# that torch hub keeps; run_gray_pipeline returns "gry_shd" in the inverse space 1 / (S + 1), at another size
# than the input unless maintain_size=True (which older versions do not have)
INTRINSIC_STANDIN = '''
import numpy as np

def load_models(path, stage=4, device="cuda"):
    return {{"name": path}}

def run_gray_pipeline(models, img_arr, resize_conf=0.0, base_size=384, {maintain}linear=False, device="cuda",
                      lstsq_p=0.0, inputs="all"):
    shading = 0.25 + 3.0 * img_arr.mean(-1)              # a known grayscale shading S
    inv = 1.0 / (shading + 1.0)                           # what the network predicts
    if not {keeps}:
        inv = inv[::2, ::2]                               # its optimal-resize size, not the input's
    return {{"gry_shd": inv, "gry_alb": img_arr, "image": img_arr}}
'''


@pytest.mark.parametrize("keeps_size", [True, False])
def test_intrinsic_wrapper_gives_shading_at_the_image_size(tmp_path, monkeypatch, keeps_size):
    pkg = tmp_path / "site" / "intrinsic"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pipeline.py").write_text(INTRINSIC_STANDIN.format(maintain="maintain_size=False, " if keeps_size else "",
                                                              keeps="maintain_size" if keeps_size else "False"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m.split(".")[0] == "intrinsic"]:  # another test's stand-in (same worker)
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from ldm_explore.backend.bundles.sd14 import IntrinsicShading

    # installed, weights not on disk: not found, and an error naming the command that fetches them
    assert not {m.role: m for m in inventory()}["shading"].found
    with pytest.raises(ModelNotFoundError, match="load_models\\('paper_weights'"):
        IntrinsicShading()
    ck = tmp_path / "torch" / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "final_weights.pt").write_bytes(b"weights")
    assert {m.role: m for m in inventory()}["shading"].found
    # smooth images (a map at half size and back can only match a smooth one; per-pixel noise gave 0.23)
    yy, xx = np.mgrid[0:48, 0:40] / 48.0
    base = [0.5 + 0.4 * np.sin(3 * xx + 2 * yy), 0.5 + 0.4 * np.cos(2 * xx - 4 * yy)]
    imgs = (np.stack([np.stack([b, 0.8 * b, 1 - b], -1) for b in base]) * 255).astype(np.uint8)
    s = IntrinsicShading().shading(imgs)
    assert s.shape == (2, 48, 40) and s.dtype == np.float32
    want = 0.25 + 3.0 * (imgs.astype(np.float32) / 255).mean(-1)  # S itself, not its inverse
    if keeps_size:
        np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-4)
    else:  # resized back from half size: the same map, smoothed
        assert np.corrcoef(s.ravel(), want.ravel())[0, 1] > 0.95 and abs(s.mean() - want.mean()) < 0.05
        assert not np.allclose(s, want, rtol=1e-4, atol=1e-4)  # it did go through the half-size pipeline


def test_torch_hub_dir_without_torch_follows_torchs_rule(tmp_path, monkeypatch):
    """``models`` finds torch hub's files without importing torch: the folder it computes is torch's own."""
    from ldm_explore.backend.pipeline.hub_dirs import torch_hub_dir, torch_hub_dir_from_env

    for env in ({"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}, {}):
        for k in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert torch_hub_dir_from_env() == Path(torch.hub.get_dir()) == torch_hub_dir(), env
    code = ("import sys; from ldm_explore.backend.cli import main; rc = main(['models', '--bundle', 'sd14', '--json']);"
            " print('torch' in sys.modules, file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "th")})
    assert r.returncode == 0 and r.stderr.strip().splitlines()[-1] == "False", r.stderr
