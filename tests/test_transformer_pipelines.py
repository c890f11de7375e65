"""PixArt-alpha and PixArt-Sigma pipelines through the loader, the exporter and the bundle engine (tiny random
components of the real classes, mobilediff.transformer_family): generate parity against diffusers' own pipeline,
the format-2 manifest, the unigram tokenizer, and the refusals."""
import json
import shutil

import pytest
import torch

from conftest import error_lines, run_cli_here
from mobilediff.bundle import read_manifest
from mobilediff.engine import BundleRunner
from mobilediff.errors import MobilediffError
from mobilediff.exporter import export_bundle
from mobilediff.loading import load_pipeline
from mobilediff.parity import psnr
from mobilediff.sampling import generate
from mobilediff.transformer_family import text_length, tiny_pixart_pipeline, tokenizer_ids

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
PROMPT = "A Red circle on the left "


@pytest.fixture(scope="module", params=["alpha", "sigma"])
def pixart_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("pixart") / request.param
    tiny_pixart_pipeline(seed=1, sigma=request.param == "sigma").save_pretrained(str(out), safe_serialization=True)
    return out


def _bundle(folder, out):
    target = "onnx" if folder.name == "alpha" else "executorch"
    pipe = load_pipeline(folder, transformers=True)
    return export_bundle(pipe, target, out, source="tiny-pixart", model_dir=folder, ort_format=False), target


@pytest.fixture(scope="module")
def pixart_bundle(pixart_dir, tmp_path_factory):
    return _bundle(pixart_dir, tmp_path_factory.mktemp("pixart-bundles") / pixart_dir.name)


@pytest.fixture(scope="module")
def alpha_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixart") / "alpha"
    tiny_pixart_pipeline(seed=1).save_pretrained(str(out), safe_serialization=True)
    return out


def test_loader_takes_pixart_pipelines(pixart_dir):
    pipe = load_pipeline(pixart_dir, transformers=True)
    assert type(pipe).__name__ == ("PixArtAlphaPipeline" if pixart_dir.name == "alpha" else "PixArtSigmaPipeline")
    assert text_length(pipe) == (120 if pixart_dir.name == "alpha" else 300)


def test_bundle_generates_diffusers_image(pixart_dir, pixart_bundle):
    """The bundle engine (tables, masks, CFG, graphs) against diffusers' PixArt pipeline with the same sampler."""
    bundle, target = pixart_bundle
    pipe = load_pipeline(pixart_dir, transformers=True)
    runner = BundleRunner(bundle, target)
    for sampler, steps, scale in (("dpmpp", 4, 4.5), ("ddim", 2, 1.0)):
        got = runner.generate(PROMPT, seed=7, steps=steps, sampler=sampler, guidance=scale)
        want = generate(pipe, [PROMPT], [7], steps, sampler, scale)
        assert got.shape == want.shape == (1, 3, 16, 16)
        assert psnr(got, want) >= 60, (sampler, steps, psnr(got, want))


def test_manifest_is_format_2_with_masked_inputs(pixart_bundle):
    bundle, target = pixart_bundle
    m = read_manifest(bundle)
    assert m.format_version == 2 and m.tokenizer.kind == "unigram" and m.tokenizer.bos_id is None
    assert list(m.tokenizer.files) == ["tokenizer/tokenizer.json"]
    assert [i.name for i in m.component("text_encoder").inputs] == ["input_ids", "attention_mask"]
    assert [i.name for i in m.component("unet").inputs] == ["sample", "timestep", "encoder_hidden_states",
                                                             "encoder_attention_mask"]
    assert m.component("unet").source_class == "PixArtTransformer2DModel"
    assert (m.plan.sampler, m.plan.steps, m.plan.guidance) == ("dpmpp", 20, 4.5)  # the pipeline's own defaults
    for comp in m.components.values():
        assert comp.files[0].parity["psnr_db"] >= 60


def test_bundle_tokenizer_gives_the_pipelines_ids(pixart_dir, pixart_bundle):
    bundle, _ = pixart_bundle
    pipe = load_pipeline(pixart_dir, transformers=True)
    runner = BundleRunner(bundle, pixart_bundle[1])
    n = text_length(pipe)
    for prompt in (PROMPT, "", "purple star, top right; a BIG blue square", "x " * 400):
        ids, mask = runner.tokenizer.ids_and_mask(prompt)
        assert (ids[0].tolist(), mask[0].tolist()) == tokenizer_ids(pipe.tokenizer, prompt, n)
    warned = []
    runner.tokenizer.warn_if_truncated("x " * 400, warned.append)
    assert warned and "truncated" in warned[0]


def test_corrupt_bundle_tokenizer_is_refused(pixart_bundle, tmp_path):
    bundle, target = pixart_bundle
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(MobilediffError, match="sha256"):
        BundleRunner(copy, target)


def _edit(src, dst, component, **changes):
    shutil.copytree(src, dst)
    f = dst / component / ("scheduler_config.json" if component == "scheduler" else "config.json")
    f.write_text(json.dumps({**json.loads(f.read_text()), **changes}))
    return dst


def test_refusals_before_weights_are_read(pixart_dir, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(pixart_dir, pickled)
    for f in (pickled / "transformer").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(MobilediffError, match="pickle"):
        load_pipeline(pickled, transformers=True)
    other = _edit(pixart_dir, tmp_path / "other", "transformer", out_channels=5)
    with pytest.raises(MobilediffError, match="unsupported transformer out_channels 5"):
        load_pipeline(other, transformers=True)
    index = tmp_path / "index"
    shutil.copytree(pixart_dir, index)
    m = json.loads((index / "model_index.json").read_text())
    m["transformer"] = ["diffusers", "SanaTransformer2DModel"]
    (index / "model_index.json").write_text(json.dumps(m))
    with pytest.raises(MobilediffError, match="unsupported transformer class SanaTransformer2DModel"):
        load_pipeline(index, transformers=True)
    sched = _edit(pixart_dir, tmp_path / "sched", "scheduler", thresholding=True)
    with pytest.raises(MobilediffError, match="thresholding"):
        load_pipeline(sched, transformers=True)


@pytest.mark.parametrize("flags, what", [(["--fused-steps", "2"], "--fused-steps"),
                                         (["--image-modes"], "--image-modes"),
                                         (["--quantize", "int8-static"], "static int8")])
def test_export_options_not_built_for_pixart_are_refused(capsys, alpha_dir, tmp_path, flags, what):
    out = tmp_path / "b"
    code, _, err = run_cli_here(capsys, "export", "--model", alpha_dir, "--target", "onnx", "--out", out, *flags)
    assert code == 2 and len(error_lines(err)) == 1 and what in err and "PixArtAlphaPipeline" in err
    assert not out.exists()


def test_cli_generate_from_model_and_bundle(capsys, alpha_dir, tmp_path):
    bundle, target = _bundle(alpha_dir, tmp_path / "bundle")
    for name, source in (("model", ["--model", alpha_dir]), ("bundle", ["--bundle", bundle, "--runtime", target])):
        code, out, err = run_cli_here(capsys, "generate", *source, "--prompt", PROMPT, "--seed", "3", "--steps", "2",
                                      "--out", tmp_path / f"{name}.png")
        assert code == 0, err
    from PIL import Image
    import numpy as np

    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16) for n in ("model", "bundle"))
    assert np.abs(a - b).max() <= 1
    from mobilediff.lora import apply_adapters

    with pytest.raises(MobilediffError, match="--lora is not built for PixArtAlphaPipeline"):
        apply_adapters(load_pipeline(alpha_dir, transformers=True), [object()])


def test_commands_that_need_a_unet_refuse_pixart_in_one_line(capsys, alpha_dir, tmp_path):
    """distill-decoder, train-lora (and every other command of the UNet family) refuse a PixArt folder before
    reading weights, distill one without a flow-matching scheduler (mobilediff.train.flow_distill); goldens refuses a
    format-2 bundle (the apps' test vectors; the apps run CLIP bundles)."""
    for args, why in ((["distill", "--teacher", alpha_dir, "--method", "lcm", "--steps", "4", "--out", tmp_path / "d"],
                       "without a flow-matching scheduler"),
                      (["distill-decoder", "--model", alpha_dir, "--out", tmp_path / "dd"], "UNet pipeline"),
                      (["train-lora", "--model", alpha_dir, "--out", tmp_path / "l.safetensors"], "UNet pipeline")):
        code, _, err = run_cli_here(capsys, *args)
        assert code == 2 and len(error_lines(err)) == 1, (args, err)
        assert "PixArtAlphaPipeline" in err and why in err, err
        assert not any(p.name in ("d", "dd", "l.safetensors") for p in tmp_path.iterdir())
    bundle, target = _bundle(alpha_dir, tmp_path / "bundle")
    code, _, err = run_cli_here(capsys, "goldens", "--bundle", bundle, "--out", tmp_path / "g")
    assert code == 2 and error_lines(err) == [error_lines(err)[0]] and "format-2" in err and "CLIP" in err, err
    assert not (tmp_path / "g").exists()
