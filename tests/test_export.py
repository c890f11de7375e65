"""Export to ONNX and ExecuTorch bundles on tiny random pipelines: parity, manifest, generate --bundle, bad input."""
import json
import shutil

import pytest
import torch

from conftest import error_lines, run_cli_here
from mobilediff.bundle import read_manifest
from mobilediff.components import declare, latent_geometry
from mobilediff.errors import MobilediffError
from mobilediff.exporter import component_path, export_bundle, export_component
from mobilediff.parity import psnr
from mobilediff.engine import BundleRunner
from mobilediff.sampling import generate
from mobilediff.tiny import tiny_pipeline, tiny_variant_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def bundle(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return export_bundle(pipe, "onnx", out, fused_steps=2, source="tiny")


@pytest.fixture(scope="module")
def et_bundle(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny_et"
    return export_bundle(pipe, "executorch", out, source="tiny")


def test_manifest_describes_every_file_and_io(bundle):
    m = read_manifest(bundle)
    assert m.format_version == 1 and m.quantization is None
    assert set(m.components) == {"text_encoder", "unet", "vae_decoder"}
    unet = m.component("unet")
    assert [i.name for i in unet.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert unet.inputs[0].shape == ["batch", 4, 16, 16] and unet.dims == {"batch": 2}
    for name, comp in m.components.items():
        assert [f.target for f in comp.files] == ["onnx", "ort"]  # the graph and its ORT-format form
        f, o = comp.files
        assert f.path == f"{name}/model.onnx"  # optimum's layout of a diffusion pipeline folder
        assert (bundle / f.path).stat().st_size == f.size_bytes and f.external_data == ()
        assert f.parity["psnr_db"] >= 60 and f.parity["checker"].startswith("onnx.checker")
        assert o.path == f"{name}/model.ort" and (bundle / o.path).stat().st_size == o.size_bytes
        assert o.precision == "fp32" and o.parity["psnr_db"] >= 60 and "ORT format" in o.parity["runtime"]
    geo = m.geometry
    assert (geo.height, geo.latent_height, geo.latent_channels) == (32, 16, 4)
    assert m.tokenizer.max_length == 32 and "tokenizer/vocab.json" in m.tokenizer.files
    assert {(t.name, t.steps) for t in m.samplers} >= {("ddim", 50), ("dpmpp", 4), ("euler", 1)}
    assert m.guidance.type == "classifier_free"
    assert m.role.role == "teacher" and m.role.method is None
    assert (m.plan.sampler, m.plan.steps, m.plan.guidance) == ("ddim", 50, 5.0)
    assert m.fused["steps"] == 2 and m.fused["files"][0]["parity"]["psnr_db"] >= 60
    assert m.fused["files"][0]["path"] == "fused2_onnx_fp32.onnx"  # not a pipeline component: the flat name
    assert not list(bundle.parent.glob("*.partial"))


def test_onnx_bundle_is_a_diffusers_style_pipeline_folder(pipe, bundle):
    """What optimum's ONNX Runtime pipelines read beside the graphs: model_index.json, each component's source
    config.json, the default plan's scheduler config, the tokenizer."""
    index = json.loads((bundle / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and "_name_or_path" not in index
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"] and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    configs = {name: json.loads((bundle / name / "config.json").read_text()) for name in ("text_encoder", "unet", "vae_decoder")}
    assert configs["text_encoder"]["model_type"] == "clip_text_model"
    assert configs["text_encoder"]["num_hidden_layers"] == pipe.text_encoder.config.num_hidden_layers
    assert configs["unet"]["_class_name"] == "UNet2DConditionModel" and configs["unet"]["sample_size"] == 16
    assert configs["vae_decoder"]["_class_name"] == "AutoencoderKL"
    assert configs["vae_decoder"]["scaling_factor"] == pipe.vae.config.scaling_factor
    scheduler = json.loads((bundle / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler" and scheduler["clip_sample"] is False
    assert (bundle / "tokenizer" / "vocab.json").is_file() and (bundle / "tokenizer" / "merges.txt").is_file()


def test_ort_forms_carry_their_mobile_usability_and_the_bundles_operator_set(bundle):
    """Each ORT-format graph records the per-EP usability report and its operators; the bundle's merged
    required-operators config (a reduced build's input) lists every one of them and names no path."""
    from mobilediff.targets.onnx import USABILITY_EPS

    m = read_manifest(bundle)
    ops = set()
    for comp in m.components.values():
        o = comp.file("ort")
        assert o.export["onnxruntime"] == "1.29.0" and o.export["optimization"]["target_platform"] == "arm"
        report = o.export["usability"]["eps"]
        assert tuple(report) == USABILITY_EPS
        for row in report.values():
            assert row["verdict"] in ("YES", "MAYBE", "NO") and 0 <= row["supported_nodes"] <= row["nodes"]
        ops |= {(k, op) for k, names in o.export["required_operators"].items() for op in names}
    lines = (bundle / "ort_required_operators.config").read_text().splitlines()
    listed = {(line.rsplit(";", 1)[0], op) for line in lines if not line.startswith("#")
              for op in line.rsplit(";", 1)[1].split(",")}
    assert listed == ops and ("ai.onnx;11", "Conv") in ops
    assert not any("/" in line for line in lines if not line.startswith("#"))


def test_ort_format_benchmark_rows_compare_both_forms(pipe, bundle):
    """benchmarks/ort_format.py's row of each graph: both forms run, sizes and parity from the manifest, and its
    Markdown names every component and the verdicts."""
    from mobilediff.bench import ort_format

    m = read_manifest(bundle)
    specs = declare(pipe, latent_geometry(pipe), cfg_batch=m.component("unet").dims["batch"])
    rows = [ort_format.graph_row("tiny", specs[n], c.file("onnx").to_dict(), c.file("ort").to_dict(), bundle, 1)
            for n, c in m.components.items()]
    for r in rows:
        assert r["ort_bytes"] > 0 and r["ort_psnr_db"] >= 60 and r["onnx_call_ms"] > 0 and r["ort_call_ms"] > 0
    refused = ort_format.graph_row("big", specs["unet"], m.component("unet").file("onnx").to_dict(),
                                   "unet: over the limit", bundle, 1)
    assert refused["ort"] is None and refused["ort_refused"] == "unet: over the limit"
    md = ort_format.markdown({"command": "python benchmarks/ort_format.py", "wall_seconds": 1.0, "threads": 1,
                              "machine": {"cpu": "cpu", "cores": 2}, "versions": {"onnxruntime": "1.29.0"},
                              "load_average_1min": {"start": 0.1, "end": 0.2}, "rows": rows + [refused]})
    assert all(f"| tiny | {n} |" in md for n in m.components) and "NNAPI: " in md and "unet: over the limit" in md


def test_only_float_onnx_graphs_take_the_pipeline_layout():
    assert component_path("unet", "onnx", "fp32", "onnx", quantized=False) == "unet/model.onnx"
    assert component_path("vae_decoder", "onnx", "fp16", "onnx", quantized=False) == "vae_decoder/model.onnx"
    assert component_path("unet", "onnx", "int8-static", "onnx", quantized=True) == "unet_onnx_int8-static.onnx"
    assert component_path("unet", "executorch", "fp32", "pte", quantized=False) == "unet_executorch_fp32.pte"
    assert component_path("text_encoder", "coreml", "fp16", "mlpackage", quantized=False) == \
        "text_encoder_coreml_fp16.mlpackage"


@pytest.mark.parametrize("sampler,steps", [("ddim", 4), ("dpmpp", 2)])
def test_generate_from_onnx_bundle_matches_pytorch(pipe, bundle, sampler, steps):
    runner = BundleRunner(bundle, "onnx")
    got = runner.generate("a red circle at the top", 7, steps, sampler, 4.0)
    ref = generate(pipe, ["a red circle at the top"], [7], steps, sampler, 4.0)
    assert psnr(got, ref) >= 40


@pytest.mark.slow
@pytest.mark.extended  # the default run's ExecuTorch export and generate check is the architecture matrix's
def test_generate_from_executorch_bundle_matches_pytorch(pipe, et_bundle):
    m = read_manifest(et_bundle)
    facts = m.component("unet").files[0].export
    assert facts["backend"] == "XNNPACK" and facts["delegated_nodes"] > 0
    runner = BundleRunner(et_bundle, "executorch")
    got = runner.generate("a blue square", 3, 4, "ddim", 4.0)
    ref = generate(pipe, ["a blue square"], [3], 4, "ddim", 4.0)
    assert psnr(got, ref) >= 40
    # guidance 1 runs a single row through the static batch-2 graph
    assert psnr(runner.generate("a blue square", 3, 2, "ddim", 1.0),
                generate(pipe, ["a blue square"], [3], 2, "ddim", 1.0)) >= 40


@pytest.mark.parametrize("target", ["onnx", pytest.param("executorch", marks=(pytest.mark.slow, pytest.mark.extended))])
def test_guidance_free_export_has_a_single_row_denoiser(pipe, tmp_path, target):
    """--guidance 1 (a student with guidance distilled in): the UNet is declared with one row, not a CFG batch of
    two. ExecuTorch's static graph then takes one row only, and asking that bundle for guidance is refused in one
    line; ONNX Runtime's batch stays dynamic, so guidance still works there."""
    out = export_bundle(pipe, target, tmp_path / "noguid", guidance=1.0, source="tiny")
    m = read_manifest(out)
    assert m.component("unet").dims == {"batch": 1}
    assert m.component("unet").files[0].parity["psnr_db"] >= 60
    assert m.plan.guidance == 1.0  # --guidance sets the default plan's scale
    runner = BundleRunner(out, target)
    assert psnr(runner.generate("a blue square", 3, 2, "ddim", 1.0),
                generate(pipe, ["a blue square"], [3], 2, "ddim", 1.0)) >= 40
    if target == "onnx":
        assert psnr(runner.generate("a blue square", 3, 2, "ddim", 4.0),
                    generate(pipe, ["a blue square"], [3], 2, "ddim", 4.0)) >= 40
        return
    with pytest.raises(MobilediffError, match="exported without a classifier-free-guidance batch"):
        runner.generate("a blue square", 3, 2, "ddim", 4.0)


def test_fused_program_equals_the_step_by_step_bundle(bundle):
    import numpy as np
    import onnxruntime as ort

    m = read_manifest(bundle)
    runner = BundleRunner(bundle, "onnx")
    sess = ort.InferenceSession(str(bundle / m.fused["files"][0]["path"]), providers=["CPUExecutionProvider"])
    ids = runner.tokenizer.ids("a green triangle").numpy()
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(5))
    image = sess.run(["image"], {"input_ids": ids.astype(np.int32), "noise": noise.numpy(),
                                 "guidance_scale": np.array([3.0], dtype=np.float32)})[0]
    ref = runner.generate("a green triangle", 5, 2, "ddim", 3.0)
    assert psnr(torch.from_numpy(image), ref) >= 60


def test_a_guidance_free_plan_gets_a_fused_program_without_the_cfg_batch(pipe):
    """At a default guidance <= 1 the fused program runs the conditional row alone: the same image as with the CFG
    batch at scale 1, at about half the UNet FLOPs; a teacher's plan (guidance > 1) keeps the batch."""
    from mobilediff.components import latent_geometry
    from mobilediff.flops import count_gflop
    from mobilediff.fused import fused_has_cfg, fused_spec
    from mobilediff.sampler_table import sampler_table
    from mobilediff.sampling import make_scheduler

    assert not fused_has_cfg(pipe, 1.0) and fused_has_cfg(pipe, 3.5)
    assert not fused_has_cfg(tiny_variant_pipeline("lcm"), 3.5)  # a guidance embedding, never a batch
    table = {"name": "ddim", **sampler_table(make_scheduler("ddim", pipe.scheduler.config), 2).to_dict()}
    geometry = latent_geometry(pipe)
    single, batch = (fused_spec(pipe, table, geometry, "fused2", cfg) for cfg in (False, True))
    inputs = list(single.example_inputs())
    inputs[2] = torch.ones_like(inputs[2])  # guidance 1: the CFG combination is the conditional row
    with torch.no_grad():
        a, b = single.module(*inputs)[0], batch.module(*inputs)[0]
    assert psnr(a, b) >= 60
    assert 0 < count_gflop(single.module, inputs) < count_gflop(batch.module, inputs)


def test_guidance_embedding_unet_is_an_lcm_student_by_default():
    """Without a distillation.json, a UNet with a guidance-embedding input is an LCM student sampled with LCM at 4
    steps; a plain UNet is a teacher sampled with DDIM at 50 (the manifest's role and default plan)."""
    from mobilediff.card import model_card

    card = model_card(tiny_variant_pipeline("lcm"), None, "x")
    role, plan = card.role, card.plan
    assert (role.role, role.method, plan.sampler, plan.steps) == ("student", "lcm", "lcm", 4)
    card = model_card(tiny_pipeline(seed=1), None, "x", 2.0)
    role, plan = card.role, card.plan
    assert (role.role, role.method, plan.sampler, plan.steps, plan.guidance) == ("teacher", None, "ddim", 50, 2.0)


def test_large_onnx_weights_go_to_checked_external_data_files(pipe, tmp_path, monkeypatch):
    import mobilediff.targets.onnx as onnx_target

    monkeypatch.setattr(onnx_target, "EXTERNAL_DATA_MIN_BYTES", 0)  # every graph takes the path of a > 2 GiB UNet
    monkeypatch.setattr(onnx_target, "ORT_FORMAT_MAX_BYTES", 0)  # ... which is over the ORT format's limit too
    out = export_bundle(pipe, "onnx", tmp_path / "b")
    m = read_manifest(out)
    assert not list(out.rglob("*.ort")) and not (out / "ort_required_operators.config").exists()
    for name, comp in m.components.items():
        assert [f.target for f in comp.files] == ["onnx"]  # the .onnx form is kept, and why there is no other said
        f = comp.files[0]
        assert "over the ORT format's 2 GiB limit (a flatbuffer); the .onnx form is kept" in f.export["ort_format"]
        # beside the graph, named as torch.onnx names it (onnxruntime reads the name from the graph)
        assert [e.path for e in f.external_data] == [f"{name}/model.onnx.data"] == [f.path + ".data"]
        assert f.export["external_data"] == ["model.onnx.data"]
        data = out / f.external_data[0].path
        assert data.stat().st_size == f.external_data[0].size_bytes > 0
        assert f.parity["psnr_db"] >= 60
    got = BundleRunner(out, "onnx").generate("a red circle at the top", 7, 2, "ddim", 4.0)
    assert psnr(got, generate(pipe, ["a red circle at the top"], [7], 2, "ddim", 4.0)) >= 40
    weights = out / "unet" / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(MobilediffError, match=r"unet/model\.onnx\.data does not match its sha256"):
        BundleRunner(out, "onnx")
    weights.unlink()
    with pytest.raises(MobilediffError, match=r"^bundle file missing: .*unet/model\.onnx\.data$"):
        BundleRunner(out, "onnx")


def test_fp16_export_keeps_float32_io_and_close_outputs(pipe, tmp_path):
    spec = declare(pipe, latent_geometry(pipe))["unet"]
    entry = export_component(spec, "onnx", "fp16", tmp_path)
    assert entry["path"] == "unet/model.onnx" and entry["parity"]["psnr_db"] >= 30


# ---- bad input: one line, non-zero exit, nothing left behind ----------------------------------------------


def test_unknown_target_is_refused(tmp_path, capsys):
    code, _, stderr = run_cli_here(capsys, "export", "--target", "tflite", "--out", tmp_path / "b")
    assert code == 2 and error_lines(stderr) == ["error: unknown target 'tflite'; choose one of: onnx, executorch, coreml, all"]
    assert not (tmp_path / "b").exists()


def test_existing_output_without_force_is_refused(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    code, _, stderr = run_cli_here(capsys, "export", "--target", "onnx", "--out", tmp_path / "b")
    assert code == 2 and error_lines(stderr) == [
        f"error: output directory {tmp_path / 'b'} already exists (pass --force to replace it)"]


def test_unsupported_denoiser_class_is_refused(pipe, tmp_path):
    from diffusers import UNet2DModel

    odd = tiny_pipeline(seed=0)
    odd.unet = UNet2DModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(8, 8),
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=4)
    with pytest.raises(MobilediffError, match="^unsupported unet class UNet2DModel: mobilediff supports UNet2DConditionModel$"):
        export_bundle(odd, "onnx", tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


def test_tampered_file_is_refused_by_its_sha256(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    f = copy / "unet" / "model.onnx"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(MobilediffError, match="does not match its sha256"):
        BundleRunner(copy, "onnx")


@pytest.mark.parametrize("runtime,fixture,graph,message", [
    ("onnx", "bundle", "text_encoder/model.onnx",
     "declares inputs (input_ids) but the manifest's unet takes (sample, timestep, encoder_hidden_states): a graph of "
     "another component?"),
    # the ExecuTorch bundle costs two minutes to build: the extended tier runs this row, the default run checks the
    # ExecuTorch side of the rule on program metadata (test_graph_io_is_checked_against_the_manifest)
    pytest.param("executorch", "et_bundle", "text_encoder_executorch_fp32.pte",
                 "has 1 input but the manifest's unet takes 3 (sample, timestep, encoder_hidden_states): a graph of "
                 "another component?", marks=pytest.mark.extended),
])
def test_a_manifest_naming_another_components_graph_is_refused_before_the_first_call(runtime, fixture, graph, message,
                                                                                     request, tmp_path, capsys):
    """The unet's file entry names the text encoder's graph (sha256 and size valid): one line from the graph's own
    declared inputs, not the runtime's error from inside its first call."""
    copy = tmp_path / "copy"
    shutil.copytree(request.getfixturevalue(fixture), copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["components"]["unet"]["files"] = m["components"]["text_encoder"]["files"]
    (copy / "manifest.json").write_text(json.dumps(m))
    code, _, stderr = run_cli_here(capsys, "generate", "--bundle", copy, "--runtime", runtime, "--prompt",
                                   "a red circle", "--steps", 2, "--out", tmp_path / "x.png")
    assert code == 2 and error_lines(stderr) == [f"error: {copy / graph} {message}"]
    assert not (tmp_path / "x.png").exists()


def _graph_tensors(*specs):
    from mobilediff.bundle import GraphTensor

    return [GraphTensor(name, shape, dtype) for name, shape, dtype in specs]


def _unet_entry():
    from mobilediff.bundle import ComponentEntry, TensorEntry

    def t(name, shape, dtype="float32"):
        return TensorEntry(name=name, shape=shape, static_shape=[2 if d == "batch" else d for d in shape], dtype=dtype)

    return ComponentEntry(inputs=(t("sample", ["batch", 4, 16, 16]), t("timestep", ["batch"]),
                                  t("encoder_hidden_states", ["batch", 8, 32])),
                          outputs=(t("out_sample", ["batch", 4, 16, 16]),), dims={"batch": 2}, files=())


# the unet entry above as an ONNX graph declares it (batch dynamic) and as an ExecuTorch program does (no names)
ONNX_UNET = (("sample", (None, 4, 16, 16), "float32"), ("timestep", (None,), "float32"),
             ("encoder_hidden_states", (None, 8, 32), "float32"))
PTE_UNET = ((None, (2, 4, 16, 16), "float32"), (None, (2,), "float32"), (None, (2, 8, 32), "float32"))


@pytest.mark.parametrize("inputs,outputs,message", [
    (ONNX_UNET, (("out_sample", (None, 4, 16, 16), "float32"),), None),
    (PTE_UNET, ((None, (2, 4, 16, 16), "float32"),), None),
    (ONNX_UNET, (("sample", (None, 4, 16, 16), "float32"),),
     "g declares outputs (sample) but the manifest's unet gives (out_sample): a graph of another component?"),
    (ONNX_UNET[:1] + (("timestep", (None,), "int32"),) + ONNX_UNET[2:], (("out_sample", (None, 4, 16, 16), "float32"),),
     "g: input timestep is int32 but the manifest's unet declares float32"),
    (ONNX_UNET[:1] + (("timestep", (), "float32"),) + ONNX_UNET[2:], (("out_sample", (None, 4, 16, 16), "float32"),),
     "g: input timestep has rank 0 but the manifest's unet declares rank 1 (batch=2)"),
    ((("sample", (None, 4, 8, 8), "float32"),) + ONNX_UNET[1:], (("out_sample", (None, 4, 8, 8), "float32"),),
     "g: input sample has shape (?, 4, 8, 8) but the manifest's unet declares (batch=2, 4, 16, 16)"),
    (PTE_UNET[:2], ((None, (2, 4, 16, 16), "float32"),),
     "g has 2 inputs but the manifest's unet takes 3 (sample, timestep, encoder_hidden_states): a graph of another "
     "component?"),
    ((PTE_UNET[0], (None, (2,), "int64"), PTE_UNET[2]), ((None, (2, 4, 16, 16), "float32"),),
     "g: input 1 (timestep in the manifest) is int64 but the manifest's unet declares float32"),
    (PTE_UNET, ((None, (1, 4, 16, 16), "float32"),),
     "g: output 0 (out_sample in the manifest) has shape (1, 4, 16, 16) but the manifest's unet declares "
     "(batch=2, 4, 16, 16)"),
], ids=["onnx-ok", "pte-ok", "output-names", "dtype", "rank", "latent-size", "pte-count", "pte-dtype", "pte-batch"])
def test_graph_io_is_checked_against_the_manifest(inputs, outputs, message):
    from mobilediff.bundle import check_graph_io

    def check():
        check_graph_io("unet", "g", _unet_entry(), _graph_tensors(*inputs), _graph_tensors(*outputs))

    if message is None:
        check()
    else:
        with pytest.raises(MobilediffError) as err:
            check()
        assert str(err.value) == message


def test_future_manifest_version_is_refused(bundle, tmp_path, tiny_pipeline_dir, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    code, _, stderr = run_cli_here(capsys, "generate", "--bundle", copy, "--prompt", "a red circle", "--steps", 4,
                                   "--out", tmp_path / "x.png")
    assert code == 2 and error_lines(stderr) == [
        f"error: {copy / 'manifest.json'} has format version 99; this mobilediff reads versions 1..2 "
        "(upgrade mobilediff to read newer bundles)"]
    assert not (tmp_path / "x.png").exists()


def test_interrupted_export_leaves_no_manifest_and_no_bundle(pipe, tmp_path, monkeypatch):
    import mobilediff.exporter as exporter

    real = exporter.export_component
    calls = []

    def first_then_interrupt(*a, **k):  # the first component file is written, then the user presses Ctrl-C
        if calls:
            raise KeyboardInterrupt
        calls.append(real(*a, **k))
        return calls[-1]

    monkeypatch.setattr(exporter, "export_component", first_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(pipe, "onnx", tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("*.onnx"))


def test_cli_export_and_generate_from_bundle(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "b"
    code, stdout, stderr = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "onnx", "--out", out)
    assert code == 0, stderr
    assert "bundle written to" in stdout and (out / "manifest.json").is_file()
    code, stdout, stderr = run_cli_here(capsys, "generate", "--bundle", out, "--runtime", "onnx", "--prompt",
                                        "a red circle", "--seed", 1, "--seed", 2, "--steps", 2, "--out", tmp_path / "g.png")
    assert code == 0, stderr
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size == ((2 * (32 + 2) + 2) * 4, (32 + 2 + 2) * 4)  # 2 seeds, 2 px pads, x4
    code, _, stderr = run_cli_here(capsys, "generate", "--bundle", out, "--prompt", "a red circle", "--steps", 3,
                                   "--out", tmp_path / "h.png")
    assert code == 2 and error_lines(stderr)[0].startswith("error: bundle has no ddim table for 3 steps")


# ---- the bundle carries the model's role and default sampling plan ---------------------------------------------


def _student_dir(pipe, path, method, sampler, steps, guidance):
    """A pipeline folder with the record `mobilediff distill` writes beside a student (method, sampling plan)."""
    pipe.save_pretrained(path, safe_serialization=True)
    (path / "distillation.json").write_text(json.dumps(
        {"method": method, "teacher": "tiny-teacher", "sampling": {"sampler": sampler, "steps": steps, "guidance": guidance}}))
    return path


@pytest.mark.parametrize("method", [pytest.param("progressive", marks=pytest.mark.extended), "lcm"])
def test_student_bundle_samples_with_its_own_plan_by_default(method, tmp_path, capsys):
    """`generate --bundle` with no sampling flags uses the student's plan from the manifest alone (the source
    folder is deleted before generating), and matches PyTorch sampling with that plan."""
    if method == "progressive":
        spipe, plan = tiny_pipeline(seed=3), ("ddim", 3, 1.0)  # 3 steps: not one of the tabulated step counts
    else:
        spipe, plan = tiny_variant_pipeline("lcm", seed=3), ("lcm", 2, 2.5)
    src = _student_dir(spipe, tmp_path / "student", method, *plan)
    out = tmp_path / "b"
    code, _, stderr = run_cli_here(capsys, "export", "--model", src, "--target", "onnx", "--out", out)
    assert code == 0, stderr
    m = read_manifest(out)
    assert (m.role.role, m.role.method, m.role.teacher) == ("student", method, "tiny-teacher")
    if method == "lcm":
        assert m.guidance.type == "embedding" and {t.name for t in m.samplers} == {"lcm"}
        assert [i.name for i in m.component("unet").inputs][-1] == "timestep_cond"
        index = json.loads((out / "model_index.json").read_text())  # optimum picks its pipeline class from this
        assert index["scheduler"] == ["diffusers", "LCMScheduler"]
        unet_config = json.loads((out / "unet" / "config.json").read_text())
        assert unet_config["time_cond_proj_dim"] == spipe.unet.config.time_cond_proj_dim
    assert (m.plan.sampler, m.plan.steps, m.plan.guidance) == plan
    assert m.component("unet").dims == {"batch": 1}  # guidance 1 or an embedding: no CFG batch
    shutil.rmtree(src)
    code, _, stderr = run_cli_here(capsys, "generate", "--bundle", out, "--prompt", "a red circle", "--seed", 4,
                                   "--scale", 1, "--out", tmp_path / "g.png")
    assert code == 0, stderr
    import numpy as np
    from PIL import Image

    from mobilediff.data import to_uint8

    got = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    ref = to_uint8(generate(spipe, ["a red circle"], [4], plan[1], plan[0], plan[2]))[0]
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_old_manifest_without_plan_reads_as_a_teacher(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    del raw["model"], raw["default_sampling"]
    raw["a_field_from_the_future"] = {"x": 1}
    (copy / "manifest.json").write_text(json.dumps(raw))
    m = read_manifest(copy)
    assert m.role.role == "teacher" and (m.plan.sampler, m.plan.steps) == ("ddim", 50)
    assert m.to_dict()["a_field_from_the_future"] == {"x": 1}  # unknown fields survive a round trip


@pytest.mark.parametrize("damage,message", [
    (lambda raw: raw.pop("geometry"), "missing field 'geometry'"),
    (lambda raw: raw["model"].update(role="grandparent"), "unknown model role 'grandparent'"),
    (lambda raw: raw.update(components=[]), "components: expected an object"),
])
def test_malformed_manifest_is_one_line(bundle, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    damage(raw)
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(MobilediffError, match=message):
        read_manifest(copy)
