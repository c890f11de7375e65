import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import error_lines, run_cli, run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.loading import load_pipeline
from mobilediff.sampling import SAMPLERS, generate


@pytest.fixture(scope="module")
def tiny(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_and_is_seeded(tiny, sampler):
    a = generate(tiny, ["a red circle"] * 2, [1, 2], steps=2, sampler=sampler, guidance=3.0)
    b = generate(tiny, ["a red circle"], [2], steps=2, sampler=sampler, guidance=3.0)
    assert a.shape == (2, 3, 32, 32) and torch.isfinite(a).all()
    torch.testing.assert_close(a[1], b[0], atol=1e-3, rtol=0)  # an image does not depend on its batch (up to float noise)
    assert not torch.allclose(a[0], a[1])


def test_generate_cli_grid(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, stderr = run_cli_here(capsys, "generate", "--model", tiny_pipeline_dir, "--prompt", "a red circle",
                                   "--prompt", "a blue square", "--seed", 1, "--seed", 2, "--seed", 3,
                                   "--steps", 2, "--scale", 1, "--out", out)
    assert code == 0, stderr
    img = Image.open(out)
    assert img.size == (3 * 34 + 2, 2 * 34 + 2)


def test_generate_cli_on_the_default_model(tmp_path):
    out = tmp_path / "one.png"
    code, _, stderr = run_cli("generate", "--prompt", "a large red circle in the center on a white background",
                              "--steps", 4, "--scale", 1, "--out", out)
    assert code == 0, stderr
    arr = np.asarray(Image.open(out))
    assert arr.shape == (64, 64, 3) and arr.std() > 5


def _assert_refused(capsys, args, out, expect):
    code, _, stderr = run_cli_here(capsys, *args)
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1 and expect in lines[0], stderr
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


def test_missing_model_directory(tmp_path, capsys):
    out = tmp_path / "x.png"
    _assert_refused(capsys, ["generate", "--model", tmp_path / "nope", "--prompt", "p", "--out", out], out,
                    "model directory not found")


def test_pickle_only_directory_is_refused_unloaded(tiny_pipeline_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline_dir, model)
    st = model / "unet" / "diffusion_pytorch_model.safetensors"
    st.unlink()
    # a pickle that would run code if it were ever unpickled
    (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(
        b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x05touch\x94\x85\x94R\x94.")
    out = tmp_path / "x.png"
    _assert_refused(capsys, ["generate", "--model", model, "--prompt", "p", "--out", out], out, "holds only pickle weights")


def test_corrupt_safetensors_is_refused(tiny_pipeline_dir, tmp_path, capsys):
    import shutil

    model = tmp_path / "corrupt"
    shutil.copytree(tiny_pipeline_dir, model)
    f = model / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])  # truncated download
    out = tmp_path / "x.png"
    _assert_refused(capsys, ["generate", "--model", model, "--prompt", "p", "--out", out], out, "corrupt safetensors file")


def test_unknown_sampler(tmp_path, capsys):
    out = tmp_path / "x.png"
    _assert_refused(capsys, ["generate", "--prompt", "p", "--sampler", "heun9", "--out", out], out, "'heun9' is not one of")


def test_steps_below_one(tmp_path, capsys):
    out = tmp_path / "x.png"
    _assert_refused(capsys, ["generate", "--prompt", "p", "--steps", "0", "--out", out], out, "Invalid value for '--steps': 0 is not in the range x>=1")


def test_long_prompt_is_truncated_with_a_warning(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    long = "a small red circle at the top left " * 6
    code, _, stderr = run_cli_here(capsys, "generate", "--model", tiny_pipeline_dir, "--prompt", long, "--steps", 1, "--out", out)
    assert code == 0 and out.exists()
    assert any(line.startswith("warning: prompt is") and "truncated" in line for line in error_lines(stderr))


def test_library_refuses_bad_arguments(tiny):
    with pytest.raises(MobilediffError, match="unknown sampler"):
        generate(tiny, ["p"], [0], steps=2, sampler="nope")
    with pytest.raises(MobilediffError, match="1 prompts but 2 seeds"):
        generate(tiny, ["p"], [0, 1], steps=2)


def test_evaluate_cli_scores_a_folder_of_ground_truth_images(tmp_path, capsys):
    from mobilediff.data import ShapesDataset, to_uint8

    images, captions, _ = ShapesDataset(seed=31).batch(0, 24)
    rows = []
    for i, (img, cap) in enumerate(zip(to_uint8(images), captions)):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": cap}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows))
    code, stdout, stderr = run_cli_here(capsys, "evaluate", "--images", tmp_path, "--out", tmp_path / "report.json")
    assert code == 0, stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["prompt_accuracy"] == 1.0 and report["n"] == 24
    assert 0.0 <= report["fd"] < float("inf")  # n = 24 in 128-d: FD is only a finite number here, not a quality test


def test_evaluate_cli_refuses_captions_outside_the_domain(tmp_path, capsys):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "a photo of a cat"}))
    code, _, stderr = run_cli_here(capsys, "evaluate", "--images", tmp_path)
    assert code == 2 and error_lines(stderr) == [f"error: {tmp_path / 'metadata.jsonl'} line 1: not a shapes-domain caption "
                                                 "(need objects with size, colour, shape, position and a background): "
                                                 "'a photo of a cat'"]
