"""Where the model caches are, as the environment says now, without importing torch (``ldm-explore models``
answers in a fraction of a second)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub, else the
    default): huggingface_hub reads it once, at import, so a notebook or a test that points it elsewhere later
    would otherwise still read the old one."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                     "huggingface")
    return os.path.join(home, "hub")


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()``: asked of torch when it is imported already (``torch.hub.set_dir`` may have moved
    it), else by torch's own rule from the environment."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    return torch_hub_dir_from_env()


def torch_hub_dir_from_env() -> Path:
    """$TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub (torch.hub._get_torch_home)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"
