"""The memory benchmark (mobilediff.bench.memory, what benchmarks/memory.py runs): the largest activation of a graph,
a row's derived numbers, the runtime settings it measures reaching the runtimes (ONNX Runtime session options,
ExecuTorch's load forms, the engine's one-component-at-a-time mode giving the same image), a whole run on a tiny
bundle, and bad input (one error line, exit code 2, nothing written)."""
import json

import pytest
import torch

from mobilediff.bench import memory as mem
from mobilediff.bench.envelope import run_command
from mobilediff.errors import MobilediffError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny ONNX bundle (no ORT form: not needed here)."""
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.tiny import tiny_pipeline

    out = tmp_path_factory.mktemp("memory") / "tiny-onnx"
    return run_export(tiny_pipeline(0), ExportConfig.of("onnx", out, ort_format=False))


def _graph(path):
    """x (batch, 4) -> MatMul (4, 256) -> Relu -> MatMul (256, 2) -> y, with a symbolic batch."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.zeros((4, 256), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((256, 2), np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_largest_activation_is_found_at_the_static_shapes(tmp_path):
    got = mem.largest_activation(_graph(tmp_path / "g.onnx"), {"x": [8, 4]})
    assert got["shape"] == [8, 256] and got["bytes"] == 8 * 256 * 4 and got["dtype"] == "float32"
    assert got["op"] in ("MatMul", "Relu")


def test_a_rows_numbers_are_derived_from_its_marks():
    row = {"weight_bytes": 100 * mem.MIB}
    marks = [{"stage": "start", "rss_mib": 400.0, "anon_mib": 300.0, "file_mib": 100.0, "hwm_mib": 400.0},
             {"stage": "program loaded", "rss_mib": 500.0, "anon_mib": 300.0, "file_mib": 200.0, "hwm_mib": 500.0},
             {"stage": "method loaded (delegate initialised, weights packed)", "rss_mib": 520.0, "anon_mib": 400.0,
              "file_mib": 120.0, "hwm_mib": 600.0}]
    mem.derive(row, {"baseline_mib": 400.0, "peak_mib": 650.0, "source": "VmHWM"},
               {"marks": marks, "samples_ms": [3.0, 1.0, 2.0]})
    assert (row["peak_mib"], row["delta_mib"], row["weight_mib"], row["overhead_mib"]) == (650.0, 250.0, 100.0, 150.0)
    assert (row["packing_mib"], row["packing_anon_mib"]) == (20.0, 100.0)
    assert row["step"]["median_ms"] == 2.0 and row["step"]["n"] == 3


def test_onnx_session_settings_reach_the_session_and_unknown_ones_are_refused(bundle):
    from mobilediff.targets import onnx as onnx_target

    path = bundle / "unet" / "model.onnx"
    sess = onnx_target.load_session(path, 1, mem.SETTINGS["onnx"]["lean"]["settings"])
    opts = sess.get_session_options()
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is False
    assert opts.get_session_config_entry("session.use_device_allocator_for_initializers") == "1"
    with pytest.raises(MobilediffError, match="unknown onnxruntime session setting 'arena'"):
        onnx_target.load_session(path, 1, {"arena": False})


@pytest.mark.slow  # lowering even one Linear through executorch takes ~10 s on 2 cores
def test_executorch_loads_a_program_from_a_buffer_and_keeps_it_alive(tmp_path):
    import gc

    from mobilediff.targets import executorch as et

    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    program, _ = et.lower(module, (x,))
    path = tmp_path / "m.pte"
    path.write_bytes(program.buffer)
    for form in et.LOAD_FORMS:
        method = et.load_method(path, form)
        gc.collect()  # the program and its bytes must outlive this scope's references
        torch.testing.assert_close(et.run(method, [x])[0], module(x).detach())
    with pytest.raises(MobilediffError, match="unknown ExecuTorch load form 'mmap'"):
        et.load_method(path, "mmap")


def test_one_component_at_a_time_gives_the_same_image(bundle):
    from mobilediff.engine import BundleRunner

    resident = BundleRunner(bundle, "onnx", threads=1)
    sequential = BundleRunner(bundle, "onnx", threads=1, resident=False)
    assert sequential.parts == {}
    a = resident.generate("a red circle", 3, steps=2)
    b = sequential.generate("a red circle", 3, steps=2)
    assert torch.equal(a, b) and sequential.parts == {}


def test_generate_low_memory_writes_the_same_image(bundle, tmp_path, capsys):
    from conftest import error_lines, run_cli_here

    args = ("generate", "--bundle", bundle, "--prompt", "a red circle", "--seed", 3, "--steps", 2)
    code, _, err = run_cli_here(capsys, *args, "--out", tmp_path / "a.png")
    assert code == 0, err
    code, _, err = run_cli_here(capsys, *args, "--low-memory", "--out", tmp_path / "b.png")
    assert code == 0, err
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    code, _, err = run_cli_here(capsys, "generate", "--prompt", "x", "--low-memory", "--out", tmp_path / "c.png")
    assert code == 2 and error_lines(err)[0].startswith("error: --low-memory") and not (tmp_path / "c.png").exists()


def test_the_markdown_and_plot_show_every_row(tmp_path):
    rows = [{"pipeline": "sd15", "resolution": 512, "runtime": rt, "precision": "fp32", "what": what,
             "setting": setting, "status": "ok", "reason": None, "weight_bytes": 3 * mem.GIB, "baseline_mib": 400.0,
             "peak_mib": peak, "overhead_mib": peak - 400 - 3072, "packing_mib": None,
             "largest_activation": {"bytes": mem.GIB, "op": "Softmax", "shape": [2, 8, 4096, 4096]},
             "step": {"median_ms": 4000.0}}
            for rt, what, setting, peak in (("onnx", "generate", "default", 9000.0), ("onnx", "generate", "lean", 7000.0),
                                            ("executorch", "unet", "default", 7000.0))]
    rows.append({"pipeline": "sd15", "resolution": 512, "runtime": "onnx", "precision": "fp16", "what": "generate",
                 "setting": "default", "status": "failed", "reason": "out of memory", "weight_bytes": mem.GIB})
    result = {"command": "python benchmarks/memory.py --arch sd15", "created": "now", "complete": True,
              "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24, "load_average_at_start": [0.1, 0.2, 0.3]},
              "settings": {"threads": 2, "settings": ["default", "lean"]}, "rows": rows,
              "failures": [{"pipeline": "sd15", "resolution": 512, "runtime": "onnx", "variant": "int8-dynamic",
                            "stage": "export", "reason": "too big"}],
              "setting_definitions": {rt: {n: {**v, "note": mem.SETTING_NOTES[n]} for n, v in d.items()}
                                      for rt, d in mem.SETTINGS.items()}}
    md = mem.markdown(result)
    assert md.count("| sd15 | 512 |") == 4 and "| 1024 MiB Softmax 2x8x4096x4096 |" in md
    assert "| failed: out of memory |" in md and "(export): too big" in md and "load average 0.1" in md
    assert "onnx `lean`: no arena" in md and "`no-prepack`" not in md
    mem.plot(result)(tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a fresh process per row: ~35 s on 2 cores
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_a_run_on_a_bundle_writes_its_rows_and_files(bundle, tmp_path):
    out = tmp_path / "out"
    returned = mem.main(["--bundle", str(bundle), "--runtimes", "onnx", "--settings", "default", "sequential",
                         "--no-components", "--runs", "2", "--threads", "1", "--out", str(out)])
    data = json.loads((out / "memory.json").read_text())
    assert data == json.loads(json.dumps(returned))
    assert data["schema"] == {"name": "mobilediff.memory", "version": 1} and data["complete"]
    assert {"cpu", "cores", "memory_gib", "load_average_at_start"} <= set(data["machine"])
    default, sequential = data["rows"]
    weights = sum((bundle / p).stat().st_size for p in ("text_encoder/model.onnx", "unet/model.onnx",
                                                         "vae_decoder/model.onnx"))
    for r in (default, sequential):
        assert (r["runtime"], r["precision"], r["what"], r["status"]) == ("onnx", "fp32", "generate", "ok")
        assert r["weight_bytes"] == weights and r["plan"]["unet_batch"] == 2 and r["geometry"]["height"] == 32
        assert r["peak_mib"] >= r["baseline_mib"] > 0 and r["source"] == "VmHWM"
        assert r["overhead_mib"] == pytest.approx(r["peak_mib"] - r["baseline_mib"] - r["weight_mib"], abs=0.2)
        assert [m["stage"] for m in r["marks"]][-1] == "generated (1 step)"
        assert r["largest_activation"]["bytes"] > 0 and r["largest_activation"]["from"].startswith("this bundle's")
    assert default["setting"] == "default" and default["step"]["n"] == 2
    assert sequential["setting"] == "sequential" and sequential["step"] is None
    md = (out / "memory.md").read_text()
    assert md.count(f"| {bundle.name} | 32 | onnx | fp32 | - | generate |") == 2
    # the image of each setting against the default one: one component at a time changes nothing
    assert sequential["identical_to_reference"] and sequential["psnr_reference"].startswith("onnx fp32")
    assert (out / "memory.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".memory.*"))


@pytest.mark.parametrize("kw,message", [
    ({}, "nothing to measure"),
    ({"archs": ("sd15",), "resolutions": (96,)}, "--resolution must be a positive multiple of 64 for sd15, got 96"),
    ({"archs": ("sd15",), "settings": ("mmap",)}, "unknown setting 'mmap'"),
    ({"archs": ("sd15",), "variants": ("int3",)}, "unknown variant 'int3'"),
    ({"archs": ("sd15",), "variants": ("fp32:attn=-1",)}, "attn must be a finite number >= 0"),
    ({"archs": ("sd15",), "variants": ("fp32:tile=x",)}, "tile must be a number, got 'x'"),
    ({"archs": ("sd15",), "variants": ("fp32:depth=2",)}, "unknown option 'depth=2'"),
    ({"archs": ("sd15",), "components": False, "generate": False}, "--no-components and --no-generate"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, kw, message):
    with pytest.raises(MobilediffError, match=message):
        mem.measure(mem.MemoryConfig(out=tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_bundle_is_one_error_line(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    code = run_command(lambda argv: mem.main(["--bundle", str(tmp_path / "b"), "--out", str(tmp_path / "out")]))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"error: {tmp_path / 'b'} is not a bundle (no manifest.json)"]
    assert not (tmp_path / "out").exists()
