"""The renderer against analytic cases, and its determinism."""

import numpy as np
import torch
import pytest

from ldm_explore.backend.toyworld.scenes import (CLASSES, Obj, class_index, project, render, render_seed, sample_scene,
                                        simple_scene, vocabulary)


def sphere(x=0.0, z=4.0, r=1.0, color="red"):
    return Obj("sphere", color, "large", "centre", x, z, r, 2 * r)


def test_sphere_depth_at_centre_pixel():
    # camera at height r looks straight at the sphere's centre, distance D: the centre ray hits at D - r
    D, r = 4.0, 1.0
    sc = simple_scene([sphere(z=D, r=r)], cam=(0, r, 0), look=(0, r, D))
    out = render(sc, size=65, ss=1)  # odd size: the middle pixel's ray is the optical axis
    assert out["mask"][32, 32]
    assert out["depth"][32, 32] == pytest.approx(1 / (D - r), rel=1e-9)


def test_sphere_projected_mask_area():
    D, r, size, fov = 5.0, 1.0, 129, 60.0
    sc = simple_scene([sphere(z=D, r=r)], cam=(0, r, 0), look=(0, r, D), fov=fov)
    out = render(sc, size=size, ss=1)
    f = (size / 2) / np.tan(np.radians(fov) / 2)  # focal length in pixels
    R = f * np.tan(np.arcsin(r / D))  # silhouette of a sphere on the axis: a circle of this radius
    assert out["mask"].sum() == pytest.approx(np.pi * R ** 2, rel=0.02)


def test_face_turned_to_the_light_is_fully_lit():
    # a cube facing the camera, light coming from the camera: the front face's normal is the light direction
    cube = Obj("cube", "blue", "large", "centre", 0.0, 4.0, 0.8, 1.6, angle=0.0)
    sc = simple_scene([cube], light_dir=(0, 0, -1), ambient=0.3, cam=(0, 0.8, 0), look=(0, 0.8, 4))
    out = render(sc, size=65, ss=1)
    assert out["mask"][32, 32]
    assert out["shading"][32, 32] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(out["rgb"][32, 32], np.array([0.12, 0.24, 0.90]) * 1.0)
    assert np.allclose(out["albedo"][32, 32], [0.12, 0.24, 0.90])


def test_shadowed_point_gets_only_ambient():
    # light from the upper left at 45 degrees: the floor point (r, 0, z) lies in the sphere's shadow
    r, z, amb = 0.8, 4.0, 0.27
    sc = simple_scene([sphere(z=z, r=r)], light_dir=(-1, 1, 0), ambient=amb, cam=(0, 2.5, 0), look=(0, 0.5, z))
    out = render(sc, size=96, ss=1)
    row, col = project(sc, (r + 0.1, 0.0, z), 96)
    assert not out["mask"][row, col]
    assert out["shading"][row, col] == pytest.approx(amb, abs=1e-9)
    # an unshadowed floor point on the lit side: Lambert with n = up, cos = 1/sqrt(2)
    row2, col2 = project(sc, (-r - 0.8, 0.0, z), 96)
    assert out["shading"][row2, col2] == pytest.approx(amb + (1 - amb) / np.sqrt(2), abs=1e-9)
    # RGB = albedo x shading everywhere
    assert np.allclose(out["rgb"], np.clip(out["albedo"] * out["shading"][..., None], 0, 1))


def test_inverse_depth_is_larger_when_closer():
    sc = simple_scene([sphere(x=-1.2, z=3.0, r=0.5), sphere(x=1.2, z=6.0, r=0.5, color="green")],
                      cam=(0, 0.5, 0), look=(0, 0.5, 4))
    out = render(sc, size=64, ss=1)
    near = project(sc, (-1.2, 0.5, 3.0 - 0.5), 64)
    far = project(sc, (1.2, 0.5, 6.0 - 0.5), 64)
    assert out["depth"][near] > out["depth"][far] > 0


def test_deterministic_per_seed_and_labels_consistent():
    a_sc, a = render_seed(7)
    b_sc, b = render_seed(7)
    _, c = render_seed(8)
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert a_sc.prompt == b_sc.prompt
    assert not np.array_equal(a["rgb"], c["rgb"])
    assert a["rgb"].shape == (64, 64, 3) and a["depth"].shape == a["mask"].shape == a["shading"].shape == (64, 64)
    _, big = render_seed(7, size=32)
    assert big["rgb"].shape == (32, 32, 3)


def test_scene_sampling_and_grammar():
    seen_shapes, seen_colors, ns = set(), set(), set()
    for s in range(300):
        sc = sample_scene(s)
        ns.add(len(sc.objects))
        seen_shapes |= {o.shape for o in sc.objects}
        seen_colors |= {o.color for o in sc.objects}
        main = sc.objects[0]
        assert sc.prompt.startswith(f"a {main.size} {main.color} {main.shape}")
        assert sc.prompt.endswith(f"lit from the {sc.light}")
        assert all(main.r >= o.r for o in sc.objects)  # the one named first is the largest
        assert CLASSES[sc.main_class] == f"{main.color} {main.shape}"
        assert set(sc.prompt.replace(",", "").split()) <= set(vocabulary())
    assert ns == {1, 2, 3} and len(seen_shapes) == 4 and len(seen_colors) == 8
    assert len(CLASSES) == 32 and class_index("pink", "cone") == 31


def test_world2_layout_is_not_given_away():
    """World 2: every object is named with the third of the image it shows in (checked by projecting it), the
    camera's pitch spans nearly level to nearly straight down, floors and backdrops vary and are sometimes absent."""
    from ldm_explore.backend.toyworld.scenes import SLOTS, VIEWS

    pitches, floors, skies, views = [], set(), 0, set()
    for s in range(150):
        sc = sample_scene(s, world=2)
        assert sc.world == 2 and 1 <= len(sc.objects) <= 3
        for o in sc.objects:
            _, col = project(sc, (o.x, o.h / 2, o.z))
            assert SLOTS[col * 3 // 64] == o.slot
            assert f"a {o.label} {dict(left='on the left', centre='in the centre', right='on the right')[o.slot]}" in sc.prompt
        assert len({o.slot for o in sc.objects}) == len(sc.objects) and len({o.color for o in sc.objects}) == len(sc.objects)
        f = sc.look_at - sc.cam_pos
        pitches.append(np.degrees(np.arcsin(-f[1] / np.linalg.norm(f))))
        floors.add(sc.floor)
        skies += sc.back_z is None
        views.add(sc.view)
        assert set(sc.prompt.replace(",", "").split()) <= set(vocabulary())
    assert min(pitches) < 10 and max(pitches) > 80
    assert floors == {"checker", "plain", "none"} and 4 < skies < 40 and views == {"", *VIEWS}
    with pytest.raises(ValueError, match="no toyworld world 3"):
        sample_scene(0, world=3)


def test_world2_sky_and_missing_floor():
    for s in range(200):
        sc = sample_scene(s, world=2)
        if sc.back_z is None and sc.view == "":
            break
    out = render(sc, size=64, ss=1)
    sky = out["depth"] == 0  # sky: inverse depth 0, unshaded
    assert sky.any() and np.all(out["shading"][sky] == 1.0) and not out["mask"][sky].any()
    assert (out["depth"][~sky] > 0).all()
    for s in range(200):
        sc = sample_scene(s, world=2)
        if sc.floor == "none":
            break
    out = render(sc, size=64, ss=1)
    # no floor: nothing but objects and the wall; the wall's inverse depth is 1 / z-distance along the view axis
    assert (out["depth"] > 0).all() and out["mask"].any()
    # the wall is checkered (so its slant shows): at one height, its albedo takes two tones, wall_dark apart
    wall = ~out["mask"]
    row = max(range(64), key=lambda r: wall[r].sum())
    tones = out["albedo"][row][wall[row]].sum(-1)
    lo, hi = tones.min(), tones.max()
    assert lo == pytest.approx(sc.wall_dark * hi, rel=0.02) and ((tones < 0.99 * hi).mean() > 0.2)
    # world 1's wall stays plain
    assert sample_scene(0, world=1).wall_tile is None


def test_world_revision_names_the_training_data(tmp_path, capsys):
    """Renders of an older revision of a world are never trained on: the data file names the revision, and an
    older one left in the workdir is reported, not used."""
    from ldm_explore.backend.toyworld import train as T
    from ldm_explore.backend.toyworld.scenes import WORLD_REVISION

    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "train-w2-3.npz", rgb=np.zeros((3, 64, 64, 3), np.uint8))
    d = T.dataset(tmp_path, 3, procs=1, world=2)
    assert (tmp_path / "data" / f"train-w2r{WORLD_REVISION[2]}-3.npz").exists() and d["rgb"].any()
    assert "train-w2-3.npz in" in capsys.readouterr().out
    assert T._data_tag(d) != T._data_tag({"rgb": np.zeros((3, 64, 64, 3), np.uint8)})


def test_cached_latents_belong_to_one_encoder(tmp_path):
    """The UNet's cached latents are named after the renders and the VAE's encoder: a VAE stage trained further
    (another encoder) re-encodes instead of handing the UNet the old encoder's latents; the decoder stage, whose
    encoder is frozen, keeps the cache."""
    from ldm_explore.backend.toyworld import train as T
    from ldm_explore.backend.toyworld.models import make_vae

    d = {"rgb": np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)}
    torch.manual_seed(0)
    vae = make_vae()
    f = T.latents_file(tmp_path, vae, d)
    with torch.no_grad():
        vae.decoder.conv_out.weight.add_(1.0)
        vae.post_quant_conv.bias.add_(1.0)
    assert T.latents_file(tmp_path, vae, d) == f
    with torch.no_grad():
        vae.quant_conv.bias.add_(1.0)
    assert T.latents_file(tmp_path, vae, d) != f
    lat, _ = T.encode_latents(tmp_path, vae, d)
    assert T.latents_file(tmp_path, vae, d).exists() and not f.exists() and lat.shape == (3, 4, 16, 16)
