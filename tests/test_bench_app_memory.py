"""The apps' memory benchmark (mobilediff.bench.app_memory, what benchmarks/app_memory.py runs): rows built from
recorded engine records (the Kotlin CLI's and the Swift CLI's --json) in both modes (resident, low-memory), failed and
timed-out runs as rows, the image compared with Python's, the Markdown tables and the plot, the files the apps load
and the bundle's variant facts, and bad input (one error line, exit code 2, nothing written). The real engines run
only in the extended tier."""
import json
from pathlib import Path

import numpy as np
import pytest

from mobilediff.bench import app_memory as am
from mobilediff.bench.envelope import run_command
from mobilediff.errors import MobilediffError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

MIB = 1 << 20
INFO = {"bundle": "../runs/b", "name": "b", "geometry": {"height": 64, "width": 64},
        "plan": {"sampler": "ddim", "steps": 50, "guidance": 5.0, "unet_batch": 2},
        "unet_quantization": "int8-weights", "unet_attention_budget_mib": 64.0,
        "vae_tiling": {"tile": 40, "overlap": 8, "tiles": [2, 2], "tile_latent": [40, 40]},
        "onnx_weight_bytes": 10 * MIB, "app_weight_bytes": 9 * MIB,
        "app_files": {c: {"target": "ort", "tag": "fp32", "path": f"{c}/model.ort"} for c in am.COMPONENTS}}
# what the Kotlin CLI (android_demo/cli EngineCli.kt) and the Swift CLI (mobilediff-engine main.swift) write
KOTLIN = {"ms_total": 812.5, "ms": {"text_encoder": 10.0, "unet": 700.0, "vae_decoder": 102.5},
          "load_ms": {"text_encoder": 50.0, "unet": 150.0, "vae_decoder": 20.0}, "steps": 1, "sampler": "ddim",
          "guidance": 5.0, "image_raw_shape": [4, 4, 3], "backend": "onnx", "warmup_runs": 0, "repeats": 1,
          "runtime_version": "1.29.0", "ms_total_runs": [812.5], "peak_rss_bytes": 300 * MIB, "low_memory": False,
          "peak_memory_scope": "process"}
SWIFT = {"ms_total": 900.0, "ms": {"unet": 800.0}, "load_ms": 210.0, "steps": 1, "sampler": "ddim", "guidance": 5.0,
         "backend": "onnx", "runtime": "onnxruntime 1.29.0 (C API 23)", "peak_memory_bytes": 200 * MIB,
         "peak_memory_method": "VmHWM", "image_raw_shape": [4, 4, 3], "low_memory": False,
         "peak_memory_scope": "process"}


def _images(tmp_path, offset: float = 0.0):
    """Python's image (1, 3, 4, 4) .npy and an engine's raw (4, 4, 3) float32 LE, ``offset`` apart."""
    ref = np.linspace(-0.9, 0.9, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    np.save(tmp_path / "py.npy", ref)
    raw = np.moveaxis(ref[0], 0, -1) + np.float32(offset)
    raw.astype("<f4").tofile(tmp_path / "eng.f32")
    return tmp_path / "eng.f32", tmp_path / "py.npy"


def test_a_kotlin_record_becomes_a_row_with_its_peak_runtime_and_psnr(tmp_path):
    row = am.engine_row("android", INFO, 0, "", 12.34, KOTLIN, 1800.0)
    assert row["status"] == "ok" and row["reason"] is None and row["exit_status"] == 0
    assert row["peak_bytes"] == 300 * MIB and row["peak_mib"] == 300.0 and row["peak_field"] == "peak_rss_bytes"
    assert row["runtime"] == "onnxruntime 1.29.0" and row["wall_seconds"] == 12.3
    assert row["load_ms"] == 220.0 and row["generate_ms"] == 812.5 and row["weight_bytes"] == 9 * MIB
    assert row["graph_forms"] == {c: "ort" for c in am.COMPONENTS} and row["px"] == 64
    assert row["variant"] == {"unet_quantization": "int8-weights", "unet_attention_budget_mib": 64.0,
                              "vae_tiling": {"tile": 40, "overlap": 8, "tiles": [2, 2], "tile_latent": [40, 40]}}
    raw, ref = _images(tmp_path, offset=0.02)
    am.compare_images(row, raw, KOTLIN["image_raw_shape"], ref)
    assert row["psnr_vs_python_db"] == pytest.approx(-20 * np.log10(0.02 / 2), abs=0.01)  # a constant offset
    assert row["identical_to_python"] is False and row["max_abs_vs_python"] == pytest.approx(0.02, abs=1e-6)


def test_a_swift_record_becomes_a_row_and_an_equal_image_is_identical(tmp_path):
    row = am.engine_row("ios", INFO, 0, "", 3.0, SWIFT, 1800.0)
    assert (row["peak_mib"], row["peak_field"], row["peak_method"]) == (200.0, "peak_memory_bytes", "VmHWM")
    assert row["runtime"] == "onnxruntime 1.29.0 (C API 23)" and row["load_ms"] == 210.0
    assert row["peak_scope"] == am.PEAK_SCOPES["ios"] and row["engine_peak_scope"] == "process"
    assert row["mode"] == "resident"
    # an engine whose peak counts from the generate's start says so, and the row repeats it
    reset = am.engine_row("ios", INFO, 0, "", 3.0, {**SWIFT, "peak_memory_scope": "generation"}, 1800.0)
    assert "reset as the generate starts" in reset["peak_scope"]
    raw, ref = _images(tmp_path)
    am.compare_images(row, raw, SWIFT["image_raw_shape"], ref)
    assert row["psnr_vs_python_db"] is None and row["identical_to_python"] is True


def test_an_image_of_another_shape_or_no_python_image_is_a_note_not_a_crash(tmp_path):
    raw, ref = _images(tmp_path)
    row = am.engine_row("ios", INFO, 0, "", 3.0, SWIFT, 1800.0)
    am.compare_images(row, raw, [2, 8, 3], ref)
    assert row["psnr_vs_python_db"] is None and "shape" in row["psnr_note"]
    row = am.engine_row("ios", INFO, 0, "", 3.0, SWIFT, 1800.0)
    am.compare_images(row, raw, [4, 4, 3], None)
    assert row["psnr_note"] == "no Python image to compare with"


def test_the_low_memory_mode_runs_the_engines_switch_and_checks_their_record():
    cmd = am.engine_command(Path("engine.sh"), Path("b"), Path("o.png"), Path("o.json"), "low-memory")
    assert cmd[-1] == "--low-memory" and "--low-memory" not in am.engine_command(Path("e"), Path("b"), Path("o.png"),
                                                                                 Path("o.json"))
    low = {**KOTLIN, "low_memory": True, "peak_rss_bytes": 120 * MIB}
    row = am.engine_row("android", INFO, 0, "", 9.0, low, 1800.0, mode="low-memory")
    assert (row["status"], row["mode"], row["peak_mib"]) == ("ok", "low-memory", 120.0)
    # an engine that ran resident when asked for low-memory (or the reverse) is no measurement of that mode
    row = am.engine_row("android", INFO, 0, "", 9.0, KOTLIN, 1800.0, mode="low-memory")
    assert row["status"] == "failed" and "low_memory False for mode low-memory" in row["reason"]
    row = am.engine_row("ios", INFO, 0, "", 9.0, {**SWIFT, "low_memory": True}, 1800.0)
    assert row["status"] == "failed"


def test_python_runs_low_memory_as_generate_low_memory_does(tmp_path):
    from mobilediff.targets import LOW_MEMORY

    job = am.python_job(tmp_path, "low-memory", tmp_path / "x.npy")
    assert job["resident"] is False and job["settings"] == LOW_MEMORY["onnx"] and job["image_out"].endswith("x.npy")
    job = am.python_job(tmp_path, "resident", tmp_path / "x.npy")
    assert job["resident"] is True and job["settings"] == {}
    # the low-memory image against the resident one
    ref = np.linspace(-0.9, 0.9, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "low.npy", ref)
    row = {}
    am.compare_python_images(row, tmp_path / "low.npy", tmp_path / "ref.npy")
    assert row["identical_to_python"] is True and row["psnr_vs_python_db"] is None


def test_a_failing_or_hanging_engine_is_a_failed_row_with_one_line():
    err = "[build] ok\njava.lang.OutOfMemoryError\nerror: OrtException: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION\n"
    row = am.engine_row("android", INFO, 1, err, 5.0, None, 1800.0)
    assert row["status"] == "failed" and row["exit_status"] == 1
    assert row["reason"] == "exit status 1: error: OrtException: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION"
    assert "\n" not in row["stderr_tail"] and "OutOfMemoryError" in row["stderr_tail"]
    row = am.engine_row("ios", INFO, None, "", 60.0, None, 60.0)
    assert row["status"] == "failed" and row["reason"].startswith("timed out after 60 s")
    row = am.engine_row("ios", INFO, 0, "", 1.0, None, 60.0)
    assert row["status"] == "failed" and row["reason"].startswith("no --json record")


def test_the_python_row_and_the_markdown_table():
    marks = [{"stage": "start", "hwm_mib": 400.0}, {"stage": "loaded", "seconds": 0.5},
             {"stage": "generated (1 step)", "seconds": 1.25}]
    py = am.python_row(INFO, {"marks": marks, "image_finite": True},
                       {"baseline_mib": 400.0, "peak_mib": 512.0, "source": "VmHWM"}, None, 9.0, "onnxruntime 1.23.2")
    assert (py["peak_mib"], py["baseline_mib"], py["load_ms"], py["generate_ms"]) == (512.0, 400.0, 500.0, 1250.0)
    assert py["weight_bytes"] == 10 * MIB and py["graph_forms"]["unet"] == "onnx"
    failed_py = am.python_row(INFO, None, None, "generate failed in its measurement process: boom", 1.0, None)
    assert failed_py["status"] == "failed" and "boom" in failed_py["reason"]
    py_low = {**am.python_row(INFO, {"marks": marks[:1] + marks[2:], "image_finite": True},
                              {"baseline_mib": 400.0, "peak_mib": 448.0, "source": "VmHWM"}, None, 9.5,
                              "onnxruntime 1.23.2", "low-memory"), "identical_to_python": True}
    assert py_low["mode"] == "low-memory" and py_low["load_ms"] is None
    android = {**am.engine_row("android", INFO, 0, "", 12.0, KOTLIN, 1800.0), "psnr_vs_python_db": 48.31}
    android_low = {**am.engine_row("android", INFO, 0, "", 13.0, {**KOTLIN, "low_memory": True,
                                                                   "peak_rss_bytes": 225 * MIB}, 1800.0,
                                   mode="low-memory"), "psnr_vs_python_db": 48.31}
    ios = am.engine_row("ios", INFO, 1, "error: bad bundle: unet/model.ort missing\n", 2.0, None, 1800.0)
    result = {"command": "python benchmarks/app_memory.py --bundle ../runs/b", "created": "2026-12-07T00:00:00+00:00",
              "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 23, "load_average_at_start": [0.1]},
              "settings": {"steps": 1, "seed": 0, "prompt": am.PROMPT}, "peak_scopes": am.PEAK_SCOPES,
              "bundles": [INFO], "rows": [py, py_low, android, android_low, ios], "complete": True}
    md = am.markdown(result)
    assert ("| bundle | px | variant | app | mode | runtime | weights MiB | peak MiB | seconds | PSNR vs Python dB "
            "| status |") in md
    variant = "| b | 64 | int8-weights, attn 64 MiB, VAE tiles of 40 (2x2) |"
    assert f"{variant} python | resident | onnxruntime 1.23.2 | 10 | 512 | 9.0 | (reference) | ok |" in md
    assert f"{variant} python | low-memory | onnxruntime 1.23.2 | 10 | 448 | 9.5 | same | ok |" in md
    assert f"{variant} android | resident | onnxruntime 1.29.0 | 9 | 300 | 12.0 | 48.3 | ok |" in md
    assert f"{variant} android | low-memory | onnxruntime 1.29.0 | 9 | 225 | 13.0 | 48.3 | ok |" in md
    assert "| ios | resident | - | 9 | - | 2.0 | - | failed: exit status 1: error: bad bundle: unet/model.ort missing |" in md
    # the two modes side by side, for each (bundle, app) with both peaks
    assert "| b | python | 512 | 448 | 64 | 12 | (reference) | same |" in md
    assert "| b | android | 300 | 225 | 75 | 25 | 48.3 | 48.3 |" in md
    assert "| b | ios |" not in md
    json.dumps(am.json_safe(result))  # JSON-writable as it is
    assert callable(am.plot(result))  # a PNG writer
    assert am.plot({**result, "rows": [ios]}) is None  # no peak to draw: no file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny ONNX bundle with its ORT-format files (what the apps load)."""
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.tiny import tiny_pipeline

    out = tmp_path_factory.mktemp("app_memory") / "tiny-onnx"
    return run_export(tiny_pipeline(0), ExportConfig.of("onnx", out, ort_format=True))


@pytest.mark.extended  # a tiny export with ORT forms (~20 s): CI's time goes to the default tier's other exports
def test_the_bundle_facts_name_the_files_the_apps_load(bundle):
    from mobilediff.bundle import read_manifest

    info = am.bundle_info(bundle)
    m = read_manifest(bundle)
    assert {c: f["target"] for c, f in info["app_files"].items()} == {c: "ort" for c in am.COMPONENTS}
    assert info["app_weight_bytes"] == sum(m.component(c).file("ort").size_bytes for c in am.COMPONENTS)
    assert info["onnx_weight_bytes"] == sum(f.size_bytes + sum(e.size_bytes for e in f.external_data)
                                            for f in (m.component(c).file("onnx") for c in am.COMPONENTS))
    assert info["unet_quantization"] is None and info["vae_tiling"] is None
    assert info["unet_attention_budget_mib"] == m.component("unet").file("onnx").export["attention"]["budget_mib"]
    assert not Path(info["bundle"]).is_absolute()  # relative to the repository: no path of this machine
    # an engine that names the files it ran (ios) is taken at its word
    rec = {**SWIFT, "files": {c: {"target": "onnx", "path": m.component(c).file("onnx").path, "precision": "fp32"}
                              for c in am.COMPONENTS}}
    row = am.engine_row("ios", info, 0, "", 1.0, rec, 60.0, m)
    assert row["graph_forms"] == {c: "onnx" for c in am.COMPONENTS} and row["weight_bytes"] == info["onnx_weight_bytes"]


def test_a_folder_that_is_not_a_bundle_is_one_error_line(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    code = run_command(lambda argv: am.main(["--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "out")]))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"error: {tmp_path / 'b'} is not a bundle (no manifest.json)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["--timeout", "0"], "--timeout: must be > 0"),
    (["--app", "windows"], "--app: invalid choice: 'windows'"),
    (["--mode", "lean"], "--mode: invalid choice: 'lean'"),
    ([], "the following arguments are required: --bundle"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path, argv, message):
    bundle = ["--bundle", str(tmp_path)] if argv else []
    with pytest.raises(MobilediffError, match=message):
        am.main([*bundle, *argv, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.extended  # runs the real engines (the JVM, the Swift toolchain's chroot): minutes on 2 cores
def test_the_engines_report_their_peak_on_a_tiny_bundle(bundle, tmp_path):
    result = am.main(["--bundle", str(bundle), "--out", str(tmp_path / "out"), "--timeout", "900"])
    assert result["complete"] and (tmp_path / "out" / "app_memory.json").is_file()
    rows = {(r["app"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(app, mode) for app in ("python", *am.apps_here(None)) for mode in am.MODES}
    for (app, mode), r in rows.items():
        assert r["status"] == "ok" and not r["reason"], r
        assert r["peak_mib"] > 0 and r["runtime"].startswith("onnxruntime")
        if (app, mode) != ("python", "resident"):
            assert r["identical_to_python"] or r["psnr_vs_python_db"] >= 40, r
    # each engine's low-memory image is its resident one
    for app in am.apps_here(None):
        assert rows[(app, "low-memory")]["max_abs_vs_python"] == rows[(app, "resident")]["max_abs_vs_python"]
