"""The memory levers of export: attention in query chunks (mobilediff.attention), weight-only int8/int4 ONNX graphs
(mobilediff.targets.onnx_weights) and the tiled VAE decoder (mobilediff.tiling): each gives what the whole computes,
or within the stated error, and is recorded in the bundle."""
import json

import numpy as np
import pytest
import torch

from mobilediff.attention import chunk_size, chunked_attention
from mobilediff.errors import MobilediffError
from mobilediff.tiling import TiledDecoder, check_tiling, tile_starts

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


# --- attention in chunks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [None, "bool", "float", "causal", "causal+bool"])
def test_chunked_attention_equals_the_whole(mask):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (40, 40, 40))
    kw = {}
    if mask in ("bool", "causal+bool"):
        kw["attn_mask"] = torch.rand(2, 1, 40, 40, generator=g) > 0.2
    if mask == "float":
        kw["attn_mask"] = torch.randn(1, 1, 1, 40, generator=g)
    if mask and mask.startswith("causal"):
        kw["is_causal"] = True
        if "attn_mask" in kw:  # torch refuses both: the causal part is applied by hand for the reference
            kw["attn_mask"] = kw["attn_mask"] & torch.ones(40, 40, dtype=torch.bool).tril()
            kw.pop("is_causal")
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kw)
    budget = 2 * 3 * 7 * 40 * 4 / 2**20  # 7 queries per chunk
    with chunked_attention(budget, batch=2) as rec:
        got = torch.nn.functional.scaled_dot_product_attention(q, k, v, **kw)
    torch.testing.assert_close(got, whole, atol=1e-6, rtol=1e-5)
    assert rec.to_dict()["chunked"][0]["chunk"] == 7 and rec.to_dict()["chunked_calls"] == 1
    assert torch.nn.functional.scaled_dot_product_attention is not None  # restored
    with chunked_attention(0) as off:
        assert off is None


def test_the_chunk_fits_the_budget():
    assert chunk_size(2, 8, 4096, 4096, 64 << 20) == 256
    assert chunk_size(1, 1, 10, 10, 1 << 30) == 10 and chunk_size(4, 8, 4096, 4096, 1) == 1


@pytest.mark.extended  # one UNet export (~20 s); chunking itself is checked above, the export path below
def test_an_exported_unet_with_chunked_attention_matches_pytorch(tmp_path):
    """A tiny UNet exported with a budget below its self-attention's scores: a softmax per chunk, the output matches
    PyTorch's, and the entry records the chunking."""
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component
    from mobilediff.tiny import tiny_pipeline

    pipe = tiny_pipeline(0)
    spec = declare(pipe, latent_geometry(pipe))["unet"]
    chunked = export_component(spec, "onnx", "fp32", tmp_path / "b", attention_budget_mib=0.02)
    rec = chunked["export"]["attention"]
    assert rec["chunked_calls"] > 0 and all(r["score_mib_chunk"] <= 0.02 for r in rec["chunked"])
    assert chunked["parity"]["psnr_db"] >= 100
    ops = chunked["export"]["op_counts"]
    chunks = sum(r["calls"] * -(-r["queries"] // r["chunk"]) for r in rec["chunked"])
    assert ops["Softmax"] >= chunks  # one softmax per chunk


# --- weight-only ONNX --------------------------------------------------------------------------------------------
def _weights_graph(path, external=False, nan=False):
    """x (1, 4, 8, 8) -> Conv (32x4x3x3) -> flatten -> MatMul (2048 x 32) -> Gemm transB (16 x 32) -> y"""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    conv = rng.standard_normal((32, 4, 3, 3)).astype(np.float32)
    mm = rng.standard_normal((2048, 32)).astype(np.float32) / 32
    gemm = rng.standard_normal((16, 32)).astype(np.float32)
    if nan:
        mm[0, 0] = np.nan
    inits = [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(mm, "mm_w"),
             numpy_helper.from_array(gemm, "gemm_w"), numpy_helper.from_array(np.array([1, 2048], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "mm_w"], ["m"], name="mm"),
             helper.make_node("Gemm", ["m", "gemm_w"], ["y"], name="gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(path), save_as_external_data=external, location=f"{path.name}.data", size_threshold=1024)
    return path


def _run(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("bits,min_psnr", [(8, 35), (4, 15)])
@pytest.mark.parametrize("external", [False, True])
def test_weight_only_graphs_run_close_to_float_and_are_smaller(tmp_path, bits, min_psnr, external):
    from mobilediff.targets.onnx_weights import quantize_weights

    path = _weights_graph(tmp_path / "g.onnx", external)
    x = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    ref = _run(path, x)
    facts = quantize_weights(path, bits=bits, block_size=16, keep=["gemm"])
    got = _run(path, x)
    psnr = 10 * np.log10(np.abs(ref).max() ** 2 / np.mean((got - ref) ** 2))
    assert psnr >= min_psnr, psnr
    assert facts["weights_int8"] == (2 if bits == 8 else 1) and facts["weights_int4"] == (1 if bits == 4 else 0)
    assert facts["weight_bytes_after"] < facts["weight_bytes_before"] / 3 and facts["external_data"] == []
    assert not (tmp_path / "g.onnx.data").exists()  # the float weights' file is gone with them


@pytest.mark.parametrize("opset", [11, 18])
def test_embedding_tables_are_looked_up_as_int8_rows(tmp_path, opset):
    """A token table (Gather along axis 0) is stored int8 per row and dequantized after the lookup: the output
    matches the float lookup to int8 precision, and no node dequantizes the whole table."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from mobilediff.targets.onnx_weights import quantize_weights

    rng = np.random.default_rng(0)
    table = rng.standard_normal((1000, 64)).astype(np.float32) * rng.uniform(0.1, 3, (1000, 1)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed", axis=0),
             helper.make_node("Relu", ["e"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 64])],
                              [numpy_helper.from_array(table, "table")])
    path = tmp_path / "e.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7), str(path))
    ids = np.array([[0, 7, 999, 7, 3], [1, 2, 500, 0, 0]], np.int64)
    ref = np.maximum(table[ids], 0)
    facts = quantize_weights(path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    rows = np.abs(table[ids]).max(axis=-1, keepdims=True)
    assert np.all(np.abs(got - ref) <= rows / 127 / 2 + 1e-6)  # half an int8 step of each row's scale
    assert facts["tables_int8"] == 1 and facts["weights_int8"] == 0
    assert facts["weight_bytes_after"] < facts["weight_bytes_before"] / 3
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "DequantizeLinear" not in ops and ops.count("Gather") == 2


def test_weight_only_refuses_bad_weights_and_settings(tmp_path):
    from mobilediff.targets.onnx_weights import quantize_weights

    with pytest.raises(MobilediffError, match="'mm_w' has non-finite values"):
        quantize_weights(_weights_graph(tmp_path / "n.onnx", nan=True))
    with pytest.raises(MobilediffError, match="bits must be 4 or 8"):
        quantize_weights(_weights_graph(tmp_path / "b.onnx"), bits=3)
    with pytest.raises(MobilediffError, match="no weight of k.onnx to quantize"):
        quantize_weights(_weights_graph(tmp_path / "k.onnx"), keep=["conv", "mm", "gemm"])


# --- tiled decoding ------------------------------------------------------------------------------------------------
class _Upsample(torch.nn.Module):
    """A decoder without any spatial context: tiled it must equal the whole exactly."""

    def forward(self, z):
        return (torch.nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest"),)


@pytest.mark.parametrize("hw,tile,overlap", [((64, 64), 40, 8), ((64, 48), 32, 8), ((20, 36), 9, 4), ((8, 8), 8, 2)])
def test_tiles_cover_the_latent_and_blend_to_the_whole(hw, tile, overlap):
    dec = TiledDecoder(_Upsample(), hw, 8, tile, overlap)
    for starts, size in ((dec.rows, hw[0]), (dec.cols, hw[1])):
        t = min(tile, size)
        assert starts[0] == 0 and starts[-1] + t == size
        assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))  # every neighbour shares >= overlap
    z = torch.randn(1, 4, *hw)
    torch.testing.assert_close(dec(z)[0], _Upsample()(z)[0], atol=1e-6, rtol=1e-6)
    assert dec.compute_ratio >= 1.0


def test_bad_tilings_are_refused():
    for tile, overlap, msg in ((0, 0, "--decoder-tile must be >= 1"), (8, -1, "--decoder-overlap must be >= 0"),
                               (8, 4, "less than half")):
        with pytest.raises(MobilediffError, match=msg):
            check_tiling(tile, overlap)
    assert tile_starts(10, 16, 2) == [0]


def test_an_export_with_weight_only_int8_and_a_tiled_decoder_generates(tmp_path):
    """int8-weights + a tiled decoder on the tiny pipeline: each graph is checked against PyTorch by the exporter,
    the manifest says what was done, and the bundle generates a finite image one component at a time."""
    from mobilediff.engine import BundleRunner
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.tiny import tiny_pipeline

    out = run_export(tiny_pipeline(0), ExportConfig.of("onnx", tmp_path / "b", height=64, width=64,
                                                       quantize="int8-weights", decoder_tile=16, decoder_overlap=4,
                                                       ort_format=False))
    m = json.loads((out / "manifest.json").read_text())
    unet = m["components"]["unet"]["files"][0]
    assert unet["quantization"] == "int8-weights" and unet["export"]["quantization"]["weights_int8"] > 0
    tiling = m["components"]["vae_decoder"]["files"][0]["export"]["tiling"]
    assert tiling["tiles"] == [3, 3] and tiling["psnr_db_vs_whole"] > 10
    image = BundleRunner(out, "onnx", threads=1, resident=False).generate("a red circle", 0, steps=1)
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
