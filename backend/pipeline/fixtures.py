"""Small Stable-Diffusion-shaped pipelines built from configs, offline: for tests and benchmarks.

Same classes as SD v1.4 (UNet2DConditionModel with CrossAttn down/up blocks, AutoencoderKL,
CLIPTextModel, CLIPTokenizer), random weights, a character-level tokenizer written to disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_char_tokenizer(folder: str | Path, words: list[str] = ()) -> Path:
    """A CLIPTokenizer vocabulary of single byte-characters (+ optional whole words), no network needed.

    Whole ``words`` get BPE merges so each becomes one token. The special tokens come last, so the
    end-of-text id is the largest id and never 2 (transformers' CLIP pooling quirk).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab: list[str] = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    seen = set(vocab)
    for w in words:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            a, b = parts[0], parts[1]
            merges.append(f"{a} {b}")
            parts = [a + b] + parts[2:]
            if parts[0] not in seen:
                seen.add(parts[0])
                vocab.append(parts[0])
    vocab += [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    uniq = list(dict.fromkeys(merges))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(uniq) + ("\n" if uniq else ""))
    return folder


def build_tiny_pipeline(folder: str | Path, scheduler: str = "ddim", seed: int = 0, sample_size: int = 8,
                        channels: tuple[int, ...] = (32, 64), cross_dim: int = 32):
    """Build, save (``save_pretrained``) and return a random-init SD-shaped pipeline in ``folder``."""
    from diffusers import (AutoencoderKL, DDIMScheduler, PNDMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    n = len(channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=channels, down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n, cross_attention_dim=cross_dim, attention_head_dim=8,
        norm_num_groups=min(32, channels[0]),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=sample_size * 2, norm_num_groups=32,
    )
    tok_dir = write_char_tokenizer(folder / "_tok")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    vocab_size = len(tokenizer)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cross_dim, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    common = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    if scheduler == "pndm":
        sched = PNDMScheduler(skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, **common)
    else:
        sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **common)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    import shutil

    shutil.rmtree(tok_dir, ignore_errors=True)
    return pipe
