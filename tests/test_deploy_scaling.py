"""The scaling study on the deployment axis (mobilediff/bench/deploy_scaling.py): rows costed in FLOPs, eager and
runtime latency, the verdicts per unit, and the kernel-bound fit with its crossover, on small synthetic studies."""
from __future__ import annotations

import pytest

from mobilediff.bench.deploy_scaling import (EAGER_UNIT, FLOPS_UNIT, StepCost, judge, kernel_bound_table,
                                             merge_costs, params_at, rows_in_unit, step_fit, units_of)
from mobilediff.configurations import DeviceCost


def study(step_ms):
    """Two sizes, teacher DDIM at 1-32 steps. The large model has 8x the FLOPs and 0.08 more accuracy at equal steps;
    each doubling of the steps adds 0.05 (so twice the steps do not make up the gap, eight times do); eager step
    times ``step_ms`` {model: ms}."""
    rows = []
    for model, params, gflop_step, acc0 in (("small", 1000, 1.0, 0.50), ("large", 8000, 8.0, 0.58)):
        for steps in (1, 2, 4, 8, 16, 32):
            acc = acc0 + 0.05 * (steps.bit_length() - 1)
            rows.append({"model": model, "pipeline": model, "method": "teacher", "sampler": "ddim", "steps": steps,
                         "guidance": 1.0, "unet_rows": 1, "unet_params": params,
                         "gflops_per_image": 0.5 + steps * gflop_step, "latency_ms": 1.0 + steps * step_ms[model],
                         "latency_parts": {"unet_step_ms": step_ms[model]}, "prompt_accuracy": acc, "fd": 30.0 - acc})
    return rows


def cost(source, runtime, unet_ms, precision="fp32", decoder=None):
    return DeviceCost(source=source, paths=(), runtime=runtime, precision=precision, decoder_model=decoder,
                      bundle=None, weights_sha256=None, text_encoder_ms=0.5, unet_ms=unet_ms, vae_decoder_ms=0.5)


def test_rows_are_costed_in_each_unit():
    rows = study({"small": 4.0, "large": 4.5})
    costs = merge_costs([cost("small", "onnx", {1: 1.0}), cost("large", "onnx", {2: 9.0}),
                         cost("large", "onnx", {1: 8.0}),  # a second file fills batch 1
                         cost("small", "eager", {1: 99.0}),  # eager: the study's own
                         cost("small", "onnx", {1: 0.1}, decoder="default:tiny")])  # another decoder: not the study's
    assert set(costs) == {("small", "onnx", "fp32"), ("large", "onnx", "fp32")}
    assert costs[("large", "onnx", "fp32")].unet_ms == {1: 8.0, 2: 9.0}
    assert units_of(costs) == [FLOPS_UNIT, EAGER_UNIT, "onnx fp32"]
    flops, _ = rows_in_unit(rows, FLOPS_UNIT, costs)
    assert [r["latency_ms"] for r in flops] == [r["gflops_per_image"] for r in rows]
    onnx, dropped = rows_in_unit(rows, "onnx fp32", costs)
    assert dropped == 0 and len(onnx) == len(rows)
    r = next(x for x in onnx if x["model"] == "large" and x["steps"] == 4)
    assert r["latency_ms"] == pytest.approx(0.5 + 4 * 8.0 + 0.5) and r["runtime"] == "onnx"
    _, dropped = rows_in_unit(rows, "onnx fp32", {k: v for k, v in costs.items() if k[0] == "small"})
    assert dropped == len(rows) // 2  # the large model was not timed: its rows are left out, and counted


def test_the_verdict_changes_with_the_unit():
    """Kernel-bound eager (the large model's step costs about the small one's): the large model wins every budget.
    In FLOPs, and on a runtime whose step time follows FLOPs, the small model wins the low budgets."""
    rows = study({"small": 4.0, "large": 4.4})
    costs = merge_costs([cost("small", "onnx", {1: 0.5}), cost("large", "onnx", {1: 4.0})])
    verdicts = {j["unit"]: j["verdicts"][0]["verdict"] for j in judge(rows, costs)}
    assert verdicts[EAGER_UNIT] == "does not hold"
    assert verdicts[FLOPS_UNIT] == "holds" and verdicts["onnx fp32"] == "holds"


def test_a_unit_with_one_model_gives_no_verdict():
    rows = study({"small": 4.0, "large": 4.4})
    (j,) = [x for x in judge(rows, merge_costs([cost("small", "onnx", {1: 0.5})])) if x["unit"] == "onnx fp32"]
    assert j["verdicts"] == [] and "1 model size" in j["reason"] and j["dropped"] == len(rows) // 2


def test_step_fit_and_crossover():
    fit = step_fit([(1.0, 3.0), (3.0, 7.0), (2.0, 5.0)])
    assert fit["fixed_ms"] == pytest.approx(1.0) and fit["ms_per_gflop"] == pytest.approx(2.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["crossover_gflop"] == pytest.approx(0.5)
    assert step_fit([(1.0, 3.0)]) is None and step_fit([(1.0, 3.0), (1.0, 4.0)]) is None
    assert step_fit([(1.0, 5.0), (2.0, 4.0)])["crossover_gflop"] is None  # time falls with FLOPs: no crossover
    pts = [{"gflop": 1.0, "unet_params": 100}, {"gflop": 4.0, "unet_params": 400}]
    assert params_at(2.0, pts) == pytest.approx(200) and params_at(16.0, pts) == pytest.approx(1600)


def test_kernel_bound_table_places_real_models_on_the_family_line():
    rows = study({"small": 4.0, "large": 4.4})
    costs = merge_costs([cost("small", "onnx", {1: 1.0}), cost("large", "onnx", {1: 8.0})])
    table = {t["unit"]: t for t in kernel_bound_table(rows, costs, real=[
        {"label": "sd15 256 px", "runtime": "onnx", "gflop": 100.0, "ms": 90.0}])}
    eager = table[EAGER_UNIT]
    assert [p["ms"] for p in eager["points"]] == [4.4, 4.0]  # large, small (by name)
    assert eager["fit"]["ms_per_gflop"] == pytest.approx(0.4 / 7)
    assert eager["crossover_gflop"] == pytest.approx((4.0 - 0.4 / 7) / (0.4 / 7))  # kernel-bound: far above
    onnx = table["onnx fp32"]
    assert onnx["fit"]["ms_per_gflop"] == pytest.approx(1.0) and onnx["crossover_gflop"] is None  # no fixed part
    assert onnx["real"][0]["family_fit_ms"] == pytest.approx(100.0)


def test_real_size_points_count_flops_without_weights():
    """A real_architectures-shaped result with a tiny UNet config: GFLOP counted on the meta device, failed rows and
    unknown architectures skipped, PyTorch rows put under eager."""
    from mobilediff.bench.deploy_scaling import real_points

    cfg = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
           "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
           "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1, "cross_attention_dim": 32,
           "attention_head_dim": 8, "norm_num_groups": 8}
    shapes = {"sample": [2, 4, 8, 8], "timestep": [2], "encoder_hidden_states": [2, 7, 32]}
    result = {"architectures": {"tiny": {"title": "Tiny UNet", "unet_config": cfg, "params": 1}},
              "settings": {"precision": "fp32"},
              "rows": [{"arch": "tiny", "runtime": "pytorch", "status": "ok", "resolution": 64,
                        "input_shapes": shapes, "latency": {"median_ms": 5.0}},
                       {"arch": "tiny", "runtime": "onnx", "status": "ok", "resolution": 64,
                        "input_shapes": shapes, "latency": {"median_ms": 2.0}},
                       {"arch": "tiny", "runtime": "executorch", "status": "failed", "resolution": 64,
                        "input_shapes": shapes, "latency": None},
                       {"arch": "other", "runtime": "onnx", "status": "ok", "latency": {"median_ms": 1.0}}]}
    pts = real_points(result)
    assert [(p["runtime"], p["precision"], p["ms"]) for p in pts] == [("eager", "fp32", 5.0), ("onnx", "fp32", 2.0)]
    assert pts[0]["gflop"] == pts[1]["gflop"] > 0 and pts[0]["label"] == "Tiny UNet 64 px, batch 2"
