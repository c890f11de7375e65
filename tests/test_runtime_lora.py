"""Run-time LoRA adapters (export --runtime-lora, generate --bundle --lora NAME:SCALE): a bundle exported once runs
each adapter, or a mix of them, as the PyTorch model with the adapters merged does; switching repacks an input and
reloads nothing; everything a bundle cannot hold or a mix cannot fit is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import error_lines, kohya_layout, run_cli_here
from mobilediff.errors import MobilediffError

COMMON = ["--prompt", "a red circle and a blue square", "--seed", "3", "--steps", "4", "--scale", "1"]


@pytest.fixture(scope="module")
def adapters(tiny_pipeline_dir, tmp_path_factory):
    """Two random adapters on the tiny pipeline: ``u`` on the UNet (rank 3), ``ut`` on the UNet and the text encoder
    (rank 2)."""
    from mobilediff.loading import load_pipeline
    from mobilediff.lora import random_adapter

    folder = tmp_path_factory.mktemp("adapters")
    pipe = load_pipeline(tiny_pipeline_dir)
    u = random_adapter(pipe, folder / "u.safetensors", rank=3, seed=1, std=0.3, text_targets=())
    ut = random_adapter(pipe, folder / "ut.safetensors", rank=2, seed=2, std=0.3)
    return u, ut


def _export(tiny_pipeline_dir, adapters, out: Path, target: str) -> Path:
    from mobilediff.cli import main

    u, ut = adapters
    try:
        main(["export", "--model", str(tiny_pipeline_dir), "--target", target, "--no-ort-format",
              "--runtime-lora", f"{u}:0.8", "--runtime-lora", str(ut), "--out", str(out)])
    except SystemExit as e:
        assert not e.code
    return out


@pytest.fixture(scope="module")
def bundle(tiny_pipeline_dir, adapters, tmp_path_factory):
    return _export(tiny_pipeline_dir, adapters, tmp_path_factory.mktemp("rtl") / "b", "onnx")


@pytest.fixture(scope="module")
def et_bundle(tiny_pipeline_dir, adapters, tmp_path_factory):
    """The same bundle on ExecuTorch (~50 s to lower on two busy cores): the extended tier. The default run meets
    ExecuTorch run-time adapters in CI's app fixtures (the default fixture holds two, run by the Kotlin engine and
    compared with Python's images)."""
    return _export(tiny_pipeline_dir, adapters, tmp_path_factory.mktemp("rtl-et") / "b", "executorch")


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def test_the_manifest_holds_slots_files_and_the_parity_against_the_merged_model(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    rec = m["adapters"]
    assert [f["name"] for f in rec["files"]] == ["u", "ut"]
    assert set(rec["slots"]) == {"unet", "text_encoder"}  # ut adapts the text encoder too
    assert rec["slots"]["unet"]["rank"] == 5 and rec["slots"]["text_encoder"]["rank"] == 5  # 3 + 2
    for name in ("unet", "text_encoder"):
        last = m["components"][name]["inputs"][-1]
        assert last["name"] == "lora_weights" and last["static_shape"] == [rec["slots"][name]["size"]]
        for f in m["components"][name]["files"]:
            par = f["parity"]["adapters"]
            adapted = [a for a in ("u", "ut") if a in par]
            assert adapted == (["u", "ut"] if name == "unet" else ["ut"])
            assert all(par[a]["psnr_db"] >= 60 for a in adapted), (name, f["target"], par)
    assert m["adapters"]["files"][0]["default_scale"] == 0.8
    for f in rec["files"]:
        assert (bundle / f["path"]).stat().st_size == f["size_bytes"]


@pytest.mark.parametrize("runtime", ["onnx", pytest.param("executorch", marks=pytest.mark.extended)])
def test_each_adapter_and_a_mix_give_the_merged_models_image(request, adapters, tiny_pipeline_dir, tmp_path, capsys,
                                                             runtime):
    u, ut = adapters
    bundle = request.getfixturevalue("et_bundle" if runtime == "executorch" else "bundle")
    if runtime == "executorch":
        par = json.loads((bundle / "manifest.json").read_text())["components"]["unet"]["files"][0]["parity"]
        assert all(par["adapters"][a]["psnr_db"] >= 60 for a in ("u", "ut"))
    cases = {"base": ([], []), "u": (["--lora", "u:0.8"], ["--lora", f"{u}:0.8"]),
             "mix": (["--lora", "ut:1", "--lora", "u:-0.5"], ["--lora", f"{ut}:1", "--lora", f"{u}:-0.5"])}
    images = {}
    for name, (on_bundle, on_model) in cases.items():
        for side, args in (("b", ["--bundle", bundle, "--runtime", runtime, *on_bundle]),
                           ("m", ["--model", tiny_pipeline_dir, *on_model])):
            code, _, err = run_cli_here(capsys, "generate", *args, *COMMON, "--out", tmp_path / f"{name}{side}.png")
            assert code == 0, err
            images[name + side] = _png(tmp_path / f"{name}{side}.png")
        assert np.abs(images[name + "b"] - images[name + "m"]).max() <= 1, name
    assert np.abs(images["ub"] - images["baseb"]).max() > 2 and np.abs(images["mixb"] - images["ub"]).max() > 2


def test_switching_repacks_the_input_and_reloads_nothing(bundle):
    from mobilediff.engine import BundleRunner

    runner = BundleRunner(bundle, "onnx")
    parts = dict(runner.parts)
    seq = [[], [("u", 1.0)], [("ut", 0.5), ("u", 1.0)], []]
    got = []
    for mix in seq:
        runner.set_adapters(mix)
        got.append(runner.generate("a red circle", 1, steps=2))
    assert all(runner.parts[k] is v for k, v in parts.items())
    assert torch.equal(got[0], got[3])
    fresh = BundleRunner(bundle, "onnx", adapters=[("ut", 0.5), ("u", 1.0)]).generate("a red circle", 1, steps=2)
    assert torch.equal(got[2], fresh)
    assert (got[1] - got[0]).abs().max() > 1e-2


def test_pack_follows_the_contract():
    from mobilediff.runtime_lora import Slots, pack

    slots = Slots("unet", 3, [{"module": "a", "in_features": 2, "out_features": 4, "down_offset": 0, "up_offset": 6},
                              {"module": "b", "in_features": 3, "out_features": 1, "down_offset": 18,
                               "up_offset": 27}])
    assert slots.size == 30
    d1, u1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    d2, u2 = torch.ones(2, 3), torch.full((1, 2), 2.0)
    v = pack(slots, [({"a": (d1, u1)}, 0.5), ({"a": (torch.ones(2, 2), torch.ones(4, 2)), "b": (d2, u2)}, 2.0)])
    assert v[0:6].view(3, 2).tolist() == [[1, 2], [1, 1], [1, 1]]
    assert v[6:18].view(4, 3)[:, 0].tolist() == [0.5, 1.0, 1.5, 2.0] and v[6:18].view(4, 3)[0, 1:].tolist() == [2, 2]
    assert v[18:27].view(3, 3).tolist() == [[0, 0, 0], [1, 1, 1], [1, 1, 1]]  # b: slots 1..2 (after a's rank 1)
    assert v[27:30].tolist() == [0, 4, 4]
    with pytest.raises(MobilediffError, match="need 5 rank slots; the bundle's unet has 3"):
        pack(slots, [({"a": (torch.ones(3, 2), torch.ones(4, 3))}, 1.0), ({"b": (d2, torch.ones(1, 2))}, 1.0)])


def test_a_static_int8_base_keeps_the_adapters_in_float(tiny_pipeline_dir, adapters, tmp_path, capsys):
    u, _ = adapters
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--no-ort-format",
                                "--quantize", "int8-static", "--calibration-prompts", _prompts(tmp_path),
                                "--runtime-lora", str(u), "--out", tmp_path / "q")
    assert code == 0, err
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    f = m["components"]["unet"]["files"][0]
    assert f["quantization"] == "int8-static"
    # the adapter's products multiply two activations: kept float like the attention's
    assert f["export"]["quantization"]["activation_matmuls_kept_float"] >= 2 * len(m["adapters"]["slots"]["unet"]["layers"])
    assert f["parity"]["adapters"]["u"]["psnr_db"] >= f["parity"]["min_psnr_db"]
    # the adapter is applied: the int8 graph with it is nearer the merged model than without it
    par = f["parity"]["adapters"]["u"]
    assert par["psnr_db"] > par["adapter_off_psnr_db"] + 3, par


# ~100 s on two busy cores (three components quantized and lowered): in the extended tier. The default run checks the
# ExecuTorch int8 keep-float path in tests/test_quantize.py and the run-time adapter on ExecuTorch fp32 above;
# benchmarks/runtime_adapters.py measures this combination on the embedded models.
@pytest.mark.extended
def test_executorch_int8_keeps_the_adapter_float_and_applies_it(tiny_pipeline_dir, adapters, tmp_path, capsys):
    u, _ = adapters
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "executorch", "--quantize",
                                "int8", "--calibration-prompts", _prompts(tmp_path), "--runtime-lora", str(u), "--out",
                                tmp_path / "q")
    assert code == 0, err
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    par = m["components"]["unet"]["files"][0]["parity"]["adapters"]["u"]
    assert par["psnr_db"] > par["adapter_off_psnr_db"] + 3, par


def _prompts(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("a red circle\na blue square\n")
    return p


def test_refusals_are_one_line(bundle, adapters, tiny_pipeline_dir, tmp_path, capsys):
    u, ut = adapters
    gen = ["generate", "--bundle", bundle, *COMMON, "--out", tmp_path / "x.png"]
    for extra, message in (
            (["--lora", "nope"], "error: --lora nope: the bundle holds no run-time adapter of that name (it holds: u, ut)"),
            (["--lora", "u:nan"], "error: --lora u:nan: the scale must be a finite number, got nan"),
            (["--lora", "u", "--lora", "u:2"], "error: --lora u is given twice")):
        code, _, err = run_cli_here(capsys, *gen, *extra)
        assert code != 0 and error_lines(err) == [message], err
    assert not (tmp_path / "x.png").exists()
    exp = ["export", "--model", tiny_pipeline_dir, "--target", "onnx", "--out", tmp_path / "b"]
    for extra, message in (
            (["--lora-rank", "4"], "--lora-rank sizes the run-time adapters' slots: give them with --runtime-lora"),
            (["--runtime-lora", str(u), "--lora-rank", "2"], "--lora-rank 2 is below the rank of an adapter (3)"),
            (["--runtime-lora", str(u), "--fused-steps", "2"], "--runtime-lora and --fused-steps do not combine"),
            (["--runtime-lora", str(u), "--runtime-lora", str(u)], "two adapters are named 'u'")):
        code, _, err = run_cli_here(capsys, *exp, *extra)
        assert code != 0 and len(error_lines(err)) == 1 and message in err, err
        assert not (tmp_path / "b").exists()


def test_a_full_mix_fits_a_bundle_without_adapters_and_a_modified_file_are_refused(
        bundle, adapters, tiny_pipeline_dir, tmp_path, capsys):
    import shutil

    from mobilediff.engine import BundleRunner

    runner = BundleRunner(bundle, "onnx")
    runner.set_adapters([("u", 1.0), ("ut", 1.0)])  # 3 + 2 = the 5 slots
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "adapters" / "u.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(MobilediffError, match="does not match its sha256"):
        BundleRunner(copy, "onnx", adapters=[("u", 1.0)])
    plain = tmp_path / "plain"
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--no-ort-format",
                                "--out", plain)
    assert code == 0, err
    with pytest.raises(MobilediffError, match="holds no run-time adapters"):
        BundleRunner(plain, "onnx", adapters=[("u", 1.0)])


def test_a_convolution_adapter_is_refused_for_run_time_slots(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from mobilediff.loading import load_pipeline
    from mobilediff.lora import Adapter
    from mobilediff.runtime_lora import read_adapters

    pipe = load_pipeline(tiny_pipeline_dir)
    ref = load_pipeline(tiny_pipeline_dir)
    ref.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["conv1"], init_lora_weights=False), "c")
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=get_peft_model_state_dict(ref.unet, adapter_name="c"),
                                              weight_name="c.safetensors")
    with pytest.raises(MobilediffError, match="a Conv2d with a 3x3 kernel; run-time slots hold linear layers and 1x1 convolutions only: merge this "
                                                 "adapter with --lora"):
        read_adapters(pipe, [Adapter(tmp_path / "c.safetensors")])
    assert not any("lora" in n for n, _ in pipe.unet.named_modules())  # the pipeline is left as it was


def _kohya_pointwise_adapter(tiny_pipeline_dir, path: Path) -> Path:
    """A seeded random adapter in the kohya/A1111 layout on the attention's to_q and its 1x1-convolution proj_in /
    proj_out (SD-1.x's; what kohya-trained adapters adapt), the convolutions' matrices as 1x1 kernels."""
    from safetensors.torch import load_file

    from mobilediff.loading import load_pipeline
    from mobilediff.lora import random_adapter

    own = random_adapter(load_pipeline(tiny_pipeline_dir), path.parent / "peft.safetensors", rank=2, seed=5, std=0.3,
                         unet_targets=("to_q", "proj_in", "proj_out"), text_targets=())
    kohya_layout(own, path, alpha=2)
    assert any(v.dim() == 4 for v in load_file(str(path)).values())  # the convolutions' 1x1 kernels
    return path


def test_a_kohya_adapter_of_1x1_convolutions_runs_at_run_time_as_merged(tiny_pipeline_dir, tmp_path, capsys):
    k = _kohya_pointwise_adapter(tiny_pipeline_dir, tmp_path / "k.safetensors")
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--no-ort-format",
                                "--runtime-lora", str(k), "--out", tmp_path / "b")
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    modules = [l["module"] for l in m["adapters"]["slots"]["unet"]["layers"]]
    assert any(n.endswith("proj_in") for n in modules) and any(n.endswith("proj_out") for n in modules)
    par = m["components"]["unet"]["files"][0]["parity"]
    assert par["adapters"]["k"]["psnr_db"] >= par["min_psnr_db"]
    images = {}
    for side, args in (("b", ["--bundle", tmp_path / "b", "--lora", "k"]),
                       ("m", ["--model", tiny_pipeline_dir, "--lora", str(k)]),
                       ("base", ["--bundle", tmp_path / "b"])):
        code, _, err = run_cli_here(capsys, "generate", *args, *COMMON, "--out", tmp_path / f"{side}.png")
        assert code == 0, err
        images[side] = _png(tmp_path / f"{side}.png")
    assert np.abs(images["b"] - images["m"]).max() <= 1
    assert np.abs(images["b"] - images["base"]).max() > 2


def test_lcm_lora_trains_resumes_and_runs_as_a_run_time_adapter_with_the_lcm_table(tiny_pipeline_dir, tmp_path,
                                                                                    capsys):
    """distill --method lcm-lora: a LoRA on the teacher's linear layers (attention, feed-forward, time-embedding
    projections) trained with the LCM objective at one guidance; the teacher's bundle carries LCM tables, so the
    adapter runs switched on at LCM-2, guidance 1, as the merged model does."""
    from safetensors import safe_open

    args = ["distill", "--teacher", tiny_pipeline_dir, "--method", "lcm-lora", "--steps", "2", "--out",
            tmp_path / "run", "--batch-size", "4", "--latent-cache", "16", "--checkpoint-every", "2", "--lora-rank", "2",
            "--ddim-timesteps", "10"]
    code, out, err = run_cli_here(capsys, *args, "--max-train-steps", "2")
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter" / "adapter.safetensors"
    with safe_open(str(adapter), "pt") as f:
        keys = list(f.keys())
    assert any(".ff.net.2.lora_A" in k for k in keys) and any("time_emb_proj.lora_A" in k for k in keys)
    record = json.loads((tmp_path / "run" / "adapter" / "training.json").read_text())
    assert record["method"] == "lcm-lora" and record["sampling"] == {"sampler": "lcm", "steps": 2, "guidance": 1.0}
    code, _, err = run_cli_here(capsys, *args, "--max-train-steps", "3", "--resume", "latest")
    assert code == 0, err
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--no-ort-format",
                                "--runtime-lora", adapter, "--out", tmp_path / "b")
    assert code == 0, err
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {t["name"] for t in m["samplers"]} >= {"ddim", "lcm"}  # a teacher's bundle has the LCM tables too
    plan = ["--sampler", "lcm", "--steps", "2", "--guidance", "1", "--prompt", "a red circle", "--scale", "1"]
    for args2, png in ((["--bundle", tmp_path / "b", "--lora", "adapter"], "b.png"),
                       (["--model", tiny_pipeline_dir, "--lora", adapter], "m.png")):
        code, _, err = run_cli_here(capsys, "generate", *args2, *plan, "--out", tmp_path / png)
        assert code == 0, err
    assert np.abs(_png(tmp_path / "b.png") - _png(tmp_path / "m.png")).max() <= 1


def test_static_calibration_rows_keep_one_lora_vector_per_call():
    """A static-batch target (ExecuTorch) regroups batch-1 calibration rows to its batch: the batched inputs are
    concatenated, the adapter slots' vector is not (one per call)."""
    from types import SimpleNamespace

    from mobilediff.components import TensorSpec
    from mobilediff.quantize import static_rows

    spec = SimpleNamespace(name="unet", dims={"batch": 2},
                           inputs=(TensorSpec("sample", ("batch", 4), "float32"), TensorSpec("lora_weights", (6,), "float32")))
    rows = [(torch.full((1, 4), float(i)), torch.zeros(6)) for i in range(5)]
    out = static_rows(spec, rows)
    assert len(out) == 2 and out[0][0].shape == (2, 4) and out[0][1].shape == (6,)
    assert out[1][0][:, 0].tolist() == [2.0, 3.0]


def test_core_ml_takes_the_adapter_input_and_is_checked_structurally_here(tiny_pipeline_dir, adapters, tmp_path,
                                                                          capsys):
    u, _ = adapters
    code, _, err = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "coreml", "--runtime-lora",
                                str(u), "--out", tmp_path / "c")
    assert code == 0, err
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    f = m["components"]["unet"]["files"][0]
    assert m["components"]["unet"]["inputs"][-1]["name"] == "lora_weights"
    assert "checked" in f["parity"]["adapters"]["u"]  # numbers on macOS only
