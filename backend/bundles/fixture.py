"""A full-size, offline stand-in for the sd14 bundle: every model at its real architecture with random weights.

``ldm-explore fixture sd14 --root DIR`` writes, under DIR, exactly where the sd14 bundle looks for the real
models, so the code that finds real weights is what runs:

    DIR/hf/hub/models--CompVis--stable-diffusion-v1-4/   a Hugging Face cache snapshot (UNet, VAE, CLIP text
                                                         model, the real CLIP tokenizer vocabulary, PNDM)
    DIR/hf/hub/models--Intel--dpt-large/                 DPT-Large (MiDaS' depth model) and its processor
    DIR/torch/hub/checkpoints/vgg16-397923af.pth         torchvision's VGG-16
    DIR/carvekit/checkpoints/tracer_b7/tracer_b7.pth     carvekit's TRACER-B7

and says which environment variables point the project there (HF_HOME, TORCH_HOME, CARVEKIT_CACHE). Every
file carries a marker (``ldm_explore_fixture.json`` in a snapshot, ``<file>.fixture.json`` beside a
checkpoint), so ``ldm-explore models`` says "random-weight fixture" and nobody mistakes it for the real thing.
The shapes, memory and compute are the real models'; what they compute is noise. Intrinsic is not part of it:
its package installs from GitHub only.

``sd15`` and ``sd21`` write random-weight pipelines of the same family (SD 1.5; SD 2.1 with its OpenCLIP-H
text encoder, linear projections and v-prediction) for ``experiment run --model``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from ..errors import UserError

from .sd14 import MARKER, is_fixture  # noqa: F401  (how the lookup recognises the fixture's files)

# the published configs of CompVis/stable-diffusion-v1-4 (diffusers format), stable-diffusion-v1-5, and
# stabilityai/stable-diffusion-2-1
SD1_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, freq_shift=0, flip_sin_to_cos=True,
                norm_num_groups=32, act_fn="silu")
SD2_UNET = {**SD1_UNET, "sample_size": 96, "attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024,
            "use_linear_projection": True, "upcast_attention": True}
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215)
SD1_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)
SD2_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 set_alpha_to_one=False, steps_offset=1)
DPT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 backbone_out_indices=(5, 11, 17, 23), neck_hidden_sizes=(256, 512, 1024, 1024), image_size=384,
                 patch_size=16, readout_type="project", fusion_hidden_size=256, qkv_bias=True)

FAMILIES = {
    "sd14": dict(repo="CompVis/stable-diffusion-v1-4", unet=SD1_UNET, text=SD1_TEXT, vae_size=512, scheduler="pndm",
                 pad="<|endoftext|>"),
    "sd15": dict(repo="stable-diffusion-v1-5/stable-diffusion-v1-5", unet=SD1_UNET, text=SD1_TEXT, vae_size=512,
                 scheduler="pndm", pad="<|endoftext|>"),
    "sd21": dict(repo="stabilityai/stable-diffusion-2-1", unet=SD2_UNET, text=SD2_TEXT, vae_size=768,
                 scheduler="ddim-v", pad="!"),
}
# a few channels of the same family, for tests: the same block types, heads, projections and prediction type
SMALL = dict(unet=dict(block_out_channels=(40, 80, 160, 160), layers_per_block=1, norm_num_groups=8,
                       cross_attention_dim=64, sample_size=16),
             vae=dict(block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=16, sample_size=128),
             text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4))


def clip_bpe_file() -> Path:
    """CLIP's byte-pair encoding as open_clip ships it (the same file OpenAI's CLIP reads)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    f = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz" if spec and spec.origin else None
    if f is None or not f.exists():
        raise UserError("the CLIP tokenizer's vocabulary comes from open_clip: `pip install 'ldm-explore[sd]'` "
                        "(or `pip install open_clip_torch`)")
    return f


def write_clip_tokenizer(folder: Path, pad: str = "<|endoftext|>") -> Path:
    """SD's CLIPTokenizer folder with CLIP's real vocabulary: 256 byte symbols, the same with ``</w>``, one entry
    per merge (48,894), then the two specials: 49,408 tokens."""
    from transformers import CLIPTokenizer

    from ..pipeline.fixtures import _bytes_to_unicode

    lines = gzip.open(clip_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    chars = _bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "_raw"
    raw.mkdir(exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77, pad_token=pad)
    tok.save_pretrained(str(folder))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    return folder


def build_pipeline(folder: Path, family: str = "sd14", small: bool = False, seed: int = 0) -> Path:
    """Write a random-weight pipeline folder of ``family`` (``small``: few channels, for tests), weights saved in
    fp16 as the published fp16 variants (loaded in whatever dtype the run asks for)."""
    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    fam = FAMILIES[family]
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**fam["unet"], **(SMALL["unet"] if small else {})})
    vae = AutoencoderKL(**{**VAE, "sample_size": fam["vae_size"], **(SMALL["vae"] if small else {})})
    text = CLIPTextModel(CLIPTextConfig(**{**fam["text"], **(SMALL["text"] if small else {})}))
    tok = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(folder / "tokenizer", fam["pad"])))
    if fam["scheduler"] == "pndm":
        sched = PNDMScheduler(skip_prk_steps=True, **SCHEDULER)
    else:
        sched = DDIMScheduler(clip_sample=False, prediction_type="v_prediction", **SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _snapshot(hub: Path, repo: str) -> Path:
    """A snapshot folder of ``repo`` in the Hugging Face cache ``hub`` with refs/main pointing at it."""
    rev = hashlib.sha1(f"ldm-explore fixture {repo}".encode()).hexdigest()
    base = hub / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / rev
    if snap.exists() and not (snap / MARKER).exists():
        raise UserError(f"{snap}: a real model is cached there; the fixture writes only into a cache of its own "
                        f"(choose another --root)")
    snap.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(rev)
    return snap


def _mark(path: Path, what: str) -> None:
    target = path / MARKER if path.is_dir() else path.with_name(path.name + ".fixture.json")
    target.write_text(json.dumps({"fixture": "ldm-explore", "what": what, "weights": "random"}))


def environment(root: Path) -> dict[str, str]:
    """The variables that point the Hugging Face, torch and carvekit caches at the fixture under ``root``."""
    root = Path(root).resolve()
    return {"HF_HOME": str(root / "hf"), "TORCH_HOME": str(root / "torch"), "CARVEKIT_CACHE": str(root / "carvekit")}


def build(root: Path, family: str = "sd14", parts=("pipeline", "depth", "mask", "classifier"), small: bool = False,
          progress=print) -> dict[str, str]:
    """Write the fixture under ``root``; returns the environment that points the caches there."""
    import torch

    from ..pipeline.loading import quiet_hf

    quiet_hf()
    env = environment(root)
    hub = Path(env["HF_HOME"]) / "hub"
    if "pipeline" in parts:
        repo = FAMILIES[family]["repo"]
        progress(f"{repo}: random-weight {family} pipeline{' (small)' if small else ''}")
        snap = _snapshot(hub, repo)
        build_pipeline(snap, family, small)
        _mark(snap, f"{family} pipeline")
    if family != "sd14":
        return env
    if "depth" in parts:
        from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

        progress("Intel/dpt-large: random-weight DPT-Large")
        snap = _snapshot(hub, "Intel/dpt-large")
        cfg = DPT_LARGE if not small else {**DPT_LARGE, "hidden_size": 64, "num_hidden_layers": 4,
                                           "num_attention_heads": 4, "intermediate_size": 128,
                                           "backbone_out_indices": (0, 1, 2, 3), "neck_hidden_sizes": (16, 32, 64, 64),
                                           "fusion_hidden_size": 16}
        torch.manual_seed(1)
        DPTForDepthEstimation(DPTConfig(**cfg)).save_pretrained(str(snap))
        DPTImageProcessor().save_pretrained(str(snap))
        _mark(snap, "DPT-Large")
    if "classifier" in parts:
        import torchvision

        from .sd14 import VGG16_FILE

        progress("torchvision VGG-16: random weights")
        f = Path(env["TORCH_HOME"]) / "hub" / "checkpoints" / VGG16_FILE
        f.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(2)
        torch.save({k: v.half() for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}, f)
        _mark(f, "VGG-16")
    if "mask" in parts:
        import importlib.util

        if importlib.util.find_spec("carvekit") is None:
            progress("TRACER-B7: skipped (carvekit is not installed: pip install 'ldm-explore[sd]')")
        else:
            from carvekit.ml.wrap.tracer_b7 import TracerUniversalB7

            progress("carvekit TRACER-B7: random weights")
            f = Path(env["CARVEKIT_CACHE"]) / "checkpoints" / "tracer_b7" / "tracer_b7.pth"
            f.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(3)
            net = TracerUniversalB7(load_pretrained=False, model_path="unused", device="cpu")
            torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, f)
            _mark(f, "TRACER-B7")
    return env


def export_lines(env: dict[str, str]) -> str:
    """``export`` lines for a POSIX shell."""
    return "\n".join(f"export {k}={v}" for k, v in env.items())


__all__ = ["FAMILIES", "build", "build_pipeline", "environment", "export_lines", "is_fixture", "write_clip_tokenizer"]