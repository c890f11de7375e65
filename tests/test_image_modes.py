"""Image-to-image and inpainting: the tables against diffusers' own pipelines, the VAE encoder on every target, a
bundle's images against the PyTorch path's, and what the manifest and the image readers refuse."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli_here
from mobilediff.errors import MobilediffError


def _tables(pipe, sampler: str, steps: int):
    from mobilediff.bundle import SamplerEntry
    from mobilediff.sampler_table import image_tables, sampler_table
    from mobilediff.samplers import make_scheduler

    scheduler = make_scheduler(sampler, pipe.scheduler.config)
    table = sampler_table(scheduler, steps)
    return SamplerEntry.from_dict({"name": sampler, **table.to_dict(), **image_tables(scheduler, steps, table)})


def _ours(pipe, table, image, mask, strength, guidance, seed):
    """The bundle runner's arithmetic (draw order, clean latent, tables) over the PyTorch modules."""
    from mobilediff.bundle import classifier_free_guidance, guidance_embedding
    from mobilediff.sampler_table import run_image_table
    from mobilediff.sampling import text_embeddings

    gen = torch.Generator().manual_seed(seed)
    out = pipe.vae.encode(image, return_dict=False)[0]
    gaussian = not isinstance(out, torch.Tensor)
    mean, std = (out.mean, out.std) if gaussian else (out, torch.zeros_like(out))
    eps = torch.randn(mean.shape, generator=gen) if gaussian else torch.zeros_like(mean)
    z0 = (mean + std * eps) * pipe.vae.config.scaling_factor
    noise = torch.randn(z0.shape, generator=gen)
    if mask is not None and gaussian:
        torch.randn(z0.shape, generator=gen)
    text, uncond = text_embeddings(pipe, ["a red circle"]), text_embeddings(pipe, [""])
    dim = pipe.unet.config.time_cond_proj_dim

    def denoise(x, t):
        if dim:
            cond = torch.tensor([guidance_embedding(guidance, dim)])
            return pipe.unet(x, torch.tensor([t]), encoder_hidden_states=text, timestep_cond=cond).sample
        o = pipe.unet(torch.cat([x, x]), torch.tensor([t, t]), encoder_hidden_states=torch.cat([uncond, text])).sample
        return classifier_free_guidance(*o.chunk(2), guidance)

    return run_image_table(table, denoise, z0, noise, strength, mask,
                           lambda i: torch.randn(z0.shape, generator=gen))


def _diffusers(pipe, sampler, steps, image, mask, strength, guidance, seed):
    import diffusers

    from mobilediff.samplers import make_scheduler
    from mobilediff.sampling import text_embeddings

    cls = diffusers.StableDiffusionInpaintPipeline if mask is not None else diffusers.StableDiffusionImg2ImgPipeline
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet")}
    p = cls(**parts, scheduler=make_scheduler(sampler, pipe.scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    h, w = image.shape[-2:]
    kw = {"mask_image": mask.repeat_interleave(h // mask.shape[-2], 2).repeat_interleave(w // mask.shape[-1], 3),
          "height": h, "width": w} if mask is not None else {}
    lcm = bool(pipe.unet.config.time_cond_proj_dim)
    return p(prompt_embeds=text_embeddings(pipe, ["a red circle"]),
             negative_prompt_embeds=None if lcm else text_embeddings(pipe, [""]), image=(image + 1) / 2,
             strength=strength, num_inference_steps=steps, guidance_scale=guidance,
             generator=torch.Generator().manual_seed(seed), output_type="latent", **kw).images


@pytest.mark.parametrize("variant,sampler,steps,strength", [
    ("default", "ddim", 8, 0.6), ("default", "dpmpp", 8, 0.75), ("default", "euler", 8, 0.5),
    ("default", "dpmpp", 25, 0.3), ("default", "ddim", 4, 1.0), ("lcm", "lcm", 4, 0.75), ("lcm", "lcm", 2, 1.0)])
@pytest.mark.parametrize("inpaint", [False, True], ids=["img2img", "inpaint"])
@torch.no_grad()
def test_tables_replay_diffusers_img2img_and_inpaint_pipelines(variant, sampler, steps, strength, inpaint):
    from mobilediff.tiny import tiny_pipeline, tiny_variant_pipeline

    pipe = tiny_pipeline() if variant == "default" else tiny_variant_pipeline(variant)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, side, side, generator=g) * 2 - 1
    mask = None
    if inpaint:
        mask = torch.zeros(1, 1, side // pipe.vae_scale_factor, side // pipe.vae_scale_factor)
        mask[..., mask.shape[-2] // 2:, :] = 1
    table = _tables(pipe, sampler, steps)
    guidance = 3.0
    ours = _ours(pipe, table, image, mask, strength, guidance, seed=7)
    ref = _diffusers(pipe, sampler, steps, image, mask, strength, guidance, seed=7)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max())), float((ours - ref).abs().max())


def test_only_multistep_starts_are_tabulated_and_strength_follows_diffusers():
    from mobilediff.sampler_table import start_table, strength_steps
    from mobilediff.tiny import tiny_pipeline

    pipe = tiny_pipeline()
    ddim, dpmpp = _tables(pipe, "ddim", 8), _tables(pipe, "dpmpp", 8)
    assert ddim.starts == {} and len(ddim.add_noise) == 8
    # its first step from a start is of first order (the last step is of first order in every run)
    assert set(range(1, 7)) <= set(map(int, dpmpp.starts)) <= set(range(1, 8))
    assert [strength_steps(8, s) for s in (0.125, 0.3, 0.6, 1.0)] == [1, 2, 4, 8]
    run, start = start_table(ddim, 0.6)
    assert (run.steps, start, run.timesteps) == (4, 4, ddim.timesteps[4:])
    for bad in (0.0, -0.5, 1.5, float("nan"), float("inf")):
        with pytest.raises(MobilediffError, match="--strength must be in"):
            strength_steps(8, bad)
    with pytest.raises(MobilediffError, match="denoises no step of 8"):
        strength_steps(8, 0.1)


@pytest.fixture(scope="module")
def image_bundle(tiny_pipeline_dir, tmp_path_factory):
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    out = tmp_path_factory.mktemp("img") / "bundle"
    return export_bundle(load_pipeline(tiny_pipeline_dir), "onnx", out, image_modes=True, ort_format=False)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    a = np.zeros((32, 32, 3), np.uint8)
    a[:] = (30, 60, 200)
    a[8:24, 8:24] = (220, 40, 40)
    Image.fromarray(a).save(d / "init.png")
    m = np.zeros((32, 32), np.uint8)
    m[16:] = 255
    Image.fromarray(m).save(d / "mask.png")
    return d


def test_manifest_declares_the_modes_and_the_encoder_is_checked_against_pytorch(image_bundle):
    from mobilediff.bundle import read_manifest

    m = read_manifest(image_bundle)
    assert m.image.modes == ["img2img", "inpaint"] and m.image.encoder_posterior == "gaussian"
    assert m.supports("inpaint") and m.supports("txt2img")
    enc = m.component("vae_encoder")
    assert [t.name for t in enc.outputs] == ["latent_mean", "latent_std"]
    assert enc.files[0].parity["psnr_db"] >= 60
    assert all(len(t.add_noise) == t.steps for t in m.samplers)


@pytest.mark.parametrize("args", [("--strength", "0.5"), ("--mask", "mask.png", "--strength", "0.75"),
                                  ("--mask", "mask.png")], ids=["img2img", "inpaint", "inpaint-from-noise"])
def test_bundle_image_equals_the_diffusers_pipeline_image(tiny_pipeline_dir, image_bundle, image_files, args,
                                                          tmp_path, capsys):
    args = [str(image_files / a) if a.endswith(".png") else a for a in args]
    common = ["--prompt", "a red circle", "--seed", "3", "--steps", "8", "--scale", "1",
              "--init-image", str(image_files / "init.png"), *args]
    code, _, err = run_cli_here(capsys, "generate", "--model", tiny_pipeline_dir, *common, "--out", tmp_path / "a.png")
    assert code == 0, err
    code, _, err = run_cli_here(capsys, "generate", "--bundle", image_bundle, *common, "--out", tmp_path / "b.png")
    assert code == 0, err
    a, b = (np.asarray(Image.open(tmp_path / f"{x}.png")).astype(int) for x in "ab")
    assert np.abs(a - b).max() <= 1
    init = np.asarray(Image.open(image_files / "init.png")).astype(int)
    assert np.abs(a - init).mean() > 1  # the image was sampled, not copied


def test_the_vae_encoder_exports_to_every_target(tiny_pipeline_dir, tmp_path):
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component
    from mobilediff.loading import load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    spec = declare(pipe, latent_geometry(pipe), encoder=True)["vae_encoder"]
    for target in ("executorch", "coreml"):
        entry = export_component(spec, target, "fp32", tmp_path)
        assert entry["parity"]["checked"], entry["parity"]
        if target == "executorch":
            assert entry["parity"]["psnr_db"] >= 60


def test_a_manifest_with_image_modes_but_no_encoder_is_refused(image_bundle, tmp_path):
    import shutil

    from mobilediff.bundle import read_manifest

    copy = tmp_path / "b"
    shutil.copytree(image_bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    del m["components"]["vae_encoder"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MobilediffError, match="need a 'vae_encoder' component"):
        read_manifest(copy)
    m = json.loads((image_bundle / "manifest.json").read_text())
    m["image"]["modes"] = ["outpaint"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MobilediffError, match="unknown image mode 'outpaint'"):
        read_manifest(copy)


def _save(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda d: _save(d / "x.png", np.zeros((16, 32, 3), np.uint8)), "is 32x16 pixels, the model generates 32x32"),
    (lambda d: _save(d / "x.png", np.zeros((32, 32, 4), np.uint8)), "has transparent pixels (1024)"),
    (lambda d: _save(d / "x.png", np.zeros((32, 32), np.uint16)), "is a I;16 image"),
    (lambda d: (Image.new("CMYK", (32, 32)).save(d / "x.jpg"), d / "x.jpg")[1], "is a CMYK image"),
    (lambda d: ((d / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40), d / "x.png")[1], "is not an image"),
    (lambda d: d / "missing.png", "no such file"),
])
def test_init_image_refusals(tmp_path, make, message):
    from mobilediff.image_input import load_init_image

    with pytest.raises(MobilediffError, match=None) as e:
        load_init_image(make(tmp_path), 32, 32)
    assert message in str(e.value)


@pytest.mark.parametrize("make,message", [
    (lambda d: _save(d / "m.png", np.full((32, 32, 3), (255, 0, 0), np.uint8)), "is in colour"),
    (lambda d: _save(d / "m.png", np.full((32, 32), 127, np.uint8)), "marks nothing to repaint"),
    (lambda d: _save(d / "m.png", np.pad(np.full((1, 1), 255, np.uint8), ((3, 28), (3, 28)))),
     "misses every latent pixel"),
])
def test_mask_refusals(tmp_path, make, message):
    from mobilediff.image_input import load_mask

    with pytest.raises(MobilediffError) as e:
        load_mask(make(tmp_path), 32, 32, 2)
    assert message in str(e.value)


def test_a_mask_binarizes_at_128_and_samples_each_cells_top_left_pixel(tmp_path):
    from mobilediff.image_input import load_mask

    m = np.zeros((32, 32), np.uint8)
    m[0, 0], m[0, 2], m[2, 0], m[1, 1] = 128, 127, 255, 255  # (1, 1) falls between the factor-2 samples
    out = load_mask(_save(tmp_path / "m.png", m), 32, 32, 2)
    assert out.shape == (1, 1, 16, 16)
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 0, 1] == 0 and out[0, 0, 1, 0] == 1 and out.sum() == 2
