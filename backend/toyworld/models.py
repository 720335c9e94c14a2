"""The toyworld bundle's architecture: configs of its diffusers / transformers parts and the tokenizer
of the grammar's vocabulary (what training builds; the trained bundle is loaded as any pipeline folder)."""

from __future__ import annotations

from pathlib import Path

from ..bundles.toyworld import IMAGE_SIZE
from .scenes import vocabulary

MAX_TOKENS = 48  # world 2 names every object with its place, and the view: up to 37 tokens

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=16, sample_size=IMAGE_SIZE)
UNET_CONFIG = dict(sample_size=IMAGE_SIZE // 4, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(32, 64, 64), down_block_types=("CrossAttnDownBlock2D",) * 3,
                   up_block_types=("CrossAttnUpBlock2D",) * 3, cross_attention_dim=128, attention_head_dim=8,
                   norm_num_groups=16)
TEXT_CONFIG = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                   max_position_embeddings=MAX_TOKENS)
SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def make_tokenizer(folder: str | Path):
    """A CLIPTokenizer whose vocabulary holds each grammar word as one token (other text: characters)."""
    from transformers import CLIPTokenizer

    from ..pipeline.fixtures import write_char_tokenizer

    d = write_char_tokenizer(folder, words=vocabulary())
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=MAX_TOKENS)


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def make_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)
