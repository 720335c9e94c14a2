"""The toyworld renderer: procedural scenes with exact labels, and the grammar that describes them.

Ray casting in numpy, vectorised over pixels: spheres, cubes (turned about the vertical), cylinders and
cones standing on a textured floor before a backdrop wall, one directional light, hard shadows.

World: x to the right, y up, z away from the camera; the floor is y = 0, the backdrop the plane z = BACK_Z.
Per scene it returns RGB (= albedo x shading), relative inverse depth (1 / camera-space depth: larger is
closer, the MiDaS convention), the salient-object mask (objects vs. floor and backdrop), grayscale shading
(Lambert with hard shadow and ambient), albedo, and the class of the main object: the object named first
in the prompt, which is also the largest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "orange": (0.96, 0.50, 0.06),
    "yellow": (0.95, 0.86, 0.12),
    "green": (0.12, 0.68, 0.16),
    "cyan": (0.10, 0.78, 0.84),
    "blue": (0.12, 0.24, 0.90),
    "purple": (0.52, 0.14, 0.74),
    "pink": (0.96, 0.46, 0.70),
}
SHAPES = ("sphere", "cube", "cylinder", "cone")
SIZES = ("small", "large")
SLOTS = ("left", "centre", "right")
LIGHTS = ("left", "right", "front")
CLASSES = [f"{c} {s}" for c in COLORS for s in SHAPES]  # the classifier's label set: colour x shape
BACK_Z = 9.0
WORLDS = (1, 2)
# a world's renders change only with its revision (world 2's wall got its checker in revision 1): training data
# is kept per revision, so a workdir never trains on renders of an older look without saying so
WORLD_REVISION = {1: 0, 2: 1}
WORLD = 2  # the world the shipped bundle was trained on (its TRAINING.json says "world")
VIEWS = ("seen from above", "close up")  # the views world 2's grammar may name


def class_index(color: str, shape: str) -> int:
    return list(COLORS).index(color) * len(SHAPES) + SHAPES.index(shape)


@dataclass
class Obj:
    shape: str
    color: str
    size: str
    slot: str
    x: float
    z: float
    r: float  # radius (sphere, cylinder, cone base) or half-width (cube)
    h: float  # height (cylinder, cone); for sphere / cube derived from r
    angle: float = 0.0  # cube's turn about the vertical, radians

    @property
    def label(self) -> str:
        return f"{self.size} {self.color} {self.shape}"


@dataclass
class Scene:
    objects: list[Obj]
    light: str
    light_dir: np.ndarray
    ambient: float
    cam_pos: np.ndarray
    look_at: np.ndarray
    fov_deg: float
    floor_rgb: np.ndarray
    floor_rgb2: np.ndarray
    tile: float
    back_top: np.ndarray
    back_bottom: np.ndarray
    seed: int = 0
    prompt: str = field(default="")
    back_z: float | None = BACK_Z  # the backdrop wall's plane z = back_z; None: no wall, sky at infinity
    floor: str = "checker"  # "checker", "plain" or "none" (objects float in front of the wall)
    view: str = ""  # the view the prompt names ("seen from above", "close up") or ""
    world: int = 1
    wall_tile: float | None = None  # the wall's checker tile (world units); None: a plain wall (world 1)
    wall_dark: float = 1.0  # the wall checker's darker tone, as a share of the wall's colour

    @property
    def main(self) -> Obj:
        return self.objects[0]

    @property
    def main_class(self) -> int:
        return class_index(self.main.color, self.main.shape)


# --------------------------------------------------------------------------------------------------
# sampling and grammar

def sample_scene(seed: int, world: int | None = None) -> Scene:
    """A random scene of ``world`` (default: the shipped bundle's), deterministic from ``seed``."""
    world = WORLD if world is None else world
    if world not in WORLDS:
        raise ValueError(f"no toyworld world {world} (worlds: {', '.join(map(str, WORLDS))})")
    return _sample_v2(seed) if world == 2 else _sample_v1(seed)


def _sample_v1(seed: int) -> Scene:
    """World 1: a floor receding to a backdrop, seen from nearly the same camera."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3], p=[0.34, 0.38, 0.28]))
    slots = list(rng.permutation(SLOTS)[:n])
    colors = list(rng.permutation(list(COLORS))[:n])
    shapes = [SHAPES[i] for i in rng.integers(0, len(SHAPES), n)]
    objs = []
    main_z = rng.uniform(3.6, 4.6)
    for i in range(n):
        size = ("large" if rng.random() < 0.6 else "small") if n == 1 else ("large" if i == 0 else "small")
        r = rng.uniform(0.72, 0.86) if size == "large" else rng.uniform(0.42, 0.54)
        x = {"left": -1.55, "centre": 0.0, "right": 1.55}[slots[i]] + rng.uniform(-0.15, 0.15)
        z = main_z if i == 0 else main_z + rng.uniform(-0.2, 0.9)
        h = r * rng.uniform(1.7, 2.2) if shapes[i] in ("cylinder", "cone") else 2 * r
        if shapes[i] == "cone":
            h = r * rng.uniform(2.0, 2.5)
        angle = rng.uniform(0.2, 1.37) if shapes[i] == "cube" else 0.0
        objs.append(Obj(shapes[i], colors[i], size, slots[i], x, z, r, h, angle))
    light = str(rng.choice(LIGHTS))
    elev = rng.uniform(0.7, 1.1)
    d = {"left": (-1.0, elev, -0.35), "right": (1.0, elev, -0.35), "front": (rng.uniform(-0.15, 0.15), elev, -1.0)}[light]
    light_dir = np.array(d) / np.linalg.norm(d)
    cam = np.array([rng.uniform(-0.25, 0.25), rng.uniform(1.5, 2.4), rng.uniform(-0.9, 0.3)])
    look = np.array([0.0, 0.55, main_z + 0.2])
    base = rng.uniform(0.45, 0.75, 3) * np.array([1.0, 0.95, 0.85])
    base2 = base * rng.uniform(0.82, 0.9)
    top = rng.uniform(0.55, 0.85, 3)
    top = 0.7 * top + 0.3 * top.mean()  # muted backdrop, so the objects stay the salient part
    bottom = top * rng.uniform(0.75, 0.9)
    sc = Scene(objs, light, light_dir, float(rng.uniform(0.22, 0.32)), cam, look, float(rng.uniform(55, 62)),
               base, base2, float(rng.uniform(0.4, 0.7)), top, bottom, seed)
    sc.prompt = describe(sc)
    return sc


def _basis(cam: np.ndarray, look: np.ndarray):
    fwd = look - cam
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right)
    return fwd, right, np.cross(fwd, right)


def _sample_v2(seed: int) -> Scene:
    """World 2: the layout is not given away. The camera varies widely (pitch from nearly level to nearly
    straight down, yaw, distance, field of view), objects stand at clearly different depths, the floor is
    checkered, plain or absent, the backdrop wall is near, far or absent (sky). Positions in the prompt are
    where the objects appear in the image (left, centre, right third of its width)."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 3], p=[0.34, 0.38, 0.28]))
    colors = list(rng.permutation(list(COLORS))[:n])
    shapes = [SHAPES[i] for i in rng.integers(0, len(SHAPES), n)]
    sizes = [("large" if rng.random() < 0.6 else "small") if n == 1 else ("large" if i == 0 else "small")
             for i in range(n)]
    for _attempt in range(50):  # a camera and a placement where at least the main object shows whole
        view_kind = rng.choice(["level", "above", "close"], p=[0.4, 0.45, 0.15])
        if view_kind == "above":
            pitch = np.radians(rng.uniform(65, 89))
            dist = rng.uniform(4.5, 9.0)
        elif view_kind == "close":
            pitch = np.radians(rng.uniform(5, 40))
            dist = rng.uniform(3.0, 4.0)
        else:
            pitch = np.radians(rng.uniform(4, 50))
            dist = rng.uniform(3.8, 10.0)
        yaw = rng.uniform(-0.8, 0.8)
        fov = float(rng.uniform(36, 70))
        h = np.array([np.sin(yaw), 0.0, np.cos(yaw)])  # the camera's heading on the floor
        rt = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
        focus = np.array([rng.uniform(-1, 1), 0.45, rng.uniform(3.5, 5.5)])
        cam = focus - dist * np.cos(pitch) * h + np.array([0.0, dist * np.sin(pitch), 0.0])
        half_w = dist * np.tan(np.radians(fov) / 2)
        basis = _basis(cam, focus)
        slots = list(rng.permutation(SLOTS)[:n])
        spread = max(1.0, 0.3 * dist)
        objs: list[Obj] = []
        boxes: list[tuple] = []
        for i in range(n):
            r = rng.uniform(0.72, 0.86) if sizes[i] == "large" else rng.uniform(0.42, 0.54)
            hh = r * rng.uniform(1.7, 2.2) if shapes[i] in ("cylinder", "cone") else 2 * r
            if shapes[i] == "cone":
                hh = r * rng.uniform(2.0, 2.5)
            angle = rng.uniform(0.2, 1.37) if shapes[i] == "cube" else 0.0
            for _ in range(60):  # place it until it shows whole in its third of the image, clear of the others
                lat = {"left": -1, "centre": 0, "right": 1}[slots[i]] * rng.uniform(0.45, 0.75) * half_w
                dep = 0.0 if i == 0 else rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * spread
                p = focus * np.array([1, 0, 1]) + (lat + rng.uniform(-0.1, 0.1) * half_w) * rt + (dep + rng.uniform(-0.3, 0.3)) * h
                if (np.array([p[0], hh / 2, p[2]]) - cam) @ basis[0] < r + 1.0:
                    continue  # in front of the camera, not at its feet
                box = _box(cam, basis, fov, p, r, hh)
                col = _project(cam, basis, fov, (p[0], hh / 2, p[2]), 64)[1]
                third = SLOTS[min(2, max(0, col * 3 // 64))]
                inside = box[0] >= 1 and box[1] >= 1 and box[2] <= 63 and box[3] <= 63
                if third == slots[i] and inside and all(_overlap(box, b) < 0.2 for b in boxes):
                    break
            else:  # no place for it in this view: a later object is left out (the prompt names what is drawn)
                if i == 0:
                    break
                continue
            boxes.append(box)
            objs.append(Obj(shapes[i], colors[i], sizes[i], slots[i], float(p[0]), float(p[2]), r, hh, angle))
        if objs:
            break
    back_far = max(o.z for o in objs) + 1.0
    floor = str(rng.choice(["checker", "plain", "none"], p=[0.4, 0.25, 0.35]))
    back_z = None if (floor != "none" and rng.random() < 0.15) else float(back_far + rng.uniform(0.3, 5.0))
    light = str(rng.choice(LIGHTS))
    elev = rng.uniform(0.7, 1.1)
    d = {"left": (-1.0, elev, -0.35), "right": (1.0, elev, -0.35), "front": (rng.uniform(-0.15, 0.15), elev, -1.0)}[light]
    light_dir = np.array(d) / np.linalg.norm(d)
    base = rng.uniform(0.4, 0.8, 3) * np.array([1.0, 0.95, 0.85])
    base2 = base * rng.uniform(0.78, 0.9)
    if back_z is None:  # sky: pale, bluish
        top = np.array([0.62, 0.74, 0.88]) * rng.uniform(0.85, 1.05)
        bottom = np.array([0.85, 0.86, 0.84]) * rng.uniform(0.85, 1.0)
    else:
        top = rng.uniform(0.5, 0.85, 3)
        top = 0.7 * top + 0.3 * top.mean()
        bottom = top * rng.uniform(0.75, 0.9)
    named = ""
    if view_kind == "above" and rng.random() < 0.6:
        named = "seen from above"
    elif view_kind == "close" and rng.random() < 0.6:
        named = "close up"
    # the wall is checkered, so that its slant (and so its depth) shows in the image: a plain wall seen at an angle
    # looks the same as one facing the camera, and with no floor it filled most of the image with a depth order
    # no estimator could read (depth Spearman 0.87 on floorless scenes, 0.95 on checkered floors). Its own
    # generator, so that everything above is what it was before the wall had a texture
    wr = np.random.default_rng([seed, 2])
    wall_tile, wall_dark = float(wr.uniform(0.9, 1.8)), float(wr.uniform(0.8, 0.9))
    sc = Scene(objs, light, light_dir, float(rng.uniform(0.22, 0.32)), cam, focus, fov, base, base2,
               float(rng.uniform(0.35, 0.9)), top, bottom, seed, back_z=back_z, floor=floor, view=named, world=2,
               wall_tile=wall_tile, wall_dark=wall_dark)
    sc.prompt = describe(sc)
    return sc


def _box(cam, basis, fov, p, r, hh) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel box (64 x 64) of an object's bounding box standing at floor point p."""
    pts = [(p[0] + dx, y, p[2] + dz) for dx in (-r, r) for dz in (-r, r) for y in (0.0, hh)]
    rc = np.array([_project(cam, basis, fov, q, 64) for q in pts])
    return int(rc[:, 0].min()), int(rc[:, 1].min()), int(rc[:, 0].max()), int(rc[:, 1].max())


def _overlap(a, b) -> float:
    """Intersection of two boxes as a share of the smaller one."""
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    if h <= 0 or w <= 0:
        return 0.0
    return h * w / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def describe(sc: Scene) -> str:
    """What the renderer drew, as the grammar says it: the main (largest) object first."""
    objs = sc.objects
    where = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
    if sc.world == 2:  # every object with its place in the image; the view where one is named
        parts = [f"a {o.label} {where[o.slot]}" for o in objs]
        head = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{head}, {sc.view + ', ' if sc.view else ''}lit from the {sc.light}"
    if len(objs) == 1:
        head = f"a {objs[0].label} {where[objs[0].slot]}"
    elif len(objs) == 2:
        rel = "left of" if objs[0].x < objs[1].x else "right of"
        head = f"a {objs[0].label} {rel} a {objs[1].label}"
    else:
        head = f"a {objs[0].label} {where[objs[0].slot]}, a {objs[1].label} {where[objs[1].slot]} and a {objs[2].label} {where[objs[2].slot]}"
    return f"{head}, lit from the {sc.light}"


GRAMMAR_WORDS = tuple("a on the in left right centre of and lit from front".split())  # the prompts' other words


def view_words() -> set[str]:
    """The words only a named view brings ("seen", "above", "close", "up"): world 2's additions to the vocabulary."""
    return {w for v in VIEWS for w in v.split()} - set(GRAMMAR_WORDS)


def vocabulary() -> list[str]:
    words = set(GRAMMAR_WORDS) | view_words()
    words |= set(COLORS) | set(SHAPES) | set(SIZES)
    return sorted(words)


# --------------------------------------------------------------------------------------------------
# ray casting

def _camera_rays(sc: Scene, size: int):
    fwd, right, up = _basis(sc.cam_pos, sc.look_at)
    half = np.tan(np.radians(sc.fov_deg) / 2)
    c = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(c * half, -c * half)  # row 0 is the top of the image
    d = fwd[None, None] + u[..., None] * right[None, None] + v[..., None] * up[None, None]
    d = d.reshape(-1, 3)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(sc.cam_pos, d.shape), d, fwd


def _solve_quadratic(a, b, c, lo):
    """Smallest root > lo of a t^2 + b t + c = 0 per ray (inf where none)."""
    disc = b * b - 4 * a * c
    ok = disc >= 0
    sq = np.sqrt(np.where(ok, disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-b - sq) / (2 * a)
        t2 = (-b + sq) / (2 * a)
    t1 = np.where(ok & (t1 > lo), t1, np.inf)
    t2 = np.where(ok & (t2 > lo), t2, np.inf)
    return t1, t2


def _hit(obj: Obj, o: np.ndarray, d: np.ndarray, lo: float = 1e-4):
    """(t, normal) of the first hit of rays o + t d with ``obj`` (t = inf where missed)."""
    n = o.shape[0]
    normal = np.zeros((n, 3))
    if obj.shape == "sphere":
        c = np.array([obj.x, obj.r, obj.z])
        oc = o - c
        b = 2 * np.einsum("ij,ij->i", oc, d)
        cc = np.einsum("ij,ij->i", oc, oc) - obj.r ** 2
        t, _ = _solve_quadratic(np.ones(n), b, cc, lo)
        p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
        normal = (p - c) / obj.r
        return t, normal
    if obj.shape == "cube":
        ca, sa = np.cos(obj.angle), np.sin(obj.angle)
        rot = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])  # local -> world
        c = np.array([obj.x, obj.r, obj.z])
        ol = (o - c) @ rot  # world -> local (rot is orthonormal)
        dl = d @ rot
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t0 = (-obj.r - ol) * inv
        t1 = (obj.r - ol) * inv
        tmin = np.minimum(t0, t1)
        tmax = np.maximum(t0, t1)
        tn = tmin.max(1)
        tf = tmax.min(1)
        axis = tmin.argmax(1)
        hit = (tn <= tf) & (tf > lo)
        t = np.where(hit, np.where(tn > lo, tn, tf), np.inf)
        nl = np.zeros((n, 3))
        nl[np.arange(n), axis] = -np.sign(dl[np.arange(n), axis])
        return t, nl @ rot.T
    if obj.shape == "cylinder":
        ox, oz = o[:, 0] - obj.x, o[:, 2] - obj.z
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = 2 * (ox * d[:, 0] + oz * d[:, 2])
        cc = ox ** 2 + oz ** 2 - obj.r ** 2
        t1, t2 = _solve_quadratic(np.where(a < 1e-12, 1e-12, a), b, cc, lo)
        y1 = o[:, 1] + t1 * d[:, 1]
        y2 = o[:, 1] + t2 * d[:, 1]
        side = np.where((y1 >= 0) & (y1 <= obj.h), t1, np.where((y2 >= 0) & (y2 <= obj.h), t2, np.inf))
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (obj.h - o[:, 1]) / d[:, 1]
        px, pz = ox + tc * d[:, 0], oz + tc * d[:, 2]
        cap = np.where((tc > lo) & (px ** 2 + pz ** 2 <= obj.r ** 2), tc, np.inf)
        t = np.minimum(side, cap)
        p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
        radial = np.stack([p[:, 0] - obj.x, np.zeros(n), p[:, 2] - obj.z], 1) / obj.r
        normal = np.where((cap <= side)[:, None], np.array([0.0, 1.0, 0.0]), radial)
        return t, normal
    if obj.shape == "cone":
        k = (obj.r / obj.h) ** 2
        ox, oy, oz = o[:, 0] - obj.x, o[:, 1] - obj.h, o[:, 2] - obj.z  # apex-relative
        a = d[:, 0] ** 2 + d[:, 2] ** 2 - k * d[:, 1] ** 2
        b = 2 * (ox * d[:, 0] + oz * d[:, 2] - k * oy * d[:, 1])
        cc = ox ** 2 + oz ** 2 - k * oy ** 2
        t1, t2 = _solve_quadratic(np.where(np.abs(a) < 1e-12, 1e-12, a), b, cc, lo)
        y1 = oy + t1 * d[:, 1]
        y2 = oy + t2 * d[:, 1]
        ok1 = (y1 <= 0) & (y1 >= -obj.h)
        ok2 = (y2 <= 0) & (y2 >= -obj.h)
        t = np.where(ok1, t1, np.where(ok2, t2, np.inf))
        p = np.stack([ox, oy, oz], 1) + np.where(np.isfinite(t), t, 0)[:, None] * d
        normal = np.stack([p[:, 0], -k * p[:, 1], p[:, 2]], 1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        return t, normal
    raise ValueError(obj.shape)


def render(sc: Scene, size: int = 64, ss: int = 2) -> dict[str, np.ndarray]:
    """Render ``sc`` at ``size`` x ``size`` (``ss`` x ``ss`` supersampling). Returns float arrays:
    rgb (H,W,3) in [0,1], depth (H,W) inverse depth, mask (H,W) bool, shading (H,W), albedo (H,W,3)."""
    S = size * ss
    o, d, fwd = _camera_rays(sc, S)
    n = d.shape[0]
    best_t = np.full(n, np.inf)
    best_n = np.zeros((n, 3))
    albedo = np.zeros((n, 3))
    is_obj = np.zeros(n, bool)
    for obj in sc.objects:
        t, nrm = _hit(obj, o, d)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_n[closer] = nrm[closer]
        albedo[closer] = COLORS[obj.color]
        is_obj |= closer
    # floor (checkered, plain, or none)
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = np.where(d[:, 1] < -1e-9, -o[:, 1] / d[:, 1], np.inf)
    if sc.floor == "none":
        tf = np.full(n, np.inf)
    floor = tf < best_t
    pf = o + np.where(np.isfinite(tf), tf, 0)[:, None] * d
    checker = ((np.floor(pf[:, 0] / sc.tile) + np.floor(pf[:, 2] / sc.tile)) % 2).astype(bool)
    if sc.floor == "plain":
        checker[:] = True
    best_t = np.where(floor, tf, best_t)
    best_n[floor] = (0.0, 1.0, 0.0)
    albedo[floor] = np.where(checker[floor, None], sc.floor_rgb, sc.floor_rgb2)
    is_obj &= ~floor
    # backdrop wall at z = back_z (everything else); without one, sky at infinity (inverse depth 0, unshaded)
    with np.errstate(divide="ignore", invalid="ignore"):
        if sc.back_z is None:
            tb = np.full(n, np.inf)
        else:
            tb = np.where(d[:, 2] > 1e-9, (sc.back_z - o[:, 2]) / d[:, 2], 1e3)
    wall = ~np.isfinite(best_t) | (tb < best_t)
    sky = wall & ~np.isfinite(tb)
    best_t = np.where(wall, tb, best_t)
    best_n[wall] = (0.0, 0.0, -1.0)
    if sc.back_z is None:
        yb = np.clip(d[:, 1] * 2.5, 0, 1)[:, None]  # sky: by the ray's elevation
    else:
        yb = np.clip((o[:, 1] + np.where(np.isfinite(tb), tb, 0) * d[:, 1]) / 6.0, 0, 1)[:, None]
    albedo[wall] = (sc.back_bottom * (1 - yb) + sc.back_top * yb)[wall]
    if sc.back_z is not None and sc.wall_tile is not None:
        pw = o + np.where(np.isfinite(tb), tb, 0)[:, None] * d
        dark = wall & ((np.floor(pw[:, 0] / sc.wall_tile) + np.floor(pw[:, 1] / sc.wall_tile)) % 2).astype(bool)
        albedo[dark] *= sc.wall_dark
    is_obj &= ~wall
    # shading: Lambert with a hard shadow and ambient light
    p = o + np.where(sky, 0.0, best_t)[:, None] * d
    lam = np.clip(best_n @ sc.light_dir, 0, None)
    po = p + best_n * 1e-3
    lit = np.ones(n, bool)
    ld = np.broadcast_to(sc.light_dir, po.shape)
    for obj in sc.objects:
        ts, _ = _hit(obj, po, ld, lo=1e-3)
        lit &= ~np.isfinite(ts)
    shading = np.where(sky, 1.0, sc.ambient + (1 - sc.ambient) * lam * lit)
    rgb = albedo * shading[:, None]
    depth = np.where(sky, 0.0, 1.0 / np.where(sky, 1.0, best_t * (d @ fwd)))

    def down(a):
        a = a.reshape(size, ss, size, ss, *a.shape[2:])
        return a.mean(axis=(1, 3))

    return {
        "rgb": np.clip(down(rgb.reshape(S, S, 3)), 0, 1),
        "depth": down(depth.reshape(S, S)),
        "mask": down(is_obj.reshape(S, S).astype(float)) >= 0.5,
        "shading": down(shading.reshape(S, S)),
        "albedo": down(albedo.reshape(S, S, 3)),
    }


def render_seed(seed: int, size: int = 64, ss: int = 2, world: int | None = None) -> tuple[Scene, dict[str, np.ndarray]]:
    sc = sample_scene(seed, world)
    return sc, render(sc, size, ss)


def project(sc: Scene, point, size: int = 64) -> tuple[int, int]:
    """(row, col) of the pixel that sees world ``point`` (inverse of the camera rays)."""
    return _project(sc.cam_pos, _basis(sc.cam_pos, sc.look_at), sc.fov_deg, point, size)


def _project(cam, basis, fov_deg, point, size: int) -> tuple[int, int]:
    """:func:`project` for a camera at ``cam`` with ``basis`` = :func:`_basis` (fwd, right, up), computed once."""
    fwd, right, up = basis
    v = np.asarray(point, float) - cam
    z = v @ fwd
    half = np.tan(np.radians(fov_deg) / 2)
    u, w = (v @ right) / z / half, (v @ up) / z / half
    col = int(np.floor((u + 1) / 2 * size))
    row = int(np.floor((1 - w) / 2 * size))
    return row, col


def simple_scene(objects: list[Obj], light_dir=(0.0, 0.0, -1.0), ambient: float = 0.25,
                 cam=(0.0, 1.0, 0.0), look=(0.0, 1.0, 4.0), fov: float = 60.0, light: str = "front") -> Scene:
    """A hand-built scene (uniform floor and backdrop), for tests and figures."""
    ld = np.asarray(light_dir, float)
    sc = Scene(objects, light, ld / np.linalg.norm(ld), ambient, np.asarray(cam, float), np.asarray(look, float),
               fov, np.array([0.5, 0.5, 0.5]), np.array([0.5, 0.5, 0.5]), 1.0, np.array([0.7, 0.7, 0.7]),
               np.array([0.7, 0.7, 0.7]))
    sc.prompt = describe(sc)
    return sc
