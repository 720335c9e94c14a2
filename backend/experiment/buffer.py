"""One batch's activations, every layer and step, held until the batch's labels exist.

A probe's statistics need each token's activation beside its target, and the targets come from the final
image: so a batch's activations wait for the end of its denoising. They wait on the compute device (a GPU holds
a batch of SD v1.4 at 512x512, 16 layers, 15 steps: about 350 MB per prompt in fp16), never on the host; on a
CPU, where the device is the host, they are spilled to a temporary file as they come, so that host memory does
not grow with the batch size. Then they are read back one (layer, step) at a time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


class ActivationBuffer:
    """A Recorder ``sink``: ``buffer(layer, step, tensor)`` while generating, ``buffer.get(layer, step)`` after.

    spill  write to a temporary file in ``folder`` instead of keeping the tensors (default: on a CPU device)
    """

    def __init__(self, device, spill: bool | None = None, folder: Path | None = None):
        self.device = torch.device(device)
        self.spill = self.device.type == "cpu" if spill is None else spill
        self._mem: dict[tuple[str, int], torch.Tensor] = {}
        self._index: dict[tuple[str, int], tuple[int, tuple, torch.dtype]] = {}
        self._file = None
        self._finite: list[tuple[str, int, torch.Tensor]] = []  # per (layer, step): which runs are finite
        if self.spill:
            self._file = tempfile.TemporaryFile(dir=folder, prefix="ldm-explore-acts-")
        self.nbytes = 0

    def __call__(self, layer: str, step: int, t: torch.Tensor) -> None:
        self.nbytes += t.numel() * t.element_size()
        self._finite.append((layer, step, torch.isfinite(t).flatten(1).all(1)))  # on the device: no wait
        if not self.spill:
            self._mem[(layer, step)] = t
            return
        a = t.detach().cpu().contiguous()
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(a.view(torch.uint8).numpy().tobytes() if a.dtype == torch.bfloat16 else a.numpy().tobytes())
        self._index[(layer, step)] = (offset, tuple(a.shape), a.dtype)

    def bad(self) -> dict[int, str]:
        """Runs of the batch (by position) with a non-finite activation, and the first layer and step of it."""
        out: dict[int, str] = {}
        if self._finite:
            ok = torch.stack([f for _, _, f in self._finite]).cpu().numpy()  # (layers x steps, B): one wait
            for (layer, step, _), row in zip(self._finite, ok):
                for b in np.flatnonzero(~row):
                    out.setdefault(int(b), f"activation of {layer} at step {step}")
        return out

    def keys(self) -> list[tuple[str, int]]:
        return list(self._mem if not self.spill else self._index)

    def steps(self, layer: str) -> int:
        return 1 + max(s for (name, s) in self.keys() if name == layer)

    def get(self, layer: str, step: int) -> torch.Tensor:
        """(B, h, w, c) on the device."""
        if not self.spill:
            return self._mem[(layer, step)]
        offset, shape, dtype = self._index[(layer, step)]
        n = int(np.prod(shape))
        self._file.seek(offset)
        if dtype == torch.bfloat16:
            raw = np.frombuffer(self._file.read(n * 2), np.uint8).copy()
            return torch.from_numpy(raw).view(torch.bfloat16).reshape(shape).to(self.device)
        np_dtype = {torch.float16: np.float16, torch.float32: np.float32}[dtype]
        a = np.frombuffer(self._file.read(n * np.dtype(np_dtype).itemsize), np_dtype).reshape(shape)
        return torch.from_numpy(a.copy()).to(self.device)

    def run(self, layer: str, b: int) -> np.ndarray:
        """(S, h, w, c) of the batch's ``b``-th prompt (for keeping it in the run store)."""
        return torch.stack([self.get(layer, s)[b] for s in range(self.steps(layer))]).cpu().numpy()

    def close(self) -> None:
        self._mem.clear()
        self._index.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "ActivationBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
