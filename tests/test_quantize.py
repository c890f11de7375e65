"""Quantization: the calibration recorder (real trajectories, bounded, non-finite stop), recipe lookup, and an ONNX
static int8 UNet checked against the float one on a tiny random pipeline."""
import pytest
import torch

from conftest import error_lines, run_cli_here
from mobilediff.calibration import calibration_prompts, record_calibration
from mobilediff.errors import MobilediffError
from mobilediff.quantize import RECIPES, get_recipe
from mobilediff.tiny import tiny_pipeline


def test_calibration_records_bounded_rows_in_declared_layout():
    pipe = tiny_pipeline()
    prompts = calibration_prompts(6)
    cal = record_calibration(pipe, prompts, steps=3, sampler="ddim", guidance=3.5, max_rows=5)
    # 6 prompts x 3 steps x 2 (CFG batch) UNet rows observed, 5 kept
    assert cal.seen == {"text_encoder": 12, "unet": 36, "vae_decoder": 6}
    assert {k: len(v) for k, v in cal.rows.items()} == {"text_encoder": 5, "unet": 5, "vae_decoder": 5}
    sample, t, ehs = cal.rows["unet"][0]
    assert sample.shape == (1, 4, 16, 16) and t.shape == (1,) and ehs.shape == (1, pipe.tokenizer.model_max_length, 32)
    assert cal.rows["text_encoder"][0][0].dtype == torch.int32
    # the timesteps kept are the sampler's, not random ones
    from mobilediff.train.diffusion import ddim_timesteps

    assert {int(r[1]) for r in cal.rows["unet"]} <= set(ddim_timesteps(pipe.scheduler, 3).tolist())
    again = record_calibration(pipe, prompts, steps=3, sampler="ddim", guidance=3.5, max_rows=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(cal.rows["unet"], again.rows["unet"]))  # seeded


def test_calibration_stops_on_non_finite_outputs():
    pipe = tiny_pipeline()
    with torch.no_grad():
        pipe.unet.conv_out.bias.fill_(float("inf"))
    with pytest.raises(MobilediffError, match="non-finite"):
        record_calibration(pipe, calibration_prompts(2), steps=2, sampler="ddim", guidance=3.5)


def test_unknown_recipe_lists_the_valid_ones(tiny_pipeline_dir, tmp_path, capsys):
    with pytest.raises(MobilediffError, match="valid: int8-static, int8-dynamic, fp16"):
        get_recipe("onnx", "int4")
    code, _, stderr = run_cli_here(capsys, "export", "--model", tiny_pipeline_dir, "--target", "executorch", "--quantize",
                              "palettize4", "--out", tmp_path / "b")
    assert code == 2 and error_lines(stderr) == [
        "error: no quantization recipe 'palettize4' for executorch; valid: " + ", ".join(RECIPES["executorch"])]
    assert not (tmp_path / "b").exists()


def test_onnx_static_int8_unet_is_smaller_and_close_to_float(tmp_path):
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component
    from mobilediff.tiny import TINY_MODEL, tiny_pipeline as make

    import dataclasses

    # a UNet wide enough that weights, not graph overhead, dominate the file
    model = dataclasses.replace(TINY_MODEL, unet=dataclasses.replace(TINY_MODEL.unet, block_out_channels=(64, 64),
                                                                     norm_num_groups=16))
    pipe = make(model=model)
    spec = declare(pipe, latent_geometry(pipe))["unet"]
    cal = record_calibration(pipe, calibration_prompts(4), steps=4, sampler="ddim", guidance=3.5, max_rows=16)
    q = export_component(spec, "onnx", "fp32", tmp_path, recipe=get_recipe("onnx", "int8-static"), calibration=cal)
    assert q["quantization"] == "int8-static" and q["path"] == "unet_onnx_int8-static.onnx"
    # against the float weights alone (the float graph file is a little larger still; both files are compared in
    # tests/test_bench_quantization.py)
    float_bytes = 4 * sum(p.numel() for p in pipe.unet.parameters())
    assert float_bytes / q["size_bytes"] > 2.5
    assert q["parity"]["psnr_db"] >= 15 and q["parity"]["psnr_db"] < 60  # quantized: close, not exact
    assert q["export"]["quantization"]["nodes_kept_float"]  # conv_in / conv_out stay float
    # the attention's activation x activation products stay float (no QLinearSoftmax / QLinearMatMul between two
    # activations, slower than float on the CPU provider); every quantized MatMul multiplies by a weight
    import onnx

    graph = onnx.load(str(tmp_path / q["path"])).graph
    assert q["export"]["quantization"]["activation_matmuls_kept_float"] >= 2
    assert not [n for n in graph.node if n.op_type in ("QLinearSoftmax", "QLinearMatMul")]
    initializers = {t.name for t in graph.initializer}
    quantized_weights = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    products = [n for n in matmuls if not any(i in initializers | quantized_weights for i in n.input)]
    assert len(products) >= 2 and not any(i in dequantized for n in products for i in n.input)  # float in, float out
    assert any(i in quantized_weights for n in matmuls for i in n.input)  # the projections are quantized


def test_onnx_quantization_of_a_graph_with_external_data_is_refused(tmp_path, monkeypatch):
    import mobilediff.targets.onnx as onnx_target
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component

    monkeypatch.setattr(onnx_target, "EXTERNAL_DATA_MIN_BYTES", 0)  # as if the UNet had over 1.5 GiB of weights
    pipe = tiny_pipeline()
    spec = declare(pipe, latent_geometry(pipe))["unet"]
    with pytest.raises(MobilediffError, match="^onnx int8-dynamic: quantizing a graph with external data "
                                              r"\(unet, over 0 GiB of weights\) is not supported$"):
        export_component(spec, "onnx", "fp32", tmp_path, recipe=get_recipe("onnx", "int8-dynamic"))
    assert not list(tmp_path.rglob("*.onnx*"))  # refused before the export


def _observed_in(prepared, prefix: str) -> int:
    """Observers (activation_post_process) on outputs of nodes inside module ``prefix``."""
    n = 0
    for node in prepared.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in str(node.target):
            stack = node.args[0].meta.get("nn_module_stack", {}).values()
            n += any(fqn == prefix or fqn.startswith(prefix + ".") for fqn, _ in stack)
    return n


@pytest.mark.parametrize("keep", [("unet.time_proj",), ("unet.time_proj", "unet.up_blocks.1")])
def test_executorch_int8_keeps_float_modules_unobserved(keep):
    """XNNPACKQuantizer propagates annotations through cat/slice past its filter; the keep-float wrapper strips
    them, so nothing inside a kept module is quantized (without it the timestep sinusoid is: the broken int8 UNet),
    and an annotation sharing parameters with a stripped node goes too (prepare_pt2e would fail on it)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from mobilediff.components import declare, latent_geometry
    from mobilediff.targets.executorch import _KeepFloat

    pipe = tiny_pipeline()
    spec = declare(pipe, latent_geometry(pipe))["unet"]

    def prepared(keep_names):
        def kept(node):
            stack = node.meta.get("nn_module_stack", {}).values()
            return any(fqn == k or fqn.startswith(k + ".") for fqn, _ in stack for k in keep_names)

        q = _KeepFloat(XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)), kept)
        graph = torch.export.export(spec.module, spec.example_inputs(), strict=False).module()
        return prepare_pt2e(graph, q)

    plain = prepared(())
    assert all(_observed_in(plain, k) > 0 for k in keep)  # what the wrapper must remove
    kept_model = prepared(keep)
    assert all(_observed_in(kept_model, k) == 0 for k in keep)
    assert _observed_in(kept_model, "unet.down_blocks") > 0  # the rest is still quantized
    with torch.no_grad():
        kept_model(*spec.example_inputs())


def test_default_recipes_keep_the_timestep_projection_float():
    assert "unet.time_proj" in get_recipe("executorch", "int8").keep_float


@pytest.mark.slow
@pytest.mark.extended  # the default run's time budget (CI under 20 minutes); run with -m extended
def test_executorch_int8_decoder_recipe_quantizes_the_decoder_too(tmp_path):
    """`--quantize int8-decoder` is `int8` with the VAE decoder in int8 as well: the decoder's program is quantized,
    calibrated on the final latents of sampling, and checked against PyTorch at export (close, not exact)."""
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component

    recipe = get_recipe("executorch", "int8-decoder")
    assert recipe.components == get_recipe("executorch", "int8").components + ("vae_decoder",)
    assert "vae_decoder" not in get_recipe("executorch", "int8").components
    pipe = tiny_pipeline()
    spec = declare(pipe, latent_geometry(pipe))["vae_decoder"]
    cal = record_calibration(pipe, calibration_prompts(4), steps=2, sampler="ddim", guidance=3.5, max_rows=8)
    q = export_component(spec, "executorch", "fp32", tmp_path, recipe=recipe, calibration=cal)
    assert q["quantization"] == "int8-decoder" and q["path"] == "vae_decoder_executorch_int8-decoder.pte"
    assert q["export"]["quantization"]["calibration_batches"] >= 1
    assert 15 <= q["parity"]["psnr_db"] < 60  # quantized: close, not exact


def test_kept_modules_follow_each_components_model_attribute():
    """A keep-float layer is found under the wrapper attribute of its own component: the text encoder's too (its
    name starts with text_encoder., which no splitting of "text_encoder" at "_" gives), and the VAE decoder's (vae.)."""
    import dataclasses

    from mobilediff.components import ComponentSpec, Fp16IO, TextEncoderWrapper, UnetWrapper, VaeDecoderWrapper
    from mobilediff.quantize import kept_modules

    recipe = dataclasses.replace(get_recipe("onnx", "int8-static"), keep_float=(
        "text_encoder.text_model.final_layer_norm", "unet.conv_in", "vae.post_quant_conv"))
    specs = {"text_encoder": TextEncoderWrapper(torch.nn.Identity()), "unet": UnetWrapper(torch.nn.Identity(), False),
             "vae_decoder": VaeDecoderWrapper(torch.nn.Identity())}
    for name, module in specs.items():
        for wrapped, path in ((module, ""), (Fp16IO(module), "inner.")):  # names as the wrapped module holds them
            spec = ComponentSpec(name=name, module=wrapped, inputs=(), outputs=())
            assert kept_modules(recipe, spec) == [path + n for n in recipe.keep_float
                                                  if n.startswith({"vae_decoder": "vae."}.get(name, name + "."))]
