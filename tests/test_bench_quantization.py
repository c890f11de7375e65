"""The quantization benchmark (mobilediff.bench.quantization) on a tiny random pipeline: every recipe's component
rows, the keep-float ablations, the report files, and the target checks' arithmetic."""
import json

import pytest

from mobilediff.bench import quantization as qb
from mobilediff.bench.envelope import write_results


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_component_rows_for_onnx_recipes_and_an_ablation(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Every ONNX recipe and ablation is planned; two of them (float and the VAE-decoder ablation of the default int8
    recipe) are exported and measured here, each a whole bundle; every one of them is measured by
    `python benchmarks/quantization.py` (benchmarks/results/quantization.json)."""
    planned = qb.variants(["onnx"])
    assert [v for _, v, _ in planned] == ["fp32", "int8-static", "int8-dynamic", "fp16", "int8-weights", "int4-weights",
                                          "int8-static, nothing kept float", "int8-static + VAE decoder"]
    variants = ["fp32", "int8-static + VAE decoder"]
    from mobilediff.quantize import RECIPES

    default = RECIPES["onnx"]["int8-static"]
    assert "vae_decoder" not in default.components  # the default keeps the VAE decoder float
    ablation = next(r for _, v, r in planned if v == "int8-static + VAE decoder")
    assert ablation.components == default.components + ("vae_decoder",)
    monkeypatch.setattr(qb, "variants", lambda targets: [p for p in planned if p[1] in variants])
    res = qb.measure(qb.QuantizationConfig(model=str(tiny_pipeline_dir), targets=("onnx",), n=0, runs=2, warmup=1,
                                           calibration_prompts=4, calibration_rows=8))
    write_results(tmp_path, qb.output_files(res))
    rows = {(r["variant"], r["component"]): r for r in res["components"]}
    assert len(rows) == len(variants) * 3
    for (variant, comp), r in rows.items():
        assert r["size_bytes"] > 0 and r["median_ms"] > 0 and r["n"] == 2
        assert r["psnr_db"] >= 15  # every exported graph was checked against PyTorch at export
    # the UNet shrinks under int8 (weights 4x smaller; float conv_in/conv_out, QDQ scales and the graph itself stay:
    # about half of this tiny UNet's float file is graph, not weights)
    assert rows[("int8-static + VAE decoder", "unet")]["size_bytes"] * 2 < rows[("fp32", "unet")]["size_bytes"]
    # the ablation quantizes the VAE decoder too, the float bundle nothing
    assert rows[("int8-static + VAE decoder", "vae_decoder")]["quantized"]
    assert not any(rows[("fp32", c)]["quantized"] for c in ("text_encoder", "unet", "vae_decoder"))
    saved = json.loads((tmp_path / "quantization.json").read_text())
    assert saved["meta"]["machine"]["cores"] >= 1 and saved["end_to_end"] == []
    assert (tmp_path / "quantization.md").read_text().startswith("# Quantization")
    assert (tmp_path / "quantization.png").stat().st_size > 0


def test_target_checks():
    comp = [{"target": "onnx", "variant": v, "component": "unet", "size_bytes": s, "median_ms": m}
            for v, s, m in (("fp32", 400, 2.0), ("int8-static", 100, 1.0))]
    e2e = [{"target": "onnx", "variant": "fp32", "prompt_accuracy": 0.90, "fd": 20.0, "latency_ms": 10.0},
           {"target": "onnx", "variant": "int8-static", "prompt_accuracy": 0.87, "fd": 21.0, "latency_ms": 8.0}]
    got = {t["check"]: (round(t["value"], 6), t["met"]) for t in qb.check_targets(comp, e2e)}
    assert got == {"prompt accuracy drop (points)": (3.0, False), "FD ratio to float": (1.05, True),
                   "denoiser file shrink": (4.0, True), "denoiser speedup over float": (2.0, True),
                   "end-to-end speedup over float": (1.25, True)}


def test_image_psnr():
    import torch

    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.02  # mse 4e-4 on a peak-to-peak range of 2 -> 10 log10(4 / 4e-4) = 40 dB; image 0 is exact
    assert qb.image_psnr(b, a) == pytest.approx(40.0)
