"""Self-attention layers of a UNet2DConditionModel, named by module path and by the studies' Table 1.

Derived from the UNet's structure (its blocks, their down/upsamplers, the Linear's width), not from a
table of SD v1.4: a toy UNet gets the right names and sizes as well.
"""

from __future__ import annotations

from dataclasses import dataclass

SELF_ATTN_SUFFIX = "transformer_blocks.0.attn1.to_out.0"


@dataclass(frozen=True)
class LayerInfo:
    path: str  # module path, the layer's one name everywhere
    short: str  # Table-1 style: "Encoder 1, layer 2", "Bottleneck, layer 1", "Decoder 4, layer 1"
    height: int
    width: int
    channels: int

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}x{self.channels}"


def self_attention_layers(unet, height: int | None = None, width: int | None = None) -> list[LayerInfo]:
    """Every ``*.attentions.L.transformer_blocks.0.attn1.to_out.0`` of ``unet``, in forward order.

    ``height``/``width`` are the latent size (default: the UNet's sample_size).
    """
    h = height or unet.config.sample_size
    w = width or unet.config.sample_size
    if isinstance(h, (tuple, list)):
        h, w = h
    out: list[LayerInfo] = []

    def add(prefix: str, block, label: str, hh: int, ww: int):
        for li, attn in enumerate(getattr(block, "attentions", None) or []):
            for ti, tb in enumerate(attn.transformer_blocks):
                lin = tb.attn1.to_out[0]
                suffix = f"transformer_blocks.{ti}.attn1.to_out.0"
                tlabel = f", block {ti + 1}" if len(attn.transformer_blocks) > 1 else ""
                out.append(LayerInfo(f"{prefix}.attentions.{li}.{suffix}", f"{label}, layer {li + 1}{tlabel}",
                                     hh, ww, lin.out_features))

    for i, block in enumerate(unet.down_blocks):
        add(f"down_blocks.{i}", block, f"Encoder {i + 1}", h, w)
        if getattr(block, "downsamplers", None):
            h, w = (h + 1) // 2, (w + 1) // 2
    if unet.mid_block is not None:
        add("mid_block", unet.mid_block, "Bottleneck", h, w)
    for i, block in enumerate(unet.up_blocks):
        add(f"up_blocks.{i}", block, f"Decoder {i + 1}", h, w)
        if getattr(block, "upsamplers", None):
            h, w = h * 2, w * 2
    return out


def layers_from_config(config: dict, height: int | None = None, width: int | None = None) -> list[LayerInfo]:
    """:func:`self_attention_layers` from a UNet2DConditionModel's ``config.json`` alone, without diffusers or the
    weights (the explorer opens stored runs before the pipeline is loaded). Follows diffusers' construction:
    cross-attention down blocks hold ``layers_per_block`` attentions, up blocks one more, the mid block one;
    every down block but the last downsamples, every up block but the last upsamples; an attention's width is
    its block's channels (up blocks: the channels reversed)."""
    h = height or config["sample_size"]
    w = width or config["sample_size"]
    if isinstance(h, (tuple, list)):
        h, w = h
    ch = list(config["block_out_channels"])
    n_blocks = len(ch)

    def per_block(key, default):
        v = config.get(key, default)
        return list(v) if isinstance(v, (list, tuple)) else [v] * n_blocks

    lpb = per_block("layers_per_block", 2)
    tlpb = per_block("transformer_layers_per_block", 1)
    out: list[LayerInfo] = []

    def add(prefix, n_attn, n_tb, label, hh, ww, c):
        for li in range(n_attn):
            for ti in range(n_tb):
                tlabel = f", block {ti + 1}" if n_tb > 1 else ""
                out.append(LayerInfo(f"{prefix}.attentions.{li}.transformer_blocks.{ti}.attn1.to_out.0",
                                     f"{label}, layer {li + 1}{tlabel}", hh, ww, c))

    for i, kind in enumerate(config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            add(f"down_blocks.{i}", lpb[i], tlpb[i], f"Encoder {i + 1}", h, w, ch[i])
        if i < n_blocks - 1:
            h, w = (h + 1) // 2, (w + 1) // 2
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid is not None and "CrossAttn" in mid:
        add("mid_block", 1, tlpb[-1], "Bottleneck", h, w, ch[-1])
    rch, rlpb = ch[::-1], lpb[::-1]
    rtl = list(config.get("reverse_transformer_layers_per_block") or tlpb[::-1])
    for i, kind in enumerate(config["up_block_types"]):
        if kind.startswith("CrossAttn"):
            add(f"up_blocks.{i}", rlpb[i] + 1, rtl[i], f"Decoder {i + 1}", h, w, rch[i])
        if i < n_blocks - 1:
            h, w = h * 2, w * 2
    return out


def short_name(unet, path: str) -> str:
    for info in self_attention_layers(unet):
        if info.path == path:
            return info.short
    return path


def forward_order(paths) -> list[str]:
    """Module paths of a UNet2DConditionModel sorted as the forward pass meets them: the input convolution and
    time embedding, down blocks, mid block, up blocks, the output. diffusers registers ``up_blocks`` before
    ``mid_block``, so registration order is not forward order; within a block it is."""
    rank = {"conv_in": 0, "time_proj": 0, "time_embedding": 0, "down_blocks": 1, "mid_block": 2, "up_blocks": 3}
    paths = list(paths)
    return sorted(paths, key=lambda p: (rank.get(p.split(".")[0], 4), paths.index(p)))


def default_layers(unet) -> tuple[str, ...]:
    """The layers a bundle probes by default: every self-attention output, in forward order."""
    return tuple(i.path for i in self_attention_layers(unet))


def resolve_layers(unet, patterns) -> tuple[str, ...]:
    """Layer arguments (module paths, glob patterns, 'self-attention' / 'all' for every self-attention
    output) to module paths in forward order; none given -> none."""
    from .recorder import SELF_ATTENTION_PATTERN, match_layers

    pats = [SELF_ATTENTION_PATTERN if p in ("self-attention", "all") else p for p in patterns]
    return tuple(forward_order(match_layers(unet, pats))) if pats else ()
