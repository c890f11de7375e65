"""mobilediff recommend on a small synthetic scaling table: the best configuration and its runner-ups for a latency
budget and for a quality floor, every refusal, and latencies composed from a run_device-shaped file's component
medians. The store of measured configurations itself: tests/test_results_store.py."""
from __future__ import annotations

import json
import math

import pytest

from conftest import run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.configurations import check_study_rows, compose_from_device, device_costs, from_scaling
from mobilediff.recommend import format_recommendation, recommend


def row(model, pipeline, method, sampler, steps, guidance, latency, acc, fd, rows=1):
    return {"model": model, "pipeline": pipeline, "unet_params": {"xs": 1000, "s": 4000}[model],
            "gflops_per_image": 1.0, "sampler": sampler, "method": method, "steps": steps, "guidance": guidance,
            "runtime": "eager", "precision": "fp32", "latency_ms": latency, "prompt_accuracy": acc,
            "attribute_accuracy": {"shape": acc}, "fd": fd, "nfe": steps * rows, "unet_rows": rows, "cfg": rows == 2,
            "n": 256, "latency_kind": "composed"}


ROWS = [
    row("xs", "xs", "teacher", "ddim", 1, 1.0, 20.0, 0.80, 40.0),
    row("xs", "xs", "teacher", "ddim", 4, 1.0, 50.0, 0.90, 30.0),
    row("xs", "xs", "teacher", "ddim", 4, 3.5, 80.0, 0.92, 28.0, rows=2),
    row("xs", "xs:lcm", "lcm", "lcm", 1, 3.5, 25.0, 0.85, 35.0),
    row("s", "s", "teacher", "ddim", 4, 1.0, 90.0, 0.95, 25.0),
    row("s", "s", "teacher", "ddim", 8, 3.5, 200.0, 0.97, 22.0, rows=2),
]


def cands():
    return from_scaling(ROWS, None, "t.json")


def key(c):
    return (c.model, c.sampler, c.steps, c.guidance)


def test_best_within_a_latency_budget_and_the_runner_ups():
    rec = recommend(cands(), latency_ms=60)
    assert key(rec.best) == ("xs", "ddim", 4, 1.0) and rec.best.prompt_accuracy == 0.90
    assert [key(c) for c in rec.runner_ups] == [("xs:lcm", "lcm", 1, 3.5), ("xs", "ddim", 1, 1.0)]
    assert rec.considered == 3 and rec.constraint == "latency <= 60 ms"
    rec = recommend(cands(), latency_ms=1000)
    assert key(rec.best) == ("s", "ddim", 8, 3.5)
    assert [c.prompt_accuracy for c in rec.runner_ups] == [0.95, 0.92, 0.90]  # the next three only


def test_fastest_reaching_a_quality_floor():
    rec = recommend(cands(), min_accuracy=0.9)
    assert key(rec.best) == ("xs", "ddim", 4, 1.0) and rec.best.latency_ms == 50.0
    assert [c.latency_ms for c in rec.runner_ups] == [80.0, 90.0, 200.0]
    assert key(recommend(cands(), min_accuracy=0.96).best) == ("s", "ddim", 8, 3.5)


def test_the_printout_says_where_the_numbers_come_from():
    text = format_recommendation(recommend(cands(), latency_ms=60))
    assert text.splitlines()[0] == "best for latency <= 60 ms (3 configurations meet it):"
    assert "expected prompt accuracy 0.900, FD 30.0; latency 50.0 ms per image" in text
    assert "quality measured on this exact configuration, the PyTorch model (256 fixed prompts and seeds, " \
           "t.json)" in text
    assert "latency composed from component medians on unknown machine (t.json)" in text
    assert "run: mobilediff generate --model xs --sampler ddim --steps 4 --guidance 1 " in text  # no bundle: eager
    assert "runner-ups:" in text and "  2. xs:lcm (lcm), lcm 1 step, guidance 3.5" in text
    assert "(composed, quality on PyTorch)" in text


@pytest.mark.parametrize("kw,message", [
    ({"latency_ms": 5}, "nothing in the table meets latency <= 5 ms: the fastest is xs (teacher), ddim 1 step"),
    ({"min_accuracy": 0.99}, "nothing in the table meets prompt accuracy >= 0.99: the most accurate is s (teacher)"),
    ({"latency_ms": 60, "min_accuracy": 0.9}, "give exactly one of --latency-ms or --min-accuracy"),
    ({}, "give exactly one of --latency-ms or --min-accuracy"),
    ({"latency_ms": math.nan}, "--latency-ms must be a finite number > 0, got nan"),
    ({"latency_ms": math.inf}, "--latency-ms must be a finite number > 0, got inf"),
    ({"latency_ms": -1.0}, "--latency-ms must be a finite number > 0, got -1.0"),
    ({"min_accuracy": 1.5}, "--min-accuracy must be a number in [0, 1], got 1.5"),
    ({"latency_ms": 60, "runtime": "coreml"}, "--runtime coreml: not in the table (there: eager)"),
    ({"latency_ms": 60, "precision": "int8"}, "--precision int8: not in the table (there: fp32)"),
    ({"latency_ms": 10, "runtime": "eager"}, "nothing on eager in the table meets latency <= 10 ms"),
])
def test_refusals(kw, message):
    with pytest.raises(MobilediffError) as e:
        recommend(cands(), **kw)
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("rows,message", [
    ({"rows": []}, "corrupt t.json: expected a list of rows"),
    ([], "t.json has no rows"),
    ([dict(ROWS[0], prompt_accuracy=1.5)], "corrupt t.json: row 0: 'prompt_accuracy' missing or not a number in [0, 1]"),
    ([dict(ROWS[0], latency_ms=float("nan"))], "corrupt t.json: row 0: 'latency_ms' missing or not a finite number > 0"),
    ([ROWS[0], {k: v for k, v in ROWS[0].items() if k != "steps"}], "corrupt t.json: row 1: 'steps' missing"),
    ([dict(ROWS[0], unet_rows=3)], "corrupt t.json: row 0: 'unet_rows' must be 1 or 2"),
])
def test_corrupt_tables_are_refused(rows, message):
    with pytest.raises(MobilediffError) as e:
        check_study_rows(rows, "t.json")
    assert str(e.value).startswith(message), str(e.value)


# ------------------------------------------------------------------------------- --device: composed latencies
def latency(ms):
    return {"n": 10, "median_ms": ms, "p90_ms": ms, "mean_ms": ms}


def component(source, bundle, runtime, precision, comp, ms, batch=1):
    shapes = {"text_encoder": {"input_ids": [1, 32]}, "vae_decoder": {"latent_sample": [1, 4, 16, 16]},
              "unet": {"sample": [batch, 4, 16, 16], "timestep": [batch]}}[comp]
    return {"model": bundle or f"eager:{source}", "bundle": bundle, "source": source, "component": comp,
            "runtime": runtime, "precision": precision, "input_shapes": shapes, "latency": latency(ms)}


def device_file():
    """A run_device result covering model xs (an fp32 and an int8 ONNX bundle, UNet at batch 1 only) and xs's LCM
    student (its components labelled by folder, its bundle naming the model), not s."""
    bundles = [{"name": "xs-onnx", "precision": "fp32", "source": {"model": "xs", "path": "/models/xs"}},
               {"name": "xs-int8", "precision": "int8-static", "quantization": "int8-static",
                "source": {"model": "xs", "path": "/models/xs"}},
               {"name": "lcm-onnx", "precision": "fp32", "source": {"model": "xs:lcm", "path": "/models/xs-lcm"}}]
    comps = [component("xs", "xs-onnx", "onnx", "fp32", "text_encoder", 1.0),
             component("xs", "xs-onnx", "onnx", "fp32", "unet", 5.0),
             component("xs", "xs-onnx", "onnx", "fp32", "vae_decoder", 10.0),
             component("xs", "xs-int8", "onnx", "int8-static", "text_encoder", 0.8),
             component("xs", "xs-int8", "onnx", "int8-static", "unet", 4.0),
             component("xs", "xs-int8", "onnx", "fp32", "vae_decoder", 10.0),  # the int8 bundle's float VAE
             component("/models/xs-lcm", "lcm-onnx", "onnx", "fp32", "text_encoder", 1.0),
             component("/models/xs-lcm", "lcm-onnx", "onnx", "fp32", "unet", 6.0),
             component("/models/xs-lcm", "lcm-onnx", "onnx", "fp32", "vae_decoder", 10.0)]
    return {"schema": {"name": "mobilediff.run_device", "version": 1}, "bundles": bundles, "components": comps,
            "end_to_end": []}


def test_device_latencies_compose_the_rows_the_file_covers():
    costs = device_costs(device_file(), "d.json")
    assert {(c.source, c.runtime, c.precision) for c in costs} == {
        ("xs", "onnx", "fp32"), ("xs", "onnx", "int8-static"), ("/models/xs-lcm", "onnx", "fp32")}
    out, notes = compose_from_device(device_file(), "d.json", cands())
    got = {(key(c), c.precision): c for c in out}
    # xs without CFG at both precisions; the LCM student by its bundle's model name; xs's CFG row (batch 2 not timed)
    # and s left out
    assert set(got) == {(("xs", "ddim", 1, 1.0), "fp32"), (("xs", "ddim", 4, 1.0), "fp32"),
                        (("xs", "ddim", 1, 1.0), "int8-static"), (("xs", "ddim", 4, 1.0), "int8-static"),
                        (("xs:lcm", "lcm", 1, 3.5), "fp32")}
    c = got[(("xs", "ddim", 4, 1.0), "fp32")]
    assert c.latency_ms == 1.0 + 4 * 5.0 + 10.0 and c.runtime == "onnx" and c.prompt_accuracy == 0.90
    assert c.latency_kind == "composed" and c.quality_kind == "pytorch" and c.quality_source == "t.json"
    assert c.latency_parts == {"text_encoder_ms": 1.0, "text_encoder_calls": 1, "unet_step_ms": 5.0,
                               "vae_decoder_ms": 10.0}
    assert c.export == "mobilediff export --model xs --target onnx --out xs-onnx"
    int8 = got[(("xs", "ddim", 4, 1.0), "int8-static")]
    assert int8.latency_ms == 0.8 + 4 * 4.0 + 10.0 and int8.quality_kind == "borrowed"
    assert int8.export == "mobilediff export --model xs --target onnx --quantize int8-static --out xs-int8"
    assert notes[0] == ("3 of 6 plans (model, sampler, steps, guidance) with PyTorch quality composed from d.json's "
                        "component medians (models: xs, xs:lcm)")
    assert notes[1] == "not in d.json, left out: s"
    assert notes[2].startswith("1 configuration(s) left out: d.json did not time their UNet batch")
    rec = recommend(out, latency_ms=30, notes=tuple(notes))
    # 0.90 in int8 at 26.8 ms (fp32: 31.0 ms, over the budget); then the LCM student's 0.85, then 0.80, faster first
    assert (key(rec.best), rec.best.precision) == (("xs", "ddim", 4, 1.0), "int8-static")
    assert [(key(c), c.precision) for c in rec.runner_ups] == [
        (("xs:lcm", "lcm", 1, 3.5), "fp32"), (("xs", "ddim", 1, 1.0), "int8-static"), (("xs", "ddim", 1, 1.0), "fp32")]
    text = format_recommendation(rec)
    assert text.endswith("note: " + notes[-1])
    assert "latency composed from component medians, 0.80 + 4 x 4.00 + 10.00 ms, on unknown machine" in text
    assert "quality borrowed from the float PyTorch model (256 fixed prompts and seeds, t.json): int8-static quality " \
           "not measured" in text
    int8 = recommend(out, latency_ms=20, precision="int8-static")
    assert key(int8.best) == ("xs", "ddim", 1, 1.0) and int8.constraint == "latency <= 20 ms on int8-static"


@pytest.mark.parametrize("result,message", [
    ({"schema": {"name": "mobilediff.scaling"}}, "--device d.json is not a run_device result"),
    ([], "--device d.json is not a run_device result"),
    ({"schema": {"name": "mobilediff.run_device"}, "bundles": []}, "corrupt d.json: no components or bundles list"),
    ({**device_file(), "components": [{"source": "xs"}]}, "corrupt d.json: a bundle or component row lacks"),
])
def test_corrupt_device_files_are_refused(result, message):
    with pytest.raises(MobilediffError) as e:
        device_costs(result, "d.json")
    assert str(e.value).startswith(message), str(e.value)


# ------------------------------------------------------------------------------------------------ the command
def test_the_command(tmp_path, capsys):
    table = tmp_path / "scaling.json"
    table.write_text(json.dumps(ROWS))
    code, out, err = run_cli_here(capsys, "recommend", "--latency-ms", "60", "--table", table)
    assert code == 0, err
    assert out.startswith("best for latency <= 60 ms (3 configurations meet it):\n  xs (teacher), ddim 4 steps")
    assert out.count("\n  2. ") == 1 and "\n  3. " in out and "\n  4. " not in out
    device = tmp_path / "run_device.json"
    device.write_text(json.dumps(device_file()))
    code, out, err = run_cli_here(capsys, "recommend", "--min-accuracy", "0.9", "--device", device, "--table", table,
                                  "--runtime", "onnx")
    assert code == 0, err
    assert "xs (teacher), ddim 4 steps, guidance 1, onnx int8-static" in out  # 26.8 ms against fp32's 31.0
    assert "latency composed from component medians, 0.80 + 4 x 4.00 + 10.00 ms" in out and f"({device})" in out
    assert "export: mobilediff export --model xs --target onnx --quantize int8-static --out xs-int8" in out
    assert f"note: not in {device}, left out: s\n" in out


@pytest.mark.parametrize("args,message", [
    (("--latency-ms", "nan"), "error: Invalid value for '--latency-ms': nan is not a finite number"),
    (("--latency-ms", "-3"), "error: Invalid value for '--latency-ms'"),
    (("--min-accuracy", "inf"), "error: Invalid value for '--min-accuracy'"),
    (("--latency-ms", "50", "--min-accuracy", "0.5"), "error: give exactly one of --latency-ms or --min-accuracy"),
    ((), "error: give exactly one of --latency-ms or --min-accuracy"),
    (("--latency-ms", "5"), "error: nothing in {t} meets latency <= 5 ms: the fastest is"),
    (("--latency-ms", "50", "--runtime", "onnx"), "error: --runtime onnx: not in {t} (there: eager)"),
])
def test_the_command_refuses_in_one_line(args, message, tmp_path, capsys):
    table = tmp_path / "scaling.json"
    table.write_text(json.dumps(ROWS))
    code, out, err = run_cli_here(capsys, "recommend", *args, "--table", table)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(message.format(t=table)), err
    assert out == ""
