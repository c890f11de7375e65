"""The store of measured configurations (mobilediff.configurations, benchmarks/results/configurations.jsonl): its
schema checks, appends that replace instead of duplicating, the importers on small files shaped like the committed
results, the committed store itself, and `mobilediff recommend` over it without torch."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_cli_here
from mobilediff.configurations import (DEFAULT_STORE, FIELDS, SCHEMA_VERSION, Configuration, append_result,
                                       append_rows, config_key, from_baseline_quality, from_distillation,
                                       from_quantization, from_run_device, from_scaling, read_store, write_store)
from mobilediff.errors import MobilediffError
from mobilediff.recommend import candidates_for, is_candidate, recommend

REPO = Path(__file__).resolve().parents[1]
MACHINE = {"platform": "Linux-6.1-x86_64", "cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "torch_threads": 1,
           "accelerator": "none (CPU only)", "load_average": [1.0, 1.0, 1.0]}


def config(**kw) -> Configuration:
    base = dict(model="m", method="teacher", sampler="ddim", steps=4, guidance=1.0, unet_rows=1, runtime="onnx",
                precision="fp32", decoder="full", machine="Test CPU, 2 cores, 8 GiB, CPU only", machine_id="host-0000",
                source={"file": "r/run_device.json", "command": "python benchmarks/run_device.py"}, bundle="b",
                latency_ms=10.0, latency_kind="measured", prompt_accuracy=0.9, fd=30.0, n=128, quality_kind="bundle")
    return Configuration(**{**base, **kw})


# ------------------------------------------------------------------------------------------------------- schema
def row_text(**kw) -> str:
    return config(**kw).to_json()


@pytest.mark.parametrize("line,message", [
    ("{not json", "corrupt {f} line 2: Expecting property name"),
    (json.dumps({k: v for k, v in json.loads(row_text()).items() if k != "fd"}),
     "corrupt {f} line 2: missing field(s) fd"),
    (row_text().replace('"latency_ms": 10.0', '"latency_ms": NaN'),
     "corrupt {f} line 2: NaN is not a number JSON allows"),
    (row_text().replace('"fd": 30.0', '"fd": Infinity'), "corrupt {f} line 2: Infinity is not a number JSON allows"),
    (row_text().replace('"fd": 30.0', '"fd": -Infinity'), "corrupt {f} line 2: -Infinity is not a number JSON allows"),
    (row_text().replace('"steps": 4', '"steps": 0'), "corrupt {f} line 2: 'steps' must be an integer >= 1"),
    (row_text().replace('"prompt_accuracy": 0.9', '"prompt_accuracy": 1.5'), "corrupt {f} line 2: 'prompt_accuracy'"),
    (row_text().replace('"decoder": "full"', '"decoder": "big"'), "corrupt {f} line 2: 'decoder' must be one of"),
    (row_text().replace('"latency_kind": "measured"', '"latency_kind": null'),
     "corrupt {f} line 2: 'latency_kind' must be given exactly when latency_ms is"),
    (row_text().replace('"quality_kind": "bundle"', '"quality_kind": "guessed"'), "corrupt {f} line 2: 'quality_kind'"),
    (row_text().replace(f'"schema_version": {SCHEMA_VERSION}', f'"schema_version": {SCHEMA_VERSION + 1}'),
     f"corrupt {{f}} line 2: schema_version {SCHEMA_VERSION + 1} is newer than this mobilediff reads"),
    ("[1, 2]", "corrupt {f} line 2: not a JSON object"),
])
def test_a_bad_line_is_refused_naming_file_and_line(line, message, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(row_text() + "\n" + line + "\n")
    with pytest.raises(MobilediffError) as e:
        read_store(f)
    assert str(e.value).startswith(message.format(f=f)), str(e.value)


def test_the_command_refuses_a_bad_store_in_one_line(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    f.write_text(row_text() + "\n" + row_text().replace('"fd": 30.0', '"fd": NaN') + "\n")
    code, out, err = run_cli_here(capsys, "recommend", "--latency-ms", "20", "--table", f)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and out == "" and lines == [f"error: corrupt {f} line 2: NaN is not a number JSON allows"]


def test_every_field_is_written_and_read_back(tmp_path):
    rows = [config(), config(bundle=None, runtime="eager", quality_kind="pytorch", export=None, latency_ms=None,
                             latency_kind=None, latency_parts=None, fused=False)]
    write_store(rows, tmp_path / "c.jsonl")
    lines = (tmp_path / "c.jsonl").read_text().splitlines()
    order = ["schema_version", *[f for f in FIELDS if f != "schema_version"]]
    assert [list(json.loads(x)) for x in lines] == [order] * 2
    assert read_store(tmp_path / "c.jsonl") == rows
    assert [p.name for p in tmp_path.iterdir()] == ["c.jsonl"]  # no temporary left beside it


# ------------------------------------------------------------------------------------------------------- append
def test_append_replaces_the_same_configuration_instead_of_duplicating(tmp_path):
    store = tmp_path / "c.jsonl"
    first = [config(steps=s) for s in (1, 2, 4)]
    assert append_rows(first, store) == (3, 0)
    again = [replace(first[1], latency_ms=7.5), config(steps=8)]  # a rerun: one configuration again, one new
    assert append_rows(again, store) == (1, 1)
    rows = read_store(store)
    assert [(r.steps, r.latency_ms) for r in rows] == [(1, 10.0), (2, 7.5), (4, 10.0), (8, 10.0)]  # replaced in place
    assert append_rows(again, store) == (0, 2)
    assert len(read_store(store)) == 4
    # the same configuration from another result file, or on another machine, is another row
    append_rows([replace(first[0], source={"file": "elsewhere.json", "command": None}),
                 replace(first[0], machine_id="host-1111")], store)
    assert len(read_store(store)) == 6 and len({config_key(r) for r in read_store(store)}) == 6


def test_append_leaves_a_corrupt_store_as_it_is(tmp_path):
    store = tmp_path / "c.jsonl"
    store.write_text("{broken\n")
    with pytest.raises(MobilediffError, match=f"corrupt {store} line 1"):
        append_rows([config()], store)
    assert store.read_text() == "{broken\n"
    with pytest.raises(MobilediffError, match="'steps' must be an integer >= 1"):
        append_rows([config(steps=0)], tmp_path / "new.jsonl")  # a bad row is refused before anything is written
    assert not (tmp_path / "new.jsonl").exists()


# ---------------------------------------------------------------------------------------------------- importers
def rd_latency(ms):
    return {"n": 10, "median_ms": ms, "p90_ms": ms, "mean_ms": ms}


def run_device_result():
    """A host run_device result shaped like benchmarks/results/run_device.json: a teacher bundle, an int8 student
    bundle with the tiny decoder that also holds a fused program, and the student's PyTorch row."""
    plan = {"sampler": "ddim", "steps": 4, "guidance": 1.0}
    bundles = [
        {"name": "teacher-onnx", "path": "../runs/t", "role": "teacher", "method": "teacher", "precision": "fp32",
         "quantization": None, "targets": ["onnx"],
         "source": {"model": "default", "path": "default", "weights_sha256": "aa", "decoder": None},
         "default_plan": {"sampler": "ddim", "steps": 50, "guidance": 3.5}},
        {"name": "s4-tiny-et-int8", "path": "../runs/s", "role": "student", "method": "slim", "precision": "int8",
         "quantization": "int8", "targets": ["executorch"],
         "source": {"model": "default:slim-4", "path": None, "weights_sha256": "bb", "decoder": "default:tiny"},
         "default_plan": plan}]

    def e2e(model, bundle, source, method, runtime, precision, steps, guidance, ms, acc, batch=1, fused=False,
            kind="measured"):
        return {"model": model, "bundle": bundle, "source": source, "role": "student", "method": method,
                "runtime": runtime, "precision": precision, "sampler": "ddim", "steps": steps, "guidance": guidance,
                "unet_batch": batch, "fused": fused, "latency_kind": kind, "latency": rd_latency(ms), "gflop": 2.5,
                "quality": {"n": 128, "prompt_accuracy": acc, "fd": 40.0}}

    rows = [e2e("teacher-onnx", "teacher-onnx", "default", "teacher", "onnx", "fp32", 50, 3.5, 290.0, 0.96, batch=2),
            e2e("s4-tiny-et-int8", "s4-tiny-et-int8", "default:slim-4", "slim", "executorch", "int8", 4, 1.0, 3.1,
                0.92),
            e2e("s4-tiny-et-int8 (fused)", "s4-tiny-et-int8", "default:slim-4", "slim", "executorch", "int8", 4, 1.0,
                2.9, 0.92, fused=True, kind="measured (fused program)"),
            e2e("eager:default:slim-4", None, "default:slim-4", "slim", "eager", "fp32", 4, 1.0, 37.0, 0.95)]
    return {"schema": {"name": "mobilediff.run_device", "version": 1}, "created": "2026-12-01T14:19:12+00:00",
            "command": "python benchmarks/run_device.py --device host --threads 1",
            "device": {"kind": "host", "machine": MACHINE, "android": None, "apple": None},
            "settings": {"threads": 1, "prompt_seed": 7, "metric_set": None}, "bundles": bundles, "components": [],
            "end_to_end": rows}


def test_run_device_rows_with_their_export_commands():
    rows = from_run_device(run_device_result(), "benchmarks/results/run_device.json",
                           model_info=lambda m: {"base_model": "default", "unet_params": 1000})
    teacher, student, fused, eager = rows
    assert teacher.export == "mobilediff export --model default --target onnx --guidance 3.5 --out teacher-onnx"
    assert (teacher.unet_rows, teacher.quality_kind, teacher.decoder, teacher.latency_kind) == (2, "bundle", "full",
                                                                                               "measured")
    assert student.export == ("mobilediff export --model default:slim-4 --target executorch --quantize int8 "
                              "--decoder default:tiny --fused-steps 4 --out s4-tiny-et-int8")
    assert (student.model, student.method, student.precision, student.decoder, student.decoder_model) == (
        "default:slim-4", "slim", "int8", "tiny", "default:tiny")
    assert (student.latency_ms, student.prompt_accuracy, student.n, student.threads) == (3.1, 0.92, 128, 1)
    assert (student.base_model, student.unet_params, student.model_sha256) == ("default", 1000, "bb")
    assert student.machine == "Test CPU, 2 cores, 8 GiB, CPU only" and student.machine_id.startswith("host-")
    assert student.prompts == "shapes evaluation set (seed 7)" and student.created == "2026-12-01T14:19:12+00:00"
    assert fused.fused and fused.quality_kind == "bundle-unfused" and fused.export == student.export
    assert eager.bundle is None and eager.export is None and eager.quality_kind == "pytorch"
    assert eager.model_sha256 == "bb"  # the bundles of the same source model give its weights hash
    with pytest.raises(MobilediffError, match="x.json is not a run_device result"):
        from_run_device({"schema": {"name": "mobilediff.scaling"}}, "x.json")
    bad = run_device_result()
    del bad["end_to_end"][0]["steps"]
    with pytest.raises(MobilediffError, match="corrupt x.json: a bundle or end_to_end row lacks 'steps'"):
        from_run_device(bad, "x.json")


def test_a_phone_run_is_composed_and_on_its_own_machine():
    result = run_device_result()
    result["device"] = {"kind": "android", "machine": MACHINE, "apple": None,
                        "android": {"serial": "X", "model": "Pixel 8", "soc": "Tensor G3", "android_version": "15",
                                    "abi": "arm64-v8a"}}
    for r in result["end_to_end"]:
        r.update(runtime="executor_runner", latency_kind="estimate", quality=None)
    row = from_run_device(result, "a.json")[1]
    assert row.machine == "Pixel 8 (Tensor G3), Android 15, arm64-v8a" and row.machine_id.startswith("android-")
    assert row.latency_kind == "composed" and row.quality_kind is None and row.prompt_accuracy is None
    assert "--target executorch" in row.export


def test_scaling_rows():
    rows = [{"model": "default:unet-s", "pipeline": "default:unet-s:lcm", "unet_params": 4000, "gflops_per_image": 1.5,
             "sampler": "lcm", "method": "lcm", "steps": 1, "guidance": 3.5, "runtime": "eager", "precision": "fp32",
             "latency_ms": 12.0, "prompt_accuracy": 0.4, "fd": 150.0, "n": 128, "unet_rows": 1,
             "latency_kind": "composed",
             "latency_parts": {"text_encoder_ms": 0.5, "text_encoder_calls": 1, "unet_step_ms": 5.0,
                               "vae_decoder_ms": 6.5}}]
    meta = {"machine": MACHINE, "settings": {"threads": 1}, "command": "python benchmarks/scaling.py --n 128",
            "created": "2026-12-01T11:04:08+00:00", "prompt_seed": 7,
            "models": [{"label": "default:unet-s:lcm", "weights_sha256": "cc"}]}
    (c,) = from_scaling(rows, meta, "benchmarks/results/scaling.json")
    assert (c.model, c.base_model, c.unet_params, c.model_sha256, c.threads) == ("default:unet-s:lcm", "default:unet-s",
                                                                               4000, "cc", 1)
    assert (c.latency_kind, c.quality_kind, c.export, c.gflops_per_image) == ("composed", "pytorch", None, 1.5)
    assert c.source == {"file": "benchmarks/results/scaling.json", "command": "python benchmarks/scaling.py --n 128"}
    onnx = from_scaling([{**rows[0], "pipeline": "default:unet-s", "method": "teacher", "sampler": "ddim",
                          "runtime": "onnx", "guidance": 1.0}], meta, "s.json")[0]
    assert onnx.export == ("mobilediff export --model default:unet-s --target onnx --guidance 1 "
                           "--out default-unet-s-onnx")


def test_quantization_rows_leave_out_the_ablations():
    result = {"meta": {"model": "default:progressive-4", "model_sha256": "dd",
                       "command": "python benchmarks/quantization.py",
                       "created": "2026-12-01T12:13:11+00:00", "machine": MACHINE,
                       "sampling": {"sampler": "ddim", "steps": 4, "guidance": 1.0}},
              "end_to_end": [
                  {"target": "onnx", "variant": "fp32", "recipe": None, "n": 256, "prompt_accuracy": 0.94, "fd": 30.1,
                   "latency_ms": 18.9},
                  {"target": "onnx", "variant": "int8-static", "recipe": "int8-static", "n": 256,
                   "prompt_accuracy": 0.93, "fd": 31.0, "latency_ms": 14.6},
                  {"target": "onnx", "variant": "int8-static, nothing kept float", "recipe": "int8-static", "n": 256,
                   "prompt_accuracy": 0.94, "fd": 30.2, "latency_ms": 13.8},
                  {"target": "executorch", "variant": "int8", "recipe": "int8", "n": 256, "prompt_accuracy": 0.93,
                   "fd": 29.8, "latency_ms": 10.1}]}
    rows = from_quantization(result, "benchmarks/results/quantization.json", lambda m: {"method": "progressive"})
    assert [(r.runtime, r.precision, r.latency_ms) for r in rows] == [("onnx", "fp32", 18.9),
                                                                      ("onnx", "int8-static", 14.6),
                                                                      ("executorch", "int8", 10.1)]
    assert rows[2].export == ("mobilediff export --model default:progressive-4 --target executorch --quantize int8 "
                              "--out executorch-int8")
    assert {(r.method, r.quality_kind, r.latency_kind, r.unet_rows) for r in rows} == {
        ("progressive", "bundle", "measured", 1)}
    with pytest.raises(MobilediffError, match="q.json is not a quantization result"):
        from_quantization([], "q.json")


def test_quality_sweeps_are_rows_without_latency():
    meta = {"teacher": "default", "teacher_sha256": "aa", "command": "python benchmarks/distillation.py",
            "machine": MACHINE, "prompt_seed": 7, "created": "2026-12-01T14:45:40+00:00",
            "students": {"lcm": {"path": "default:lcm", "sha256": "ee"},
                         "progressive steps-4": {"path": "default:progressive-4", "sha256": "dd"}}}
    rows = [{"method": "teacher-ddim", "sampler": "ddim", "steps": 4, "nfe": 8, "guidance": 2.0,
             "prompt_accuracy": 0.94, "fd": 28.2, "n": 256},
            {"method": "lcm", "sampler": "lcm", "steps": 2, "nfe": 2, "guidance": 3.5, "prompt_accuracy": 0.91,
             "fd": 25.6, "n": 256},
            {"method": "progressive", "sampler": "ddim", "steps": 4, "nfe": 4, "guidance": 1.0,
             "prompt_accuracy": 0.94, "fd": 30.1, "n": 256}]
    got = from_distillation(rows, meta, "benchmarks/results/distillation.json")
    assert [(c.model, c.method, c.unet_rows, c.model_sha256) for c in got] == [
        ("default", "teacher", 2, "aa"), ("default:lcm", "lcm", 1, "ee"),
        ("default:progressive-4", "progressive", 1, "dd")]
    assert all(c.latency_ms is None and c.latency_kind is None and c.runtime == "eager" and c.quality_kind == "pytorch"
               and not is_candidate(c) for c in got)
    with pytest.raises(MobilediffError, match="has no student 'progressive steps-8'"):
        from_distillation([{**rows[2], "steps": 8}], meta, "d.json")
    base = from_baseline_quality(rows[:1], {"model": "default", "model_sha256": "ff", "machine": MACHINE}, "b.json")
    assert [(c.model, c.method, c.model_sha256, c.latency_ms) for c in base] == [("default", "teacher", "ff", None)]


def test_a_benchmark_appends_its_rows_beside_its_results(tmp_path):
    """What benchmarks/run_device.py and benchmarks/scaling.py call at the end of a run."""
    out = tmp_path / "results"
    result = run_device_result()
    assert append_result("run_device", result, out) == (4, 0)
    assert append_result("run_device", result, out) == (0, 4)  # a rerun replaces its rows
    rows = read_store(out / "configurations.jsonl")
    assert len(rows) == 4 and {r.source["file"] for r in rows} == {str((out / "run_device.json").resolve())}
    result["end_to_end"][1]["latency"] = rd_latency(float("inf"))  # run_device writes non-finite numbers as null
    append_result("run_device", result, out)
    assert read_store(out / "configurations.jsonl")[1].latency_ms is None
    with pytest.raises(ValueError):
        append_result("memory", {}, out)


def test_the_default_guidance_matches_the_model_card():
    from mobilediff.card import DEFAULT_GUIDANCE
    from mobilediff.configurations import TEACHER_DEFAULT_GUIDANCE

    assert TEACHER_DEFAULT_GUIDANCE == DEFAULT_GUIDANCE


# --------------------------------------------------------------------------------------------- the committed store
def test_the_committed_store_loads_and_is_what_the_committed_results_give():
    from mobilediff.bench.configurations import build

    rows = read_store(DEFAULT_STORE)
    rebuilt, counts = build(REPO / "benchmarks" / "results", info=None)  # importers only (model sizes need torch)
    assert [config_key(r) for r in rows] == [config_key(r) for r in rebuilt]
    assert {f for f, _ in counts} >= {"benchmarks/results/scaling.json", "benchmarks/results/run_device.json"}
    text = DEFAULT_STORE.read_text()
    assert str(REPO) not in text and '"/' not in text  # no path of this machine
    models = {r.model for r in rows if is_candidate(r)}
    assert {"default", "default:slim-4", "default:lcm", "default:progressive-4", "default:unet-m"} <= models
    assert {r.runtime for r in rows if is_candidate(r)} >= {"eager", "onnx", "executorch"}


def test_recommend_over_the_committed_store_takes_the_most_accurate_row_in_budget():
    cands, notes, source = candidates_for(DEFAULT_STORE)
    rec = recommend(cands, latency_ms=20, notes=notes, source=source)
    within = [c for c in cands if c.latency_ms <= 20]
    assert rec.best.prompt_accuracy == max(c.prompt_accuracy for c in within)
    assert rec.best.latency_ms <= 20 and rec.considered == len(within)
    fastest = recommend(cands, min_accuracy=0.9)
    assert fastest.best.latency_ms == min(c.latency_ms for c in cands if c.prompt_accuracy >= 0.9)
    # the default model's students are candidates, on every runtime and precision run_device measured them
    assert {(c.runtime, c.precision, c.decoder) for c in cands if c.model == "default:slim-4"} >= {
        ("executorch", "int8", "tiny"), ("onnx", "int8-static", "tiny"), ("eager", "fp32", "full")}


def test_device_names_a_machine_of_the_store(capsys):
    rows = read_store(DEFAULT_STORE)
    machine = rows[0]
    for name in ("host", machine.machine_id, machine.machine.split(",")[0]):
        cands, _, source = candidates_for(DEFAULT_STORE, name)
        assert cands and all(c.machine_id.startswith("host-") for c in cands) and name in source
    code, out, err = run_cli_here(capsys, "recommend", "--latency-ms", "20", "--device", "pixel-9")
    assert code == 2 and out == "" and err.startswith("error: --device pixel-9: no such file, and no machine of ")
    assert f"(there: {machine.machine_id} = {machine.machine}" in err and len(err.strip().splitlines()) == 1


def test_the_recommend_path_never_imports_torch():
    code = ("import sys\n"
            "import mobilediff.recommend, mobilediff.configurations\n"
            "from mobilediff.cli import main\n"
            "try:\n"
            "    main(['recommend', '--latency-ms', '20'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'onnxruntime') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("best for latency <= 20 ms")
