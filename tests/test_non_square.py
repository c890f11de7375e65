"""A UNet whose default size is a (height, width) pair, as diffusers accepts (``sample_size=[8, 12]``): its geometry
comes from its own config through export, the fused program, generate (model and bundle) and goldens, at 16x24
pixels (latent 8x12), and the bundle generates what the PyTorch pipeline generates."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_cli_here
from mobilediff.bundle import read_manifest
from mobilediff.components import image_size, latent_geometry, latent_size
from mobilediff.errors import MobilediffError
from mobilediff.parity import psnr
from mobilediff.engine import BundleRunner
from mobilediff.tiny import TINY_MODEL, tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

WIDE = dataclasses.replace(TINY_MODEL, unet=dataclasses.replace(TINY_MODEL.unet, sample_size=(8, 12)))


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """(pipeline folder, its bundle: `mobilediff export --target onnx --fused-steps 2`), the UNet 8x12."""
    from mobilediff.cli import main
    from mobilediff.loading import save_pipeline

    root = tmp_path_factory.mktemp("wide")
    save_pipeline(tiny_pipeline(0, WIDE), root / "pipe")
    with pytest.raises(SystemExit) as e:  # main exits only on an error
        main(["export", "--model", str(root / "pipe"), "--target", "onnx", "--fused-steps", "2", "--out",
              str(root / "b")])
        raise SystemExit(0)
    assert e.value.code == 0
    return root / "pipe", root / "b"


@pytest.mark.parametrize("size,want", [(16, (16, 16)), ([8, 12], (8, 12)), ((8, 12), (8, 12)), (None, None)])
def test_sample_size_in_every_form_diffusers_accepts(size, want):
    assert latent_size(SimpleNamespace(sample_size=size)) == want


@pytest.mark.parametrize("size", [[8], [8, 12, 3], "16", True, 0, [8, -4], [8.0, 12]])
def test_any_other_sample_size_is_refused_in_one_line(size):
    with pytest.raises(MobilediffError, match=r"unsupported unet sample_size .*: diffusers takes a positive int or a "
                                              r"\[height, width\] pair"):
        latent_size(SimpleNamespace(sample_size=size))


def test_geometry_comes_from_the_pair():
    pipe = tiny_pipeline(0, WIDE)
    assert image_size(pipe) == (16, 24)
    geo = latent_geometry(pipe)
    assert (geo["height"], geo["width"], geo["latent_height"], geo["latent_width"]) == (16, 24, 8, 12)
    geo = latent_geometry(pipe, height=24, width=16)  # --height/--width still override it
    assert (geo["height"], geo["width"], geo["latent_height"], geo["latent_width"]) == (24, 16, 12, 8)
    pipe.unet.register_to_config(sample_size=None)
    with pytest.raises(MobilediffError, match="no sample_size.*give --height and --width"):
        latent_geometry(pipe)
    assert latent_geometry(pipe, height=16, width=24)["latent_width"] == 12


def test_the_bundle_records_height_and_width_apart(wide):
    pipe_dir, bundle = wide
    m = read_manifest(bundle)
    geo = m.geometry
    assert (geo.height, geo.width, geo.latent_height, geo.latent_width) == (16, 24, 8, 12)
    assert geo.latent_shape == (1, 4, 8, 12)
    assert m.component("unet").inputs[0].shape == ["batch", 4, 8, 12]
    assert m.component("vae_decoder").outputs[0].shape == ["batch", 3, 16, 24]
    assert m.fused["outputs"][0]["shape"] == [1, 3, 16, 24]
    assert json.loads((bundle / "unet" / "config.json").read_text())["sample_size"] == [8, 12]
    for c in m.components.values():
        assert c.files[0].parity["psnr_db"] >= 60


def test_the_bundle_generates_what_the_pipeline_generates(wide):
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    pipe_dir, bundle = wide
    ref = generate(load_pipeline(pipe_dir), ["a red circle at the top"], [7], 4, "ddim", 4.0)
    got = BundleRunner(bundle, "onnx").generate("a red circle at the top", 7, 4, "ddim", 4.0)
    assert ref.shape == got.shape == (1, 3, 16, 24)
    assert psnr(got, ref) >= 40


def test_the_fused_program_is_the_step_by_step_bundle(wide):
    import onnxruntime as ort

    _, bundle = wide
    m = read_manifest(bundle)
    runner = BundleRunner(bundle, "onnx")
    sess = ort.InferenceSession(str(bundle / m.fused["files"][0]["path"]), providers=["CPUExecutionProvider"])
    ids = runner.tokenizer.ids("a green triangle").numpy()
    noise = torch.randn(m.geometry.latent_shape, generator=torch.Generator().manual_seed(5))
    image = sess.run(["image"], {"input_ids": ids.astype(np.int32), "noise": noise.numpy(),
                                 "guidance_scale": np.array([3.0], dtype=np.float32)})[0]
    assert image.shape == (1, 3, 16, 24)
    assert psnr(torch.from_numpy(image), runner.generate("a green triangle", 5, 2, "ddim", 3.0)) >= 60


def test_generate_from_the_model_and_the_bundle_and_goldens(wide, tmp_path, capsys):
    from PIL import Image

    from mobilediff.io import load_tensors

    pipe_dir, bundle = wide
    for source in (["--model", pipe_dir], ["--bundle", bundle]):
        out = tmp_path / f"{source[0][2:]}.png"
        code, _, stderr = run_cli_here(capsys, "generate", *source, "--prompt", "a blue square", "--steps", "2",
                                       "--scale", "2", "--out", out)
        assert code == 0, stderr
        assert Image.open(out).size == (48, 32)  # (width, height) x 2
    code, _, stderr = run_cli_here(capsys, "goldens", "--bundle", bundle, "--out", tmp_path / "g")
    assert code == 0, stderr
    index = json.loads((tmp_path / "g" / "goldens.json").read_text())
    tensors = load_tensors(tmp_path / "g" / "goldens.safetensors")
    assert {tuple(n["shape"]) for n in index["noise"]} == {(1, 4, 8, 12)}
    plan = index["plans"][0]
    assert tensors[plan["latents"][-1]].shape == (1, 4, 8, 12)
    assert tensors[plan["image"]].shape == (16, 24, 3)
