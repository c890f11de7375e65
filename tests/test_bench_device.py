"""The device benchmark (mobilediff.bench.device_run, the library under benchmarks/run_device.py): host runs on tiny
exported bundles (schema, plots, targets, memory), roles and plans from the manifest alone, the Android path with a
fake adb that answers with the recorded runner outputs of tests/data/device_outputs/, the Apple path (its non-macOS
error; a fake coremltools), and bad input (one error line, exit code 2, nothing written)."""
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import error_lines
from mobilediff.bench import device_report
from mobilediff.bench.android import Adb, AndroidOptions, push_bundle_commands, subprocess_runner
from mobilediff.bench.apple import apple_components, check_apple
from mobilediff.bench.bundles import COMPONENTS, PlanChoice, inspect_bundles
from mobilediff.bench.device_run import (OUTPUT_FILES, Settings, estimated_end_to_end, execute, parse_baseline,
                                         prepare, quality_bars)
from mobilediff.bench.envelope import run_command
from mobilediff.bench.stats import summarize
from mobilediff.bundle import FileEntry, read_manifest, write_manifest
from mobilediff.errors import MobilediffError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
OUTPUTS = Path(__file__).parent / "data" / "device_outputs"
SERIAL = "R5CT1234"
ET_RUNNER = "/data/local/tmp/et/executor_runner"
ORT_PERF = "/data/local/tmp/ort/onnxruntime_perf_test"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny teacher at 64x64 (the evaluator's resolution) and a tiny LCM-style student of it: the same
    components with a guidance-embedding UNet and a distillation.json, as `mobilediff distill` writes."""
    from diffusers import UNet2DConditionModel

    from mobilediff.loading import load_pipeline
    from mobilediff.tiny import TINY_MODEL, tiny_pipeline

    root = tmp_path_factory.mktemp("run_device_models")
    model = dataclasses.replace(TINY_MODEL, unet=dataclasses.replace(TINY_MODEL.unet, sample_size=32))
    teacher = root / "teacher"
    tiny_pipeline(0, model).save_pretrained(str(teacher), safe_serialization=True)
    pipe = load_pipeline(teacher)
    torch.manual_seed(1)
    pipe.register_modules(unet=UNet2DConditionModel.from_config({**pipe.unet.config, "time_cond_proj_dim": 32}))
    student = root / "student"
    pipe.save_pretrained(str(student), safe_serialization=True)
    (student / "distillation.json").write_text(json.dumps({"method": "lcm", "teacher": str(teacher),
                                                           "sampling": {"sampler": "lcm", "steps": 4, "guidance": 2.5}}))
    return SimpleNamespace(teacher=teacher, student=student)


@pytest.fixture(scope="module")
def bundles(models, tmp_path_factory):
    """ONNX bundles: the float teacher, the float student and the student with int8 (dynamic) weights; each one's
    role and default plan are written into its manifest by the exporter, from the model folder."""
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    root = tmp_path_factory.mktemp("run_device_bundles")
    out = SimpleNamespace(
        teacher=export_bundle(load_pipeline(models.teacher), "onnx", root / "teacher-fp32", source=str(models.teacher),
                              model_dir=models.teacher),
        student=export_bundle(load_pipeline(models.student), "onnx", root / "lcm-fp32", source=str(models.student),
                              model_dir=models.student, fused_steps=1))
    out.student_int8 = export_bundle(load_pipeline(models.student), "onnx", root / "lcm-int8", source=str(models.student),
                                     quantize="int8-dynamic", model_dir=models.student)
    return out


@pytest.fixture
def keep_threads():
    """--threads changes this process's torch thread count: put it back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def settings(*bundles, out, device="host", baseline="ddim50", steps=(1, 2, 4, 8), **kw) -> Settings:
    """Settings as run_device's flags make them (their defaults, the given bundles, baseline and LCM steps)."""
    return Settings(bundles=tuple(Path(b) for b in bundles), device=device, out=Path(out),
                    plans=PlanChoice(baseline=parse_baseline(baseline), steps=tuple(steps)), **kw)


def run_main(capsys, s: Settings, runner=subprocess_runner):
    """Run the benchmark as the command does: the exit code, stdout and stderr (an error is one line, code 2)."""
    code = run_command(lambda argv: execute(s, runner))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------------- host
SUMMARY_KEYS = {"n", "median_ms", "p90_ms", "mean_ms", "trimmed_mean_ms", "min_ms", "max_ms", "iqr_ms", "spread",
                "too_noisy", "reportable", "note", "warmup", "source"}


@pytest.fixture(scope="module")
def host_result(bundles, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_device_host") / "results"
    threads = torch.get_num_threads()
    try:
        execute(settings(bundles.teacher, bundles.student, bundles.student_int8, out=out, steps=(1, 4), baseline="ddim2",
                         runs=3, warmup=1, load_runs=2, quality_n=3, threads=1, memory=False))
    finally:
        torch.set_num_threads(threads)
    return out, json.loads((out / "run_device.json").read_text())


@pytest.mark.slow
def test_host_schema_and_files(host_result):
    out, r = host_result
    assert {p.name for p in out.iterdir()} == set(OUTPUT_FILES)  # no temporary folder left behind
    assert r["schema"] == {"name": "mobilediff.run_device", "version": 1,
                           "doc": "benchmarks/run_device.py module docstring"}
    assert set(r) >= {"created", "command", "wall_seconds", "device", "versions", "settings", "bundles", "components",
                      "end_to_end", "targets"}
    assert r["device"]["kind"] == "host" and r["device"]["machine"]["cores"] >= 1
    assert "Android" in r["device"]["not_run"][0] and "Apple" in r["device"]["not_run"][0]
    assert r["versions"]["onnxruntime"] and r["settings"]["runs"] == 3 and r["settings"]["quality_n"] == 3
    assert r["settings"]["runtime_threads"]["torch (eager)"] == 1
    assert r["settings"]["runtime_threads"]["onnxruntime intra-op"] == 1
    assert r["settings"]["baseline"] == {"sampler": "ddim", "steps": 2}
    from PIL import Image

    for png in ("run_device_latency.png", "run_device_quality.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 500
    md = (out / "run_device.md").read_text()
    assert "Measured on this host" in md and "Not run here:" in md and "Android" in md
    assert "| target |" in md and "## Components" in md and "## End to end" in md


def test_host_bundles_roles_and_plans(host_result, models):
    _, r = host_result
    b = {x["name"]: x for x in r["bundles"]}
    assert (b["teacher-fp32"]["role"], b["teacher-fp32"]["method"]) == ("teacher", "teacher")
    assert [(p["sampler"], p["steps"], p["guidance"], p["guidance_from"]) for p in b["teacher-fp32"]["plans"]] == \
        [("ddim", 2, 5.0, "manifest")]
    assert (b["lcm-fp32"]["role"], b["lcm-fp32"]["method"], b["lcm-fp32"]["precision"]) == ("student", "lcm", "fp32")
    # the student's own guidance comes from its bundle's default plan (the exporter read it from the model)
    assert [(p["sampler"], p["steps"], p["guidance"], p["guidance_from"]) for p in b["lcm-fp32"]["plans"]] == \
        [("lcm", 1, 2.5, "manifest"), ("lcm", 4, 2.5, "manifest")]
    assert b["lcm-fp32"]["default_plan"] == {"sampler": "lcm", "steps": 4, "guidance": 2.5}
    assert b["lcm-int8"]["quantization"] == "int8-dynamic" and b["lcm-int8"]["precision"] == "int8-dynamic"
    for x in b.values():
        assert x["source"]["checked"] is True and x["source"]["from"] == "manifest" and x["targets"] == ["onnx", "ort"]
    assert b["lcm-int8"]["source"]["path"] == str(models.student.resolve())


def test_host_component_rows(host_result):
    _, r = host_result
    rows = r["components"]
    onnx = [x for x in rows if x["runtime"] == "onnx"]
    eager = [x for x in rows if x["runtime"] == "eager"]
    assert len(onnx) == 9  # 3 bundles x 3 components
    assert len(eager) == 6  # one eager row per *source* and component: the int8 bundle shares the student's
    for x in rows:
        assert set(x["latency"]) >= SUMMARY_KEYS and x["latency"]["n"] == 3 and x["latency"]["warmup"] == 1
        assert x["latency"]["reportable"] is False and "only 3 run(s)" in x["note"]  # under 10 runs: said so
        assert x["load"]["n"] == 2 and x["load"]["first_ms"] > 0 and x["memory"] is None
    unet = {x["model"]: x for x in rows if x["component"] == "unet"}
    assert unet["teacher-fp32"]["input_shapes"]["sample"] == [2, 4, 32, 32]  # the CFG batch, as declared
    assert unet["lcm-fp32"]["input_shapes"]["timestep_cond"] == [1, 32]
    assert unet["lcm-int8"]["precision"] == "int8-dynamic" and unet["lcm-int8"]["file"].endswith(".onnx")
    for x in onnx:
        e = next(y for y in eager if y["source"] == x["source"] and y["component"] == x["component"])
        assert x["speedup_vs_eager"] == pytest.approx(e["latency"]["median_ms"] / x["latency"]["median_ms"])
    # FLOPs from the manifest (counted at export on the PyTorch module), their rate and the share of the GEMM peak
    peak = r["gemm_peak"]
    assert peak["threads"] == 1 and peak["fp32_gflops"] > 0 and peak["int8_gops"] > 0
    assert set(peak["measured"]) == {"torch.mm fp32", "onnxruntime MatMul fp32", "onnxruntime MatMulInteger int8"}
    for x in rows:
        assert x["gflop"] > 0, x["model"]
        assert x["gflops_per_s"] == pytest.approx(x["gflop"] / (x["latency"]["median_ms"] / 1e3))
        top = peak["int8_gops"] if x["precision"] == "int8-dynamic" else peak["fp32_gflops"]
        assert x["peak_fraction"] == pytest.approx(x["gflops_per_s"] / top)
    # a teacher's UNet row is its CFG batch: twice the FLOPs of the student's one-row call (same widths)
    assert unet["teacher-fp32"]["gflop"] == pytest.approx(2 * unet["lcm-fp32"]["gflop"], rel=0.01)
    assert unet["lcm-int8"]["gflop"] == unet["lcm-fp32"]["gflop"]  # quantization does not change the count


def test_host_end_to_end_rows(host_result):
    _, r = host_result
    rows = r["end_to_end"]
    key = {(x["model"], x["runtime"], x["sampler"], x["steps"]) for x in rows}
    assert key == {("teacher-fp32", "onnx", "ddim", 2), ("eager:teacher", "eager", "ddim", 2),
                   ("lcm-fp32", "onnx", "lcm", 1), ("lcm-fp32", "onnx", "lcm", 4), ("lcm-fp32 (fused)", "onnx", "lcm", 1),
                   ("eager:student", "eager", "lcm", 1), ("eager:student", "eager", "lcm", 4),
                   ("lcm-int8", "onnx", "lcm", 1), ("lcm-int8", "onnx", "lcm", 4)}
    base = {x["runtime"]: x for x in rows if x["role"] == "teacher"}
    # the fused 1-step program (export --fused-steps 1): one graph timed whole, its quality that of the same plan
    fused = next(x for x in rows if x["fused"])
    assert fused["latency_kind"] == "measured (fused program)" and fused["quality_from"] == "lcm-fp32 onnx row (same plan)"
    assert fused["guidance"] == 2.5 and fused["nfe"] == 1 and fused["gflop"] > 0
    for x in rows:
        assert x["latency_kind"] == ("measured (fused program)" if x["fused"] else "measured")
        assert set(x["latency"]) >= SUMMARY_KEYS
        b = base[x["runtime"]]  # the baseline is on the same runtime
        assert x["baseline"]["model"] == b["model"]
        assert x["speedup_vs_baseline"] == pytest.approx(b["latency"]["median_ms"] / x["latency"]["median_ms"])
        q = x["quality"]
        # a share of the 3 prompts, each image right or wrong
        assert q["n"] == 3 and q["prompt_accuracy"] * 3 == pytest.approx(round(q["prompt_accuracy"] * 3))
        assert "shape" in q["attribute_accuracy"]
        assert isinstance(x["pareto_accuracy"], bool) and isinstance(x["pareto_fd"], bool)
    teacher = base["onnx"]
    assert (teacher["cfg"], teacher["unet_batch"], teacher["nfe"]) == (True, 2, 4)
    lcm4 = next(x for x in rows if x["model"] == "lcm-fp32" and x["steps"] == 4)
    assert (lcm4["cfg"], lcm4["unet_batch"], lcm4["nfe"], lcm4["guidance"]) == (False, 1, 4, 2.5)
    # the fastest row is always on both frontiers
    fastest = min(rows, key=lambda x: x["latency"]["median_ms"])
    assert fastest["pareto_accuracy"] and fastest["pareto_fd"]
    eager4 = next(x for x in rows if x["model"] == "eager:student" and x["steps"] == 4)
    # FLOPs per image: text encoder + steps x UNet (at the row's batch) + decoder, eager rows as their bundle's
    comp = {(x["model"], x["component"]): x["gflop"] for x in r["components"] if x["runtime"] == "onnx"}
    assert lcm4["gflop"] == pytest.approx(comp["lcm-fp32", "text_encoder"] + 4 * comp["lcm-fp32", "unet"]
                                          + comp["lcm-fp32", "vae_decoder"])
    assert teacher["gflop"] == pytest.approx(comp["teacher-fp32", "text_encoder"] + 2 * comp["teacher-fp32", "unet"]
                                             + comp["teacher-fp32", "vae_decoder"])
    assert eager4["gflop"] == pytest.approx(lcm4["gflop"]) and lcm4["baseline"]["gflop"] == teacher["gflop"]
    # a float bundle on ONNX Runtime makes the images its source makes in PyTorch (same prompts and seeds; its
    # graphs were checked against PyTorch at export), so they score the same
    plan = ("source", "sampler", "steps", "guidance")
    eager = {tuple(x[k] for k in plan): x["quality"] for x in rows if x["runtime"] == "eager"}
    floats = [x for x in rows if x["runtime"] == "onnx" and x["precision"] == "fp32" and not x["fused"]]
    assert len(floats) == 3
    for x in floats:
        e = eager[tuple(x[k] for k in plan)]
        assert x["quality"]["prompt_accuracy"] == e["prompt_accuracy"], x["model"]
        assert x["quality"]["attribute_accuracy"] == e["attribute_accuracy"], x["model"]
        assert x["quality"]["fd"] == pytest.approx(e["fd"], rel=1e-4), x["model"]  # 3e-7 apart when recorded


def test_host_targets(host_result, capsys):
    _, r = host_result
    t = {x["name"]: x for x in r["targets"] if x["name"] == "e2e_int8_4step_vs_ddim50"}
    e2e = t["e2e_int8_4step_vs_ddim50"]
    assert (e2e["runtime"], e2e["student"], e2e["baseline"], e2e["bar"]) == ("onnx", "lcm-int8", "teacher-fp32", 25.0)
    assert e2e["speedup"] == pytest.approx(e2e["baseline_ms"] / e2e["student_ms"])
    assert e2e["speed_met"] == (e2e["speedup"] >= 25.0)
    # the quality bars of the distillation issue, on this run's own prompts and seeds
    student = next(x for x in r["end_to_end"] if x["bundle"] == "lcm-int8" and x["steps"] == 4)
    teacher = next(x for x in r["end_to_end"] if x["model"] == "teacher-fp32" and x["runtime"] == "onnx")
    sq, tq = student["quality"], teacher["quality"]
    assert e2e["accuracy_ratio"] == (pytest.approx(sq["prompt_accuracy"] / tq["prompt_accuracy"])
                                     if tq["prompt_accuracy"] else None)  # a tiny random teacher may score 0
    assert e2e["fd_ratio"] == pytest.approx(sq["fd"] / tq["fd"])
    assert e2e["quality_met"] == (sq["prompt_accuracy"] >= 0.95 * tq["prompt_accuracy"] and sq["fd"] <= 1.5 * tq["fd"])
    assert e2e["met"] == (e2e["speed_met"] and e2e["quality_met"])
    steps = [x for x in r["targets"] if x["name"] == "denoiser_step_vs_eager"]
    assert {x["source"] for x in steps} == {"teacher", "student"}
    for x in steps:
        assert x["fastest"]["runtime"] == "onnx" and x["met"] == (x["speedup"] >= 2.0)
        assert x["speedup"] == pytest.approx(x["eager_ms"] / x["fastest_ms"])
    assert e2e["flop_ratio"] == pytest.approx(teacher["gflop"] / student["gflop"])
    # the fastest 4-step student of each runtime within the quality bars, whatever its precision
    (best,) = [x for x in r["targets"] if x["name"] == "e2e_4step_vs_ddim50"]
    fours = [x for x in r["end_to_end"] if x["role"] == "student" and x["steps"] == 4 and x["runtime"] == "onnx"]
    assert best["bar"] == 50.0 and best["candidates"] == len(fours) == 2  # float and int8
    within = [x for x in fours if x["quality"]["prompt_accuracy"] >= 0.95 * tq["prompt_accuracy"]
              and x["quality"]["fd"] <= 1.5 * tq["fd"]]
    assert best["within_quality"] == len(within)
    assert best["student"] == max(within or fours, key=lambda x: x["speedup_vs_baseline"])["model"]
    assert best["met"] == (best["speedup"] >= 50.0 and bool(within))
    lines = device_report.target_lines(r["targets"])
    assert any("int8 4-step" in line and ("met" in line or "MISSED" in line) for line in lines)
    assert any("fastest 4-step student" in line for line in lines)
    md = (r_out := host_result[0] / "run_device.md").read_text()
    assert "GEMM peak at 1 thread(s)" in md and "% of peak" in md and "fewer FLOPs" in md, r_out


def test_noisy_rows_are_flagged_in_the_markdown(host_result):
    _, r = host_result
    r = json.loads(json.dumps(r))
    row = r["components"][0]
    row["latency"] = {**summarize([float(v) for v in range(1, 11)]), "warmup": 1, "source": "perf_counter"}
    row["note"] = row["latency"]["note"]
    md = device_report.write_markdown(r)
    line = next(line for line in md.splitlines() if line.startswith(f"| {row['model']} | {row['component']} |"))
    assert "⚠" in line and "slower than the median" in line


def test_quality_bars_by_hand():
    base = {"prompt_accuracy": 0.90, "fd": 20.0}
    assert quality_bars({"prompt_accuracy": 0.90 * 0.95, "fd": 30.0}, base)["quality_met"] is True
    assert quality_bars({"prompt_accuracy": 0.90 * 0.94, "fd": 20.0}, base)["quality_met"] is False
    assert quality_bars({"prompt_accuracy": 0.90, "fd": 30.1}, base)["quality_met"] is False
    assert quality_bars(None, base) == {"accuracy_ratio": None, "fd_ratio": None, "quality_met": None}
    zero = quality_bars({"prompt_accuracy": 0.0, "fd": 10.0}, {"prompt_accuracy": 0.0, "fd": 10.0})
    assert zero == {"accuracy_ratio": None, "fd_ratio": 1.0, "quality_met": True}


def test_fastest_student_targets_by_hand():
    """The 4-step target (bar 50x) and the 1- or 2-step one (bar 150x) each take the fastest row within the quality
    bars at their step counts, per runtime; a faster row outside the bars is passed over."""
    from mobilediff.bench.device_run import fastest_student_targets

    base = {"model": "teacher", "sampler": "ddim", "steps": 50, "guidance": 3.5, "median_ms": 300.0,
            "quality": {"prompt_accuracy": 0.9, "fd": 20.0}}

    def row(model, steps, ms, acc):
        return {"role": "student", "steps": steps, "baseline": base, "bundle": model, "runtime": "executorch",
                "model": model, "precision": "int8", "latency": {"median_ms": ms}, "speedup_vs_baseline": 300.0 / ms,
                "latency_kind": "measured", "quality": {"prompt_accuracy": acc, "fd": 25.0}}

    e2e = [row("s4", 4, 4.0, 0.9), row("s2", 2, 2.5, 0.88), row("s1", 1, 1.5, 0.80), row("s1b", 1, 1.9, 0.87)]
    four, few = fastest_student_targets(e2e)
    assert (four["name"], four["student"], four["bar"], four["met"]) == ("e2e_4step_vs_ddim50", "s4", 50.0, True)
    assert (few["name"], few["student"], few["steps"], few["bar"]) == ("e2e_fewstep_vs_ddim50", "s1b", 1, 150.0)
    assert few["candidates"] == 3 and few["within_quality"] == 2 and few["met"] is True  # 300 / 1.9 = 158x
    assert any("1- or 2-step" in line and ": met" in line for line in device_report.target_lines([four, few]))
    (none,) = [t for t in fastest_student_targets(e2e[:1]) if t["name"] == "e2e_fewstep_vs_ddim50"]
    assert none["met"] is None and "at 1 or 2 steps" in none["reason"]


# ------------------------------------------------------------------------------- the metric set (--prompts)
def test_metric_set_bars_by_hand():
    """With --prompts the 4-step bars are the FD and CLIP score ratios, each where both rows have it."""
    q = {"metrics": "teacher-fidelity/fd/clip", "prompt_accuracy": None}
    base = {**q, "fd": 20.0, "clip_score": 30.0}
    assert quality_bars({**q, "fd": 30.0, "clip_score": 30.0 * 0.95}, base) == \
        {"accuracy_ratio": None, "fd_ratio": 1.5, "clip_ratio": pytest.approx(0.95), "quality_met": True}
    assert quality_bars({**q, "fd": 30.1, "clip_score": 30.0}, base)["quality_met"] is False
    assert quality_bars({**q, "fd": 10.0, "clip_score": 28.0}, base)["quality_met"] is False  # CLIP 93 %
    # only one metric measured: that one decides; neither (fidelity alone): not scored against a bar
    assert quality_bars({**q, "fd": 10.0, "clip_score": None}, {**base, "clip_score": None}) == \
        {"accuracy_ratio": None, "fd_ratio": 0.5, "clip_ratio": None, "quality_met": True}
    none = {**q, "fd": None, "clip_score": None}
    assert quality_bars(none, none)["quality_met"] is None
    assert quality_bars(none, None) == {"accuracy_ratio": None, "fd_ratio": None, "clip_ratio": None,
                                        "quality_met": None}


PROMPTS = ["a large red circle in the center on a white background", "a small blue square at the top left",
           "a green triangle on the right on a black background", "a photo of a cat"]


def _fd_extractor(folder: Path) -> Path:
    """A tiny `mobilediff train-features` folder (random weights): an FD feature map like any other."""
    from mobilediff.features import MODEL_TYPE, ClassifierConfig, ClassifierNet
    from mobilediff.io import save_tensors

    torch.manual_seed(0)
    cfg = ClassifierConfig(channels=(16, 32), feature_dim=8, resolution=32, num_labels=2)
    folder.mkdir()
    save_tensors(ClassifierNet(cfg).state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": MODEL_TYPE, "architecture": {
        "channels": [16, 32], "feature_dim": 8, "resolution": 32, "num_labels": 2}}))
    return folder


def _reference_images(folder: Path, n: int = 6) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_host_metric_set_on_prompts(bundles, tmp_path, capsys, keep_threads):
    """--prompts: every row scored with the metric set on the file's first --quality-n prompts; its fidelity is the
    PSNR/SSIM of its images against the float teacher's baseline images on the same runtime (recomputed here through
    BundleRunner), FD in the given extractor's features (recomputed here), and the 4-step bar is the FD ratio."""
    from mobilediff.bench.device_run import main
    from mobilediff.metrics import FeatureExtractor, fd, psnr, ssim
    from mobilediff.quality import NOISE_SEED
    from mobilediff.engine import BundleRunner
    from mobilediff.sources import load_reference_images

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    fx, real = _fd_extractor(tmp_path / "fx"), _reference_images(tmp_path / "real")
    out = tmp_path / "out"
    code = run_command(main, ["--bundle", str(bundles.student_int8), "--bundle", str(bundles.teacher),
                              "--device", "host", "--out", str(out), "--runtimes", "onnx", "--baseline", "ddim2",
                              "--steps", "4", "--runs", "1", "--warmup", "0", "--e2e-warmup", "0", "--load-runs", "1",
                              "--no-memory", "--threads", "1", "--quality-n", "3", "--prompts",
                              str(tmp_path / "prompts.txt"), "--fd-features", str(fx), "--reference-images", str(real)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = json.loads((out / "run_device.json").read_text())
    assert r["settings"]["prompts"] == str(tmp_path / "prompts.txt") and r["settings"]["prompt_seed"] is None
    ms = r["settings"]["metric_set"]
    assert (ms["n"], ms["metrics"], ms["clip"]) == (3, "teacher-fidelity/fd/clip", None)
    assert ms["fd_features"]["kind"] == "classifier" and ms["reference_images"]["count"] == 6
    rows = {x["model"]: x for x in r["end_to_end"]}
    assert set(rows) == {"teacher-fp32", "lcm-int8"}
    teacher, student = rows["teacher-fp32"], rows["lcm-int8"]
    # the teacher's own row is the reference: PSNR +inf (null in JSON), SSIM exactly 1
    tq, sq = teacher["quality"], student["quality"]
    assert tq["psnr_db_vs_teacher"] is None and tq["ssim_vs_teacher"] == 1.0 and tq["fidelity_vs"] == "teacher-fp32"
    assert set(sq) == {"n", "metrics", "psnr_db_vs_teacher", "ssim_vs_teacher", "fd", "clip_score", "prompt_accuracy",
                       "attribute_accuracy", "fidelity_vs"}
    assert (sq["n"], sq["metrics"], sq["prompt_accuracy"], sq["attribute_accuracy"], sq["clip_score"]) == \
        (3, "teacher-fidelity/fd/clip", None, None, None)
    # recomputed independently: the same prompts and seeds through the bundles' own runners
    def images(bundle, steps, sampler, guidance):
        runner = BundleRunner(bundle, "onnx", threads=1)
        return torch.cat([runner.generate(p, NOISE_SEED + i, steps, sampler, guidance)
                          for i, p in enumerate(PROMPTS[:3])])
    teacher_images = images(bundles.teacher, 2, "ddim", teacher["guidance"])
    student_images = images(bundles.student_int8, 4, "lcm", student["guidance"])
    assert sq["psnr_db_vs_teacher"] == pytest.approx(float(psnr(student_images, teacher_images).mean()), rel=1e-5)
    assert sq["ssim_vs_teacher"] == pytest.approx(float(ssim(student_images, teacher_images).mean()), rel=1e-5)
    assert 0 < sq["psnr_db_vs_teacher"] < 100 and sq["ssim_vs_teacher"] < 1
    extractor = FeatureExtractor.load(fx)
    geometry = read_manifest(bundles.teacher).geometry
    assert ms["reference_images"]["decoded_at"] == [geometry.height, geometry.width]  # the bundles' image size
    reference = load_reference_images(real, (geometry.height, geometry.width))
    assert sq["fd"] == pytest.approx(fd(extractor, student_images, reference), rel=1e-4)
    assert tq["fd"] == pytest.approx(fd(extractor, teacher_images, reference), rel=1e-4)
    # no accuracy: its frontier is null, FD's is there; the 4-step bars are FD (and CLIP, not measured here)
    assert teacher["pareto_accuracy"] is None and student["pareto_accuracy"] is None
    assert isinstance(teacher["pareto_fd"], bool) and isinstance(student["pareto_fd"], bool)
    t = next(x for x in r["targets"] if x["name"] == "e2e_int8_4step_vs_ddim50")
    assert t["accuracy_ratio"] is None and t["clip_ratio"] is None
    assert t["fd_ratio"] == pytest.approx(sq["fd"] / tq["fd"])
    assert t["quality_met"] == (sq["fd"] <= 1.5 * tq["fd"]) and t["met"] == (t["speed_met"] and t["quality_met"])
    md = (out / "run_device.md").read_text()
    assert "PSNR vs teacher (dB) | SSIM vs teacher | FD | CLIP score" in md and "prompt accuracy |" not in md
    assert "| teacher-fp32 | onnx |" in md and "ref. | ref." in md and "FD <= 1.5x and CLIP score >= 95%" in md
    assert (out / "run_device_quality.png").is_file()
    assert any("FD " in line and "CLIP score n/a" in line for line in device_report.target_lines(r["targets"]))


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_host_memory_in_fresh_processes(bundles, tmp_path, capsys, keep_threads):
    out = tmp_path / "mem"
    code, _, err = run_main(capsys, settings(bundles.teacher, out=out, runtimes=("onnx",), baseline="ddim1", runs=2,
                                             warmup=0, load_runs=1, quality_n=0, threads=1))
    assert code == 0, err
    r = json.loads((out / "run_device.json").read_text())
    assert not (out / "run_device_quality.png").exists()  # no quality measured: no quality plot
    for row in r["components"] + r["end_to_end"]:
        m = row["memory"]
        assert m["peak_mib"] >= m["baseline_mib"] > 50
        assert m["delta_mib"] == pytest.approx(m["peak_mib"] - m["baseline_mib"], abs=0.2)
        if sys.platform.startswith("linux"):
            assert m["source"] == "VmHWM"
    assert r["end_to_end"][0]["quality"] is None
    assert r["targets"][1]["name"] == "e2e_4step_vs_ddim50" and r["targets"][1]["met"] is None  # no student
    assert r["targets"][2]["name"] == "e2e_fewstep_vs_ddim50" and r["targets"][2]["met"] is None
    assert r["targets"][3] == {"name": "denoiser_step_vs_eager", "bar_id": "denoiser_step_speedup", "bar": 2.0,
                               "met": None,
                               "reason": "no UNet measured both in PyTorch eager and in a bundle runtime on this device"}


@pytest.mark.slow
@pytest.mark.extended  # an ExecuTorch export of three components and a timed run: minutes on two cores
def test_host_executorch_bundle(models, tmp_path, capsys, keep_threads):
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    bundle = export_bundle(load_pipeline(models.teacher), "executorch", tmp_path / "et", source=str(models.teacher))
    out = tmp_path / "out"
    code, _, err = run_main(capsys, settings(bundle, out=out, runtimes=("executorch", "eager"), baseline="ddim1",
                                             runs=2, warmup=1, load_runs=1, quality_n=0, threads=1, memory=False))
    assert code == 0, err
    r = json.loads((out / "run_device.json").read_text())
    assert r["settings"]["runtime_threads"]["executorch threadpool"] == 1
    assert {(x["runtime"], x["component"]) for x in r["components"]} == \
        {(rt, c) for rt in ("executorch", "eager") for c in COMPONENTS}
    assert {x["runtime"] for x in r["end_to_end"]} == {"executorch", "eager"}
    et_unet = next(x for x in r["components"] if x["runtime"] == "executorch" and x["component"] == "unet")
    assert et_unet["load"]["what"].startswith("executorch.runtime") and et_unet["file"].endswith(".pte")


# ------------------------------------------------------------------------------------------------- android
PROPS = {"ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3", "ro.build.version.release": "15",
         "ro.product.cpu.abi": "arm64-v8a"}


class FakeAdb:
    """Answers adb commands like a phone whose runners print ``logcat`` / ``ort`` (recorded outputs)."""

    def __init__(self, logcat: str = "", ort: str = "", device_state: str = "device\n"):
        self.calls, self.logcat, self.ort, self.state = [], logcat, ort, device_state

    def __call__(self, cmd):
        self.calls.append(cmd)
        assert cmd[:3] == ["adb", "-s", SERIAL] or cmd[0].endswith("adb"), cmd
        rest = cmd[3:]
        out = ""
        if rest == ["get-state"]:
            if self.state is None:
                raise MobilediffError(f"`{' '.join(cmd)}` failed (exit code 1): error: no devices/emulators found")
            out = self.state
        elif rest[:2] == ["shell", "getprop"]:
            out = PROPS[rest[2]] + "\n"
        elif rest[:3] == ["logcat", "-d", "-s"]:
            out = self.logcat
        elif rest[:1] == ["shell"] and ORT_PERF in rest:
            out = self.ort
        return subprocess.CompletedProcess(cmd, 0, out, "")


def with_executorch_files(bundle: Path, dest: Path) -> Path:
    """A copy of an ONNX bundle whose manifest also lists an ExecuTorch file per component (placeholder bytes,
    their real sha256): the phone is fake, so the program is never read, only pushed and named."""
    shutil.copytree(bundle, dest)

    def placeholder(comp):
        name = f"{comp}_executorch_fp32.pte"
        data = f"placeholder program {comp}".encode()
        (dest / name).write_bytes(data)
        return FileEntry(target="executorch", precision="fp32", path=name, sha256=hashlib.sha256(data).hexdigest(),
                         size_bytes=len(data))
    return with_files(dest, placeholder)


def with_files(bundle: Path, new_file) -> Path:
    """Rewrite a bundle's manifest (through the one writer) with ``new_file(component)`` added to each component."""
    m = read_manifest(bundle)
    comps = {name: dataclasses.replace(c, files=(*c.files, new_file(name))) if name in COMPONENTS else c
             for name, c in m.components.items()}
    write_manifest(bundle, dataclasses.replace(m, components=comps))
    return bundle


@pytest.fixture
def adb_exe(tmp_path):
    f = tmp_path / "bin" / "adb"
    f.parent.mkdir()
    f.write_text("#!/bin/sh\nexit 1\n")  # never run: the fake runner answers
    return str(f)


def _android(adb_exe, bundle, out, runs=10, warmup=3, baseline="ddim50", steps=(1, 2, 4, 8), **options):
    return settings(bundle, out=out, device="android", runs=runs, warmup=warmup, baseline=baseline, steps=steps,
                    android=AndroidOptions(adb=adb_exe, serial=SERIAL, **options))


def _adb(adb_exe, *args):
    return [adb_exe, "-s", SERIAL, *args]


def test_android_onnxruntime_perf_test(bundles, adb_exe, tmp_path, capsys):
    fake = FakeAdb(ort=(OUTPUTS / "ort_perf_test_android_sme2.txt").read_text())
    out = tmp_path / "out"
    code, stdout, err = run_main(capsys, _android(adb_exe, bundles.teacher, out, ort_perf_test=ORT_PERF,
                                                  ort_lib="/data/local/tmp/ort", threads=1, runs=5, baseline="ddim2"),
                                 runner=fake)
    assert code == 0, err

    dest = "/data/local/tmp/mobilediff/teacher-fp32"
    expected = [_adb(adb_exe, "get-state")] + [_adb(adb_exe, "shell", "getprop", p) for p in PROPS]
    expected += push_bundle_commands(bundles.teacher, "teacher-fp32", Adb(serial=SERIAL, executable=adb_exe))
    for comp, batch in (("text_encoder", 1), ("unet", 2), ("vae_decoder", 1)):
        expected.append(_adb(adb_exe, "shell", "LD_LIBRARY_PATH=/data/local/tmp/ort", ORT_PERF, "-e", "cpu", "-m",
                             "times", "-r", "5", "-I", "-s", "-S", "0", "-x", "1", "-f", f"batch:{batch}",
                             f"{dest}/{comp}/model.onnx"))
    expected.append(_adb(adb_exe, "shell", "rm", "-rf", dest))
    assert fake.calls == expected
    r = json.loads((out / "run_device.json").read_text())
    assert r["device"]["kind"] == "android"
    assert r["device"]["android"] == {"serial": SERIAL, "model": "Pixel 8", "soc": "Tensor G3", "android_version": "15",
                                      "abi": "arm64-v8a"}
    assert "host runtimes" in r["device"]["not_run"][0]
    rows = r["components"]
    assert [x["component"] for x in rows] == list(COMPONENTS)
    for x in rows:  # the recorded run: 5 runs, P50 0.0995086 s, P90 0.101519 s, session 0.217932 s, peak 271122432 B
        lat = x["latency"]
        assert x["runtime"] == "onnxruntime_perf_test:cpu" and lat["source"] == "onnxruntime_perf_test"
        assert lat["n"] == 5 and lat["median_ms"] == pytest.approx(99.5086) and lat["p90_ms"] == pytest.approx(101.519)
        assert lat["mean_ms"] == pytest.approx(98.961997) and lat["trimmed_mean_ms"] is None
        assert lat["spread"] == pytest.approx((101.519 - 99.5086) / 99.5086) and lat["too_noisy"] is False
        assert lat["reportable"] is False and "only 5 run(s)" in x["note"]
        assert x["load"]["first_ms"] == pytest.approx(217.932) and x["memory"]["peak_mib"] == pytest.approx(258.6)
    (e2e,) = r["end_to_end"]
    assert e2e["latency_kind"] == "estimate" and e2e["quality"] is None
    assert e2e["latency"]["median_ms"] == pytest.approx(99.5086 * (1 + 2 + 1))  # text + 2 steps x unet + vae
    assert e2e["speedup_vs_baseline"] == pytest.approx(1.0)
    md = (out / "run_device.md").read_text()
    assert "an Android device over adb" in md and "Pixel 8" in md and "(est.)" in md


def test_android_executor_runner_recorded_total_timing(bundles, adb_exe, tmp_path, capsys):
    bundle = with_executorch_files(bundles.student, tmp_path / "lcm-fp32")
    fake = FakeAdb(logcat=(OUTPUTS / "executor_runner_docs_mv2_xnnpack.txt").read_text())
    out = tmp_path / "out"
    code, _, err = run_main(capsys, _android(adb_exe, bundle, out, et_runner=ET_RUNNER, runs=1, warmup=0, threads=4,
                                             steps=(1, 4)), runner=fake)
    assert code == 0, err
    dest = "/data/local/tmp/mobilediff/lcm-fp32"
    runs = [c for c in fake.calls if ET_RUNNER in c]
    assert runs == [_adb(adb_exe, "shell", ET_RUNNER, f"--model_path={dest}/{comp}_executorch_fp32.pte",
                         "--num_executions=1", "--cpu_threads=4") for comp in COMPONENTS]
    i = fake.calls.index(runs[0])  # logcat cleared before the run and dumped after it
    assert fake.calls[i - 1] == _adb(adb_exe, "logcat", "-c")
    assert fake.calls[i + 1] == _adb(adb_exe, "logcat", "-d", "-s", "ExecuTorch:I")
    pushed = [c[-1] for c in fake.calls if c[3:4] == ["push"]]
    assert f"{dest}/unet_executorch_fp32.pte" in pushed and f"{dest}/manifest.json" in pushed
    assert fake.calls[-1] == _adb(adb_exe, "shell", "rm", "-rf", dest)
    r = json.loads((out / "run_device.json").read_text())
    for x in r["components"]:  # "Model executed successfully 1 time(s) in 15.013292 ms.": a total, no per-run times
        assert x["runtime"] == "executor_runner" and x["latency"]["mean_ms"] == pytest.approx(15.013292)
        assert x["latency"]["median_ms"] is None and "printed no per-run times" in x["note"]
        assert x["memory"] is None and x["load"]["first_ms"] is None
    est = {x["steps"]: x["latency"]["median_ms"] for x in r["end_to_end"]}
    assert est == pytest.approx({1: 15.013292 * 3, 4: 15.013292 * 6})
    assert r["targets"][0]["met"] is None  # no teacher: no baseline


def test_android_executor_runner_per_iteration(bundles, adb_exe, tmp_path, capsys):
    """Recent runners log "Model loaded in X ms." and "Iteration i of n: X ms" (no recording of them was found, see
    tests/data/device_outputs/README.md): this log is built from the ET_LOG format strings of executor_runner.cpp,
    in the logcat form of ExecuTorch's Android PAL, as tests/test_bench_android.py does."""
    bundle = with_executorch_files(bundles.teacher, tmp_path / "teacher-fp32")
    logcat = ("10-31 08:16:31.102: I/ExecuTorch(14764): Model loaded in 120.500000 ms.\n"
              "10-31 08:16:31.200: I/ExecuTorch(14764): Iteration 1 of 3: 30.000000 ms\n"
              "10-31 08:16:31.230: I/ExecuTorch(14764): Iteration 2 of 3: 10.000000 ms\n"
              "10-31 08:16:31.240: I/ExecuTorch(14764): Iteration 3 of 3: 11.000000 ms\n"
              "10-31 08:16:31.241: I/ExecuTorch(14764): Model executed successfully 3 time(s) in 51.000000 ms.\n")
    out = tmp_path / "out"
    code, _, err = run_main(capsys, _android(adb_exe, bundle, out, et_runner=ET_RUNNER, runs=2, warmup=1,
                                             baseline="ddim2"), runner=FakeAdb(logcat=logcat))
    assert code == 0, err
    r = json.loads((out / "run_device.json").read_text())
    for x in r["components"]:
        lat = x["latency"]
        assert lat["n"] == 2 and lat["median_ms"] == pytest.approx(10.5) and lat["warmup"] == 1  # 30 ms dropped
        assert lat["source"] == "executor_runner" and x["load"]["first_ms"] == pytest.approx(120.5)


def test_android_runner_error_is_one_line_and_the_bundle_is_removed(bundles, adb_exe, tmp_path, capsys):
    bundle = with_executorch_files(bundles.teacher, tmp_path / "teacher-fp32")
    fake = FakeAdb(logcat=(OUTPUTS / "executorch_logcat_error_issue14804.txt").read_text())
    out = tmp_path / "out"
    code, _, err = run_main(capsys, _android(adb_exe, bundle, out, et_runner=ET_RUNNER), runner=fake)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1
    assert "first error: Input 0 has unexpected scalar type: expected Long but was Float" in lines[0]
    assert fake.calls[-1] == _adb(adb_exe, "shell", "rm", "-rf", "/data/local/tmp/mobilediff/teacher-fp32")
    assert not out.exists()


@pytest.mark.parametrize("case, expect", [
    ("no-adb", "adb not found"), ("no-device", "no Android device reachable over adb"),
    ("unauthorized", "not ready (adb get-state: unauthorized)"), ("no-runner", "needs --et-runner and/or --ort-perf-test")])
def test_android_prerequisites(bundles, adb_exe, tmp_path, capsys, case, expect):
    out = tmp_path / "out"
    s = _android(adb_exe if case != "no-adb" else str(tmp_path / "nowhere" / "adb"), bundles.teacher, out,
                 ort_perf_test=None if case == "no-runner" else ORT_PERF)
    fake = FakeAdb(device_state={"no-device": None, "unauthorized": "unauthorized\n"}.get(case, "device\n"))
    code, _, err = run_main(capsys, s, runner=fake)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and expect in lines[0], err
    assert not out.exists() and not any(c[3:4] == ["push"] for c in fake.calls)


# --------------------------------------------------------------------------------------------------- apple
@pytest.mark.skipif(sys.platform == "darwin", reason="the non-macOS refusal")
def test_apple_needs_macos(bundles, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_main(capsys, settings(bundles.teacher, out=out, device="apple"))
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --device apple needs macOS")
    assert not out.exists()


FAKE_LOAD_S = 0.01  # each fake Core ML load sleeps this long


class FakeMLModel:
    def __init__(self, path, compute_units):
        import time

        time.sleep(FAKE_LOAD_S)
        self.path, self.unit = path, compute_units

    def predict(self, inputs):
        return {"out": next(iter(inputs.values()))}


FAKE_CT = SimpleNamespace(
    ComputeUnit=SimpleNamespace(**{n: SimpleNamespace(name=n) for n in ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")}),
    models=SimpleNamespace(MLModel=FakeMLModel))


def test_apple_code_path_with_a_fake_coremltools(bundles, tmp_path):
    """The Core ML loop (inputs from the manifest, one model per compute unit, summaries) with coremltools faked;
    the real thing runs only on macOS (test_apple_on_macos)."""
    from mobilediff.bundle import sha256_path

    bundle = tmp_path / "teacher-fp32"
    shutil.copytree(bundles.teacher, bundle)

    def package(comp):
        pkg = bundle / f"{comp}_coreml_fp32.mlpackage"
        (pkg / "Data").mkdir(parents=True)
        (pkg / "Data" / "weights.bin").write_bytes(b"placeholder")
        return FileEntry(target="coreml", precision="fp32", path=pkg.name, sha256=sha256_path(pkg), size_bytes=11)
    with_files(bundle, package)
    infos = inspect_bundles([bundle], PlanChoice(baseline=("ddim", 2)))
    bar = SimpleNamespace(set_postfix_str=lambda s: None, update=lambda n: None)
    rows = apple_components(infos, runs=4, warmup=1, compute_units=("CPU_ONLY", "CPU_AND_NE"), bar=bar,
                            coremltools_module=FAKE_CT, platform="darwin")
    assert [(x["component"], x["runtime"]) for x in rows] == [
        (c, f"coreml:{u}") for c in COMPONENTS for u in ("CPU_ONLY", "CPU_AND_NE")]
    unet = next(x for x in rows if x["component"] == "unet")
    assert unet["input_shapes"] == {"sample": [2, 4, 32, 32], "timestep": [2], "encoder_hidden_states": [2, 32, 32]}
    assert all(x["latency"]["n"] == 4 and x["load"]["first_ms"] >= FAKE_LOAD_S * 1e3 for x in rows)
    e2e = estimated_end_to_end(infos, rows)
    assert {x["runtime"] for x in e2e} == {"coreml:CPU_ONLY", "coreml:CPU_AND_NE"}
    assert all(x["latency_kind"] == "estimate" and x["steps"] == 2 for x in e2e)
    with pytest.raises(MobilediffError, match="needs macOS"):
        check_apple(platform="linux")


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions run only on macOS")
def test_apple_on_macos(models, tmp_path, capsys):
    from mobilediff.exporter import export_bundle
    from mobilediff.loading import load_pipeline

    bundle = export_bundle(load_pipeline(models.teacher), "coreml", tmp_path / "cm", source=str(models.teacher))
    out = tmp_path / "out"
    code, _, err = run_main(capsys, settings(bundle, out=out, device="apple", runs=3, warmup=1, baseline="ddim2",
                                             compute_units=("CPU_ONLY",)))
    assert code == 0, err
    r = json.loads((out / "run_device.json").read_text())
    assert {x["runtime"] for x in r["components"]} == {"coreml:CPU_ONLY"}


# ---------------------------------------------------------------------------------------- the manifest alone
def test_roles_and_plans_come_from_the_manifest_alone(bundles, tmp_path, capsys):
    """A bundle whose source folder is gone (an app's view): without eager rows it is measured from its manifest
    alone, role and default plan included; with eager rows its missing source is refused in one line."""
    bundle = tmp_path / "lcm-fp32"
    shutil.copytree(bundles.student, bundle)
    m = read_manifest(bundle)
    gone = dataclasses.replace(m.source, model=str(tmp_path / "deleted-student"))
    write_manifest(bundle, dataclasses.replace(m, source=gone))
    (b,) = prepare(settings(bundle, out=tmp_path / "out", runtimes=("onnx",), steps=(1, 4)))
    assert (b.role, b.method, b.eager_dir, b.source["from"]) == ("student", "lcm", None, "none")
    assert [(p.sampler, p.steps, p.guidance, p.guidance_from) for p in b.plans] == \
        [("lcm", 1, 2.5, "manifest"), ("lcm", 4, 2.5, "manifest")]
    out = tmp_path / "out"
    _assert_refused(capsys, settings(bundle, out=out, steps=(1, 4)), out, "is not a folder here")


# ----------------------------------------------------------------------------------------------- bad input
def _assert_refused(capsys, s: Settings, out, expect):
    code, _, err = run_main(capsys, s)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and expect in lines[0], err
    assert not out.exists()


def test_missing_bundle(tmp_path, capsys):
    out = tmp_path / "out"
    _assert_refused(capsys, settings(tmp_path / "nope", out=out), out, "bundle directory not found")


@pytest.mark.parametrize("damage, expect", [
    ("no-manifest", "has no manifest.json"), ("corrupt-manifest", "corrupt"),
    ("incomplete-manifest", "missing field 'guidance'"), ("sha256", "does not match its sha256"),
    ("missing-file", "bundle file missing")])
def test_damaged_bundle(bundles, tmp_path, capsys, damage, expect):
    bundle = tmp_path / "b"
    shutil.copytree(bundles.teacher, bundle)
    manifest = bundle / "manifest.json"
    if damage == "no-manifest":
        manifest.unlink()
    elif damage == "corrupt-manifest":
        manifest.write_text(manifest.read_text()[:200])
    elif damage == "incomplete-manifest":
        m = read_manifest(bundle).to_dict()
        del m["guidance"]
        manifest.write_text(json.dumps(m))
    elif damage == "sha256":
        f = bundle / "unet" / "model.onnx"
        f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    else:
        (bundle / "vae_decoder" / "model.onnx").unlink()
    out = tmp_path / "out"
    _assert_refused(capsys, settings(bundle, out=out), out, expect)


def test_changed_source_model_is_refused(models, tmp_path, capsys):
    from mobilediff.exporter import export_bundle
    from mobilediff.io import load_tensors, save_tensors
    from mobilediff.loading import load_pipeline

    source = tmp_path / "teacher"
    shutil.copytree(models.teacher, source)
    bundle = export_bundle(load_pipeline(source), "onnx", tmp_path / "b", source=str(source))
    weights = source / "vae" / "diffusion_pytorch_model.safetensors"
    save_tensors({k: v + 1 for k, v in load_tensors(weights).items()}, weights)  # retrained since the export
    out = tmp_path / "out"
    _assert_refused(capsys, settings(bundle, out=out), out, "no longer matches the weights the bundle was exported from")
    # --source none: no eager reference, and the run is allowed
    (b,) = prepare(settings(bundle, out=out, sources=("none",)))
    assert b.eager_dir is None and b.source["from"] == "none"


@pytest.mark.parametrize("change, expect", [
    ({"runs": 0}, "--runs must be an integer >= 1, got 0"),
    ({"runs": -3}, "--runs must be an integer >= 1"),
    ({"warmup": -1}, "--warmup must be an integer >= 0"),
    ({"quality_n": 1}, "--quality-n (0 to skip, else >= 2 for FD) must be an integer >= 2"),
    ({"steps": (0,)}, "--steps must be an integer >= 1"),
    ({"baseline": "ddim"}, "--baseline must be a sampler and a step count"),
    ({"baseline": "heun50"}, "--baseline must be a sampler and a step count"),
    ({"sources": ("a", "b")}, "--source must be given once per --bundle"),
    ({"runtimes": ("tflite",)}, "unknown runtime 'tflite'"),
    ({"device": "ios"}, "unknown device 'ios'"),
])
def test_bad_arguments(bundles, tmp_path, capsys, change, expect):
    out = tmp_path / "out"
    code = run_command(lambda argv: execute(settings(bundles.teacher, out=out, **change)))
    lines = error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and expect in lines[0], lines
    assert not out.exists()


def test_missing_table_is_refused_before_work(bundles, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_refused(capsys, settings(bundles.student, out=out, steps=(3,)), out, "bundle has no lcm table for 3 steps")


def test_unknown_device_from_the_command_line(bundles, tmp_path):
    """The script itself, as a user runs it: one error line and exit code 2."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_device.py"), "--bundle", str(bundles.teacher),
                        "--device", "ios", "--out", str(out)], capture_output=True, text=True, timeout=300)
    lines = error_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("error: argument --device: invalid choice: 'ios'")
    assert not out.exists()


def test_a_bundle_with_another_decoder_has_no_eager_reference(bundles, tmp_path):
    """A bundle exported with --decoder decodes with another module than its source folder's VAE: the source is no
    eager reference for it (its rows would compare different decoders), and the report names the decoder."""
    from mobilediff.bench.host import resolve_eager_reference

    b = tmp_path / "tiny-decoder"
    shutil.copytree(bundles.student, b)
    m = json.loads((b / "manifest.json").read_text())
    m["source"]["decoder"] = {"path": "default:tiny", "class": "AutoencoderTiny", "weights_sha256": "0" * 64}
    (b / "manifest.json").write_text(json.dumps(m))
    (info,) = inspect_bundles([b], PlanChoice())
    resolve_eager_reference(info, "manifest")
    assert info.eager_dir is None and info.source["decoder"] == "default:tiny"
    assert "decodes with default:tiny" in info.source["note"]


def test_op_profile_command_profiles_float_and_int8_bundles(bundles, tmp_path, keep_threads):
    """The operator profiles (mobilediff.bench.op_profile.main, what benchmarks/op_profile.py runs) on real bundles:
    one row per component file, every kind accounted for, the int8 (dynamic) UNet's quantize cost visible as its own
    kind, FLOPs from the manifest, the Markdown and plot written."""
    from mobilediff.bench import op_profile

    out = tmp_path / "results"
    res = op_profile.main(["--bundle", str(bundles.student), "--bundle", str(bundles.student_int8), "--component",
                           "unet", "--runs", "3", "--warmup", "1", "--out", str(out)])
    rows = {(r["bundle"], r["precision"]): r for r in res["rows"]}
    assert set(rows) == {("lcm-fp32", "fp32"), ("lcm-int8", "int8-dynamic")}
    fp32, int8 = rows["lcm-fp32", "fp32"], rows["lcm-int8", "int8-dynamic"]
    assert int8["kinds"]["quantize"] > 0 and any("Integer" in op or "Quantize" in op for op in int8["ops"])
    assert fp32["kinds"]["quantize"] == 0
    for r in (fp32, int8):
        assert r["calls"] == 3 and r["gflop"] > 0 and r["gflops_per_s"] > 0 and 0 < r["peak_fraction"]
    saved = json.loads((out / "op_profile.json").read_text())
    assert saved["schema"]["name"] == "mobilediff.op_profile" and len(saved["rows"]) == 2
    assert (out / "op_profile.png").stat().st_size > 0 and "## unet" in (out / "op_profile.md").read_text()
    code = run_command(op_profile.main, ["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")])
    assert code == 2 and not (tmp_path / "r2" / "op_profile.json").exists()
