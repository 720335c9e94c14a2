"""The embedded ``toyworld`` bundle: a tiny Stable Diffusion trained on rendered scenes, with estimators.

This folder is the bundle. Everything it holds:
- ``pipeline/``: an ordinary diffusers ``StableDiffusionPipeline`` folder (tokenizer for the grammar's
  vocabulary, small CLIPTextModel, AutoencoderKL 64x64x3 -> 16x16x4, UNet2DConditionModel with CrossAttn
  blocks named like SD's), loaded by the same code path as SD v1.4;
- ``estimators.safetensors``: small networks trained on clean renders standing in for TRACER (mask),
  MiDaS (relative inverse depth) and Intrinsic (shading);
- ``classifier.safetensors``: standing in for VGG-16, over the colour x shape classes (named in its metadata);
- ``prompts.csv``: the bundle's prompt file, anchors' format plus a split column;
- ``probes.safetensors``: probes fitted by ``ldm-explore experiment run --bundle toyworld``.

This module holds what runs the bundle (the estimators' and classifier's networks and their wrappers);
the world, its renderer and the training live in :mod:`ldm_explore.backend.toyworld`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

IMAGE_SIZE = 64


def unknown_words(tokenizer, prompt: str) -> list[str]:
    """Words of ``prompt`` that the toyworld vocabulary does not hold as a whole token."""
    vocab = tokenizer.get_vocab()
    out = []
    for w in prompt.lower().replace(",", " ").split():
        if w + "</w>" not in vocab:
            out.append(w)
    return out


# --------------------------------------------------------------------------------------------------
# estimators and classifier (small, trained on clean renders only)

def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class DenseNet(nn.Module):
    """A small U-Net with three heads: mask logit, relative inverse depth, shading."""

    def __init__(self, ch=(24, 48, 96)):
        super().__init__()
        self.e1, self.e2, self.e3 = _block(3, ch[0]), _block(ch[0], ch[1]), _block(ch[1], ch[2])
        self.d2 = _block(ch[2] + ch[1], ch[1])
        self.d1 = _block(ch[1] + ch[0], ch[0])
        self.head = nn.Conv2d(ch[0], 3, 1)

    def forward(self, x):  # x: (B, 3, H, W) in [0, 1]
        x = x * 2 - 1
        h1 = self.e1(x)
        h2 = self.e2(F.avg_pool2d(h1, 2))
        h3 = self.e3(F.avg_pool2d(h2, 2))
        u2 = self.d2(torch.cat([F.interpolate(h3, scale_factor=2, mode="nearest"), h2], 1))
        u1 = self.d1(torch.cat([F.interpolate(u2, scale_factor=2, mode="nearest"), h1], 1))
        return self.head(u1)


class ClassifierNet(nn.Module):
    def __init__(self, n_classes: int, ch=(32, 64, 96, 128)):
        super().__init__()
        layers, cin = [], 3
        for c in ch:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU(), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(cin * 16, 256), nn.SiLU(), nn.Dropout(0.2),
                                nn.Linear(256, n_classes))

    def forward(self, x):  # (B, 3, 64, 64) in [0, 1]
        return self.fc(self.features(x * 2 - 1))


def to_input(images, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 (B, H, W, 3) / (H, W, 3) numpy, or float (B, 3, H, W) tensor in [0, 1] -> float tensor."""
    if isinstance(images, np.ndarray):
        a = images[None] if images.ndim == 3 else images
        x = torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 255.0  # a copy: the store hands out read-only arrays
    else:
        x = images.float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


class ToyEstimators:
    """Mask (TRACER's role), depth (MiDaS's), shading (Intrinsic's): image in, map at image size out."""

    properties = ("mask", "depth", "shading")

    def __init__(self, net: DenseNet, device="cpu"):
        self.net = net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def _run(self, images) -> torch.Tensor:
        x = to_input(images).to(self.device)
        out = []
        for i in range(0, x.shape[0], 64):
            out.append(self.net(x[i:i + 64]).float().cpu())
        return torch.cat(out)

    def all(self, images) -> dict[str, np.ndarray]:
        o = self._run(images)
        return {"mask": torch.sigmoid(o[:, 0]).numpy(), "depth": o[:, 1].numpy(), "shading": o[:, 2].numpy()}

    def mask(self, images) -> np.ndarray:
        """Salient-object probability (B, H, W) in [0, 1]."""
        return torch.sigmoid(self._run(images)[:, 0]).numpy()

    def depth(self, images) -> np.ndarray:
        """Relative inverse depth (B, H, W): larger is closer; scale and shift are arbitrary, as MiDaS'."""
        return self._run(images)[:, 1].numpy()

    def shading(self, images) -> np.ndarray:
        """Grayscale shading (B, H, W)."""
        return self._run(images)[:, 2].numpy()


class ToyClassifier:
    """VGG-16's role: image in, probabilities over ``classes`` out."""

    def __init__(self, net: ClassifierNet, classes: list[str], device="cpu"):
        self.net = net.eval().to(device)
        self.device = device
        self.classes = list(classes)

    @torch.no_grad()
    def __call__(self, images) -> np.ndarray:
        x = to_input(images).to(self.device)
        out = [torch.softmax(self.net(x[i:i + 128]).float(), -1).cpu() for i in range(0, x.shape[0], 128)]
        return torch.cat(out).numpy()

    def top_k(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        p = self(images)
        idx = np.argsort(-p, 1)[:, :k]
        return [[(self.classes[j], float(p[i, j])) for j in row] for i, row in enumerate(idx)]


def save_net(net: nn.Module, path: Path, kind: str, classes: list[str]) -> None:
    from safetensors.torch import save_file

    sd = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
          for k, v in net.state_dict().items()}
    save_file(sd, str(path), metadata={"kind": kind, "classes": json.dumps(list(classes))})


def load_net(path: Path, make) -> tuple[nn.Module, list[str]]:
    """The network in ``path`` (``make(classes)`` builds it) and the class names in its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        classes = json.loads(f.metadata()["classes"])
    net = make(classes)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    net.load_state_dict(sd)
    return net, classes


def load_estimators(bundle_dir: Path, device="cpu") -> ToyEstimators:
    net, _ = load_net(Path(bundle_dir) / "estimators.safetensors", lambda classes: DenseNet())
    return ToyEstimators(net, device)


def load_classifier(bundle_dir: Path, device="cpu") -> ToyClassifier:
    net, classes = load_net(Path(bundle_dir) / "classifier.safetensors", lambda classes: ClassifierNet(len(classes)))
    return ToyClassifier(net, classes, device)
