"""The shipped toyworld bundle: loads offline, is deterministic, its estimators and classifier work,
and the evaluate command runs."""

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm_explore.backend.bundles import load_bundle
from ldm_explore.backend.pipeline.generate import GenerationSettings, generate, to_uint8
from ldm_explore.backend.pipeline.layers import self_attention_layers
from ldm_explore.backend.probing.metrics import dice, pearson, spearman
from ldm_explore.backend.prompts import PromptSet
from ldm_explore.backend.toyworld.scenes import CLASSES, WORLD, vocabulary
from ldm_explore.backend.bundles.toyworld import unknown_words
from ldm_explore.backend.toyworld.evaluate import EVAL_SEED0, main_class_of
from ldm_explore.backend.toyworld.train import TRAIN_SEED0, render_many


@pytest.fixture(scope="module")
def bundle():
    return load_bundle("toyworld", device="cpu")


@pytest.fixture(scope="module")
def renders():
    return render_many(range(EVAL_SEED0, EVAL_SEED0 + 40), procs=1)


def test_bundle_is_typed_and_complete(bundle):
    import dataclasses

    from ldm_explore.backend.bundles.base import Bundle, Classifier, Estimators

    assert isinstance(bundle, Bundle)
    assert isinstance(bundle.estimators, Estimators) and isinstance(bundle.classifier, Classifier)
    assert bundle.classifier.classes == CLASSES  # read from the classifier file's metadata
    assert bundle.probes is not None and bundle.probes.name == "probes.safetensors"
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.pipe = None  # built complete: nothing is swapped in afterwards


def test_prompt_file(bundle):
    ps = PromptSet.read(bundle.prompts)
    assert len(ps) >= 600 and ps.splits() == {"train": 480, "val": 120, "test": 200}
    assert all(main_class_of(p.prompt) is not None for p in ps)


def test_tokenizer_holds_the_grammar(bundle):
    tok = bundle.pipe.tokenizer
    assert tok.eos_token_id != 2 and tok.eos_token_id == len(tok) - 1
    # every grammar word is in the vocabulary and round-trips; BPE merge ranks split a few of them into
    # several tokens (e.g. "orange"), which is how the shipped text encoder was trained
    single = 0
    for w in vocabulary():
        ids = tok(w, add_special_tokens=False).input_ids
        assert tok.decode(ids).strip() == w
        single += len(ids) == 1
    assert single >= len(vocabulary()) // 2
    assert unknown_words(tok, "a large red sphere on the left") == []
    assert unknown_words(tok, "a shiny red teapot, lit from the left") == ["shiny", "teapot"]


def test_layer_names_have_the_shape_of_sd(bundle):
    infos = self_attention_layers(bundle.pipe.unet)
    assert [i.path for i in infos] == list(bundle.layers)
    assert "up_blocks.2.attentions.0.transformer_blocks.0.attn1.to_out.0" in bundle.layers
    assert infos[0].height == infos[0].width == 16


def test_generation_is_offline_and_deterministic(bundle):
    p = PromptSet.read(bundle.prompts).select("test", 2)
    s = GenerationSettings(steps=15, guidance=7.5)
    a = generate(bundle.pipe, list(p), s, record=False, decode=False)
    b = generate(bundle.pipe, list(p), s, record=False, decode=False)
    assert np.array_equal(a[0].final, b[0].final) and np.array_equal(a[1].final, b[1].final)
    assert not np.array_equal(a[0].final, a[1].final)
    ref = bundle.pipe([q.prompt for q in p], num_inference_steps=15, guidance_scale=7.5, output_type="np",
                      generator=[torch.Generator().manual_seed(q.seed) for q in p]).images
    assert np.array_equal(to_uint8(ref), np.stack([r.final for r in a]))  # the stock pipeline, same batch
    assert a[0].final.shape == (64, 64, 3) and a[0].final.std() > 10


def test_estimators_on_fixed_renders(bundle, renders):
    est = bundle.estimators.all(renders["rgb"])
    assert est["mask"].shape == renders["mask"].shape
    assert np.mean([dice(p > 0.5, m) for p, m in zip(est["mask"], renders["mask"])]) > 0.9
    assert np.mean([spearman(p, t) for p, t in zip(est["depth"], renders["depth"])]) > 0.9
    assert np.mean([pearson(p, t) for p, t in zip(est["shading"], renders["shading"])]) > 0.85
    # the same interface as the real ones: one image in, one map out, at the image's size
    one = bundle.estimators.depth(renders["rgb"][0])
    assert one.shape == (1, 64, 64)


def test_classifier_on_fixed_renders(bundle, renders):
    p = bundle.classifier(renders["rgb"])
    assert p.shape == (40, len(CLASSES)) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.mean(p.argmax(1) == renders["cls"]) >= 0.85
    top = bundle.classifier.top_k(renders["rgb"][:1], 5)[0]
    assert len(top) == 5 and top[0][1] >= top[-1][1] and top[0][0] in CLASSES


def test_fresh_prompts_are_one_fixed_sequence():
    """``evaluate --first-prompt N`` takes prompts N.. of one fixed sequence: prompt k is the same prompt and seed
    however many are drawn, so a last evaluation can use prompts no earlier one saw."""
    from ldm_explore.backend.toyworld.evaluate import fresh_prompts

    a, b = fresh_prompts(2, 6), fresh_prompts(2, 3, first=3)
    assert [(p.index, p.prompt, p.seed) for p in a[3:]] == [(p.index, p.prompt, p.seed) for p in b]
    assert len({p.seed for p in a}) == 6 and len({p.prompt for p in a}) > 1 and [p.index for p in b] == [3, 4, 5]


def test_evaluate_command_on_a_small_sample(capsys):
    """The command's main() in this process (the console entry point is exercised by the other CLI tests)."""
    from ldm_explore.backend.cli import main

    # on the shipped bundle (world 2): the world-2 figures, depth by floor among them
    assert main(["toyworld", "evaluate", "--json", "--n-renders", "30", "--n-prompts", "4"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["world"] == 2 and sum(x["n"] for x in res["depth_spearman_by_floor"].values()) == 30
    for k in ("vae_psnr_db", "mask_dice", "depth_spearman", "shading_pearson", "classifier_top1",
              "classifier_top5", "vae_classifier_top1", "gen_class_match", "gen_position_match", "gen_count_match",
              "render_position_match", "render_count_match", "gen_mask_ok", "gen_seconds_per_image",
              "render_view_above_match", "render_unnamed_above_share", "world_unnamed_above_share", "vae_depth_spearman",
              "gen_view_match", "gen_unnamed_above_share"):
        assert k in res, k
    assert res["render_count_match"] >= 0.9
    assert 15 < res["vae_psnr_db"] < 60 and 0 <= res["gen_class_match"] <= 1
    assert res["classifier_top5"] >= res["classifier_top1"] > 0.5
    assert res["n_renders"] == 30 and res["n_prompts"] == 4
    # every figure with its 95% interval: Wilson for rates (against scipy's), bootstrap over images for means
    from scipy.stats import binomtest

    ci = res["ci95"]
    assert {"mask_dice", "depth_spearman", "shading_pearson", "classifier_top1", "vae_psnr_db",
            "vae_classifier_top1", "vae_depth_spearman", "gen_class_match", "gen_count_match"} <= set(ci)
    assert res["vae_depth_spearman"] < res["depth_spearman"]  # the decoder's softness costs the estimators
    for k, (lo, hi) in ci.items():
        assert lo <= res[k] <= hi, k
    want = binomtest(round(res["gen_class_match"] * 4), 4).proportion_ci(0.95, method="wilson")
    assert ci["gen_class_match"] == pytest.approx([want.low, want.high], abs=1e-9)
    assert ci["vae_psnr_db"][1] - ci["vae_psnr_db"][0] > 0  # 30 images vary


@pytest.mark.slow
def test_train_every_stage_resume_and_export(tmp_path, capsys, fork_cli):
    """``toyworld train`` end to end on a few scenes and steps: every stage logs and checkpoints, the export is
    a bundle the loader opens and generates with, and a second invocation resumes where the first stopped."""
    w, out = tmp_path / "work", tmp_path / "bundle"
    from ldm_explore.backend.cli import main

    # in this process (the console script itself runs below, for the resume): every stage, then the export
    assert main(["toyworld", "train", "--workdir", str(w), "--out", str(out), "--n-train", "24", "--procs", "1",
                 "--device", "cpu", "--steps", "vae=2", "--steps", "estimators=2", "--steps", "classifier=2",
                 "--steps", "unet=2", "--steps", "decoder=2", "--batch", "2", "--batch", "vae=1"]) == 0
    r = capsys.readouterr()
    for stage in ("vae", "estimators", "classifier", "unet", "decoder"):
        log = [json.loads(line) for line in (w / stage / "log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == 2 and all(np.isfinite(v) for k, v in log[-1].items() if k != "step")
        assert (w / stage / "ckpt.pt").exists()
    assert "export" in r.out + r.err and "total" in r.out + r.err
    assert "vae: batch 1" in r.out + r.err and "unet: batch 2" in r.out + r.err  # --batch: N for all, then STAGE=N
    assert "unet: latents centred" in r.out + r.err  # a fresh UNet trains on centred latents
    # the estimators train on renders and (30% of each batch) the VAE's reconstructions, the labels the renders'
    assert "estimators: 30% of each batch VAE reconstructions (decoder at step" in r.out + r.err
    # the classifier trains after the decoder, on renders and (half of each batch) the decoder's reconstructions
    assert "classifier: 50% of each batch VAE reconstructions (decoder at step 2)" in r.out + r.err
    assert "acc_rec" in json.loads((w / "classifier" / "log.jsonl").read_text().splitlines()[-1])
    b = load_bundle("toyworld", device="cpu", bundle_dir=out)
    p = PromptSet.read(b.prompts).select("test", 1)[0]
    img = generate(b.pipe, [p], GenerationSettings(steps=3, guidance=7.5), record=False, decode=False)[0].final
    assert img.shape == (64, 64, 3)
    # the exported VAE is the VAE stage's encoder with the decoder stage's decoder (the latents stay valid)
    vae_ck = torch.load(w / "vae" / "ckpt.pt", weights_only=False)["modules"]["vae"]
    dec_ck = torch.load(w / "decoder" / "ckpt.pt", weights_only=False)["modules"]["decoder"]
    sd = b.pipe.vae.state_dict()
    assert torch.equal(sd["encoder.conv_in.weight"], vae_ck["encoder.conv_in.weight"])
    assert torch.equal(sd["decoder.conv_out.weight"], dec_ck["decoder.conv_out.weight"])
    assert not torch.equal(sd["decoder.conv_out.weight"], vae_ck["decoder.conv_out.weight"])
    rec = json.loads((out / "TRAINING.json").read_text())
    assert rec["decoder_steps"] == 2 and rec["estimators_steps"] == 2
    # the UNet learnt centred latents: the exported VAE encodes the training renders to channel means of 0 and
    # (times its scaling factor) unit spread, and decodes them to what the workdir's uncentred VAE does
    from ldm_explore.backend.toyworld import train as T

    data = T.dataset(w, 24, 1)
    x = torch.from_numpy(data["rgb"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae, k = b.pipe.vae.float(), b.pipe.vae.config.scaling_factor
    raw, _ = T.load_vae(w)
    with torch.no_grad():
        z, z_raw = vae.encode(x).latent_dist.mean, raw.encode(x).latent_dist.mean
        assert (z * k).mean(dim=(0, 2, 3)).abs().max() < 0.02 and float((z * k).std()) == pytest.approx(1, abs=0.02)
        shift = json.loads((out / "TRAINING.json").read_text())["vae_latent_shift"]
        assert shift == torch.load(w / "unet" / "ckpt.pt", weights_only=False)["extra"]["shift"]
        assert torch.allclose(z_raw - z, torch.tensor(shift).view(1, -1, 1, 1), atol=1e-4)
        assert max(abs(v) for v in shift) > 0.01  # an untrained encoder's means: the test would see a no-op
        assert torch.allclose(vae.decode(z).sample, raw.decode(z_raw).sample, atol=1e-4)
    def run(*args):  # the command's main() in this process: the error paths need no fresh interpreter each
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err.strip()

    # the workdir trained the default world; asking it for the other is refused (--out in tmp: were the check
    # to fail, the export must not land in the installed bundle)
    other = 1 if WORLD == 2 else 2
    code, err = run("toyworld", "train", "--workdir", w, "--world", other, "--stage", "export", "--out", tmp_path / "x")
    assert code == 2 and f"{w / 'world.json'}: this workdir trains world {WORLD}, not {other}" in err, err
    assert not (tmp_path / "x").exists()
    code, err = run("toyworld", "train", "--workdir", w, "--steps", "render=3")
    assert code == 2 and "--steps render=3: no stage 'render'" in err
    code, err = run("toyworld", "train", "--workdir", w, "--batch", "unet=0")
    assert code == 2 and err == "ldm-explore: error: --batch unet=0: must be at least 1", err
    for bad, msg in ((["--procs", "0"], "--procs 0: must be at least 1"),
                     (["--n-train", "0"], "--n-train 0: must be at least 1"),
                     (["--minutes", "-1"], "--minutes -1: must be more than 0")):
        code, err = run("toyworld", "train", "--workdir", w, *bad)
        assert code == 2 and err == f"ldm-explore: error: {msg}", err
    # a stage whose input stage never ran: one line naming the missing checkpoint and the command to run
    code, err = run("toyworld", "train", "--workdir", tmp_path / "empty", "--n-train", 4, "--procs", 1, "--stage", "decoder")
    assert code == 2 and err.splitlines()[-1] == (
        f"ldm-explore: error: {tmp_path / 'empty' / 'vae' / 'ckpt.pt'}: no checkpoint of the vae stage: run "
        f"`ldm-explore toyworld train --stage vae` (with the same --workdir) first"), err
    # counts below 1, in every command that takes one
    for args, msg in ((["toyworld", "evaluate", "--n-renders", "0"], "--n-renders 0"),
                      (["toyworld", "evaluate", "--n-prompts", "-1"], "--n-prompts -1"),
                      (["toyworld", "samples", "-n", "0"], "-n 0"),
                      (["experiment", "run", "--bundle", "toyworld", "--per-split", "0"], "--per-split 0"),
                      (["experiment", "run", "--bundle", "toyworld", "--batch-size", "0"], "--batch-size 0"),
                      (["generate", "--model", "toyworld", "--prompts", "x.csv", "--limit", "0"], "--limit 0"),
                      (["generate", "--model", "toyworld", "--prompts", "x.csv", "--steps", "0"], "--steps 0")):
        code, err = run(*args)
        assert code == 2 and err == f"ldm-explore: error: {msg}: must be at least 1", err
    code, err = run("toyworld", "evaluate", "--first-prompt", "-1")
    assert code == 2 and err == "ldm-explore: error: --first-prompt -1: must be at least 0", err
    # a second invocation resumes where the first stopped; run in the background, it is stopped with SIGTERM:
    # the stage writes its checkpoint on the way out and the command exits 130
    proc = fork_cli("toyworld", "train", "--workdir", w, "--n-train", 24, "--procs", 1, "--stage", "unet",
                    "--steps", 100000, "--batch", 2, folder=tmp_path / "resume")
    ck = w / "unet" / "ckpt.pt"
    before = ck.stat().st_mtime_ns
    t0 = time.time()
    while "unet: resumed at step 2" not in proc.stdout.read_text() + proc.stderr.read_text():  # stepping again
        assert proc.poll() is None and time.time() - t0 < 120, proc.stderr.read_text()
        time.sleep(0.1)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.wait(timeout=120)
    assert proc.returncode == 130, out + err
    assert ck.stat().st_mtime_ns > before  # checkpointed on the way out
    assert torch.load(ck, map_location="cpu", weights_only=False)["step"] >= 2


def test_view_measure_reads_the_camera_from_renders():
    """``toyworld evaluate``'s view measure (seen from above or not, from the estimators' depth map), fit on 600
    training renders, judges held-out renders as the renderer's camera says; a prompt's named view is followed only
    by an image judged to match it."""
    from ldm_explore.backend.toyworld.evaluate import ViewMeasure, seen_from_above, view_followed

    est = load_bundle("toyworld", device="cpu").estimators
    train, test = range(TRAIN_SEED0, TRAIN_SEED0 + 600), range(EVAL_SEED0, EVAL_SEED0 + 150)
    maps, test_maps = (est.depth(render_many(s, procs=2, world=2)["rgb"]) for s in (train, test))
    labels, truth = seen_from_above(train, 2), seen_from_above(test, 2)
    assert 0.3 < truth.mean() < 0.7 and np.mean(ViewMeasure(maps, labels).above(test_maps) == truth) >= 0.85
    assert np.mean(ViewMeasure(maps, ~labels).above(test_maps) == truth) <= 0.15  # taught the opposite: as wrong
    p = "a large red sphere on the left, {}lit from the left"
    assert view_followed(p.format("seen from above, "), True) and not view_followed(p.format("seen from above, "), False)
    assert view_followed(p.format("close up, "), False) and not view_followed(p.format("close up, "), True)
    assert view_followed(p.format(""), True) is None


def test_position_and_count_read_back_from_renders():
    """The position / count measure of ``toyworld evaluate``, on world-2 renders where the answer is known: it must
    agree with the scene nearly always for the generated images' figures to mean anything."""
    from ldm_explore.backend.toyworld.evaluate import named_objects, objects_seen, prompt_followed

    d = render_many(range(EVAL_SEED0, EVAL_SEED0 + 60), procs=1, world=2)
    f = [prompt_followed(p, im, m) for p, im, m in zip(d["prompt"], d["rgb"], d["mask"])]
    assert np.mean([a for a, _ in f]) >= 0.95 and np.mean([c for _, c in f]) >= 0.95
    assert named_objects("a large red sphere on the left and a small blue cube in the centre, lit from the left") == [
        ("red", "sphere", "left"), ("blue", "cube", "centre")]
    assert named_objects("a large red sphere left of a small blue cube, lit from the left")[0] == ("red", "sphere", None)
    # a blank image has no objects; a mask on a grey floor none either
    grey = np.full((64, 64, 3), 120, np.uint8)
    assert objects_seen(grey, np.ones((64, 64), bool)) == {}
    assert prompt_followed("a large red sphere on the left, lit from the left", grey, np.zeros((64, 64), bool)) == (False, False)


def test_fine_tuning_starts_from_a_bundle(tmp_path):
    """``toyworld train --init-from``: each stage without a checkpoint starts from the bundle's weights; the text
    encoder keeps every token's row (by token, not by id) and its longer position table starts with the bundle's
    rows; a stage already checkpointed is left alone. The bundle here is the shipped one with an older text side:
    the vocabulary before world 2's view words ("seen from above", "close up") and a 32-token position table, as
    the world-1 bundle had, so the new words shift ids."""
    import shutil

    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ldm_explore.backend.bundles import toyworld_dir
    from ldm_explore.backend.pipeline.fixtures import write_char_tokenizer
    from ldm_explore.backend.toyworld import train as T
    from ldm_explore.backend.toyworld.models import TEXT_CONFIG
    from ldm_explore.backend.toyworld.scenes import view_words

    src, work = tmp_path / "bundle", tmp_path / "work"
    shutil.copytree(toyworld_dir(), src)
    pipe = src / "pipeline"
    shutil.rmtree(pipe / "tokenizer")
    d = write_char_tokenizer(tmp_path / "oldtok", words=[w for w in vocabulary() if w not in view_words()])
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=32)
    tok.save_pretrained(pipe / "tokenizer")
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **{**TEXT_CONFIG, "max_position_embeddings": 32})
    CLIPTextModel(cfg).save_pretrained(pipe / "text_encoder")

    assert T.seed_from_bundle(work, src) == ["vae", "decoder", "estimators", "classifier", "unet"]
    est = torch.load(work / "estimators" / "ckpt.pt", weights_only=False)["modules"]["net"]
    ref = load_file(src / "estimators.safetensors")
    assert all(torch.equal(est[k], ref[k]) for k in ref)
    old = CLIPTextModel.from_pretrained(pipe / "text_encoder").state_dict()
    old_vocab = CLIPTokenizer.from_pretrained(pipe / "tokenizer").get_vocab()
    u = torch.load(work / "unet" / "ckpt.pt", weights_only=False)
    new = u["modules"]["text"]
    new_vocab = CLIPTokenizer(str(work / "tokenizer" / "vocab.json"), str(work / "tokenizer" / "merges.txt")).get_vocab()
    key = next(k for k in new if k.endswith("token_embedding.weight"))
    moved = [t for t in old_vocab if t in new_vocab and old_vocab[t] != new_vocab[t]]
    assert moved  # the new words shifted ids: rows must follow their tokens
    for t in moved[:20] + ["red</w>"]:
        assert torch.equal(new[key][new_vocab[t]], old[key][old_vocab[t]].float()), t
    fresh = [t for t in new_vocab if t not in old_vocab]  # the view words: they start at the mean embedding
    assert "above</w>" in fresh and torch.allclose(new[key][new_vocab["above</w>"]], old[key].float().mean(0))
    pos = next(k for k in new if k.endswith("position_embedding.weight"))
    assert new[pos].shape[0] > old[pos].shape[0] and torch.equal(new[pos][: old[pos].shape[0]], old[pos].float())
    scale = json.loads((pipe / "vae" / "config.json").read_text())["scaling_factor"]
    assert u["step"] == 0 and u["opt"] is None and u["extra"]["scale"] == scale
    # where its UNet came from stays on record: the steps behind the bundle (its own and its starting bundle's)
    # go into the export's TRAINING.json, and so do the decoder's
    info = json.loads((src / "TRAINING.json").read_text())
    assert u["extra"]["init_unet_steps"] == info["unet_steps"] + info["init_unet_steps"] > info["unet_steps"]
    assert T.load_vae(work)[1] == info["decoder_steps"] > 0
    # a bundle whose VAE is centred (its TRAINING.json says by how much) goes on in its own latent space, and the
    # shift already folded into its VAE stays on record
    assert u["extra"]["shift"] == [0.0] * 4 and u["extra"]["init_vae_latent_shift"] == info["vae_latent_shift"]
    again = T.export_bundle(work, tmp_path / "again")  # a chain of fine-tunings keeps the whole record
    rec = json.loads((again / "TRAINING.json").read_text())
    assert rec["vae_latent_shift"] == info["vae_latent_shift"] and rec["decoder_steps"] == info["decoder_steps"]
    assert rec["init_unet_steps"] == u["extra"]["init_unet_steps"] and rec["unet_steps"] == 0
    vae_a, vae_b = (load_file(d / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors") for d in (src, again))
    assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)  # a centred VAE is not centred again
    assert T.seed_from_bundle(work, src) == []

    # a bundle from before centring (no vae_latent_shift): its first fine-tuning step moves to centred latents,
    # with the channel means and spread of this workdir's encoder on its renders; resuming keeps them
    del info["vae_latent_shift"]
    (src / "TRAINING.json").write_text(json.dumps(info))
    old_work = tmp_path / "old"
    T.seed_from_bundle(old_work, src)
    assert "shift" not in torch.load(old_work / "unet" / "ckpt.pt", weights_only=False)["extra"]
    data = T.dataset(old_work, 6, 1, world=WORLD)
    T.train_unet(old_work, data, 1, batch=2)
    vae, _ = T.load_vae(old_work)
    lat, _ = T.encode_latents(old_work, vae, data)
    shift, scale = T.latent_stats(lat)
    e = torch.load(old_work / "unet" / "ckpt.pt", weights_only=False)["extra"]
    assert e["shift"] == shift and e["scale"] == scale and e["scale"] != info["vae_scaling_factor"]
    T.train_unet(old_work, data, 2, batch=2)
    assert torch.load(old_work / "unet" / "ckpt.pt", weights_only=False)["extra"] == e


def test_latent_centring_keeps_the_vae():
    """``centre_vae`` moves the encoder's posterior means by -shift and the decoder adds it back (checked on an
    untrained VAE with a made-up shift, against a copy left as it was); ``latent_stats`` is each channel's mean
    and 1 / the spread around them (checked against numpy over the whole array at once)."""
    import copy

    from ldm_explore.backend.toyworld import train as T
    from ldm_explore.backend.toyworld.models import make_vae

    torch.manual_seed(0)
    vae = make_vae().eval()
    moved, shift = copy.deepcopy(vae), [0.7, -0.8, 1.0, 3.0]
    T.centre_vae(moved, shift)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = vae.encode(x).latent_dist, moved.encode(x).latent_dist
        assert torch.allclose(a.mean - b.mean, torch.tensor(shift).view(1, 4, 1, 1), atol=1e-5)
        assert torch.allclose(a.logvar, b.logvar)
        assert torch.allclose(vae.decode(a.mean).sample, moved.decode(b.mean).sample, atol=1e-5)
        assert not torch.allclose(vae.decode(b.mean).sample, moved.decode(b.mean).sample, atol=1e-3)
    lat = (np.random.default_rng(0).normal(size=(2100, 4, 8, 8)) * [[[0.5]], [[1]], [[2]], [[0.7]]]
           + np.array([1, -2, 0, 3])[:, None, None]).astype(np.float16)
    shift, scale = T.latent_stats(lat)
    f = lat.astype(np.float64)
    want = f.mean(axis=(0, 2, 3))
    assert shift == pytest.approx(want, abs=1e-6)
    assert scale == pytest.approx(1 / (f - want[:, None, None]).std(), rel=1e-6)


def test_prior_benchmark_refuses_bad_input_in_one_line(tmp_path):
    """``benchmarks/toyworld_prior.py``: a bad count, a value argparse cannot read, a ``--bundle-dir``,
    ``--guidance`` or ``--steps`` without ``--generated``, or a folder that is no bundle each stop with one line and
    exit 2, before any scene is rendered (argparse's own errors through the CLI's OneLineParser, as in every
    benchmark)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "toyworld_prior.py"
    for args, want in ((["--generated", "-1"], "toyworld_prior.py: --generated -1: must be at least 0"),
                       (["--generated", "x"], "toyworld_prior.py: error: argument --generated: invalid int value"),
                       (["--bundle-dir", str(tmp_path)], f"toyworld_prior.py: --bundle-dir {tmp_path}: only with --generated N"),
                       (["--guidance", "3"], "toyworld_prior.py: --guidance and --steps: only with --generated N"),
                       (["--generated", "1", "--steps", "0"], "toyworld_prior.py: --steps 0: must be at least 1"),
                       (["--generated", "1", "--bundle-dir", str(tmp_path)],
                        f"toyworld_prior.py: toyworld bundle: {tmp_path / 'pipeline' / 'model_index.json'} is missing")):
        r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(want), r.stderr


def test_ema_follows_its_formula():
    """The weights exported are the EMA's: shadow = d * shadow + (1 - d) * weights, d = min(decay, (1 + step) /
    (10 + step)), for every floating tensor (buffers that are not floating are copied)."""
    from ldm_explore.backend.toyworld.train import EMA

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(m, decay=0.9)
    ref = {k: v.detach().clone().double() for k, v in m.state_dict().items()}
    for step in (0, 5, 500):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        m.train()(torch.randn(4, 3))  # moves the running stats and the (integer) batch count
        d = min(0.9, (1 + step) / (10 + step))
        ema.update(m, step)
        for k, v in m.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v.double(), ref[k], atol=1e-6), k
    assert ema.state_dict()["1.num_batches_tracked"] == 3


def test_unet_learning_rate_cools_down_to_its_floor():
    """``--cooldown N``: constant after the warm-up, then linear to 5% over the last N steps of the target, and
    nothing lower past it (a run that goes on); without it, constant."""
    from ldm_explore.backend.toyworld.train import unet_lr

    base, total = 1e-3, 10_000
    assert abs(unet_lr(0, base, total) - base / 300) < 1e-15 and unet_lr(299, base, total) == base
    assert unet_lr(9_999, base, total) == base  # no cooldown: constant
    assert unet_lr(7_999, base, total, cooldown=2_000) == base
    assert abs(unet_lr(9_000, base, total, cooldown=2_000) - base * (0.05 + 0.95 * 0.5)) < 1e-12
    assert abs(unet_lr(10_000, base, total, cooldown=2_000) - 0.05 * base) < 1e-15
    assert unet_lr(12_000, base, total, cooldown=2_000) == unet_lr(10_000, base, total, cooldown=2_000)
    lrs = [unet_lr(s, base, total, cooldown=2_000) for s in range(7_000, 10_001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
