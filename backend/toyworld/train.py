"""Training the toyworld bundle: dataset, VAE, estimators, classifier, UNet + text encoder, export.

Every stage is resumable: it checkpoints (atomically) into ``<workdir>/<stage>/ckpt.pt`` every few
minutes and on Ctrl-C, logs losses to ``<workdir>/<stage>/log.jsonl``, and picks up where it stopped.
``--minutes`` bounds a stage's wall time for this invocation, so a long run can be done in slices.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..bundles import toyworld as tw
from ..bundles import toyworld_dir
from ..errors import UserError
from . import DEFAULT_STEPS, STAGES
from .models import SCHEDULER_CONFIG, MAX_TOKENS, make_text_encoder, make_tokenizer, make_unet, make_vae
from .scenes import CLASSES, WORLD, WORLD_REVISION, WORLDS, render_seed

TRAIN_SEED0 = 0  # training scenes: seeds 0 .. n-1
PROMPT_SEED0 = 10_000_000  # the shipped prompt file's scenes
EVAL_SEED0 = 20_000_000  # held-out evaluation renders


def default_workdir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("LDM_EXPLORE_TRAIN_DIR") or Path(user_cache_dir("ldm-explore")) / "toyworld-train")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# data

def _render_one(seed: int, world: int | None = None):
    sc, r = render_seed(seed, world=world)
    return ((r["rgb"] * 255).round().astype(np.uint8), r["depth"].astype(np.float16), r["mask"],
            r["shading"].astype(np.float16), sc.main_class, sc.prompt)


def render_many(seeds, procs: int = 2, world: int | None = None) -> dict[str, np.ndarray]:
    seeds = list(seeds)
    if procs > 1:
        with Pool(procs) as pool:
            out = pool.starmap(_render_one, [(s, world) for s in seeds], chunksize=64)
    else:
        out = [_render_one(s, world) for s in seeds]
    return {"rgb": np.stack([o[0] for o in out]), "depth": np.stack([o[1] for o in out]),
            "mask": np.stack([o[2] for o in out]), "shading": np.stack([o[3] for o in out]),
            "cls": np.array([o[4] for o in out], np.int16), "prompt": np.array([o[5] for o in out]),
            "seed": np.array(seeds, np.int64)}


def atomic_save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def dataset(workdir: Path, n: int, procs: int = 2, world: int = WORLD) -> dict[str, np.ndarray]:
    """The training renders, rendered once and kept in ``workdir/data/train-<n>.npz`` (world 1) or
    ``train-w<world>[r<revision>]-<n>.npz``."""
    rev = WORLD_REVISION[world]
    prefix = "train" if world == 1 else f"train-w{world}"
    f = workdir / "data" / (prefix + (f"r{rev}" if rev else "") + f"-{n}.npz")
    if not f.exists():
        old = sorted(p.name for p in f.parent.glob(f"{prefix}*-{n}.npz"))
        if old:
            log(f"{', '.join(old)} in {f.parent}: renders of an older revision of world {world}, not used")
        f.parent.mkdir(parents=True, exist_ok=True)
        t = time.time()
        d = render_many(range(TRAIN_SEED0, TRAIN_SEED0 + n), procs, world)
        atomic_save_npz(f, **d)
        log(f"rendered {n} training scenes in {time.time() - t:.0f} s -> {f}")
    with np.load(f) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------------------------------
# checkpoints

class Stage:
    """Checkpointed training state of one stage."""

    def __init__(self, workdir: Path, name: str, modules: dict, opt, extra: dict | None = None):
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.modules, self.opt = name, modules, opt
        self.step = 0
        self.extra = extra or {}
        self.t0 = time.time()
        self.last_save = time.time()
        ck = self.dir / "ckpt.pt"
        if ck.exists():
            s = torch.load(ck, map_location="cpu", weights_only=False)
            for k, m in modules.items():
                m.load_state_dict(s["modules"][k])
            if opt is not None and s.get("opt") is not None:
                opt.load_state_dict(s["opt"])
            self.step = s["step"]
            self.extra.update(s.get("extra", {}))
            torch.set_rng_state(s["torch_rng"])
            log(f"{name}: resumed at step {self.step}")

    def save(self) -> None:
        s = {"modules": {k: m.state_dict() for k, m in self.modules.items()},
             "opt": self.opt.state_dict() if self.opt is not None else None, "step": self.step,
             "extra": self.extra, "torch_rng": torch.get_rng_state()}
        tmp = self.dir / "ckpt.pt.tmp"
        torch.save(s, tmp)
        os.replace(tmp, self.dir / "ckpt.pt")
        self.last_save = time.time()

    def log(self, **fields) -> None:
        rec = {"step": self.step, "time": round(time.time() - self.t0, 1), **fields}
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def maybe_save(self, every_s: float = 180) -> None:
        if time.time() - self.last_save > every_s:
            self.save()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts():
    """A background run (where SIGINT is ignored) is stopped with SIGTERM: it raises KeyboardInterrupt, so the
    running stage checkpoints on its way out. The previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _loop(stage: Stage, total: int, minutes: float | None, body, log_every: int = 50):
    """Run ``body(step) -> dict of losses`` until ``total`` steps or the time budget; checkpoint on exit."""
    t_end = time.time() + 60 * minutes if minutes else math.inf
    acc: dict[str, float] = {}
    n = 0
    t = time.time()
    try:
        while stage.step < total and time.time() < t_end:
            losses = body(stage.step)
            stage.step += 1
            n += 1
            for k, v in losses.items():  # a tensor stays on its device until the log line (no sync a step)
                acc[k] = acc.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else float(v))
            if stage.step % log_every == 0 or stage.step == total:
                avg = {k: round(float(v) / n, 5) for k, v in acc.items()}
                stage.log(**avg, s_per_step=round((time.time() - t) / n, 3))
                log(f"{stage.name} step {stage.step}/{total} {avg} {(time.time() - t) / n:.2f} s/step")
                acc, n, t = {}, 0, time.time()
            stage.maybe_save()
    finally:
        stage.save()
    return stage.step >= total


def _lr(step, base, warmup=200, total=None, floor=0.1):
    w = min(1.0, (step + 1) / warmup)
    if total is None:
        return base * w
    return base * w * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


# --------------------------------------------------------------------------------------------------
# stages

def _vae_batch(data, idx, device: str = "cpu"):
    """Images in [-1, 1] and their loss weights (object pixels 5x, so colours survive: the feasibility run lost
    them), as the VAE and decoder stages train on them."""
    x = torch.from_numpy(data["rgb"][idx]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    w = 1 + 4 * torch.from_numpy(data["mask"][idx]).to(device).float()[:, None]
    return x, w


def _decoder_part(vae) -> torch.nn.ModuleDict:
    """What the decoder stage trains and checkpoints: everything after the latent."""
    return torch.nn.ModuleDict({"post_quant_conv": vae.post_quant_conv, "decoder": vae.decoder})


def _weighted_rec(y, x, w):
    """The VAE's reconstruction loss: L1 + L2, object pixels weighted by ``w``; images in [-1, 1]."""
    return (w * (y - x).abs()).mean() + (w * (y - x) ** 2).mean()


def _psnr(y, x) -> float:
    return float(-10 * torch.log10(((y.detach().clamp(-1, 1) - x) ** 2).mean() / 4))


def train_vae(workdir: Path, data, steps: int, minutes=None, batch: int = 16, crop_share: float = 0.6,
              device: str = "cpu"):
    """32x32 crops (batch x4) for the first ``crop_share`` of steps, then full 64x64 images."""
    torch.manual_seed(1)
    vae = make_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    st = Stage(workdir, "vae", {"vae": vae}, opt)
    n = len(data["rgb"])
    rng = np.random.default_rng(st.step + 1)

    def body(step):
        for g in opt.param_groups:
            g["lr"] = _lr(step, 1e-3, total=steps)
        crop = step < crop_share * steps
        x, w = _vae_batch(data, rng.integers(0, n, batch * 4 if crop else batch), device)
        if crop:
            i, j = rng.integers(0, 33, 2)
            x, w = x[..., i:i + 32, j:j + 32], w[..., i:i + 32, j:j + 32]
        post = vae.encode(x).latent_dist
        z = post.sample()
        y = vae.decode(z).sample
        rec = _weighted_rec(y, x, w)
        kl = post.kl().mean() / z[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        return {"loss": loss.item(), "kl": kl.item(), "psnr": _psnr(y, x)}

    return _loop(st, steps, minutes, body), vae


def _grad_l1(y, x, w):
    """Weighted L1 between the images' finite differences: the edges a pixel loss lets the decoder blur."""
    dx = ((y[..., :, 1:] - y[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])).abs()
    dy = ((y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs()
    return (w[..., :, 1:] * dx).mean() + (w[..., 1:, :] * dy).mean()


def train_decoder(workdir: Path, data, steps: int, minutes=None, batch: int = 32, device: str = "cpu"):
    """Fine-tune the VAE's decoder on full 64x64 images, the encoder frozen: the latents (and so a UNet trained
    on them) stay valid while the decoder learns the edges the short VAE stage left soft (cube vs cylinder).
    Input: the cached posterior means the UNet trains on; loss: object-weighted L1 + L2 + edge L1."""
    torch.manual_seed(4)
    vae, _ = load_stage_module(workdir, "vae", "vae", make_vae())
    lat, _ = encode_latents(workdir, vae, data)
    vae.to(device)
    dec = _decoder_part(vae)
    opt = torch.optim.AdamW(dec.parameters(), lr=3e-4, weight_decay=0.0)
    st = Stage(workdir, "decoder", {"decoder": dec}, opt)
    rng = np.random.default_rng(st.step + 4)
    dec.train()

    def body(step):
        for g in opt.param_groups:
            g["lr"] = _lr(step, 3e-4, warmup=50, total=steps)
        idx = rng.integers(0, len(lat), batch)
        z = torch.from_numpy(lat[idx].astype(np.float32)).to(device)
        x, w = _vae_batch(data, idx, device)
        y = vae.decode(z).sample
        loss = _weighted_rec(y, x, w) + _grad_l1(y, x, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0)
        opt.step()
        return {"loss": loss.item(), "psnr": _psnr(y, x)}

    return _loop(st, steps, minutes, body), vae


def load_vae(workdir: Path):
    """The VAE as trained, with the fine-tuned decoder where the decoder stage has run."""
    vae, _ = load_stage_module(workdir, "vae", "vae", make_vae())
    if (workdir / "decoder" / "ckpt.pt").exists():
        _, s = load_stage_module(workdir, "decoder", "decoder", _decoder_part(vae))
        return vae, s["step"] + s["extra"].get("init_decoder_steps", 0)  # counting the starting bundle's steps
    return vae, 0


def _net_stage(workdir: Path, name: str, net, seed: int, device: str = "cpu"):
    """What the estimators' and classifier's stages share: seeded init, AdamW, a resumable Stage, a data rng."""
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    st = Stage(workdir, name, {"net": net}, opt)
    net.train()
    return opt, st, np.random.default_rng(st.step + seed)


def _images(data, idx, device: str = "cpu") -> torch.Tensor:
    return torch.from_numpy(data["rgb"][idx]).to(device).permute(0, 3, 1, 2).float() / 255


def _set_lr(opt, step, steps):
    for g in opt.param_groups:
        g["lr"] = _lr(step, 2e-3, warmup=100, total=steps, floor=0.02)


EST_REC_SHARE = 0.3  # of each estimators batch: VAE reconstructions (less than the classifier's: the bar is on renders)


def train_estimators(workdir: Path, data, steps: int, minutes=None, batch: int = 32, device: str = "cpu",
                     rec_share: float = EST_REC_SHARE):
    """The estimators of mask, relative inverse depth and shading (the off-the-shelf models' role). With
    ``rec_share`` > 0 and a VAE in the workdir, that share of each batch are the training renders' VAE
    reconstructions (the labels are the renders', exact for them too): in the experiment they label decoder
    outputs, on which depth trained on renders alone reads 0.90 Spearman against 0.95 on the renders."""
    torch.manual_seed(2)
    net = tw.DenseNet()
    opt, st, rng = _net_stage(workdir, "estimators", net, 2, device)
    n = len(data["rgb"])
    rec = _reconstructions(workdir, data, device, "estimators", rec_share) if rec_share > 0 else None
    n_rec = int(round(rec_share * batch)) if rec is not None else 0

    def body(step):
        _set_lr(opt, step, steps)
        idx = rng.integers(0, n, batch)
        x = _images(data, idx, device)
        if n_rec:
            x[:n_rec] = rec(idx[:n_rec], rng)
        m = torch.from_numpy(data["mask"][idx]).float()
        d = torch.from_numpy(data["depth"][idx].astype(np.float32))
        s = torch.from_numpy(data["shading"][idx].astype(np.float32))
        m, d, s = m.to(device), d.to(device), s.to(device)
        if rng.random() < 0.5:  # left-right flips keep every label exact
            x, m, d, s = x.flip(-1), m.flip(-1), d.flip(-1), s.flip(-1)
        dn = d / d.amax(dim=(1, 2), keepdim=True)  # relative inverse depth in (0, 1]
        o = net(x)
        lm = F.binary_cross_entropy_with_logits(o[:, 0], m)
        err = o[:, 1] - dn
        ld = err.abs().mean()
        # the bar is a rank correlation per image: in world 2 many images span little depth (top-down floors,
        # far walls), where an error small in absolute terms reorders the whole image. So the error is also
        # taken relative to the image's own depth spread, and on the depth map's gradients (its ordering)
        spread = dn.flatten(1).std(1).clamp_min(0.02)[:, None, None]
        ld_rel = (err.abs() / spread).mean()
        lg = ((err[:, :, 1:] - err[:, :, :-1]).abs() / spread).mean() + \
            ((err[:, 1:, :] - err[:, :-1, :]).abs() / spread).mean()
        ls = (o[:, 2] - s).abs().mean()
        loss = lm + 2 * ld + 0.1 * ld_rel + 0.2 * lg + 2 * ls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "mask_bce": lm.item(), "depth_l1": ld.item(), "depth_rel": ld_rel.item(),
                "depth_grad": lg.item(), "shading_l1": ls.item()}

    return _loop(st, steps, minutes, body), net


REC_SHARE = 0.5  # of each classifier batch: VAE reconstructions instead of renders, once a VAE is trained


def _reconstructions(workdir: Path, data, device: str, stage: str, share: float):
    """``rec(idx, rng)``: the training renders ``idx`` as a generated image would show them, the cached posterior
    means with latent noise of up to 0.2 of their spread through the decoder as trained so far, rounded to 8
    bits, (B, 3, H, W) in [0, 1]; None (and a log line) while the workdir has no VAE."""
    if not (workdir / "vae" / "ckpt.pt").exists():
        log(f"{stage}: no VAE in this workdir yet: clean renders only")
        return None
    vae, decoder_steps = load_vae(workdir)
    lat, scale = encode_latents(workdir, vae, data)
    vae.to(device).eval().requires_grad_(False)
    lat_std = 1.0 / scale  # the cache's scaling factor is 1 / the latents' spread
    log(f"{stage}: {share:.0%} of each batch VAE reconstructions (decoder at step {decoder_steps})")

    @torch.no_grad()
    def rec(idx, rng):
        z = torch.from_numpy(lat[idx].astype(np.float32)).to(device)
        sigma = torch.from_numpy(rng.uniform(0, 0.2, (len(idx), 1, 1, 1))).float().to(device) * lat_std
        y = vae.decode(z + sigma * torch.randn_like(z)).sample
        return torch.round((y.clamp(-1, 1) + 1) * 127.5) / 255

    return rec


def train_classifier(workdir: Path, data, steps: int, minutes=None, batch: int = 64, device: str = "cpu"):
    """The classifier that labels generated images (VGG-16's role). The images it judges are decoder outputs, so
    once the workdir has a VAE, ``REC_SHARE`` of each batch are the training renders' reconstructions (the cached
    posterior means, with latent noise of up to 0.2 of their spread, through the decoder as trained so far,
    rounded to 8 bits like a generated image): trained on clean renders only, it read the decoder's small
    changes as another class (0.71 top-1 on reconstructions of held-out renders against 0.96 on the renders)."""
    torch.manual_seed(3)
    net = tw.ClassifierNet(len(CLASSES))
    opt, st, rng = _net_stage(workdir, "classifier", net, 3, device)
    n = len(data["rgb"])
    y_all = torch.from_numpy(data["cls"].astype(np.int64)).to(device)
    rec = _reconstructions(workdir, data, device, "classifier", REC_SHARE)
    n_rec = int(round(REC_SHARE * batch)) if rec is not None else 0

    def body(step):
        _set_lr(opt, step, steps)
        idx = rng.integers(0, n, batch)
        x = _images(data, idx, device)
        if n_rec:
            x[:n_rec] = rec(idx[:n_rec], rng)
        if rng.random() < 0.5:
            x = x.flip(-1)  # the class is colour x shape: a mirror keeps it
        x = (x * torch.empty(batch, 1, 1, 1).uniform_(0.85, 1.15).to(x)).clamp(0, 1)  # exposure jitter
        logits = net(x)
        loss = F.cross_entropy(logits, y_all[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hit = (logits.argmax(1) == y_all[idx]).float()
        out = {"loss": loss.item(), "acc": hit[n_rec:].mean().item()}
        if n_rec:
            out["acc_rec"] = hit[:n_rec].mean().item()
        return out

    return _loop(st, steps, minutes, body), net


def load_checkpoint(workdir: Path, stage: str) -> dict:
    """A finished (or paused) stage's checkpoint, which a later stage builds on; a one-line error if there is none."""
    f = workdir / stage / "ckpt.pt"
    if not f.exists():
        raise UserError(f"{f}: no checkpoint of the {stage} stage: run `ldm-explore toyworld train --stage {stage}` "
                        f"(with the same --workdir) first")
    return torch.load(f, map_location="cpu", weights_only=False)


def load_stage_module(workdir: Path, stage: str, key: str, module):
    s = load_checkpoint(workdir, stage)
    module.load_state_dict(s["modules"][key])
    return module, s


def _data_tag(data) -> str:
    """A short fingerprint of a training set's images: cached latents belong to one set of renders."""
    import hashlib

    rgb = data["rgb"]
    h = hashlib.sha1(f"{rgb.shape}".encode())
    for i in np.linspace(0, len(rgb) - 1, min(len(rgb), 64)).astype(int):
        h.update(np.ascontiguousarray(rgb[i]).tobytes())
    return h.hexdigest()[:10]


def _encoder_tag(vae) -> str:
    """A short fingerprint of the VAE's encoder (and ``quant_conv``): cached latents belong to one encoder. The
    decoder is left out, so the decoder stage's fine-tuning keeps the cache (its encoder is frozen)."""
    import hashlib

    h = hashlib.sha1()
    for name, v in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            h.update(name.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def latents_file(workdir: Path, vae, data) -> Path:
    """Where the latents of ``data`` under ``vae``'s encoder are cached: a retrained encoder never reuses them."""
    return workdir / "unet" / f"latents-{len(data['rgb'])}-{_data_tag(data)}-{_encoder_tag(vae)}.npz"


@torch.no_grad()
def encode_latents(workdir: Path, vae, data, device: str = "cpu") -> tuple[np.ndarray, float]:
    """Cache the VAE posterior means of every training image (float16) and the scaling factor."""
    f = latents_file(workdir, vae, data)
    if f.exists():
        with np.load(f) as z:
            return z["latents"], float(z["scale"])
    f.parent.mkdir(parents=True, exist_ok=True)
    vae.eval().to(device)
    out = []
    t = time.time()
    for i in range(0, len(data["rgb"]), 256):
        x = torch.from_numpy(data["rgb"][i:i + 256]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vae.encode(x).latent_dist.mean.cpu().numpy().astype(np.float16))
    lat = np.concatenate(out)
    scale = float(1.0 / lat.astype(np.float32).std())
    atomic_save_npz(f, latents=lat, scale=np.float32(scale))
    log(f"encoded {len(lat)} latents in {time.time() - t:.0f} s (raw latents' spread {1 / scale:.4f})")
    return lat, scale


def latent_stats(lat: np.ndarray) -> tuple[list[float], float]:
    """The latent space the UNet is trained in: each channel's mean over the training latents (``shift``, in the
    encoder's units) and the scaling factor that gives the centred latents unit spread. The VAE's raw latents
    have channel means of up to twice their spread; a sampler that starts from zero-mean noise does not move them
    that far (the generated images' colours and layouts drift toward the noise's mean), so the UNet sees the
    latents centred and the export folds ``shift`` into the VAE (:func:`centre_vae`)."""
    shift = lat.mean(axis=(0, 2, 3), dtype=np.float64)  # no float copy of the whole array, as for the spread
    spread = np.sqrt(sum(float(((lat[i:i + 1024].astype(np.float32) - shift[:, None, None]) ** 2).sum())
                         for i in range(0, len(lat), 1024)) / lat.size)
    return [float(v) for v in shift], float(1.0 / spread)


@torch.no_grad()
def centre_vae(vae, shift) -> None:
    """Fold a latent channel shift into the VAE in place: the encoder's posterior means move by ``-shift``
    (``quant_conv``'s bias) and the decoder adds it back (``post_quant_conv``'s bias), so ``decode(encode(x))``
    is unchanged and the VAE stays an ordinary diffusers ``AutoencoderKL`` (SD's pipeline, untouched, samples in
    the centred space)."""
    d = torch.as_tensor(shift, dtype=vae.post_quant_conv.weight.dtype)
    c = d.numel()
    vae.quant_conv.bias[:c] -= d.to(vae.quant_conv.bias)
    vae.post_quant_conv.bias += (vae.post_quant_conv.weight[:, :, 0, 0] @ d).to(vae.post_quant_conv.bias)


class EMA:
    def __init__(self, module, decay=0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module, step):
        d = min(self.decay, (1 + step) / (10 + step))
        sd = module.state_dict()
        fk = [k for k, v in sd.items() if v.is_floating_point()]
        ema = [self.shadow[k] for k in fk]
        torch._foreach_mul_(ema, d)  # one kernel per group instead of two per tensor: the GPU's launch cost
        torch._foreach_add_(ema, [sd[k].float() for k in fk], alpha=1 - d)
        for k, v in sd.items():
            if not v.is_floating_point():
                self.shadow[k].copy_(v)

    def state_dict(self):
        return self.shadow

    def load_state_dict(self, sd):
        self.shadow = {k: v.to(self.shadow[k].device).clone() for k, v in sd.items()}


def unet_lr(step: int, base: float, total: int, cooldown: int = 0, warmup: int = 300, floor: float = 0.05) -> float:
    """The UNet's learning rate: linear warm-up over ``warmup`` steps, then constant; with ``cooldown``, falling
    linearly to ``floor`` x ``base`` over the last ``cooldown`` steps before ``total`` (a function of the step
    alone, so a resumed run keeps to it)."""
    lr = _lr(step, base, warmup=warmup)
    if cooldown and step >= total - cooldown:
        lr *= floor + (1 - floor) * max(0.0, (total - step) / cooldown)
    return lr


def train_unet(workdir: Path, data, steps: int, minutes=None, batch: int = 64, lr: float = 5e-4,
               device: str = "cpu", cooldown: int = 0):
    from diffusers import DDPMScheduler

    torch.manual_seed(4)
    tok = make_tokenizer(workdir / "tokenizer")
    vae, _ = load_stage_module(workdir, "vae", "vae", make_vae())
    lat, _ = encode_latents(workdir, vae, data, device)
    del vae
    shift, scale = latent_stats(lat)
    ids = tok(list(data["prompt"]), padding="max_length", max_length=MAX_TOKENS, truncation=True,
              return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids
    unet, te = make_unet().to(device), make_text_encoder(tok).to(device)
    ids, empty = ids.to(device), empty.to(device)
    ema_u, ema_t = EMA(unet), EMA(te)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    st = Stage(workdir, "unet", {"unet": unet, "text": te, "ema_unet": ema_u, "ema_text": ema_t}, opt,
               extra={})
    if "shift" not in st.extra:
        if st.step:  # a checkpoint from before centring: it goes on in the space it was trained in
            st.extra["shift"] = [0.0] * len(shift)
        else:  # a fresh run, or one started from a bundle whose VAE is not centred: train in the centred space
            st.extra.update(scale=scale, shift=shift)
            log(f"unet: latents centred (the encoder's channel means, times the scaling factor: "
                f"{', '.join(f'{v * scale:.2f}' for v in shift)}, moved to 0), scaling factor {scale:.4f}")
    # a run started from a centred bundle keeps the bundle's latent space (seeded with shift 0 and its scale)
    scale = st.extra["scale"]
    shift_t = torch.tensor(st.extra["shift"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    ac = sched.alphas_cumprod
    snr = (ac / (1 - ac)).to(device)
    n = len(lat)
    rng = np.random.default_rng(st.step + 4)
    lat_t = torch.from_numpy(lat).to(device)  # float16: 24,000 latents are 49 MB
    unet.train()
    te.train()

    def body(step):
        for g in opt.param_groups:
            g["lr"] = unet_lr(step, lr, steps, cooldown)
        idx = torch.from_numpy(rng.integers(0, n, batch)).to(device)
        x0 = (lat_t[idx].float() - shift_t) * scale
        tid = ids[idx].clone()
        drop = torch.from_numpy(rng.random(batch) < 0.1).to(device)
        tid[drop] = empty[0]
        t = torch.randint(0, 1000, (batch,)).to(device)
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        emb = te(tid)[0]
        pred = unet(xt, t, encoder_hidden_states=emb).sample
        w = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5 weighting for epsilon prediction
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_u.update(unet, step)
        ema_t.update(te, step)
        return {"loss": loss}

    return _loop(st, steps, minutes, body, log_every=25), st


# --------------------------------------------------------------------------------------------------
# export

def training_info(bundle_dir: Path) -> dict:
    """A bundle's ``TRAINING.json`` (what :func:`export_bundle` wrote: world, steps, latent shift), or ``{}``."""
    f = Path(bundle_dir) / "TRAINING.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _init_name(init: str | None) -> str | None:
    """The bundle a fine-tuning run started from, as TRAINING.json records it (no machine's paths)."""
    if init is None:
        return None
    return "the shipped bundle" if Path(init).resolve() == toyworld_dir().resolve() else Path(init).name


def export_bundle(workdir: Path, out: Path | None = None, world: int = WORLD) -> Path:
    """Write the bundle folder from the stages' checkpoints (EMA weights, fp16 where it costs nothing)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    out = Path(out or toyworld_dir())
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(workdir / "tokenizer")
    vae, decoder_steps = load_vae(workdir)
    s = load_checkpoint(workdir, "unet")
    shift = s["extra"].get("shift", [0.0] * vae.config.latent_channels)
    centre_vae(vae, shift)
    vae.register_to_config(scaling_factor=float(s["extra"]["scale"]))
    unet, te = make_unet(), make_text_encoder(tok)
    unet.load_state_dict(s["modules"]["ema_unet"])
    te.load_state_dict(s["modules"]["ema_text"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.unet.half()
    pipe.text_encoder.half()
    pipe.save_pretrained(str(out / "pipeline"), safe_serialization=True)
    est, est_ck = load_stage_module(workdir, "estimators", "net", tw.DenseNet())
    tw.save_net(est, out / "estimators.safetensors", "estimators", CLASSES)
    cls, _ = load_stage_module(workdir, "classifier", "net", tw.ClassifierNet(len(CLASSES)))
    tw.save_net(cls, out / "classifier.safetensors", "classifier", CLASSES)
    write_prompt_file(out / "prompts.csv", world=world)
    (out / "TRAINING.json").write_text(json.dumps({
        "world": world, "unet_steps": s["step"], "init": _init_name(s["extra"].get("init")),
        "init_unet_steps": s["extra"].get("init_unet_steps"), "decoder_steps": decoder_steps,
        "estimators_steps": est_ck["step"], "vae_scaling_factor": s["extra"]["scale"],
        "vae_latent_shift": [a + b for a, b in zip(shift, s["extra"].get("init_vae_latent_shift", [0.0] * len(shift)))],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }, indent=1))
    log(f"exported bundle to {out} (UNet at step {s['step']})")
    return out


def _world_of(workdir: Path, world: int | None) -> int:
    """The workdir's world (``world.json``), written on first use; asking for another one stops with one line."""
    f = workdir / "world.json"
    have = json.loads(f.read_text())["world"] if f.exists() else None
    if world is not None and world not in WORLDS:
        raise UserError(f"--world {world}: no such toyworld world (worlds: {', '.join(map(str, WORLDS))})")
    if have is not None and world is not None and have != world:
        raise UserError(f"{f}: this workdir trains world {have}, not {world}; choose another --workdir")
    world = have or world or WORLD
    if have is None:
        f.write_text(json.dumps({"world": world}))
    return world


def _text_encoder_by_token(pipe_dir: Path, workdir: Path) -> dict:
    """The bundle's text encoder as a state dict for this workdir's tokenizer: each token's embedding row moved to
    the token's new id (new grammar words shift ids; words new to the grammar start at the mean embedding), the
    position table extended with its last row where this tokenizer allows longer prompts."""
    from transformers import CLIPTextModel, CLIPTokenizer

    old_te = CLIPTextModel.from_pretrained(pipe_dir / "text_encoder").float().state_dict()
    old_tok = CLIPTokenizer.from_pretrained(pipe_dir / "tokenizer").get_vocab()
    tok = make_tokenizer(workdir / "tokenizer")
    te = make_text_encoder(tok).state_dict()
    for k, v in old_te.items():
        if "token_embedding" in k:
            new = v.mean(0, keepdim=True).repeat(len(tok), 1)
            for t, i in tok.get_vocab().items():
                if t in old_tok:
                    new[i] = v[old_tok[t]]
            te[k] = new
        elif "position_embedding.weight" in k:
            te[k][: len(v)] = v
            te[k][len(v):] = v[-1]
        elif "position_ids" not in k:
            te[k] = v
    return te


def seed_from_bundle(workdir: Path, bundle_dir: Path) -> list[str]:
    """Start every stage that has no checkpoint yet from a bundle's weights (fine-tuning it into this workdir's
    world): each such stage gets a step-0 checkpoint without optimiser state (the text encoder through
    :func:`_text_encoder_by_token`); nothing is read for a stage already checkpointed. Returns the stages seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    from ..pipeline.loading import quiet_hf

    quiet_hf()
    bundle_dir = Path(bundle_dir)
    pipe_dir = bundle_dir / "pipeline"
    if not (pipe_dir / "model_index.json").exists():
        raise UserError(f"{bundle_dir}: not a toyworld bundle (no pipeline/model_index.json)")
    seeded = []

    def put(stage, make):  # make() -> (modules, extra), called only for a stage without a checkpoint
        f = workdir / stage / "ckpt.pt"
        if f.exists():
            return
        modules, extra = make()
        f.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"modules": modules, "opt": None, "step": 0, "extra": {"init": str(bundle_dir), **extra},
                    "torch_rng": torch.get_rng_state()}, f.with_name("ckpt.pt.tmp"))
        os.replace(f.with_name("ckpt.pt.tmp"), f)
        seeded.append(stage)

    info = training_info(bundle_dir)
    vae = functools.cache(lambda: AutoencoderKL.from_pretrained(pipe_dir / "vae").float())
    put("vae", lambda: ({"vae": vae().state_dict()}, {}))
    put("decoder", lambda: ({"decoder": _decoder_part(vae()).state_dict()},
                            {"init_decoder_steps": info.get("decoder_steps", 0)}))
    for stage, name in (("estimators", "estimators.safetensors"), ("classifier", "classifier.safetensors")):
        put(stage, lambda name=name: ({"net": load_file(bundle_dir / name)}, {}))

    def unet_and_text():
        unet = UNet2DConditionModel.from_pretrained(pipe_dir / "unet").float().state_dict()
        te = _text_encoder_by_token(pipe_dir, workdir)
        scale = float(json.loads((pipe_dir / "vae" / "config.json").read_text())["scaling_factor"])
        extra = {"scale": scale}
        if "vae_latent_shift" in info:  # its VAE is centred already: no further shift, the bundle's on record
            extra["shift"] = [0.0] * len(info["vae_latent_shift"])
            extra["init_vae_latent_shift"] = info["vae_latent_shift"]
        if "unet_steps" in info:  # the steps behind the bundle: its own and those of the bundle it started from
            extra["init_unet_steps"] = info["unet_steps"] + (info.get("init_unet_steps") or 0)
        return {"unet": unet, "text": te, "ema_unet": unet, "ema_text": te}, extra

    put("unet", unet_and_text)
    return seeded


def run(workdir: Path | None = None, stages=None, steps: dict | None = None, minutes: float | None = None,
        n_train: int = 20000, procs: int = 2, out: Path | None = None, device: str = "cpu",
        world: int | None = None, init_from: Path | None = None, batch: dict | None = None,
        cooldown: int = 0) -> dict:
    """Run the given stages in order (default: all), each resuming from its checkpoint; ``init_from`` (a bundle
    folder) starts the stages that have no checkpoint yet from its weights."""
    workdir = Path(workdir or default_workdir())
    workdir.mkdir(parents=True, exist_ok=True)
    world = _world_of(workdir, world)
    if init_from is not None:
        seeded = seed_from_bundle(workdir, init_from)
        log(f"started {', '.join(seeded) or 'no stage'} from the bundle {init_from}")
    stages = list(stages or STAGES)
    steps = {**DEFAULT_STEPS, **(steps or {})}
    batch = batch or {}
    train = {"vae": train_vae, "estimators": train_estimators, "classifier": train_classifier, "unet": train_unet,
             "decoder": train_decoder}
    if str(device).startswith("cuda"):  # TF32 matmuls and convolutions: the toy models lose nothing by it
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    t_all = time.time()
    deadline = time.time() + 60 * minutes if minutes else None
    left = lambda: None if deadline is None else max(0.0, (deadline - time.time()) / 60)
    done = {}
    data = None
    log(f"toyworld training (world {world}) in {workdir}: stages {', '.join(stages)}; torch {torch.__version__}, "
        f"{device if device != 'cpu' else f'cpu, {torch.get_num_threads()} threads'}")
    with _sigterm_interrupts():
        for stage in stages:
            t = time.time()
            if stage in ("data", *train) and data is None:
                data = dataset(workdir, n_train, procs, world)
            if stage in train:
                kw = {"batch": batch[stage]} if stage in batch else {}  # else the stage's own default
                if kw:
                    log(f"{stage}: batch {kw['batch']}")
                if stage == "unet" and cooldown:
                    kw["cooldown"] = cooldown
                    log(f"unet: learning rate down to 5% over steps {max(0, steps[stage] - cooldown)}-{steps[stage]}")
                done[stage], _ = train[stage](workdir, data, steps[stage], left(), device=device, **kw)
            else:
                if stage == "export":
                    export_bundle(workdir, out, world)
                done[stage] = True
            log(f"{stage}: {'done' if done[stage] else 'paused (time budget); rerun to resume'} "
                f"in {time.time() - t:.0f} s")
            if deadline is not None and time.time() >= deadline and stage != stages[-1]:
                log("time budget spent; rerun the same command to resume")
                break
    log(f"total {time.time() - t_all:.0f} s")
    return done


def write_prompt_file(path: Path, n: int = 800, world: int = WORLD) -> Path:
    """The bundle's prompt file: anchors' columns plus ``split`` (60% train, 15% val, 25% test, interleaved).

    Prompts describe scenes with seeds PROMPT_SEED0 + i (none of them a training scene); the diffusion seeds
    are drawn once from a fixed generator.
    """
    import csv
    import io

    from .scenes import sample_scene

    rng = np.random.default_rng(1234)
    seeds = rng.integers(0, 2**31 - 1, n)
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["prompts", "seeds", "prompt_inds", "split"])
    for i in range(n):
        k = i % 20
        split = "train" if k < 12 else "val" if k < 15 else "test"
        w.writerow([sample_scene(PROMPT_SEED0 + i, world).prompt, int(seeds[i]), i, split])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def sample_grid(bundle_dir: Path, out: Path, n: int = 12, scale: int = 3) -> Path:
    """A PNG of generated samples beside their prompts (test split), for the docs."""
    from PIL import Image, ImageDraw

    from ..bundles import load_bundle
    from ..pipeline.generate import GenerationSettings, generate
    from ..prompts import PromptSet

    b = load_bundle("toyworld", bundle_dir=bundle_dir)
    ps = list(PromptSet.read(b.prompts).select("test", n))
    runs = generate(b.pipe, ps, GenerationSettings(steps=15, guidance=7.5), record=False, decode=False)
    s = 64 * scale
    W, rows = 2 * (s + 560), (len(runs) + 1) // 2
    img = Image.new("RGB", (W, rows * (s + 8)), "white")
    draw = ImageDraw.Draw(img)
    for k, r in enumerate(runs):
        x0, y0 = (k % 2) * (s + 560), (k // 2) * (s + 8)
        img.paste(Image.fromarray(r.final).resize((s, s), Image.NEAREST), (x0, y0))
        words, line, lines = r.prompt.prompt.split(), "", []
        for w_ in words:
            if len(line) + len(w_) > 48:
                lines.append(line)
                line = ""
            line += ("" if not line else " ") + w_
        lines.append(line)
        draw.multiline_text((x0 + s + 10, y0 + 10), "\n".join(lines + [f"seed {r.prompt.seed}"]), fill="black",
                            spacing=6)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
