"""The real-architectures benchmark (mobilediff.bench.real_architectures): the architectures against their published
sizes, and a whole run at scale "tiny" (every channel width / 10, same blocks) through ONNX: result schema, parity,
statistics."""
import json
import math

import pytest

from mobilediff.bench import real_architectures as ra
from mobilediff.bench.real_architectures import RealArchConfig
from mobilediff.errors import MobilediffError
from mobilediff.parity import MIN_PSNR_DB

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.mark.parametrize("arch,params", [("sd15", 859_520_964), ("bk-sdm-tiny", 323_384_964)])
def test_full_configs_have_the_published_parameter_counts(arch, params):
    # SD-1.5's UNet: 859.5 M; BK-SDM-Tiny's: 0.32 B (Kim et al. 2023, table 1); counted on the meta device
    assert ra._weight_bytes_estimate(arch, "full") == 4 * params


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_tiny_run_writes_the_documented_schema(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    returned = ra.measure(RealArchConfig(out=out, arch=("bk-sdm-tiny",), scale="tiny", targets=("onnx",),
                                         resolution=(64,), runs=3, warmup=1, work=work))
    data = json.loads((out / "real_architectures.json").read_text())
    assert data == json.loads(json.dumps(returned))
    assert data["schema"] == "mobilediff.real_architectures/1" and data["latency_only"] is True and data["complete"]
    assert {"cpu", "cores", "memory_gib"} <= set(data["machine"]) and {"torch", "onnxruntime"} <= set(data["versions"])
    s = data["settings"]
    assert (s["archs"], s["targets"], s["resolutions"], s["scale"], s["runs"], s["warmup"], s["batch"]) == \
        (["bk-sdm-tiny"], ["onnx"], [64], "tiny", 3, 1, None)
    arch = data["architectures"]["bk-sdm-tiny"]
    assert arch["params"] == 4_183_620 and arch["unet_config"]["block_out_channels"] == [32, 64, 128]
    assert arch["unet_config"]["mid_block_type"] is None and arch["weight_bytes"] == 4 * arch["params"]

    eager, onnx, coreml = data["rows"]
    assert (eager["runtime"], onnx["runtime"]) == ("pytorch", "onnx")
    assert (coreml["runtime"], coreml["status"]) == ("coreml", "not run") and "cannot predict" in coreml["reason"]
    for row in (eager, onnx):
        assert (row["arch"], row["resolution"], row["status"], row["reason"], row["latency_only"]) == \
            ("bk-sdm-tiny", 64, "ok", None, True)
        # the declared CFG batch of 2, 64 px -> 8 x 8 latents, a 77 x 768 text context
        assert row["input_shapes"] == {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 77, 768]}
        lat = row["latency"]
        assert lat["n"] == 3 and len(lat["samples_ms"]) == 3 and lat["reportable"] is False
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"]
        assert row["peak_rss_mib"] > 0
    assert onnx["parity"]["psnr_db"] >= MIN_PSNR_DB["fp32"] and onnx["parity"]["max_abs_error"] < 1e-3
    assert onnx["parity"]["checked"] == "numerically against PyTorch"
    export = onnx["export"]
    assert [f["path"] for f in export["files"]] == ["unet/model.onnx"] and export["facts"]["external_data"] == []
    assert export["total_bytes"] == export["files"][0]["bytes"] > 4 * arch["params"]
    assert export["seconds"] > 0 and export["peak_rss_mib"] > 0 and onnx["load_seconds"] > 0
    assert math.isclose(onnx["speedup_vs_eager"], eager["latency"]["median_ms"] / onnx["latency"]["median_ms"])

    md = (out / "real_architectures.md").read_text()
    assert "**Random weights**" in md and "latency-only" in md and md.count("| BK-SDM-Tiny UNet | 4.2 M | 64 (2x4x8x8) |") == 2
    assert "| BK-SDM-Tiny UNet | 4.2 M | 64 | coreml |" in md
    assert not list(work.iterdir())  # each exported file is deleted once measured


def test_a_failing_step_is_recorded_and_the_run_goes_on(tmp_path):
    out = tmp_path / "out"
    data = ra.measure(RealArchConfig(out=out, arch=("bk-sdm-tiny",), scale="tiny", targets=("onnx",), resolution=(64,),
                                     runs=1, warmup=0, cell_timeout=1, work=tmp_path / "w"))
    assert [(r["runtime"], r["status"]) for r in data["rows"]] == \
        [("pytorch", "failed"), ("onnx", "failed"), ("coreml", "not run")]
    assert "exceeded 1 s" in data["rows"][0]["reason"] and data["rows"][1]["reason"].startswith("export: ")
    assert data["complete"] and "| failed: " in (out / "real_architectures.md").read_text()


def _allocate_3_gib(job, result):
    """A step that needs more memory than its limit (module level: it runs in a spawned process)."""
    ra._prepare(job)
    import torch

    torch.ones(3 << 30, dtype=torch.uint8)


def test_a_step_over_its_memory_limit_fails_with_that_reason(tmp_path):
    job = {"max_memory_bytes": 2 << 30, "threads": 1}
    got, peak, err = ra.run_cell(_allocate_3_gib, job, tmp_path, "alloc", timeout_s=300)
    assert got is None and peak is None
    assert err.startswith("out of memory under the 2.00 GiB limit (--max-memory-gib): ") and "can't allocate" in err
    assert not list(tmp_path.iterdir())


def test_bad_resolution_is_refused_before_any_work(tmp_path):
    with pytest.raises(MobilediffError, match="^--resolution must be a positive multiple of 64 for sd15, got 96$"):
        ra.measure(RealArchConfig(out=tmp_path / "out", arch=("sd15",), resolution=(96,)))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.extended  # only the peer benchmark (never in CI) reads this folder
def test_the_peer_pipeline_holds_our_unet_weights_in_the_layout_a_checkpoint_engine_reads(tmp_path):
    """--peer: stable-diffusion.cpp reads a diffusers folder (unet/, vae/, text_encoder/ safetensors); the UNet in it
    has exactly the seeded weights our rows time (build_spec), the VAE and text encoder SD-1.x's shapes."""
    from safetensors.torch import load_file

    folder = ra.peer_pipeline_dir("bk-sdm-tiny", "tiny", 3, tmp_path / "pipe")
    for f in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
              "text_encoder/model.safetensors", "model_index.json", "tokenizer/vocab.json"):
        assert (folder / f).is_file(), f
    assert not list(folder.rglob("*.bin"))  # safetensors only
    ours = ra.build_spec("bk-sdm-tiny", "tiny", 64, None, 3).module.unet.state_dict()
    theirs = load_file(str(folder / "unet/diffusion_pytorch_model.safetensors"))
    assert set(theirs) == set(ours) and all((theirs[k] == ours[k]).all() for k in ours)
    vae = json.loads((folder / "vae/config.json").read_text())
    te = json.loads((folder / "text_encoder/config.json").read_text())
    assert vae["block_out_channels"] == [128, 256, 512, 512] and vae["scaling_factor"] == 0.18215
    assert (te["hidden_size"], te["num_hidden_layers"], te["max_position_embeddings"]) == (768, 12, 77)
    keys = load_file(str(folder / "text_encoder/model.safetensors")).keys()
    assert all(k.startswith(("text_model.", "text_projection.")) for k in keys)  # the layout older loaders read


@pytest.mark.parametrize("kw,message", [({"peers": ("sdcpp",), "scale": "tiny"}, "--peer needs --scale full"),
                                        ({"peers": ("other",)}, "--peer must be one of sdcpp"),
                                        ({"peers": ("sdcpp",), "peer_steps": 1}, "--peer-steps")])
def test_bad_peer_settings_are_refused_before_any_work(tmp_path, kw, message):
    with pytest.raises(MobilediffError, match=message):
        RealArchConfig(out=tmp_path / "out", **kw).check()
    assert not (tmp_path / "out").exists()


def test_a_peer_row_is_written_with_how_its_step_was_measured(tmp_path):
    """The Markdown says how the peer's step was measured (a difference of whole generates), and its row sits in
    the same table as ours with a speedup against the same eager median."""
    peer_run = {"generate_1_ms": [100.0], "generate_3_ms": [300.0], "cfg_scale": 7.0, "threads": 2,
                "package": "stable-diffusion-cpp-python 0.4.7", "weights": "f32", "sampler": "euler"}
    result = {"schema": ra.SCHEMA, "command": "python benchmarks/real_architectures.py --peer sdcpp", "created": "now",
              "complete": True, "parity_floor_db": 60.0,
              "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "load_average_at_start": [0.1]},
              "settings": {"batch": None, "runs": 10, "warmup": 3, "threads": 2, "scale": "full", "peer_steps": 3},
              "architectures": {}, "rows": [
                  {"arch": "sd15", "resolution": 512, "runtime": "stable-diffusion.cpp", "peer": True, "status": "ok",
                   "batch": 2, "latency": {**ra._latency([100.0]), "median_ms": 100.0}, "load_seconds": 4.0,
                   "peer_run": peer_run, "speedup_vs_eager": 2.0}]}
    ra.write_results(tmp_path, result)
    md = (tmp_path / "real_architectures.md").read_text()
    assert "| stable-diffusion.cpp |" in md and "(t(3-step generate) - t(1-step generate)) / 2" in md
    assert "stable-diffusion-cpp-python 0.4.7" in md


def test_pixart_alpha_is_the_published_0_6_b_transformer_declared_as_the_exporter_declares_it():
    """PixArt-alpha XL/2: 0.6 B parameters (Chen et al. 2023); its declared step takes the caption mask and the 120
    T5 tokens of width 4096 (at scale tiny: width / 10), at the CFG batch of 2."""
    import torch

    n = ra._weight_bytes_estimate("pixart-alpha", "full") // 4
    assert 0.6e9 <= n < 0.62e9
    spec = ra.build_spec("pixart-alpha", "tiny", 64, None, 0)
    shapes = {t.name: t.static_shape(spec.dims) for t in spec.inputs}
    assert shapes == {"sample": (2, 4, 8, 8), "timestep": (2,), "encoder_hidden_states": (2, 120, 409),
                      "encoder_attention_mask": (2, 120)}
    with torch.no_grad():
        out = spec.module(*spec.example_inputs(0))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(MobilediffError, match="multiple of 16 for pixart-alpha"):
        RealArchConfig(out=tmp_path_unused(), arch=("pixart-alpha",), resolution=(72,)).check()
    assert ra._peers(RealArchConfig(out=tmp_path_unused(), peers=("sdcpp",)), "pixart-alpha") == ()


def tmp_path_unused():
    from pathlib import Path

    return Path("/nonexistent/never-written")
