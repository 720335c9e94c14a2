"""What the commands share: checks of counts, the model arguments, progress bars."""

from __future__ import annotations

import argparse

from ..errors import UserError


def at_least_one(args, *flags: str) -> None:
    """A count given on the command line (``--batch-size``, ``-n``) below 1 is a one-line error naming the flag."""
    for flag in flags:
        v = getattr(args, flag.lstrip("-").replace("-", "_"))
        if v is not None and v < 1:
            raise UserError(f"{flag} {v}: must be at least 1")


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="PATH|HUB_ID",
                   help="'toyworld', a diffusers StableDiffusionPipeline folder, or a hub id (hub ids come from "
                        "the local cache only)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, mps, cpu")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp16, bf16, fp32")
