"""Inpainting UNets (in_channels = 2 C + 1, stable-diffusion-inpainting's 9): exported with their extra inputs, run
from a bundle as diffusers' StableDiffusionInpaintPipeline runs them on the PyTorch path (its 9-channel branch: the
masked image's latent and the mask in every UNet call, no blend, its draw order), and refused for everything but
inpainting in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import error_lines, run_cli_here


@pytest.fixture(scope="module")
def inpainting(tmp_path_factory):
    from mobilediff.data import ShapesConfig, render, sample_scene, to_uint8
    from mobilediff.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("inpainting")
    pipe = save_tiny_pipeline(root / "pipe", seed=0, inpainting=True)
    scene = render([sample_scene(0, 3, ShapesConfig(resolution=32))], ShapesConfig(resolution=32))
    Image.fromarray(to_uint8(scene)[0]).save(root / "init.png")
    m = np.zeros((32, 32), np.uint8)
    m[:, 12:] = 255  # not aligned to the latent grid: the latent mask takes pixel (y * f, x * f)
    Image.fromarray(m).save(root / "mask.png")
    from mobilediff.cli import main

    try:
        main(["export", "--model", str(pipe), "--target", "onnx", "--no-ort-format", "--out", str(root / "b")])
    except SystemExit as e:
        assert not e.code
    return root


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def test_the_bundle_declares_the_inpainting_denoiser(inpainting):
    m = json.loads((inpainting / "b" / "manifest.json").read_text())
    assert m["image"] == {"modes": ["inpaint"], "encoder_posterior": "gaussian", "denoiser": "inpainting"}
    unet = m["components"]["unet"]
    assert [i["name"] for i in unet["inputs"]] == ["sample", "timestep", "encoder_hidden_states", "mask",
                                                   "masked_image_latents"]
    assert unet["inputs"][3]["static_shape"] == [2, 1, 16, 16] and unet["inputs"][0]["static_shape"][1] == 4
    assert m["geometry"]["latent_channels"] == 4 and "vae_encoder" in m["components"]
    assert all(f["parity"]["psnr_db"] >= 60 for f in unet["files"])


CASES = [("ddim", 1.0), ("dpmpp", 0.6), ("euler", 0.75)]


def _inpaints_as_diffusers(inpainting, bundle, runtime: str, tmp_path, capsys, sampler, strength):
    common = ["--init-image", inpainting / "init.png", "--mask", inpainting / "mask.png", "--strength", str(strength),
              "--sampler", sampler, "--steps", "8", "--prompt", "a red circle", "--seed", "5", "--scale", "1"]
    code, _, err = run_cli_here(capsys, "generate", "--model", inpainting / "pipe", *common, "--out", tmp_path / "m.png")
    assert code == 0, err
    code, _, err = run_cli_here(capsys, "generate", "--bundle", bundle, "--runtime", runtime, *common,
                                "--out", tmp_path / f"{runtime}.png")
    assert code == 0, err
    assert np.abs(_png(tmp_path / f"{runtime}.png") - _png(tmp_path / "m.png")).max() <= 1, runtime


@pytest.mark.parametrize("sampler,strength", CASES)
def test_the_bundle_inpaints_as_diffusers_does(inpainting, tmp_path, capsys, sampler, strength):
    _inpaints_as_diffusers(inpainting, inpainting / "b", "onnx", tmp_path, capsys, sampler, strength)


# the same on ExecuTorch (~50 s to lower on two busy cores): the extended tier. The default run meets the ExecuTorch
# inpainting UNet in CI's app fixtures (inpainting-unet, run by the Kotlin engine against Python's images).
@pytest.mark.extended
def test_the_executorch_bundle_inpaints_as_diffusers_does(inpainting, tmp_path, capsys):
    code, _, err = run_cli_here(capsys, "export", "--model", inpainting / "pipe", "--target", "executorch",
                                "--no-ort-format", "--out", tmp_path / "et")
    assert code == 0, err
    for sampler, strength in CASES:
        (tmp_path / sampler).mkdir()
        _inpaints_as_diffusers(inpainting, tmp_path / "et", "executorch", tmp_path / sampler, capsys, sampler, strength)


def test_a_masked_image_changes_the_result(inpainting):
    """The UNet reads the mask and the masked image: another mask gives another image at the same seed."""
    import torch

    from mobilediff.engine import BundleRunner
    from mobilediff.image_input import load_init_image

    runner = BundleRunner(inpainting / "b", "onnx")
    image = load_init_image(inpainting / "init.png", 32, 32)
    a = torch.zeros(1, 1, 16, 16)
    a[..., 8:] = 1
    b = torch.zeros(1, 1, 16, 16)
    b[..., :8] = 1
    one = runner.generate("a red circle", 1, 4, "ddim", init_image=image, mask=a, strength=1.0)
    two = runner.generate("a red circle", 1, 4, "ddim", init_image=image, mask=b, strength=1.0)
    assert (one - two).abs().max() > 1e-2


def test_everything_but_inpainting_is_refused_in_one_line(inpainting, tmp_path, capsys):
    b, pipe = inpainting / "b", inpainting / "pipe"
    cases = [
        (["--bundle", b], f"error: bundle {b}'s denoiser is an inpainting UNet: it generates only with an init image "
                          f"and a mask (--init-image, --mask)"),
        (["--bundle", b, "--init-image", inpainting / "init.png"],
         f"error: bundle {b}'s denoiser is an inpainting UNet: it runs inpainting only (--init-image with --mask)"),
        (["--model", pipe], "error: this model's UNet is an inpainting UNet: it generates only by inpainting "
                            "(--init-image with --mask)"),
        (["--model", pipe, "--init-image", inpainting / "init.png"],
         "error: this model's UNet is an inpainting UNet: it runs inpainting only (--init-image with --mask)"),
    ]
    for args, message in cases:
        code, _, err = run_cli_here(capsys, "generate", *args, "--prompt", "x", "--steps", "2", "--out",
                                    tmp_path / "x.png")
        assert code != 0 and error_lines(err) == [message], err
    assert not (tmp_path / "x.png").exists()
    code, _, err = run_cli_here(capsys, "export", "--model", pipe, "--target", "onnx", "--fused-steps", "2", "--out",
                                tmp_path / "f")
    assert code != 0 and "--fused-steps is not built for an inpainting UNet" in err
    code, _, err = run_cli_here(capsys, "export", "--model", pipe, "--target", "onnx", "--quantize", "int8-static",
                                "--out", tmp_path / "q")
    assert code != 0 and "a static int8 recipe calibrates on text-to-image trajectories" in err
    assert not (tmp_path / "f").exists() and not (tmp_path / "q").exists()
