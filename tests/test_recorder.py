"""Recording is non-invasive, has the right shapes and step counts, and x0 matches independent maths."""

import numpy as np
import pytest
import torch

from ldm_explore.backend.pipeline.generate import GenerationSettings, generate, to_uint8
from ldm_explore.backend.pipeline.loading import load_pipeline
from ldm_explore.backend.pipeline.layers import self_attention_layers
from ldm_explore.backend.prompts import Prompt
from ldm_explore.backend.pipeline.recorder import Recorder, match_layers

PROMPTS = [Prompt(0, "a red cube left of a blue sphere", 11), Prompt(1, "a green cone", 12)]
ALL = ("*attn1.to_out.0",)


def stock(pipe, prompts, steps, guidance=7.5):
    gens = [torch.Generator("cpu").manual_seed(p.seed) for p in prompts]
    out = pipe([p.prompt for p in prompts], num_inference_steps=steps, guidance_scale=guidance, generator=gens,
               output_type="np")
    return to_uint8(out.images)


@pytest.mark.parametrize("which", ["tiny_model", "tiny_pndm"])
def test_bit_identical_with_and_without_recording(request, which):
    pipe = load_pipeline(request.getfixturevalue(which), device="cpu")
    settings = GenerationSettings(steps=6, layers=tuple(match_layers(pipe.unet, ALL)), half="both")
    ref = stock(pipe, PROMPTS, 6)
    runs = generate(pipe, PROMPTS, settings)
    got = np.stack([r.final for r in runs])
    assert got.dtype == ref.dtype == np.uint8
    assert np.array_equal(got, ref)
    assert ref.std() > 0  # a real image, not a constant
    # and one prompt alone gives the same image as in the batch
    alone = generate(pipe, PROMPTS[1:], GenerationSettings(steps=6))
    assert np.array_equal(alone[0].final, ref[1])
    # the last step's decoded x_t is the final image (up to the decode's batching)
    assert np.abs(runs[0].xt_images[-1].astype(int) - ref[0].astype(int)).max() <= 1


@pytest.mark.parametrize("which,steps,calls", [("tiny_model", 7, 7), ("tiny_pndm", 7, 8)])
def test_shapes_and_step_counts(request, which, steps, calls):
    pipe = load_pipeline(request.getfixturevalue(which), device="cpu")
    infos = self_attention_layers(pipe.unet)
    layers = tuple(i.path for i in infos)
    assert len(layers) == 7  # 2 encoder (1 each), 1 bottleneck, 4 decoder (layers_per_block + 1 each)
    r = generate(pipe, PROMPTS[:1], GenerationSettings(steps=steps, layers=layers))[0]
    assert r.meta["num_steps"] == calls and len(r.timesteps) == calls
    if which == "tiny_pndm":
        assert r.timesteps[1] == r.timesteps[2] and len(set(r.timesteps)) == steps  # PLMS warm-up repeats one timestep
    assert r.latents.shape == (calls, 4, 8, 8) and r.x0_latents.shape == (calls, 4, 8, 8)
    assert r.xt_images.shape == r.x0_images.shape == (calls, 16, 16, 3)
    for i in infos:  # the structural table predicts the recorded shapes
        assert r.activations[i.path].shape == (calls, i.height, i.width, i.channels), i.path
        assert r.activations[i.path].dtype == np.float16


def test_table1_names_follow_the_structure(tiny_model):
    pipe = load_pipeline(tiny_model, device="cpu")
    got = [(i.path.split(".transformer")[0], i.short, i.size) for i in self_attention_layers(pipe.unet)]
    assert got == [
        ("down_blocks.0.attentions.0", "Encoder 1, layer 1", "8x8x32"),
        ("down_blocks.1.attentions.0", "Encoder 2, layer 1", "4x4x64"),
        ("mid_block.attentions.0", "Bottleneck, layer 1", "4x4x64"),
        ("up_blocks.0.attentions.0", "Decoder 1, layer 1", "4x4x64"),
        ("up_blocks.0.attentions.1", "Decoder 1, layer 2", "4x4x64"),
        ("up_blocks.1.attentions.0", "Decoder 2, layer 1", "8x8x32"),
        ("up_blocks.1.attentions.1", "Decoder 2, layer 2", "8x8x32"),
    ][: len(got)]
    assert len(got) == 7


def test_halves_cond_is_the_second_half(tiny_model):
    pipe = load_pipeline(tiny_model, device="cpu")
    layer = match_layers(pipe.unet, ["mid_block.*attn1.to_out.0"])
    both = generate(pipe, PROMPTS[:1], GenerationSettings(steps=3, layers=tuple(layer), half="both"))[0]
    cond = generate(pipe, PROMPTS[:1], GenerationSettings(steps=3, layers=tuple(layer), half="cond"))[0]
    unc = generate(pipe, PROMPTS[:1], GenerationSettings(steps=3, layers=tuple(layer), half="uncond"))[0]
    a = both.activations[layer[0]]
    assert a.shape[1] == 2
    assert np.array_equal(a[:, 1], cond.activations[layer[0]])
    assert np.array_equal(a[:, 0], unc.activations[layer[0]])
    assert not np.array_equal(a[:, 0], a[:, 1])


def _abar_independent(T=1000):
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, T, dtype=np.float64) ** 2  # scaled_linear
    return np.cumprod(1 - betas)


@pytest.mark.parametrize("which", ["tiny_model", "tiny_pndm"])
def test_x0_against_an_independent_computation(request, which):
    """A hand-written guidance loop (UNet + scheduler.step, no pipeline) and numpy's alphas."""
    pipe = load_pipeline(request.getfixturevalue(which), device="cpu")
    p = PROMPTS[0]
    r = generate(pipe, [p], GenerationSettings(steps=5))[0]

    tok = pipe.tokenizer([p.prompt, ""], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        emb = pipe.text_encoder(tok.input_ids)[0]
    emb = torch.cat([emb[1:], emb[:1]])  # uncond first
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    sched.set_timesteps(5)
    x = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(p.seed)) * sched.init_noise_sigma
    abar = _abar_independent()
    for i, t in enumerate(sched.timesteps):
        with torch.no_grad():
            e = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample
        eu, ec = e.chunk(2)
        e = eu + 7.5 * (ec - eu)
        a = abar[int(t)]
        x0 = (x.double() - np.sqrt(1 - a) * e.double()) / np.sqrt(a)
        np.testing.assert_allclose(r.x0_latents[i], x0[0].float().numpy(), rtol=1e-4, atol=1e-4)
        out = sched.step(e, t, x)
        if hasattr(out, "pred_original_sample") and out.pred_original_sample is not None:  # DDIM's own x0
            np.testing.assert_allclose(r.x0_latents[i], out.pred_original_sample[0].numpy(), rtol=1e-4, atol=1e-4)
        x = out.prev_sample
        np.testing.assert_allclose(r.latents[i], x[0].numpy(), rtol=1e-4, atol=1e-5)


def test_x0_for_a_sigma_scheduler(tiny_model):
    """Euler scales the UNet input; x0 from that input equals Euler's own pred_original_sample."""
    from diffusers import EulerDiscreteScheduler

    pipe = load_pipeline(tiny_model, device="cpu", scheduler="euler")
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    seen = []
    orig = pipe.scheduler.step

    def spy(*a, **k):  # read-only wrapper: records Euler's own x0, returns its result untouched
        out = orig(*a, **k)
        seen.append((out[1] if isinstance(out, tuple) else out.pred_original_sample).clone())
        return out

    pipe.scheduler.step = spy
    with Recorder(pipe, [], guidance=True, record_activations=False) as rec:
        pipe("a cube", num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="latent",
             callback_on_step_end=rec.step_callback)
    assert len(rec.x0) == len(seen) == 4
    for mine, theirs in zip(rec.x0, seen):
        np.testing.assert_allclose(mine.numpy(), theirs.float().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_x0_for_v_prediction(tiny_model, name):
    """An SD-2.x-style v-predicting scheduler: x0 = sqrt(abar) x_t - sqrt(1 - abar) v, equal to the scheduler's own
    pred_original_sample (DDIM's closed form; Euler's sigma form on the scaled input)."""
    import diffusers

    pipe = load_pipeline(tiny_model, device="cpu")
    cls = {"ddim": diffusers.DDIMScheduler, "euler": diffusers.EulerDiscreteScheduler}[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    seen = []
    orig = pipe.scheduler.step

    def spy(*a, **k):
        out = orig(*a, **k)
        seen.append((out[1] if isinstance(out, tuple) else out.pred_original_sample).clone())
        return out

    pipe.scheduler.step = spy
    r = generate(pipe, [PROMPTS[0]], GenerationSettings(steps=4))[0]
    assert len(seen) == len(r.x0_latents) == 4
    for mine, theirs in zip(r.x0_latents, seen):
        np.testing.assert_allclose(mine, theirs[0].float().numpy(), rtol=1e-4, atol=1e-4)


def test_layers_in_forward_order_and_sizes_checked(tiny_model):
    from ldm_explore.backend.errors import UserError
    from ldm_explore.backend.pipeline.layers import default_layers, forward_order, resolve_layers

    pipe = load_pipeline(tiny_model, device="cpu")
    registered = match_layers(pipe.unet, ["*attn1.to_out.0"])  # diffusers registers up_blocks before mid_block
    assert registered.index("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0") > 2
    forward = list(resolve_layers(pipe.unet, ["self-attention"]))
    assert forward == list(default_layers(pipe.unet)) == [i.path for i in self_attention_layers(pipe.unet)]
    assert forward.index("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0") == 2
    assert forward_order(["up_blocks.0.resnets.0", "conv_in", "mid_block.resnets.0", "down_blocks.1.resnets.0"]) == \
        ["conv_in", "down_blocks.1.resnets.0", "mid_block.resnets.0", "up_blocks.0.resnets.0"]
    # a size the VAE cannot make is one line (this UNet's VAE downsamples by 2), not a diffusers traceback
    with pytest.raises(UserError, match=r"^--height 63: must be a positive multiple of 2"):
        generate(pipe, [PROMPTS[0]], GenerationSettings(steps=2, height=63))


def test_layers_and_signature_from_the_folder_alone(tiny_model):
    """The explorer opens stored runs before the pipeline is loaded: the layers read from the UNet's config and the
    signature read from the folder's files are what the loaded pipeline gives (SD v1.x and 2.x shapes too)."""
    from diffusers import UNet2DConditionModel

    from ldm_explore.backend.bundles import fixture as F
    from ldm_explore.backend.pipeline.layers import layers_from_config
    from ldm_explore.backend.pipeline.loading import load_pipeline, pipeline_spec
    from ldm_explore.backend.pipeline.runner import pipe_signature

    folder = tiny_model
    for sched in (None, "lms", "euler"):
        spec = pipeline_spec(folder, device="cpu", scheduler=sched)
        p = load_pipeline(folder, device="cpu", scheduler=sched)
        assert spec["signature"] == pipe_signature(p) and spec["model_id"] == p.model_id
        assert layers_from_config(spec["unet_config"]) == self_attention_layers(p.unet)
    for fam in ("sd14", "sd21"):
        cfg = {**F.FAMILIES[fam]["unet"], **F.SMALL["unet"]}
        u = UNet2DConditionModel(**cfg)
        assert layers_from_config(dict(u.config)) == self_attention_layers(u)
        full = layers_from_config({**u.config, **F.FAMILIES[fam]["unet"]})  # the real size: Table 1's 16 layers
        assert len(full) == 16 and full[-1].short == "Decoder 4, layer 3" and full[6].short == "Bottleneck, layer 1"
