"""The run store: what one run produced, on disk, read back by the TUI and the batch CLI.

One entry = (model id, prompt index, seed, settings key), a folder:

    <root>/runs/<model>/<settings key>/<prompt index>-<seed>/
        manifest.json           written last: metadata and every file's size and sha256
        final.png               the pipeline's output image
        images.safetensors      xt, x0: (S, H, W, 3) uint8 decoded images per step
        latents.safetensors     xt, x0: (S, C, h, w) float32
        activations.safetensors layer path -> (S, h, w, c), only when layers were asked for

An entry is built in ``<root>/tmp`` and renamed into place, so a reader sees a whole entry or none; a
killed writer leaves only a staging folder that the next open removes. Each entry has a lock file so two
processes sharing a store never write the same entry twice. An entry whose files do not match its
manifest is reported, moved to ``<root>/corrupt`` and treated as missing, so it gets recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import CorruptEntryError, StoreError

FORMAT = "ldm-explore-store"
VERSION = 1


def default_root() -> Path:
    env = os.environ.get("LDM_EXPLORE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ldm-explore")) / "store"  # beside toyworld-train/, the training workdir


def model_slug(model_id: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_id.rstrip("/")).name or model_id)[:40] or "model"
    return f"{base}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class RunKey:
    model_id: str
    prompt_index: int
    seed: int
    settings_key: str

    @property
    def relpath(self) -> str:
        return f"runs/{model_slug(self.model_id)}/{self.settings_key}/{self.prompt_index}-{self.seed}"


@dataclass
class Entry:
    """A run read back from the store (arrays loaded lazily where large)."""

    key: RunKey
    path: Path
    manifest: dict
    final: np.ndarray
    xt_images: np.ndarray
    x0_images: np.ndarray
    latents: np.ndarray
    x0_latents: np.ndarray

    @property
    def meta(self) -> dict:
        return self.manifest["meta"]

    @property
    def num_steps(self) -> int:
        return int(self.manifest["meta"]["num_steps"])

    @property
    def layers(self) -> list[str]:
        return list(self.manifest.get("layers", []))

    def activations(self, layers: list[str] | None = None) -> dict[str, np.ndarray]:
        f = self.path / "activations.safetensors"
        if not f.exists():
            return {}
        _verify(self.path, self.manifest, "activations.safetensors")
        from safetensors.numpy import load_file

        acts = load_file(str(f))
        return {k: v for k, v in acts.items() if layers is None or k in layers}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(entry_dir: Path, manifest: dict, name: str, checksum: bool = True) -> None:
    spec = manifest["files"].get(name)
    f = entry_dir / name
    if spec is None:
        raise CorruptEntryError(f"{entry_dir}: '{name}' is not in the manifest")
    if not f.is_file():
        raise CorruptEntryError(f"{f}: missing")
    size = f.stat().st_size
    if size != spec["size"]:
        raise CorruptEntryError(f"{f}: {size} bytes, the manifest says {spec['size']} (truncated?)")
    if checksum and _sha256(f) != spec["sha256"]:
        raise CorruptEntryError(f"{f}: checksum does not match the manifest")


def _write_file(path: Path, data: bytes) -> dict:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """The run store in folder ``root`` (default: the user cache dir, or ``LDM_EXPLORE_CACHE``): ``put`` a run,
    ``get`` it back by its :class:`RunKey`, ``entries`` lists what is there. Safe to share between processes."""

    def __init__(self, root: str | os.PathLike | None = None, on_corrupt=None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.on_corrupt = on_corrupt or (lambda msg: warnings.warn(msg, stacklevel=3))
        marker = self.root / "STORE.json"
        try:
            # another process may be creating the same store: its own folders and marker being written are fine
            own = {"runs", "tmp", "locks"}
            if self.root.exists() and not marker.exists() and any(
                    e.name not in own and not e.name.startswith(".STORE.json.") for e in self.root.iterdir()):
                raise StoreError(f"{self.root}: folder is not empty and not an ldm-explore run store (no STORE.json)")
            for sub in ("runs", "tmp", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                atomic_write_bytes(marker, json.dumps({"format": FORMAT, "version": VERSION}).encode())
        except PermissionError as e:
            raise StoreError(f"{self.root}: cannot write the run store ({e.strerror})") from None
        info = json.loads(marker.read_text())
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise StoreError(f"{marker}: unsupported store format {info}")
        self._clean_staging()

    # --- housekeeping ----------------------------------------------------------------------------
    def _clean_staging(self) -> None:
        """Remove staging folders of writers that died (their pid is in the name)."""
        for d in (self.root / "tmp").iterdir():
            try:
                pid = int(d.name.split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)

    def path(self, key: RunKey) -> Path:
        return self.root / key.relpath

    @contextmanager
    def lock(self, key: RunKey, timeout: float = -1) -> Iterator[bool]:
        """Hold the entry's lock; yields False instead of blocking when ``timeout`` is 0 and it is held."""
        from filelock import FileLock, Timeout

        name = hashlib.sha256(key.relpath.encode()).hexdigest()[:24]
        fl = FileLock(str(self.root / "locks" / f"{name}.lock"))
        try:
            fl.acquire(timeout=timeout)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            fl.release()

    # --- reading ---------------------------------------------------------------------------------
    def _manifest(self, key: RunKey) -> dict | None:
        d = self.path(key)
        m = d / "manifest.json"
        if not d.exists():
            return None
        try:
            manifest = json.loads(m.read_text(encoding="utf-8"))
            if manifest.get("key") != key.__dict__:
                raise CorruptEntryError(f"{m}: belongs to another run")
        except FileNotFoundError:
            raise CorruptEntryError(f"{d}: no manifest.json (incomplete entry)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptEntryError(f"{m}: unreadable manifest ({e})") from None
        return manifest

    def has(self, key: RunKey) -> bool:
        """A complete entry exists (file sizes checked; contents are checked on load)."""
        try:
            m = self._manifest(key)
            if m is None:
                return False
            for name in m["files"]:
                _verify(self.path(key), m, name, checksum=False)
            return True
        except CorruptEntryError as e:
            self._quarantine(key, str(e))
            return False

    def load(self, key: RunKey) -> Entry:
        """Read an entry, verifying checksums; raises CorruptEntryError or KeyError."""
        m = self._manifest(key)
        if m is None:
            raise KeyError(key)
        d = self.path(key)
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        for name in ("final.png", "images.safetensors", "latents.safetensors"):
            _verify(d, m, name)
        try:
            from PIL import Image

            final = np.asarray(Image.open(d / "final.png").convert("RGB"))
            imgs = load_file(str(d / "images.safetensors"))
            lats = load_file(str(d / "latents.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptEntryError(f"{d}: {e}") from None
        return Entry(key, d, m, final, imgs["xt"], imgs["x0"], lats["xt"], lats["x0"])

    def get(self, key: RunKey) -> Entry | None:
        """The entry, or None when it is missing or was corrupt (then reported and set aside)."""
        try:
            return self.load(key)
        except KeyError:
            return None
        except CorruptEntryError as e:
            self._quarantine(key, str(e))
            return None

    def _quarantine(self, key: RunKey, why: str) -> None:
        d = self.path(key)
        dest = self.root / "corrupt" / f"{key.relpath.replace('/', '__')}.{int(time.time())}.{uuid.uuid4().hex[:6]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(d, dest)
        except FileNotFoundError:
            return
        self.on_corrupt(f"corrupt run-store entry, set aside to be recomputed: {why}")

    def entries(self, model_id: str | None = None, settings_key: str | None = None) -> list[RunKey]:
        keys = []
        for m in sorted((self.root / "runs").glob("*/*/*/manifest.json")):
            try:
                k = RunKey(**json.loads(m.read_text(encoding="utf-8"))["key"])
            except (ValueError, KeyError, TypeError):
                continue
            if (model_id is None or k.model_id == model_id) and (settings_key is None or k.settings_key == settings_key):
                keys.append(k)
        return keys

    # --- writing ---------------------------------------------------------------------------------
    def put(self, key: RunKey, result, settings: dict, extra: dict | None = None) -> Path:
        """Write a RunResult atomically; an existing complete entry is kept as it is."""
        from PIL import Image
        from safetensors.numpy import save

        final_dir = self.path(key)
        stage = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        stage.mkdir(parents=True)
        try:
            files = {}
            buf = io.BytesIO()
            Image.fromarray(result.final).save(buf, format="PNG")
            files["final.png"] = _write_file(stage / "final.png", buf.getvalue())
            files["images.safetensors"] = _write_file(
                stage / "images.safetensors",
                save({"xt": np.ascontiguousarray(result.xt_images), "x0": np.ascontiguousarray(result.x0_images)}))
            files["latents.safetensors"] = _write_file(
                stage / "latents.safetensors",
                save({"xt": np.ascontiguousarray(result.latents, np.float32),
                      "x0": np.ascontiguousarray(result.x0_latents, np.float32)}))
            if result.activations:
                files["activations.safetensors"] = _write_file(
                    stage / "activations.safetensors",
                    save({k: np.ascontiguousarray(v) for k, v in result.activations.items()}))
            manifest = {
                "key": key.__dict__,
                "prompt": result.prompt.to_dict(),
                "settings": settings,
                "meta": {**result.meta, "timesteps": result.timesteps, **(extra or {})},
                "layers": sorted(result.activations),
                "shapes": {"image": list(result.final.shape), "latent": list(result.latents.shape[1:]),
                           **{k: list(v.shape) for k, v in result.activations.items()}},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": files,
            }
            _write_file(stage / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            if final_dir.exists():
                self.has(key)  # sets a corrupt entry aside; a complete one stays and wins below
            try:
                os.rename(stage, final_dir)
            except OSError:
                if not final_dir.exists():
                    raise
                # another writer finished first: keep theirs
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return final_dir
