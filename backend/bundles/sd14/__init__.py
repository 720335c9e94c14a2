"""The ``sd14`` bundle: Stable Diffusion v1.4 and the studies' estimators, never fetched silently.

| role       | model                                                         | where it is looked for            |
| ---------- | ------------------------------------------------------------- | --------------------------------- |
| pipeline   | CompVis/stable-diffusion-v1-4                                 | Hugging Face cache or a folder    |
| depth      | MiDaS DPT-Large, Intel/dpt-large (hybrid: Intel/dpt-hybrid-midas) | Hugging Face cache            |
| mask       | TRACER, carvekit's TracerUniversalB7 (`pip install 'ldm-explore[sd]'`) | carvekit's checkpoint folder |
| shading    | Intrinsic, Careaga & Aksoy 2023 (compphoto, academic licence) | the `intrinsic` package           |
| classifier | VGG-16, torchvision IMAGENET1K_V1                             | torch hub checkpoints folder      |

Each loader gives the same interface as the toyworld stand-ins: image in (uint8 H x W x 3 or a batch),
map at the image's size (or class probabilities) out.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ModelNotFoundError

SD14 = "CompVis/stable-diffusion-v1-4"
DPT_LARGE = "Intel/dpt-large"
DPT_HYBRID = "Intel/dpt-hybrid-midas"
VGG16_FILE = "vgg16-397923af.pth"
VGG16_FETCH = "python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\""


@dataclass
class ModelStatus:
    role: str
    name: str
    found: bool
    where: str
    fetch: str
    note: str = ""


def _hf_cached(repo: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        from ...pipeline.hub_dirs import hf_cache_dir

        return snapshot_download(repo, local_files_only=True, cache_dir=hf_cache_dir())
    except Exception:
        return None


def _torch_hub_file(name: str) -> Path:
    from ...pipeline.hub_dirs import torch_hub_dir

    return torch_hub_dir() / "checkpoints" / name


def _tracer_file() -> Path:
    return Path(os.environ.get("CARVEKIT_CACHE", Path.home() / ".cache" / "carvekit")) / "checkpoints" / \
        "tracer_b7" / "tracer_b7.pth"


def inventory(hybrid: bool = False) -> list[ModelStatus]:
    """Every model of the sd14 bundle: found or missing, and the exact command that fetches it."""
    out = []
    p = _hf_cached(SD14)
    out.append(ModelStatus("pipeline", f"Stable Diffusion v1.4 ({SD14})", p is not None, p or "-",
                           f"hf download {SD14}"))
    dpt = DPT_HYBRID if hybrid else DPT_LARGE
    p = _hf_cached(dpt)
    out.append(ModelStatus("depth", f"MiDaS {'DPT-Hybrid' if hybrid else 'DPT-Large'} ({dpt})", p is not None,
                           p or "-", f"hf download {dpt}"))
    has_ck = importlib.util.find_spec("carvekit") is not None
    tf = _tracer_file()
    out.append(ModelStatus(
        "mask", "TRACER, carvekit TracerUniversalB7", has_ck and tf.exists(), str(tf) if tf.exists() else "-",
        ("pip install 'ldm-explore[sd]' && " if not has_ck else "") +
        "python -c \"from carvekit.ml.files.models_loc import tracer_b7_pretrained; tracer_b7_pretrained()\""))
    has_in = importlib.util.find_spec("intrinsic") is not None
    weights = [_torch_hub_file(f) for f in INTRINSIC_WEIGHTS["paper_weights"]]
    found = has_in and all(f.exists() for f in weights)
    out.append(ModelStatus(
        "shading", "Intrinsic (Careaga & Aksoy 2023)", found, str(weights[0]) if found else "-",
        (f"{INTRINSIC_INSTALL} && " if not has_in else "") + intrinsic_fetch(),
        "academic licence"))
    vf = _torch_hub_file(VGG16_FILE)
    out.append(ModelStatus("classifier", "VGG-16, torchvision IMAGENET1K_V1", vf.exists(), str(vf) if vf.exists() else "-",
                           VGG16_FETCH))
    for m in out:
        if m.found and is_fixture(m.where):
            m.note = "random-weight fixture" + (f"; {m.note}" if m.note else "")
    return out


MARKER = "ldm_explore_fixture.json"  # written by `ldm-explore fixture` beside every random-weight stand-in


def is_fixture(path: Path | str | None) -> bool:
    """Whether ``path`` (a snapshot folder or a checkpoint file) holds a random-weight stand-in written by
    ``ldm-explore fixture`` (a marker in the folder, or ``<file>.fixture.json`` beside the file)."""
    if not path or path == "-":
        return False
    p = Path(path)
    return (p / MARKER).exists() if p.is_dir() else p.with_name(p.name + ".fixture.json").exists()


def _as_batch(images) -> np.ndarray:
    a = np.asarray(images)
    return a[None] if a.ndim == 3 else a


class DPTDepth:
    """MiDaS through transformers' DPT: relative inverse depth (larger is closer) at the image's size."""

    def __init__(self, model: str = DPT_LARGE, device: str = "cpu"):
        import torch
        from transformers import DPTForDepthEstimation, DPTImageProcessor

        try:
            from ...pipeline.hub_dirs import hf_cache_dir

            kw = dict(local_files_only=True, cache_dir=hf_cache_dir())
            self.processor = DPTImageProcessor.from_pretrained(model, **kw)
            self.model = DPTForDepthEstimation.from_pretrained(model, **kw).eval().to(device)
        except OSError:
            raise ModelNotFoundError(f"depth model '{model}' is not in the local cache; fetch it with "
                                     f"`hf download {model}`") from None
        self.device = device
        self._torch = torch

    def depth(self, images, chunk: int = 4) -> np.ndarray:
        """In chunks of ``chunk`` images, so that memory does not grow with the batch."""
        torch = self._torch
        batch = _as_batch(images)
        out = []
        with torch.no_grad():
            for i in range(0, len(batch), chunk):
                inputs = self.processor(images=list(batch[i:i + chunk]), return_tensors="pt").to(self.device)
                pred = self.model(**inputs).predicted_depth  # (b, h, w)
                pred = torch.nn.functional.interpolate(pred[:, None], size=batch.shape[1:3], mode="bicubic",
                                                       align_corners=False)[:, 0]
                out.append(pred.float().cpu().numpy())
        return np.concatenate(out)


class VGG16Classifier:
    """torchvision's VGG-16 (IMAGENET1K_V1) with its category names: image in, probabilities out."""

    def __init__(self, state_dict=None, device: str = "cpu"):
        import torch
        import torchvision

        w = torchvision.models.VGG16_Weights.IMAGENET1K_V1
        self.classes = list(w.meta["categories"])
        self.model = torchvision.models.vgg16(weights=None)
        if state_dict is None:
            f = _torch_hub_file(VGG16_FILE)
            if not f.exists():
                raise ModelNotFoundError(f"VGG-16 weights are missing ({f}); fetch them with " + VGG16_FETCH)
            state_dict = torch.load(f, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state_dict)
        self.model.eval().to(device)
        self.transform = w.transforms()
        self.device = device
        self._torch = torch

    def __call__(self, images, chunk: int = 16) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(_as_batch(images))).permute(0, 3, 1, 2)
        out = []
        with torch.no_grad():
            for i in range(0, len(x), chunk):
                logits = self.model(self.transform(x[i:i + chunk]).to(self.device))
                out.append(torch.softmax(logits.float(), -1).cpu().numpy())
        return np.concatenate(out)

    def top_k(self, images, k: int = 5):
        p = self(images)
        idx = np.argsort(-p, 1)[:, :k]
        return [[(self.classes[j], float(p[i, j])) for j in row] for i, row in enumerate(idx)]


class TracerMask:
    """TRACER (carvekit's TracerUniversalB7): salient-object probability at the image's size."""

    def __init__(self, device: str = "cpu", input_size: int = 640):
        if importlib.util.find_spec("carvekit") is None:
            raise ModelNotFoundError("TRACER needs carvekit: `pip install 'ldm-explore[sd]'`")
        f = _tracer_file()
        if not f.exists():
            raise ModelNotFoundError(f"TRACER weights are missing ({f}); see `ldm-explore models "
                                     "--bundle sd14` for the command that fetches them")
        from carvekit.ml.wrap.tracer_b7 import TracerUniversalB7

        # the checkpoint is passed explicitly: carvekit would otherwise try to download it
        self.model = TracerUniversalB7(device=device, batch_size=4, model_path=f, input_image_size=input_size)

    def mask(self, images) -> np.ndarray:
        from PIL import Image

        out = self.model([Image.fromarray(a) for a in _as_batch(images)])
        return np.stack([np.asarray(m, np.float32) / 255.0 for m in out])


INTRINSIC_WEIGHTS = {  # load_models(name) fetches these into torch hub's checkpoints folder
    "paper_weights": ("final_weights.pt",),  # Careaga & Aksoy 2023, the ordinal-shading paper (the studies')
    "v2": tuple(f"stage_{i}.pt" for i in range(5)),  # their 2024 colourful pipeline; its grey stages give shading
}
INTRINSIC_INSTALL = "pip install https://github.com/compphoto/Intrinsic/archive/main.zip"


def intrinsic_fetch(weights: str = "paper_weights") -> str:
    return f"python -c \"from intrinsic.pipeline import load_models; load_models('{weights}', device='cpu')\""


def uninvert(inv: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Intrinsic's networks predict shading S in the inverse space 1 / (S + 1); this is its ``uninvert``."""
    return 1.0 / np.clip(inv, eps, 1.0) - 1.0


class IntrinsicShading:
    """Intrinsic (Careaga & Aksoy 2023): grayscale shading at the image's size.

    Its grey pipeline (``run_gray_pipeline``) returns ``gry_shd`` in the *inverse* space 1 / (S + 1), at the size
    its optimal-resize step chose unless asked to keep the input's (``maintain_size``, in the versions that have
    it). This wrapper returns S itself, resized to the image when the pipeline did not. Its weights are read from
    torch hub's checkpoints folder, where ``load_models`` keeps them; missing weights are an error here, never a
    download.
    """

    def __init__(self, device: str = "cpu", weights: str = "paper_weights"):
        if importlib.util.find_spec("intrinsic") is None:
            raise ModelNotFoundError(f"the Intrinsic model is not installed (academic licence): `{INTRINSIC_INSTALL}`")
        missing = [f for f in INTRINSIC_WEIGHTS[weights] if not _torch_hub_file(f).exists()]
        if missing:
            raise ModelNotFoundError(f"Intrinsic weights are missing ({_torch_hub_file(missing[0])}); fetch them with "
                                     f"{intrinsic_fetch(weights)}")
        import inspect

        from intrinsic import pipeline

        self._pipeline = pipeline
        self._keeps_size = "maintain_size" in inspect.signature(pipeline.run_gray_pipeline).parameters
        self.models = pipeline.load_models(weights, device=device)  # found on disk: no download
        self.device = device

    def shading(self, images) -> np.ndarray:
        out = []
        for a in _as_batch(images):
            h, w = a.shape[:2]
            kw = {"maintain_size": True} if self._keeps_size else {}
            res = self._pipeline.run_gray_pipeline(self.models, a.astype(np.float32) / 255.0, device=self.device, **kw)
            s = uninvert(np.asarray(res["gry_shd"], np.float32))
            if s.ndim == 3:
                s = s.mean(-1)
            if s.shape != (h, w):
                import torch

                s = torch.nn.functional.interpolate(torch.from_numpy(s)[None, None], size=(h, w), mode="bilinear",
                                                    align_corners=False)[0, 0].numpy()
            out.append(s.astype(np.float32))
        return np.stack(out)


class SD14Estimators:
    """The studies' estimators behind the bundle interface (``properties``, ``all``, ``mask``, ``depth``,
    ``shading``). A missing one leaves its property out (``left_out`` says which and why); none at all is an
    error."""

    def __init__(self, device: str = "cpu", hybrid: bool = False):
        makers = {"mask": lambda: TracerMask(device), "depth": lambda: DPTDepth(DPT_HYBRID if hybrid else DPT_LARGE, device),
                  "shading": lambda: IntrinsicShading(device)}
        self._models, self.left_out = {}, []
        for prop, make in makers.items():
            try:
                self._models[prop] = make()
            except ModelNotFoundError as e:
                self.left_out.append(f"{prop}: left out: {e}")
        if not self._models:
            raise ModelNotFoundError("sd14 bundle: no estimator is present (" + "; ".join(self.left_out) + ")")
        self.properties = tuple(p for p in makers if p in self._models)

    def mask(self, images):
        return self._models["mask"].mask(images)

    def depth(self, images):
        return self._models["depth"].depth(images)

    def shading(self, images):
        return self._models["shading"].shading(images)

    def all(self, images) -> dict[str, np.ndarray]:
        return {p: getattr(self, p)(images) for p in self.properties}
