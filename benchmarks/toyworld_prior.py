"""How much of a toyworld's layout a spatial prior gives away, on renders (no model involved).

    python benchmarks/toyworld_prior.py [--world 2] [--train 2000] [--test 400] [--generated N] [--bundle-dir DIR]
                                        [--steps 15] [--guidance 7.5]

The experiment's spatial-prior baseline is a ridge probe on one-hot 16x16 cell positions: it predicts each
cell's training mean, the same map for every image. This computes that map from the renderer's exact labels
of ``--train`` training scenes (cell means, 4x4 pixels per cell) and scores it on ``--test`` held-out scenes
the way the report does: depth by Spearman per image, the mask by Dice of the map cut at 0.5. The issue's
bounds for a world whose layout is not given away: depth <= 0.4, mask <= 0.3. The experiment's own figures
use the estimators' labels of generated images. ``--generated N`` measures how far apart those are: it also
scores the depth prior made from the estimators' maps of the training renders on (a) their maps of the
held-out renders, (b) their maps of the same renders' VAE reconstructions (what the decoder's softness alone
does) and (c) their maps of the shipped bundle's (or ``--bundle-dir``'s) images for N fresh evaluation prompts
(from prompt 600 of ``toyworld evaluate``'s sequence; DDIM ``--steps``, guidance ``--guidance``, the
experiment's 15 and 7.5 by default), overall and by the view the prompt names, with the share of each set's
images that evaluate's view measure judges seen from above. If the model's images vary less than the world's,
(c) is well above (a) and (b). It prints the images' mean colour beside the renders' too, and the generated
latents' channel means beside the encoded renders' (where the colour goes wrong).
"""


import numpy as np
from scipy.stats import spearmanr

from ldm_explore.backend.toyworld.train import EVAL_SEED0, TRAIN_SEED0, render_many
from ldm_explore.backend.cli import OneLineParser  # argparse's own errors: one line, exit 2


def main():
    ap = OneLineParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--generated", type=int, default=0, metavar="N",
                    help="also score the prior on the shipped bundle's images for N fresh prompts")
    ap.add_argument("--bundle-dir", default=None, help="with --generated: a bundle folder other than the shipped one")
    ap.add_argument("--guidance", type=float, default=7.5,
                    help="with --generated: the classifier-free guidance scale (the experiment's is 7.5)")
    ap.add_argument("--steps", type=int, default=15, help="with --generated: DDIM steps (the experiment's are 15)")
    a = ap.parse_args()
    if a.generated < 0:
        ap.exit(2, f"toyworld_prior.py: --generated {a.generated}: must be at least 0\n")
    if a.guidance < 0:
        ap.exit(2, f"toyworld_prior.py: --guidance {a.guidance}: must be at least 0\n")
    if a.steps < 1:
        ap.exit(2, f"toyworld_prior.py: --steps {a.steps}: must be at least 1\n")
    if (a.guidance != ap.get_default("guidance") or a.steps != ap.get_default("steps")) and not a.generated:
        ap.exit(2, "toyworld_prior.py: --guidance and --steps: only with --generated N\n")
    if a.bundle_dir and not a.generated:
        ap.exit(2, f"toyworld_prior.py: --bundle-dir {a.bundle_dir}: only with --generated N\n")
    b = open_bundle(ap, a) if a.generated else None  # before the renders: a wrong folder stops at once
    tr = render_many(range(TRAIN_SEED0, TRAIN_SEED0 + a.train), a.procs, a.world)
    te = render_many(range(EVAL_SEED0, EVAL_SEED0 + a.test), a.procs, a.world)

    def cell_mean(x):  # (N, 64, 64) -> the (64, 64) map of 16x16 cell means
        m = x.astype(np.float64).reshape(len(x), 16, 4, 16, 4).mean((0, 2, 4))
        return np.kron(m, np.ones((4, 4)))

    depth, mask = cell_mean(tr["depth"]), cell_mean(tr["mask"]) > 0.5
    sp = [spearmanr(depth.ravel(), d.ravel().astype(np.float64))[0] for d in te["depth"]]
    dice = [2 * (mask & m).sum() / (mask.sum() + m.sum()) if mask.sum() + m.sum() else 1.0 for m in te["mask"]]
    print(f"world {a.world}: spatial prior from {a.train} training renders, scored on {a.test} held-out renders")
    print(f"  depth Spearman {np.nanmean(sp):.3f} (bound 0.4); mask Dice {np.mean(dice):.3f} (bound 0.3); "
          f"highest cell mean of the mask {cell_mean(tr['mask']).max():.2f}, mask cover {te['mask'].mean():.3f}")
    if a.generated:
        generated(a, b, tr, te, cell_mean)


def open_bundle(ap, a):
    """The bundle whose images ``--generated`` scores; a missing folder or another world: one line, exit 2."""
    from ldm_explore.backend.bundles import load_bundle
    from ldm_explore.backend.errors import UserError
    from ldm_explore.backend.toyworld.evaluate import bundle_world

    try:
        b = load_bundle("toyworld", device="cpu", bundle_dir=a.bundle_dir)
    except UserError as e:
        ap.exit(2, f"toyworld_prior.py: {e}\n")
    if bundle_world(a.bundle_dir) != a.world:
        ap.exit(2, f"toyworld_prior.py: --generated: the bundle is world {bundle_world(a.bundle_dir)}, not {a.world}\n")
    return b


def generated(a, b, tr, te, cell_mean):
    from ldm_explore.backend.pipeline.generate import GenerationSettings, generate
    from ldm_explore.backend.toyworld.evaluate import (ViewMeasure, fresh_prompts, named_view, seen_from_above,
                                                       vae_reconstruct)
    from ldm_explore.backend.toyworld.scenes import VIEWS

    train_maps = b.estimators.depth(tr["rgb"])
    prior = cell_mean(train_maps)
    vm = ViewMeasure(train_maps, seen_from_above(range(TRAIN_SEED0, TRAIN_SEED0 + a.train), a.world))
    ps = fresh_prompts(a.world, a.generated, 600)
    runs = [r for i in range(0, len(ps), 20)
            for r in generate(b.pipe, ps[i:i + 20], GenerationSettings(steps=a.steps, guidance=a.guidance), record=False,
                              decode=False)]
    gen = np.stack([r.final for r in runs])

    def per_image(maps):
        return np.array([spearmanr(prior.ravel(), m.ravel().astype(np.float64))[0] for m in maps])

    def view(p):
        return named_view(p) or "no view named"

    views = [view(p) for p in te["prompt"]]
    sets = {"held-out renders": (b.estimators.depth(te["rgb"]), views),
            # the VAE's round trip of the same renders: what the decoder's softness alone does to the figure
            "their VAE reconstructions": (b.estimators.depth(vae_reconstruct(b.pipe.vae, te["rgb"])), views),
            f"generated, {len(ps)} fresh prompts, {a.steps} steps, guidance {a.guidance:g}":
                (b.estimators.depth(gen), [view(p.prompt) for p in ps])}
    for name, x in (("held-out renders", te["rgb"]), ("generated", gen)):  # the model's colour, beside the world's
        x = x.astype(np.float64)
        print(f"  {name}: mean RGB {x.reshape(-1, 3).mean(0).round(1)}, share of pixels with G > R + 20: "
              f"{(x[..., 1] > x[..., 0] + 20).mean():.2f}")
    latent_means(b, np.stack([r.latents[-1] for r in runs]), te["rgb"][:200])
    print("depth prior from the estimators' maps of the training renders, Spearman on the estimators' maps of each "
          "set; by the view the prompt names, with the share of images evaluate's view measure judges seen from above:")
    for name, (maps, views) in sets.items():
        rho, up, views = per_image(maps), vm.above(maps), np.array(views)
        by = ", ".join(f"{v} {np.nanmean(rho[views == v]):.3f}, above {up[views == v].mean():.2f} "
                       f"(n {(views == v).sum()})" for v in (*VIEWS, "no view named") if (views == v).any())
        print(f"  {name}: {np.nanmean(rho):.3f}; {by}")

def latent_means(b, final_latents, rgb):
    """The generated runs' final latents' channel means beside the encoded renders' (both times the VAE's scaling
    factor), and the generated images' mean colour once their channel means are moved to the renders': where the
    model's colour goes wrong."""
    import torch

    pipe, sf = b.pipe, b.pipe.vae.config.scaling_factor
    with torch.no_grad():
        gl = torch.from_numpy(final_latents).float()
        rl = pipe.vae.encode(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mean * sf
        moved = gl - gl.mean((0, 2, 3), keepdim=True) + rl.mean((0, 2, 3), keepdim=True)
        rgb_of = lambda z: ((pipe.vae.decode(z / sf).sample.clamp(-1, 1) + 1) * 127.5).mean((0, 2, 3)).numpy()
        print(f"  latent channel means: encoded renders {rl.mean((0, 2, 3)).numpy().round(2)}, generated "
              f"{gl.mean((0, 2, 3)).numpy().round(2)}; generated images' mean RGB "
              f"{rgb_of(gl).round(1)}, with the channel means moved to the renders' {rgb_of(moved).round(1)}")


if __name__ == "__main__":
    main()
