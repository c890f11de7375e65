"""Phone benchmark plumbing (mobilediff.bench.android, mobilediff.bench.apple): exact adb command lists, and the
parsers on recorded real runner outputs (tests/data/device_outputs/, sources in its README). Nothing here needs a
device."""
import ast
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from mobilediff.bench.android import (Adb, DeviceRun, device_bundle_dir, executor_runner_run, ort_perf_test_run,
                                      parse_executor_runner, parse_ort_perf_test, pull_command, push_bundle_commands,
                                      remove_bundle_command)
from mobilediff.bench.apple import COREML_COMPUTE_UNITS, coreml_compute_units, time_coreml_predictions
from mobilediff.errors import MobilediffError

OUTPUTS = Path(__file__).parent / "data" / "device_outputs"
SERIAL = ["adb", "-s", "R5CT1234"]


def recorded(name: str) -> str:
    return (OUTPUTS / name).read_text()


# ---------------------------------------------------------------------------------------------- commands
@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    (b / "tokenizer").mkdir(parents=True)
    (b / "unet").mkdir()
    (b / "unet_coreml_fp16.mlpackage" / "Data").mkdir(parents=True)
    for rel in ("manifest.json", "unet/model.onnx", "tokenizer/vocab.json",
                "unet_coreml_fp16.mlpackage/Data/w.bin"):
        (b / rel).write_text("x")
    return b


def test_push_bundle_commands(bundle):
    dest = "/data/local/tmp/mobilediff/tiny-lcm"
    assert push_bundle_commands(bundle, "tiny-lcm", Adb(serial="R5CT1234")) == [
        SERIAL + ["shell", "rm", "-rf", dest],
        SERIAL + ["shell", "mkdir", "-p", dest, f"{dest}/tokenizer", f"{dest}/unet"],
        SERIAL + ["push", str(bundle / "manifest.json"), f"{dest}/manifest.json"],
        SERIAL + ["push", str(bundle / "tokenizer" / "vocab.json"), f"{dest}/tokenizer/vocab.json"],
        SERIAL + ["push", str(bundle / "unet" / "model.onnx"), f"{dest}/unet/model.onnx"],
    ]  # the Core ML package is not pushed


def test_push_bundle_refuses_bad_input(bundle, tmp_path):
    with pytest.raises(MobilediffError, match="not a bundle directory"):
        push_bundle_commands(tmp_path / "missing", "x")
    for name in ("", "../up", "a b", "a/b", ".hidden", "name;rm"):
        with pytest.raises(MobilediffError, match="device bundle name"):
            push_bundle_commands(bundle, name)


def test_small_commands():
    assert device_bundle_dir("m", root="/sdcard/x/") == "/sdcard/x/m"
    assert remove_bundle_command("m") == ["adb", "shell", "rm", "-rf", "/data/local/tmp/mobilediff/m"]
    assert pull_command("/data/local/tmp/a b.etdump", Path("out/a.etdump")) == \
        ["adb", "pull", "/data/local/tmp/a b.etdump", "out/a.etdump"]  # adb pull takes paths literally


def test_executor_runner_run():
    run = executor_runner_run("/data/local/tmp/et/executor_runner", "/data/local/tmp/mobilediff/m/unet.pte",
                              num_executions=13, cpu_threads=4, adb=Adb(serial="R5CT1234"))
    assert run == DeviceRun(
        prepare=[SERIAL + ["logcat", "-c"]],
        run=SERIAL + ["shell", "/data/local/tmp/et/executor_runner",
                      "--model_path=/data/local/tmp/mobilediff/m/unet.pte", "--num_executions=13", "--cpu_threads=4"],
        collect=[SERIAL + ["logcat", "-d", "-s", "ExecuTorch:I"]])


def test_executor_runner_run_optional_flags_and_quoting():
    run = executor_runner_run("/data/local/tmp/my runner", "/data/local/tmp/m.pte", num_executions=1,
                              data_path="/data/local/tmp/m.ptd", method_name="forward", print_output="none",
                              etdump_path="/data/local/tmp/m.etdump", etdump_local=Path("m.etdump"))
    assert run.run == ["adb", "shell", "'/data/local/tmp/my runner'", "--model_path=/data/local/tmp/m.pte",
                       "--num_executions=1", "--data_path=/data/local/tmp/m.ptd", "--method_name=forward",
                       "--print_output=none", "--etdump_path=/data/local/tmp/m.etdump"]
    assert run.collect[-1] == ["adb", "pull", "/data/local/tmp/m.etdump", "m.etdump"]


@pytest.mark.parametrize("kwargs", [{"num_executions": 0}, {"num_executions": 2.5}, {"num_executions": "x"},
                                    {"num_executions": 1, "cpu_threads": 0},
                                    {"num_executions": 1, "print_output": "some"},
                                    {"num_executions": 1, "etdump_local": Path("x")}])
def test_executor_runner_run_refuses(kwargs):
    with pytest.raises(MobilediffError):
        executor_runner_run("r", "m.pte", **kwargs)


def test_ort_perf_test_run():
    run = ort_perf_test_run("/data/local/tmp/ort/onnxruntime_perf_test", "/data/local/tmp/mobilediff/m/unet.onnx",
                            runs=20, provider="xnnpack", intra_op_threads=4, free_dims={"batch": 2},
                            ld_library_path="/data/local/tmp/ort")
    assert run == DeviceRun(run=[
        "adb", "shell", "LD_LIBRARY_PATH=/data/local/tmp/ort", "/data/local/tmp/ort/onnxruntime_perf_test",
        "-e", "xnnpack", "-m", "times", "-r", "20", "-I", "-s", "-S", "0", "-x", "4", "-f", "batch:2",
        "/data/local/tmp/mobilediff/m/unet.onnx"])


def test_ort_perf_test_run_several_free_dims_are_one_quoted_word():
    run = ort_perf_test_run("perf", "m.onnx", runs=1, provider="nnapi", seed=None,
                            free_dims={"batch": 2, "sequence": 77})
    assert run.run == ["adb", "shell", "perf", "-e", "nnapi", "-m", "times", "-r", "1", "-I", "-s",
                       "-f", "'batch:2 sequence:77'", "m.onnx"]


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"runs": 1, "provider": "cuda"}, {"runs": 1, "free_dims": {"a b": 1}},
                                    {"runs": 1, "free_dims": {"batch": 0}}, {"runs": 1, "intra_op_threads": -1}])
def test_ort_perf_test_run_refuses(kwargs):
    with pytest.raises(MobilediffError):
        ort_perf_test_run("perf", "m.onnx", **kwargs)


# ------------------------------------------------------------------------- onnxruntime_perf_test output
def test_ort_recent_format_with_percentiles():
    r = parse_ort_perf_test(recorded("ort_perf_test_android_sme2.txt"))
    assert r["average_ms"] == 98.961997 and r["runs"] == 5
    assert (r["session_creation_s"], r["first_inference_ms"], r["total_inference_s"]) == (0.217932, 196.0, 0.49481)
    assert r["inferences_per_second"] == 10.104 and r["avg_cpu_percent"] == 11.0
    assert r["peak_working_set_bytes"] == 271122432
    assert r["peak_working_set_mib"] == pytest.approx(258.5625)
    assert r["has_percentiles"] is True
    assert r["min_ms"] == pytest.approx(95.8204)
    assert r["p50_ms"] == pytest.approx(99.5086)
    assert r["p90_ms"] == pytest.approx(101.519) and r["max_ms"] == pytest.approx(101.519)
    assert r["p999_ms"] == pytest.approx(101.519)


def test_ort_recent_format_second_recording():
    r = parse_ort_perf_test(recorded("ort_perf_test_android_no_sme2.txt"))
    assert r["average_ms"] == 339.38112 and r["runs"] == 5
    assert r["p50_ms"] == pytest.approx(336.476) and r["p90_ms"] == pytest.approx(346.82)
    # the average is the total over the runs, as the source computes it
    assert r["average_ms"] == pytest.approx(r["total_inference_s"] * 1000 / r["runs"], rel=1e-5)


def test_ort_older_format_without_percentiles():
    r = parse_ort_perf_test(recorded("ort_perf_test_android_acl_1.3.1.txt"))
    assert r["average_ms"] == 144.871 and r["runs"] == 10
    assert r["peak_working_set_bytes"] == 158171136 and r["avg_cpu_percent"] == 68.0
    assert r["first_inference_ms"] is None and r["inferences_per_second"] is None
    assert r["has_percentiles"] is False and r["p90_ms"] is None


def test_ort_2019_format_is_refused_by_name():
    with pytest.raises(MobilediffError, match="no 'Average inference time cost' line"):
        parse_ort_perf_test(recorded("ort_perf_test_readme_2019_format.txt"))


def test_ort_garbled_output():
    with pytest.raises(MobilediffError, match="empty"):
        parse_ort_perf_test("  \n")
    truncated = recorded("ort_perf_test_android_sme2.txt").split("Average inference")[0]
    with pytest.raises(MobilediffError, match="Average inference time cost.*last line: Total inference requests: 5"):
        parse_ort_perf_test(truncated)
    # "Run failed:" is what main.cc prints when the session run fails (no recording found: see README)
    with pytest.raises(MobilediffError, match="failed: provider not available"):
        parse_ort_perf_test("Session creation time cost: 0.1 s\nRun failed:provider not available\n")
    inconsistent = recorded("ort_perf_test_android_sme2.txt").replace("Runs:5", "Runs:6")
    with pytest.raises(MobilediffError, match="disagrees"):
        parse_ort_perf_test(inconsistent)


# ----------------------------------------------------------------------------- executor_runner output
def test_executor_runner_timed_format():
    r = parse_executor_runner(recorded("executor_runner_docs_mv2_xnnpack.txt"))
    assert r["success"] is True and r["timing"] == "total"
    assert (r["num_executions"], r["total_ms"], r["mean_ms"]) == (1, 15.013292, 15.013292)
    assert r["iterations_ms"] == [] and r["load_ms"] is None
    assert r["output_count"] == 1


def test_executor_runner_untimed_format():
    r = parse_executor_runner(recorded("executor_runner_docs_add_untimed.txt"))
    assert r["success"] is True and r["timing"] is None
    assert r["total_ms"] is None and r["num_executions"] is None
    assert r["method"] == "forward" and r["output_count"] == 1


def test_android_stdout_alone_points_to_logcat():
    # on Android the runner's log lines (the timing among them) go to logcat; stdout has only the tensors
    with pytest.raises(MobilediffError, match="logcat"):
        parse_executor_runner(recorded("executor_runner_android_stdout_issue15547.txt"))


def test_executorch_error_from_logcat_is_quoted():
    with pytest.raises(MobilediffError, match="first error: Input 0 has unexpected scalar type: expected Long"):
        parse_executor_runner(recorded("executorch_logcat_error_issue14804.txt"))


def test_executor_runner_garbled_output():
    with pytest.raises(MobilediffError, match="empty"):
        parse_executor_runner("")
    with pytest.raises(MobilediffError, match="no 'Model executed successfully' line; last line: hello"):
        parse_executor_runner("hello\n")
    twice = recorded("executor_runner_docs_mv2_xnnpack.txt") * 2
    with pytest.raises(MobilediffError, match="2 'Model executed successfully' lines"):
        parse_executor_runner(twice)


def test_executor_runner_per_iteration_lines():
    """Recent runners also log "Model loaded in X ms." and "Iteration i of n: X ms". No recorded output
    with them was found (see the README), so this input is the recorded timed log with lines added from
    the ET_LOG format strings of executor_runner.cpp, in the logcat form of ExecuTorch's Android PAL."""
    head = ("10-31 08:16:31.102: I/ExecuTorch(14764): Model loaded in 120.500000 ms.\n"
            "10-31 08:16:31.200: I/ExecuTorch(14764): Iteration 1 of 3: 30.000000 ms\n"
            "10-31 08:16:31.230: I/ExecuTorch(14764): Iteration 2 of 3: 10.000000 ms\n"
            "10-31 08:16:31.240: I/ExecuTorch(14764): Iteration 3 of 3: 11.000000 ms\n"
            "10-31 08:16:31.241: I/ExecuTorch(14764): Model executed successfully 3 time(s) in 51.000000 ms.\n")
    r = parse_executor_runner(head)
    assert r["timing"] == "per_iteration" and r["iterations_ms"] == [30.0, 10.0, 11.0]
    assert (r["num_executions"], r["total_ms"], r["mean_ms"], r["load_ms"]) == (3, 51.0, 17.0, 120.5)
    lost = head.replace("Iteration 2 of 3: 10.000000 ms", "chatty: uid=2000 identical 1 line")
    with pytest.raises(MobilediffError, match="2 'Iteration i of n' lines for 3 executions"):
        parse_executor_runner(lost)


# ------------------------------------------------------------------------------------------- Core ML
def test_compute_unit_names_exist_in_installed_coremltools():
    """Read coremltools' ComputeUnit enum from its source: importing coremltools takes seconds (torch)."""
    spec = importlib.util.find_spec("coremltools")
    if spec is None:
        pytest.skip("coremltools is not installed")
    tree = ast.parse(Path(spec.origin).read_text())
    enum = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ComputeUnit")
    members = {t.id for a in enum.body if isinstance(a, ast.Assign) for t in a.targets}
    assert set(COREML_COMPUTE_UNITS) == members


FAKE_CT = SimpleNamespace(ComputeUnit=SimpleNamespace(**{n: SimpleNamespace(name=n) for n in COREML_COMPUTE_UNITS}))


def test_coreml_compute_units():
    names = [u.name for u in coreml_compute_units(coremltools_module=FAKE_CT)]
    assert names == ["CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"]
    units = coreml_compute_units(["ALL", "CPU_ONLY"], coremltools_module=FAKE_CT)
    assert [u.name for u in units] == ["ALL", "CPU_ONLY"]
    with pytest.raises(MobilediffError, match="unknown Core ML compute unit"):
        coreml_compute_units(["GPU_ONLY"], coremltools_module=FAKE_CT)


def test_coreml_predictions_need_macos():
    with pytest.raises(MobilediffError, match="Core ML predictions need macOS"):
        time_coreml_predictions(lambda unit: None, {}, platform="linux")


class FakeModel:
    def __init__(self, unit, fail=False):
        self.unit, self.fail, self.calls = unit, fail, 0

    def predict(self, inputs):
        if self.fail:
            raise RuntimeError("Error computing NN outputs")
        self.calls += 1
        return {"out": inputs["x"]}


def test_coreml_timing_loop_with_a_fake_model():
    import time

    made = []
    load_s = 0.02  # each fake load sleeps this long: at least 20 ms of load_ms

    def factory(unit):
        time.sleep(load_s)
        made.append(FakeModel(unit))
        return made[-1]

    res = time_coreml_predictions(factory, {"x": 1}, warmup=2, runs=10, compute_units=["CPU_ONLY", "ALL"],
                                  coremltools_module=FAKE_CT, platform="darwin")
    assert list(res) == ["CPU_ONLY", "ALL"]
    assert [m.unit.name for m in made] == ["CPU_ONLY", "ALL"] and all(m.calls == 12 for m in made)
    assert all(r["n"] == 10 and r["reportable"] and r["load_ms"] >= load_s * 1e3 for r in res.values())


def test_coreml_failure_names_the_compute_unit():
    with pytest.raises(MobilediffError, match="compute unit CPU_AND_NE: RuntimeError: Error computing NN outputs"):
        time_coreml_predictions(lambda unit: FakeModel(unit, fail=unit.name == "CPU_AND_NE"), {"x": 1}, runs=1,
                                coremltools_module=FAKE_CT, platform="darwin")
