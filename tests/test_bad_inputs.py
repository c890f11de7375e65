"""Bad input to every command and every benchmark script, as a table: each case must end in exactly one
``error: ...`` line on stderr naming the file or option, exit code 2, no traceback, and leave every file and folder
of the case (and of the shared fixtures) exactly as it was: no output, no temporary sibling, user data unchanged.

Each row is (name, argv builder, setup, expected text of the error line). ``setup(c)`` prepares the case's folder
``c.t`` (copies of the tiny pipeline and of a synthetic bundle from ``c.w``, damaged as the case needs); ``argv(c)``
is the command line; the commands run in-process (``mobilediff.cli.main`` and the scripts' ``run_command(main)``),
a few also as real processes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
CAPTION = "a large red circle in the center on a white background"


# ------------------------------------------------------------------------------------------- shared fixtures
@dataclass
class World:
    pipe: Path  # a tiny pipeline folder (safetensors)
    bundle: Path  # a synthetic ONNX bundle: a valid manifest over a small valid graph per component


def _tiny_graph(path: Path) -> None:
    """A valid ONNX graph (int32 ids -> float32): what a truncated or corrupt copy is made from."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Cast", ["input_ids"], ["last_hidden_state"], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input_ids", TensorProto.INT32, [1, 4])],
                              [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, 4])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))


def make_bundle(path: Path) -> Path:
    """A bundle folder whose manifest reads cleanly (format 1, a ddim 1-step table, one ONNX file per component)."""
    from mobilediff import bundle as b
    from mobilediff.loading import DEFAULT_MODEL_DIR

    shutil.copytree(DEFAULT_MODEL_DIR / "tokenizer", path / "tokenizer")
    components = {}
    for name in ("text_encoder", "unet", "vae_decoder"):
        graph = path / name / "model.onnx"
        _tiny_graph(graph)
        io = b.TensorEntry(name="input_ids", shape=[1, 4], static_shape=[1, 4], dtype="int32")
        out = b.TensorEntry(name="last_hidden_state", shape=[1, 4], static_shape=[1, 4], dtype="float32")
        entry = b.FileEntry(target="onnx", precision="fp32", path=f"{name}/model.onnx", sha256=b.sha256_path(graph),
                            size_bytes=graph.stat().st_size)
        components[name] = b.ComponentEntry(inputs=(io,), outputs=(out,), dims={}, files=(entry,))
    table = b.SamplerEntry(name="ddim", steps=1, init_noise_sigma=1.0, timesteps=[999], input_scale=[1.0],
                           latent_coef=[[0.0]], output_coef=[[1.0]], noise_coef=[0.0])
    manifest = b.Manifest(
        format=b.FORMAT, format_version=b.FORMAT_VERSION, created="2000-01-01T00:00:00+00:00",
        source=b.Source(model="synthetic"), versions={},
        geometry=b.Geometry(height=32, width=32, vae_scale_factor=2, latent_channels=4, latent_height=16,
                            latent_width=16, scaling_factor=1.0),
        prediction_type="v_prediction",
        tokenizer=b.Tokenizer(files=("tokenizer/vocab.json", "tokenizer/merges.txt"), max_length=77, bos_id=49406,
                              eos_id=49407, pad_id=49407),
        components=components, samplers=(table,), guidance=b.Guidance(type="classifier_free", default_scale=1.0),
        model=b.ModelRole(role="teacher"), default_sampling=b.SamplingPlan(sampler="ddim", steps=1, guidance=1.0))
    b.write_manifest(path, manifest)
    b.read_manifest(path)
    return path


@pytest.fixture(scope="module")
def world(tiny_pipeline_dir, tmp_path_factory):
    return World(pipe=tiny_pipeline_dir, bundle=make_bundle(tmp_path_factory.mktemp("world") / "bundle"))


@dataclass
class Ctx:
    """One case: its folder ``t``, the shared fixtures ``w``, and the read-only mounts to undo."""

    t: Path
    w: World
    mounts: list = field(default_factory=list)

    def read_only(self, name: str = "ro") -> Path:
        """A read-only tmpfs at t/name (root ignores permission bits; a read-only file system stops it too)."""
        d = self.t / name
        d.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True, text=True)
        if p.returncode != 0:
            d.rmdir()
            pytest.skip(f"cannot mount a read-only tmpfs here ({p.stderr.strip() or 'mount failed'})")
        self.mounts.append(d)
        return d


# -------------------------------------------------------------------------------------------------- set-ups
def user_file(c: Ctx, name: str = "f", text: str = "user data") -> Path:
    (c.t / name).parent.mkdir(parents=True, exist_ok=True)
    (c.t / name).write_text(text)
    return c.t / name


def user_folder(c: Ctx, name: str = "d") -> Path:
    (c.t / name).mkdir()
    (c.t / name / "keep.txt").write_text("user data")
    return c.t / name


def pipe_copy(c: Ctx, name: str = "p") -> Path:
    return Path(shutil.copytree(c.w.pipe, c.t / name))


def tiny_dit(c: Ctx, flow: bool) -> Path:
    """A tiny PixArt pipeline folder at c.t / "dit" (a flow-matching one with ``flow``)."""
    from mobilediff.tiny import save_tiny_pipeline

    return save_tiny_pipeline(c.t / "dit", dit=True, flow=flow)


def pipe_pickle(suffix: str) -> Callable[[Ctx], None]:
    def setup(c):
        w = pipe_copy(c) / "unet" / "diffusion_pytorch_model.safetensors"
        w.rename(w.with_suffix(suffix))
    return setup


def pipe_truncated(c: Ctx) -> None:
    w = pipe_copy(c) / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def pipe_config_not_json(c: Ctx) -> None:
    (pipe_copy(c) / "unet" / "config.json").write_text("{not json")


def pipe_unsupported_class(c: Ctx) -> None:
    index = pipe_copy(c) / "model_index.json"
    d = json.loads(index.read_text())
    d["unet"] = ["diffusers", "UNet3DConditionModel"]
    index.write_text(json.dumps(d))


def bundle_copy(c: Ctx, name: str = "b") -> Path:
    return Path(shutil.copytree(c.w.bundle, c.t / name))


def bundle_missing_graph(c: Ctx) -> None:
    (bundle_copy(c) / "text_encoder" / "model.onnx").unlink()


def bundle_corrupt_graph(c: Ctx) -> None:
    f = bundle_copy(c) / "text_encoder" / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def bundle_truncated_graph(c: Ctx) -> None:
    """Truncated, with the manifest's sha256 and size updated: only opening the graph can find it."""
    b = bundle_copy(c)
    f = b / "text_encoder" / "model.onnx"
    f.write_bytes(f.read_bytes()[:20])
    m = json.loads((b / "manifest.json").read_text())
    m["components"]["text_encoder"]["files"][0].update(sha256=hashlib.sha256(f.read_bytes()).hexdigest(), size_bytes=20)
    (b / "manifest.json").write_text(json.dumps(m))


def bundle_io_mismatch(c: Ctx) -> None:
    """The manifest's unet takes ``sample`` where its graph (sha256 valid) declares ``input_ids``: what a manifest
    naming another component's graph looks like to a loader."""
    f = bundle_copy(c) / "manifest.json"
    m = json.loads(f.read_text())
    m["components"]["unet"]["inputs"][0]["name"] = "sample"
    f.write_text(json.dumps(m))


def bundle_newer(c: Ctx) -> None:
    f = bundle_copy(c) / "manifest.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "format_version": 99}))


def bundle_nan(where: str) -> Callable[[Ctx], None]:
    """A manifest with NaN in a sampler coefficient or in the default guidance (json.dumps writes NaN as is)."""
    def setup(c):
        f = bundle_copy(c) / "manifest.json"
        m = json.loads(f.read_text())
        if where == "table":
            m["samplers"][0]["output_coef"][0][0] = float("nan")
        else:
            m["guidance"]["default_scale"] = float("inf")
        f.write_text(json.dumps(m))
    return setup


def bundle_manifest_not_json(c: Ctx) -> None:
    f = bundle_copy(c) / "manifest.json"
    f.write_text(f.read_text()[:100])


def checkpoint(c: Ctx, folder: str, files: tuple[str, ...] = (), state: str = '{"step": 2,', complete: bool = True) -> Path:
    """A checkpoint folder: ``files`` (empty stand-ins), a state.json (by default corrupt), the COMPLETE marker."""
    d = c.t / folder
    d.mkdir(parents=True)
    for f in files:
        (d / f).write_bytes(b"")
    (d / "state.json").write_text(state)
    if complete:
        (d / "COMPLETE").write_text("ok\n")
    return d


def foreign_student(c: Ctx, names: tuple[str, ...] = ("student",)) -> Path:
    """A complete distillation checkpoint (step 3) whose student is of another architecture (a 2-channel conv_in)."""
    import torch
    from safetensors.torch import save_file

    d = checkpoint(c, "ck", state='{"step": 3}')
    for name in names:
        save_file({"conv_in.weight": torch.zeros(2, 4, 3, 3)}, str(d / f"{name}.safetensors"))
    return d


def decoder_folder(c: Ctx, name: str = "dec", record: bool = True, **latent) -> Path:
    """A decoder folder (``distill-decoder``'s layout, seeded random weights) for the tiny pipeline's latents, its
    record's latent space changed by ``latent``; ``record=False``: no decoder.json."""
    from mobilediff.decoder import KIND, RECORD, build_tiny

    d = c.t / name
    build_tiny(4, 8, (1, 1), seed=0).save_pretrained(str(d), safe_serialization=True)
    scaling = json.loads((c.w.pipe / "vae" / "config.json").read_text())["scaling_factor"]
    space = {"latent_channels": 4, "vae_scale_factor": 2, "scaling_factor": scaling, "shift_factor": 0.0, **latent}
    if record:
        (d / RECORD).write_text(json.dumps({"kind": KIND, "latent": space}))
    return d


def decoder_damaged(how: str) -> Callable[[Ctx], None]:
    def setup(c):
        d = decoder_folder(c)
        w = d / "diffusion_pytorch_model.safetensors"
        if how == "pickle":
            w.rename(w.with_suffix(".bin"))
        elif how == "truncated":
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        else:
            (d / "decoder.json").write_text("{not json")
    return setup


def pipe_with_tiny_decoder(c: Ctx) -> Path:
    """A copy of the tiny pipeline whose VAE is a tiny decoder (what ``distill-decoder`` writes to OUT/model)."""
    from mobilediff.loading import pack_pipeline

    pack_pipeline(c.w.pipe, None, c.t / "p", decoder=decoder_folder(c))
    return c.t / "p"


def images(c: Ctx, rows: list[str], write_png: bool = True) -> Path:
    """A folder for evaluate --images: metadata.jsonl with ``rows`` (raw lines) and a 64x64 PNG a.png."""
    from PIL import Image

    d = c.t / "imgs"
    d.mkdir()
    (d / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    if write_png:
        Image.new("RGB", (64, 64), "white").save(d / "a.png")
    return d


def good_row(name: str = "a.png", text: str = CAPTION) -> str:
    return json.dumps({"file_name": name, "text": text})


STUDY_ROW = {"model": "xs", "pipeline": "xs", "unet_params": 1000, "gflops_per_image": 1.0, "sampler": "ddim",
             "method": "teacher", "steps": 4, "guidance": 1.0, "runtime": "eager", "precision": "fp32",
             "latency_ms": 50.0, "prompt_accuracy": 0.9, "attribute_accuracy": {"shape": 0.9}, "fd": 30.0, "nfe": 4,
             "unet_rows": 1, "cfg": False, "n": 256}


# one row of a configurations store (mobilediff.configurations; docs/configurations.md)
STORE_ROW = json.dumps({"schema_version": 1, "model": "xs", "method": "teacher", "sampler": "ddim", "steps": 4,
                        "guidance": 1.0, "unet_rows": 1, "runtime": "eager", "precision": "fp32", "decoder": "full",
                        "machine": "a CPU", "machine_id": "host-00000000",
                        "source": {"file": "s.json", "command": None}, "bundle": None, "base_model": "xs",
                        "unet_params": 1000, "model_sha256": None, "decoder_model": None, "fused": False,
                        "threads": 1, "latency_ms": 50.0, "latency_kind": "composed", "latency_parts": None,
                        "prompt_accuracy": 0.9, "fd": 30.0, "n": 256, "quality_kind": "pytorch",
                        "quality_source": None, "prompts": None, "fd_features": None, "gflops_per_image": 1.0,
                        "created": None, "export": None})


def study(c: Ctx, text: str | None = None) -> Path:
    """A scaling study table for recommend at t/s.json (benchmarks/scaling.py's rows), or ``text`` in its place."""
    return user_file(c, "s.json", json.dumps([STUDY_ROW]) if text is None else text)


def student_copy(c: Ctx, teacher: str = "elsewhere") -> Path:
    """A copy of the tiny pipeline at t/s with the distillation.json of a progressive student of ``teacher``."""
    d = pipe_copy(c, "s")
    (d / "distillation.json").write_text(json.dumps({"method": "progressive", "teacher": teacher,
                                                     "sampling": {"sampler": "ddim", "steps": 1, "guidance": 1.0}}))
    return d


def image_file(name: str, shape: tuple = (32, 32, 3), value=0, *also) -> Callable[[Ctx], None]:
    """A pipeline copy "p" and a PNG ``name`` of ``shape`` filled with ``value`` in the case folder (``also``: more
    set-ups)."""
    def setup(c):
        import numpy as np
        from PIL import Image

        pipe_copy(c)
        Image.fromarray(np.full(shape, value, np.uint8)).save(c.t / name)
        for s in also:
            s(c)
    return setup


def fixtures(c: Ctx, index: str | None) -> None:
    d = c.t / "fx"
    d.mkdir()
    if index is not None:
        (d / "index.json").write_text(index)


# ------------------------------------------------------------------------------------------------- the table
@dataclass
class Case:
    name: str
    argv: Callable[[Ctx], list]  # command line; the first item is "mobilediff" or a benchmarks/<script>.py name
    setup: Callable[[Ctx], object] | None = None
    expect: str = ""  # text the error line contains ({t}: the case folder)
    xfail: str | None = None


def gen(*extra):
    return lambda c: ["mobilediff", "generate", "--prompt", "a red circle", "--steps", "1", *[a(c) if callable(a) else a for a in extra]]


def P(rel: str) -> Callable[[Ctx], str]:
    """A path inside the case folder, for argv rows."""
    return lambda c: str(c.t / rel)


def dd(*extra):
    """distill-decoder on the shared tiny pipeline."""
    return lambda c: ["mobilediff", "distill-decoder", "--model", str(c.w.pipe),
                      *[a(c) if callable(a) else a for a in extra]]


def with_decoder(command: str, *extra):
    """pack / export of the shared tiny pipeline with the case's decoder folder "dec"."""
    tail = ["--base", lambda c: str(c.w.pipe), "--out", P("o")] if command == "pack" else ["--target", "onnx", "--out", P("o")]
    return lambda c: ["mobilediff", command, "--model", str(c.w.pipe), "--decoder", str(c.t / "dec"),
                      *[a(c) if callable(a) else a for a in [*tail, *extra]]]


def rec(*extra):
    """mobilediff recommend over the case's study table t/s.json."""
    return lambda c: ["mobilediff", "recommend", "--table", str(c.t / "s.json"),
                      *[a(c) if callable(a) else a for a in extra]]


def scaling(*extra):
    """benchmarks/scaling.py on the tiny pipeline, results into t/r."""
    return lambda c: ["scaling", "--model", str(c.w.pipe), "--out", str(c.t / "r"),
                      *[a(c) if callable(a) else a for a in extra]]


GEN_MODEL = gen("--model", P("p"), "--out", P("x.png"))  # generate from the case's pipeline copy "p"
GEN_BUNDLE = gen("--bundle", P("b"), "--out", P("x.png"))  # generate from the case's bundle copy "b"


IMG = ("--init-image", P("i.png"))


CASES = [
    # generate from an image -------------------------------------------------------------------------------------
    Case("generate-strength-zero", gen("--model", P("p"), *IMG, "--strength", "0", "--out", P("x.png")),
         image_file("i.png"), "--strength must be in (0, 1], got 0"),
    Case("generate-strength-above-one", gen("--model", P("p"), *IMG, "--strength", "1.5", "--out", P("x.png")),
         image_file("i.png"), "--strength must be in (0, 1], got 1.5"),
    Case("generate-strength-nan", gen("--model", P("p"), *IMG, "--strength", "nan", "--out", P("x.png")),
         image_file("i.png"), "'--strength': nan is not a finite number"),
    Case("generate-strength-leaves-no-step", gen("--model", P("p"), *IMG, "--strength", "0.5", "--out", P("x.png")),
         image_file("i.png"), "--strength 0.5 denoises no step of 1"),
    Case("generate-strength-without-image", gen("--model", P("p"), "--strength", "0.5", "--out", P("x.png")),
         pipe_copy, "--strength needs --init-image"),
    Case("generate-mask-without-image", gen("--model", P("p"), "--mask", P("m.png"), "--out", P("x.png")),
         image_file("m.png", (32, 32), 255), "--mask needs --init-image"),
    Case("generate-init-image-missing", gen("--model", P("p"), *IMG, "--steps", "8", "--out", P("x.png")), pipe_copy,
         "--init-image {t}/i.png: no such file"),
    Case("generate-init-image-not-an-image", gen("--model", P("p"), *IMG, "--steps", "8", "--out", P("x.png")),
         lambda c: (pipe_copy(c), user_file(c, "i.png")), "--init-image {t}/i.png is not an image file"),
    Case("generate-init-image-wrong-size", gen("--model", P("p"), *IMG, "--steps", "8", "--out", P("x.png")),
         image_file("i.png", (20, 32, 3)), "is 32x20 pixels, the model generates 32x32"),
    Case("generate-init-image-transparent", gen("--model", P("p"), *IMG, "--steps", "8", "--out", P("x.png")),
         image_file("i.png", (32, 32, 4)), "has transparent pixels"),
    Case("generate-mask-in-colour", gen("--model", P("p"), *IMG, "--mask", P("m.png"), "--steps", "8", "--out",
                                        P("x.png")),
         image_file("i.png", (32, 32, 3), 0, lambda c: __import__("PIL.Image").Image.new(
             "RGB", (32, 32), (255, 0, 0)).save(c.t / "m.png")), "is in colour"),
    Case("generate-mask-marks-nothing", gen("--model", P("p"), *IMG, "--mask", P("m.png"), "--steps", "8", "--out",
                                            P("x.png")),
         image_file("i.png", (32, 32, 3), 0, lambda c: __import__("PIL.Image").Image.new(
             "L", (32, 32), 100).save(c.t / "m.png")), "marks nothing to repaint"),
    Case("generate-init-image-bundle-without-image-modes", gen("--bundle", P("b"), *IMG, "--out", P("x.png")),
         lambda c: (bundle_copy(c), image_file("i.png")(c)), "exported without image modes"),
    # generate -------------------------------------------------------------------------------------------------
    Case("generate-out-under-a-file", gen("--model", P("p"), "--out", P("f/x.png")),
         lambda c: (pipe_copy(c), user_file(c)), "{t}/f is a file"),
    Case("generate-out-is-a-folder", GEN_MODEL,
         lambda c: (pipe_copy(c), user_folder(c, "x.png")), "{t}/x.png is a folder"),
    Case("generate-out-not-png", gen("--out", P("x.jpg")), None, "--out must be a .png file"),
    Case("generate-out-read-only", gen("--model", P("p"), "--out", P("ro/x.png")),
         lambda c: (pipe_copy(c), c.read_only()), "{t}/ro is not writable"),
    Case("generate-guidance-nan", gen("--model", P("p"), "--guidance", "nan", "--out", P("x.png")), pipe_copy,
         "'--guidance': nan is not a finite number"),
    Case("generate-guidance-inf-bundle", gen("--bundle", P("b"), "--guidance", "inf", "--out", P("x.png")), bundle_copy,
         "'--guidance': inf is not a finite number"),
    Case("generate-guidance-nan-bundle", gen("--bundle", P("b"), "--guidance", "nan", "--out", P("x.png")), bundle_copy,
         "'--guidance': nan is not a finite number"),
    Case("generate-guidance-negative", gen("--model", P("p"), "--guidance", "-1", "--out", P("x.png")), pipe_copy,
         "'--guidance'"),
    # a prompt as a shell passes undecodable bytes: Python holds byte 0xff as the surrogate escape '\udcff'
    Case("generate-prompt-invalid-utf8", gen("--model", P("p"), "--prompt", "abc\udcff", "--out", P("x.png")),
         pipe_copy, "--prompt 2 is not valid UTF-8 (byte 0xff at 3)"),
    Case("generate-prompt-truncated-utf8-bundle", gen("--bundle", P("b"), "--prompt", "caf\udcc3", "--out",
                                                      P("x.png")), bundle_copy, "--prompt 2 is not valid UTF-8 (byte 0xc3 at 3)"),
    Case("generate-prompt-control-character", gen("--model", P("p"), "--prompt", "red\x1b[0m", "--out", P("x.png")),
         pipe_copy, "--prompt 2 has a control character (U+001B at character 3): only tab, newline and carriage "
                    "return are allowed"),
    Case("generate-prompt-nul-bundle", gen("--bundle", P("b"), "--prompt", "a\x00b", "--out", P("x.png")), bundle_copy,
         "--prompt 2 has a control character (U+0000 at character 1)"),
    Case("generate-steps-zero", gen("--steps", "0", "--out", P("x.png")), None, "'--steps'"),
    Case("generate-seed-negative", gen("--seed", "-1", "--out", P("x.png")), None, "'--seed'"),
    Case("generate-seed-too-large", gen("--seed", str(2**64), "--out", P("x.png")), None, "'--seed'"),
    Case("generate-missing-model", gen("--model", P("nope"), "--out", P("x.png")), None, "{t}/nope"),
    Case("generate-pickle-bin-model", GEN_MODEL, pipe_pickle(".bin"),
         "diffusion_pytorch_model.bin"),
    Case("generate-pickle-ckpt-model", GEN_MODEL, pipe_pickle(".ckpt"),
         "diffusion_pytorch_model.ckpt"),
    Case("generate-truncated-safetensors", GEN_MODEL, pipe_truncated,
         "{t}/p/unet/diffusion_pytorch_model.safetensors"),
    Case("generate-config-not-json", GEN_MODEL, pipe_config_not_json,
         "{t}/p/unet/config.json"),
    Case("generate-unsupported-class", GEN_MODEL, pipe_unsupported_class,
         "UNet3DConditionModel"),
    Case("generate-bundle-missing-graph", GEN_BUNDLE, bundle_missing_graph,
         "{t}/b/text_encoder/model.onnx"),
    Case("generate-bundle-corrupt-graph", GEN_BUNDLE, bundle_corrupt_graph,
         "{t}/b/text_encoder/model.onnx does not match its sha256"),
    Case("generate-bundle-truncated-graph", GEN_BUNDLE, bundle_truncated_graph,
         "cannot load ONNX graph {t}/b/text_encoder/model.onnx"),
    Case("generate-bundle-graph-io-not-the-manifests", GEN_BUNDLE, bundle_io_mismatch,
         "{t}/b/unet/model.onnx declares inputs (input_ids) but the manifest's unet takes (sample): a graph of another "
         "component?"),
    Case("generate-bundle-newer-format", GEN_BUNDLE, bundle_newer,
         "{t}/b/manifest.json has format version 99"),
    Case("generate-bundle-manifest-not-json", GEN_BUNDLE, bundle_manifest_not_json,
         "corrupt {t}/b/manifest.json"),
    Case("generate-bundle-nan-in-sampler-table", GEN_BUNDLE, bundle_nan("table"),
         "{t}/b/manifest.json: samplers[ddim:1].output_coef holds a number that is not finite"),
    Case("goldens-bundle-inf-guidance", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                                   str(c.t / "g")], bundle_nan("guidance"),
         "{t}/b/manifest.json: guidance: default_scale must be a finite number >= 0, got inf"),
    Case("generate-bundle-no-table", gen("--bundle", P("b"), "--steps", "3", "--out", P("x.png")), bundle_copy,
         "no ddim table for 3 steps"),
    # export ---------------------------------------------------------------------------------------------------
    Case("export-out-is-a-file", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                            "--out", str(c.t / "f")],
         lambda c: (pipe_copy(c), user_file(c)), "{t}/f is a file"),
    Case("export-out-under-a-file", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                               "--out", str(c.t / "f" / "b")],
         lambda c: (pipe_copy(c), user_file(c)), "{t}/f is a file"),
    Case("export-out-read-only", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                            "--out", str(c.t / "ro" / "b")],
         lambda c: (pipe_copy(c), c.read_only()), "{t}/ro is not writable"),
    Case("export-out-exists", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                         "--out", str(c.t / "d")],
         lambda c: (pipe_copy(c), user_folder(c)), "{t}/d already exists"),
    Case("export-pickle-model", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                           "--out", str(c.t / "b")], pipe_pickle(".pt"), "diffusion_pytorch_model.pt"),
    Case("export-truncated-safetensors", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target",
                                                    "onnx", "--out", str(c.t / "b")], pipe_truncated,
         "{t}/p/unet/diffusion_pytorch_model.safetensors"),
    Case("export-unsupported-class", lambda c: ["mobilediff", "export", "--model", str(c.t / "p"), "--target", "onnx",
                                                "--out", str(c.t / "b")], pipe_unsupported_class,
         "UNet3DConditionModel"),
    Case("export-fused-steps-out-of-range", lambda c: ["mobilediff", "export", "--target", "onnx", "--fused-steps",
                                                       "99", "--out", str(c.t / "b")], None, "'--fused-steps'"),
    Case("export-guidance-nan", lambda c: ["mobilediff", "export", "--target", "onnx", "--guidance", "nan",
                                           "--out", str(c.t / "b")], None, "'--guidance': nan is not a finite number"),
    Case("export-unknown-target", lambda c: ["mobilediff", "export", "--target", "tflite", "--out", str(c.t / "b")],
         None, "tflite"),
    Case("export-unknown-recipe", lambda c: ["mobilediff", "export", "--target", "onnx", "--quantize", "int3",
                                             "--out", str(c.t / "b")], None, "int3"),
    Case("export-attention-budget-negative", lambda c: ["mobilediff", "export", "--target", "onnx",
                                                       "--attention-budget", "-1", "--out", str(c.t / "b")], None,
         "'--attention-budget'"),
    Case("export-attention-budget-inf", lambda c: ["mobilediff", "export", "--target", "onnx", "--attention-budget",
                                                  "inf", "--out", str(c.t / "b")], None, "not a finite number"),
    Case("export-decoder-tile-zero", lambda c: ["mobilediff", "export", "--target", "onnx", "--decoder-tile", "0",
                                               "--out", str(c.t / "b")], None, "'--decoder-tile'"),
    Case("export-decoder-overlap-too-large", lambda c: ["mobilediff", "export", "--target", "onnx", "--decoder-tile",
                                                       "8", "--decoder-overlap", "4", "--out", str(c.t / "b")], None,
         "--decoder-overlap (4) must be less than half of --decoder-tile (8)"),
    # goldens --------------------------------------------------------------------------------------------------
    Case("goldens-bundle-newer-format", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                                   str(c.t / "g")], bundle_newer, "format version 99"),
    Case("goldens-bundle-missing-graph", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                                    str(c.t / "g")], bundle_missing_graph,
         "{t}/b/text_encoder/model.onnx"),
    Case("goldens-bundle-truncated-graph", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                                      str(c.t / "g")], bundle_truncated_graph,
         "cannot load ONNX graph {t}/b/text_encoder/model.onnx"),
    Case("goldens-bundle-graph-io-not-the-manifests", lambda c: ["mobilediff", "goldens", "--bundle",
                                                                 str(c.t / "b"), "--out", str(c.t / "g")],
         bundle_io_mismatch,
         "{t}/b/unet/model.onnx declares inputs (input_ids) but the manifest's unet takes (sample)"),
    Case("goldens-out-is-a-file", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                             str(c.t / "f")], lambda c: (bundle_copy(c), user_file(c)), "{t}/f is a file"),
    Case("goldens-out-exists", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                          str(c.t / "d")], lambda c: (bundle_copy(c), user_folder(c)), "{t}/d already exists"),
    Case("goldens-out-read-only", lambda c: ["mobilediff", "goldens", "--bundle", str(c.t / "b"), "--out",
                                             str(c.t / "ro" / "g")], lambda c: (bundle_copy(c), c.read_only()),
         "{t}/ro is not writable"),
    # evaluate -------------------------------------------------------------------------------------------------
    Case("evaluate-metadata-not-json", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, [good_row(), '{"file_name": "a.png", "text": "x"']), "{t}/imgs/metadata.jsonl line 2"),
    Case("evaluate-row-without-file-name", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, [json.dumps({"text": CAPTION})]), "line 1: 'file_name' missing"),
    Case("evaluate-row-not-an-object", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, ["[1, 2]"]), "line 1: expected an object"),
    Case("evaluate-metadata-empty", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, [""]), "lists no images"),
    Case("evaluate-missing-image", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, [good_row(), good_row("b.png")]), "cannot read image {t}/imgs/b.png"),
    Case("evaluate-image-not-an-image", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: (images(c, [good_row("m.jsonl")]), (c.t / "imgs" / "m.jsonl").write_text("{}")),
         "cannot read image {t}/imgs/m.jsonl"),
    Case("evaluate-long-caption-outside-domain", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs")],
         lambda c: images(c, [good_row(text="zebra " * 2000)]), "not a shapes-domain caption"),
    Case("evaluate-images-not-a-folder", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "f")],
         user_file, "{t}/f: not a folder"),
    Case("evaluate-no-metadata", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "d")],
         user_folder, "{t}/d/metadata.jsonl not found"),
    Case("evaluate-out-is-a-folder", lambda c: ["mobilediff", "evaluate", "--model", str(c.t / "p"), "--n", "2",
                                                "--steps", "1", "--out", str(c.t / "d")],
         lambda c: (pipe_copy(c), user_folder(c)), "{t}/d is a folder"),
    Case("evaluate-out-read-only", lambda c: ["mobilediff", "evaluate", "--images", str(c.t / "imgs"),
                                              "--out", str(c.t / "ro" / "r.json")],
         lambda c: (images(c, [good_row()]), c.read_only()), "{t}/ro is not writable"),
    Case("evaluate-guidance-nan", lambda c: ["mobilediff", "evaluate", "--model", str(c.t / "p"), "--guidance", "nan"],
         pipe_copy, "'--guidance': nan is not a finite number"),
    Case("evaluate-pickle-model", lambda c: ["mobilediff", "evaluate", "--model", str(c.t / "p"), "--n", "2"],
         pipe_pickle(".bin"), "diffusion_pytorch_model.bin"),
    # train-base -----------------------------------------------------------------------------------------------
    Case("train-base-resume-missing", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                 "--resume", str(c.t / "run" / "checkpoints" / "checkpoint-0000001")],
         None, "checkpoint folder not found: {t}/run/checkpoints/checkpoint-0000001"),
    Case("train-base-resume-incomplete", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                    "--resume", str(c.t / "ck")],
         lambda c: checkpoint(c, "ck", ("vae.safetensors",), '{"step": 1}', complete=False), "{t}/ck is incomplete"),
    Case("train-base-resume-latest-corrupt-state", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                              str(c.t / "run"), "--resume", "latest"],
         lambda c: checkpoint(c, "run/vae_run/checkpoints/checkpoint-0000002", ("vae.safetensors",)),
         "corrupt checkpoint state {t}/run/vae_run/checkpoints/checkpoint-0000002/state.json"),
    Case("train-base-resume-corrupt-state", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                       "--resume", str(c.t / "ck" / "checkpoint-0000002")],
         lambda c: checkpoint(c, "ck/checkpoint-0000002", ("vae.safetensors",), state="[]"),
         "{t}/ck/checkpoint-0000002/state.json"),
    Case("train-base-resume-foreign-checkpoint", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                            str(c.t / "run"), "--resume", str(c.t / "ck")],
         lambda c: checkpoint(c, "ck", ("student.safetensors",), '{"step": 3}'), "{t}/ck is not a train-base checkpoint"),
    Case("train-base-resume-latest-foreign-folder", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                               str(c.t / "d"), "--resume", "latest"],
         user_folder, "{t}/d is not a train-base run folder"),
    Case("train-base-out-exists", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "d")],
         user_folder, "{t}/d already exists"),
    Case("train-base-out-is-a-file", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "f"),
                                                "--resume", "latest"], user_file, "{t}/f is a file"),
    Case("train-base-out-read-only", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "ro" / "run")],
         lambda c: c.read_only(), "{t}/ro is not writable"),
    Case("train-base-lr-nan", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"), "--lr", "nan"],
         None, "'--lr': nan is not a finite number"),
    Case("train-base-lr-zero", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"), "--lr", "0"],
         None, "'--lr'"),
    Case("train-base-bias-range-empty", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                   "--timestep-bias-range", "5", "5"], None, "--timestep-bias-range 5 5"),
    Case("train-base-vae-from-not-a-pipeline", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                          str(c.t / "run"), "--vae-from", str(c.t / "d")],
         user_folder, "--vae-from {t}/d"),
    Case("train-base-vae-from-a-tiny-decoder", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                          str(c.t / "run"), "--vae-from", str(c.t / "p")],
         pipe_with_tiny_decoder, "--vae-from {t}/p: its VAE is an AutoencoderTiny, not an AutoencoderKL"),
    Case("train-base-text-encoder-from-nowhere", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                            str(c.t / "run"), "--text-encoder-from", "default:nothing"],
         None, "--text-encoder-from default:nothing: no such folder or named model"),
    Case("train-base-init-from-not-a-pipeline", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                           str(c.t / "run"), "--init-from", str(c.t / "d")],
         user_folder, "--init-from {t}/d"),
    # options that contradict each other, or one that does nothing without another: refused before any work
    Case("train-base-resume-latest-with-force", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                           "--resume", "latest", "--force"], None,
         "--resume latest and --force conflict"),
    Case("train-base-vae-from-with-vae-steps", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                          "--vae-from", str(c.t), "--vae-steps", "5"], None,
         "--vae-from and --vae-steps conflict: the VAE is taken, not trained"),
    Case("train-base-flow-without-dit", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                   "--objective", "flow"], None,
         "--objective flow needs --backbone dit"),
    Case("train-base-flow-shift-nan", lambda c: ["mobilediff", "train-base", "--tiny", "--out", str(c.t / "run"),
                                                 "--backbone", "dit", "--objective", "flow", "--flow-shift", "nan"],
         None, "--flow-shift"),
    Case("train-base-flow-shift-without-flow", lambda c: ["mobilediff", "train-base", "--tiny", "--out",
                                                          str(c.t / "run"), "--backbone", "dit", "--flow-shift", "3"],
         None, "--flow-shift needs --objective flow"),
    Case("distill-dit-teacher-without-flow", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "dit"),
                                                        "--method", "progressive", "--steps", "2", "--out",
                                                        str(c.t / "run")], lambda c: tiny_dit(c, flow=False),
         "without a flow-matching scheduler"),
    Case("distill-flow-remove-missing-block", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "dit"),
                                                         "--method", "slim", "--steps", "2", "--remove", "block-9",
                                                         "--out", str(c.t / "run")], lambda c: tiny_dit(c, flow=True),
         "--remove: the teacher's transformer has blocks 0..1, got 'block-9'"),
    Case("distill-flow-lora", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "dit"), "--method",
                                         "lcm-lora", "--steps", "2", "--out", str(c.t / "run")],
         lambda c: tiny_dit(c, flow=True), "this command needs a UNet pipeline"),
    Case("distill-unet-remove-transformer-block", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                             "--method", "slim", "--steps", "2", "--remove", "block-1",
                                                             "--out", str(c.t / "run")], pipe_copy,
         "block-K names a diffusion transformer's blocks"),
    Case("distill-resume-latest-with-force", lambda c: ["mobilediff", "distill", "--teacher", "default", "--method", "lcm",
                                                        "--steps", "4", "--out", str(c.t / "run"), "--resume", "latest",
                                                        "--force"], None, "--resume latest and --force conflict"),
    Case("generate-bundle-and-model", gen("--bundle", P("b"), "--model", "default:lcm", "--out", P("x.png")), None,
         "--bundle and --model conflict: a bundle holds its own model"),
    Case("generate-runtime-without-bundle", gen("--runtime", "executorch", "--out", P("x.png")), None,
         "--runtime needs --bundle"),
    Case("export-fused-sampler-without-fused-steps", lambda c: ["mobilediff", "export", "--target", "onnx", "--out",
                                                                str(c.t / "b"), "--fused-sampler", "lcm"], None,
         "--fused-sampler needs --fused-steps"),
    # train-evaluator ------------------------------------------------------------------------------------------
    Case("train-evaluator-out-is-a-file", lambda c: ["mobilediff", "train-evaluator", "--out", str(c.t / "f")],
         user_file, "{t}/f is a file"),
    Case("train-evaluator-out-exists", lambda c: ["mobilediff", "train-evaluator", "--out", str(c.t / "d")],
         user_folder, "{t}/d already exists"),
    Case("train-evaluator-out-read-only", lambda c: ["mobilediff", "train-evaluator", "--out", str(c.t / "ro" / "e")],
         lambda c: c.read_only(), "{t}/ro is not writable"),
    Case("train-evaluator-steps-zero", lambda c: ["mobilediff", "train-evaluator", "--steps", "0", "--out",
                                                  str(c.t / "e")], None, "'--steps'"),
    Case("train-evaluator-resume-latest", lambda c: ["mobilediff", "train-evaluator", "--out", str(c.t / "e"),
                                                     "--resume", "latest"], None,
         "there is no unfinished run in it to continue"),
    Case("train-evaluator-resume-foreign-checkpoint", lambda c: ["mobilediff", "train-evaluator", "--out",
                                                                 str(c.t / "e"), "--resume", str(c.t / "ck")],
         lambda c: checkpoint(c, "ck", ("student.safetensors",), '{"step": 3}'),
         "{t}/ck is not a train-evaluator checkpoint"),
    Case("train-evaluator-resume-another-architecture", lambda c: ["mobilediff", "train-evaluator", "--out",
                                                                   str(c.t / "e"), "--resume", str(c.t / "ck")],
         lambda c: foreign_student(c, ("evaluator",)), "checkpoint {t}/ck does not fit this run (evaluator: "),
    # train-features -------------------------------------------------------------------------------------------
    Case("train-features-no-label-column", lambda c: ["mobilediff", "train-features", "--images", str(c.t / "imgs"),
                                                      "--label", "category", "--out", str(c.t / "o")],
         lambda c: images(c, [good_row()]), "has a 'category' field to train on"),
    Case("train-features-sidecar-folder", lambda c: ["mobilediff", "train-features", "--images", str(c.t / "d"),
                                                     "--label", "category", "--out", str(c.t / "o")],
         user_folder, "--label needs an imagefolder with metadata.jsonl"),
    Case("train-features-out-exists", lambda c: ["mobilediff", "train-features", "--images", str(c.t / "imgs"),
                                                 "--label", "category", "--out", str(c.t / "d")],
         lambda c: (images(c, [good_row()]), user_folder(c)), "{t}/d already exists"),
    Case("train-features-lr-nan", lambda c: ["mobilediff", "train-features", "--images", str(c.t / "imgs"), "--label",
                                             "category", "--lr", "nan", "--out", str(c.t / "o")], None,
         "'--lr': nan is not a finite number"),
    # distill --------------------------------------------------------------------------------------------------
    Case("distill-resume-latest-corrupt-state", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                           "--method", "lcm", "--steps", "2", "--out", str(c.t / "run"),
                                                           "--resume", "latest"],
         lambda c: (pipe_copy(c), checkpoint(c, "run/checkpoints/checkpoint-0000002", ("student.safetensors",))),
         "corrupt checkpoint state {t}/run/checkpoints/checkpoint-0000002/state.json"),
    Case("distill-resume-missing", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"), "--method", "lcm",
                                              "--steps", "2", "--out", str(c.t / "run"), "--resume", str(c.t / "ck")],
         pipe_copy, "checkpoint folder not found: {t}/ck"),
    Case("distill-resume-foreign-checkpoint", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                         "--method", "lcm", "--steps", "2", "--out", str(c.t / "run"),
                                                         "--resume", str(c.t / "ck")],
         lambda c: (pipe_copy(c), checkpoint(c, "ck", ("vae.safetensors",), '{"step": 3}')),
         "{t}/ck is not a distillation checkpoint"),
    Case("distill-resume-another-architecture", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                           "--method", "progressive", "--steps", "2", "--out",
                                                           str(c.t / "run"), "--resume", str(c.t / "ck")],
         lambda c: (pipe_copy(c), foreign_student(c)),
         "checkpoint {t}/ck does not fit this run (student: weight conv_in.weight is [2, 4, 3, 3], this run's is "
         "[16, 4, 3, 3];"),
    Case("distill-lcm-resume-another-architecture", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                               "--method", "lcm", "--steps", "2", "--out",
                                                               str(c.t / "run"), "--resume", str(c.t / "ck")],
         lambda c: (pipe_copy(c), foreign_student(c, ("student", "target"))),
         "a checkpoint of another architecture"),
    Case("distill-resume-latest-foreign-folder", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                            "--method", "lcm", "--steps", "2", "--out", str(c.t / "d"),
                                                            "--resume", "latest"],
         lambda c: (pipe_copy(c), user_folder(c)), "{t}/d is not a distillation run folder"),
    Case("distill-teacher-pickle", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"), "--method", "lcm",
                                              "--steps", "2", "--out", str(c.t / "run")], pipe_pickle(".bin"),
         "diffusion_pytorch_model.bin"),
    Case("distill-teacher-truncated-safetensors", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                             "--method", "lcm", "--steps", "2", "--out",
                                                             str(c.t / "run")], pipe_truncated,
         "{t}/p/unet/diffusion_pytorch_model.safetensors"),
    Case("distill-teacher-holds-a-tiny-decoder", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"),
                                                            "--method", "lcm", "--steps", "2", "--out",
                                                            str(c.t / "run")], pipe_with_tiny_decoder,
         "the teacher {t}/p holds a tiny decoder (mobilediff distill-decoder), whose encoder is empty"),
    Case("distill-guidance-nan", lambda c: ["mobilediff", "distill", "--method", "lcm", "--steps", "2", "--out",
                                            str(c.t / "run"), "--guidance", "nan"], None,
         "'--guidance': nan is not a finite number"),
    Case("distill-guidance-range-inf", lambda c: ["mobilediff", "distill", "--method", "lcm", "--steps", "2", "--out",
                                                  str(c.t / "run"), "--guidance-range", "1", "inf"], None,
         "'--guidance-range'"),
    Case("distill-batch-size-zero", lambda c: ["mobilediff", "distill", "--method", "lcm", "--steps", "2", "--out",
                                               str(c.t / "run"), "--batch-size", "0"], None, "'--batch-size'"),
    Case("distill-steps-zero", lambda c: ["mobilediff", "distill", "--method", "lcm", "--steps", "0", "--out",
                                          str(c.t / "run")], None, "samples at 1..50 steps (its solver grid), got --steps 0"),
    Case("distill-out-is-a-file", lambda c: ["mobilediff", "distill", "--method", "lcm", "--steps", "2", "--out",
                                             str(c.t / "f")], user_file, "{t}/f is a file"),
    Case("distill-out-read-only", lambda c: ["mobilediff", "distill", "--teacher", str(c.t / "p"), "--method", "lcm",
                                             "--steps", "2", "--out", str(c.t / "ro" / "run")],
         lambda c: (pipe_copy(c), c.read_only()), "{t}/ro is not writable"),
    # distill-decoder ------------------------------------------------------------------------------------------
    Case("distill-decoder-out-exists", dd("--out", P("d")), user_folder, "{t}/d already exists"),
    Case("distill-decoder-out-is-a-file", dd("--out", P("f")), user_file, "{t}/f is a file"),
    Case("distill-decoder-width-zero", dd("--width", "0", "--out", P("run")), None, "'--width'"),
    Case("distill-decoder-lr-nan", dd("--lr", "nan", "--out", P("run")), None, "'--lr': nan is not a finite number"),
    Case("distill-decoder-blocks-not-integers", dd("--blocks", "3,x", "--out", P("run")), None,
         "--blocks must be comma-separated integers (blocks per level), got '3,x'"),
    Case("distill-decoder-blocks-negative", dd("--blocks", "3,-1", "--out", P("run")), None,
         "--blocks needs one count >= 0 per level, got 3,-1"),
    Case("distill-decoder-blocks-wrong-levels", dd("--blocks", "3,3,1", "--out", P("run")), None,
         "--blocks 3,3,1 gives 3 levels; the model's VAE upsamples 2x, which takes 2"),
    Case("distill-decoder-model-holds-a-tiny-decoder", lambda c: ["mobilediff", "distill-decoder", "--model",
                                                                  str(c.t / "p"), "--out", str(c.t / "run")],
         pipe_with_tiny_decoder, "the model's VAE is an AutoencoderTiny"),
    Case("distill-decoder-model-pickle", lambda c: ["mobilediff", "distill-decoder", "--model", str(c.t / "p"),
                                                    "--out", str(c.t / "run")], pipe_pickle(".bin"),
         "diffusion_pytorch_model.bin"),
    Case("distill-decoder-resume-foreign-checkpoint", dd("--out", P("run"), "--resume", P("ck")),
         lambda c: checkpoint(c, "ck", ("student.safetensors",), '{"step": 3}'), "{t}/ck is not a decoder checkpoint"),
    Case("distill-decoder-resume-latest-corrupt-state", dd("--out", P("run"), "--resume", "latest"),
         lambda c: checkpoint(c, "run/checkpoints/checkpoint-0000002", ("decoder.safetensors",)),
         "corrupt checkpoint state {t}/run/checkpoints/checkpoint-0000002/state.json"),
    Case("distill-decoder-resume-latest-foreign-folder", dd("--out", P("d"), "--resume", "latest"), user_folder,
         "{t}/d is not a decoder run folder"),
    Case("distill-decoder-resume-into-an-existing-out", dd("--out", P("d"), "--resume", P("ck")),
         lambda c: (user_folder(c), checkpoint(c, "ck", ("decoder.safetensors",), '{"step": 3}')),
         "output directory {t}/d already exists and {t}/ck is not one of its checkpoints"),
    # pack / export --decoder: a decoder that does not decode the model's latents ---------------------------------
    Case("pack-decoder-other-scale", with_decoder("pack"), lambda c: decoder_folder(c, scaling_factor=0.5),
         "was distilled for latents of scaling_factor 0.5; the model's VAE has 0.18215 (another VAE's latent space)"),
    Case("pack-decoder-other-channels", with_decoder("pack"), lambda c: decoder_folder(c, latent_channels=8),
         "{t}/dec decodes 8-channel latents; the model's have 4"),
    Case("pack-decoder-no-record", with_decoder("pack"), lambda c: decoder_folder(c, record=False),
         "decoder {t}/dec has no record of the latents it decodes"),
    Case("pack-decoder-missing", with_decoder("pack"), None, "decoder folder not found: {t}/dec"),
    # the emoji data builder checks the package it is given against the pinned sha512 before reading it
    Case("build-emoji-data-wrong-tarball", lambda c: ["mobilediff", "build-emoji-data", "--tarball", str(c.t / "x.tgz"),
                                                      "--out", str(c.t / "e")],
         lambda c: (c.t / "x.tgz").write_bytes(b"not the package"), "is not the pinned emoji-datasource-google@16.0.0"),
    Case("build-emoji-data-missing-tarball", lambda c: ["mobilediff", "build-emoji-data", "--tarball",
                                                        str(c.t / "none.tgz"), "--out", str(c.t / "e")], None,
         "does not exist"),
    Case("export-decoder-other-upsampling", with_decoder("export"), lambda c: decoder_folder(c, vae_scale_factor=4),
         "{t}/dec upsamples latents 4x; the model's VAE 2x"),
    Case("export-decoder-not-tiny", lambda c: ["mobilediff", "export", "--model", str(c.w.pipe), "--decoder",
                                               str(c.t / "p" / "vae"), "--target", "onnx", "--out", str(c.t / "o")],
         pipe_copy, "decoder {t}/p/vae holds class AutoencoderKL, not AutoencoderTiny"),
    Case("export-decoder-pickle", with_decoder("export"), decoder_damaged("pickle"),
         "{t}/dec holds only pickle weights (diffusion_pytorch_model.bin)"),
    Case("export-decoder-truncated", with_decoder("export"), decoder_damaged("truncated"),
         "corrupt safetensors file {t}/dec/diffusion_pytorch_model.safetensors"),
    Case("export-decoder-record-not-json", with_decoder("export"), decoder_damaged("record"),
         "corrupt {t}/dec/decoder.json"),
    # pack -----------------------------------------------------------------------------------------------------
    Case("pack-model-pickle", lambda c: ["mobilediff", "pack", "--model", str(c.t / "p"), "--base", str(c.w.pipe),
                                         "--out", str(c.t / "o")], pipe_pickle(".bin"), "diffusion_pytorch_model.bin"),
    Case("pack-out-is-a-file", lambda c: ["mobilediff", "pack", "--model", str(c.w.pipe), "--base", str(c.w.pipe),
                                          "--out", str(c.t / "f")], user_file, "{t}/f is a file"),
    Case("pack-out-exists", lambda c: ["mobilediff", "pack", "--model", str(c.w.pipe), "--base", str(c.w.pipe),
                                       "--out", str(c.t / "d")], user_folder, "{t}/d already exists"),
    Case("pack-out-read-only", lambda c: ["mobilediff", "pack", "--model", str(c.w.pipe), "--base", str(c.w.pipe),
                                          "--out", str(c.t / "ro" / "o")], lambda c: c.read_only(), "{t}/ro is not writable"),
    # recommend ------------------------------------------------------------------------------------------------
    Case("recommend-both-constraints", rec("--latency-ms", "50", "--min-accuracy", "0.9"), study,
         "give exactly one of --latency-ms or --min-accuracy"),
    Case("recommend-no-constraint", rec(), study, "give exactly one of --latency-ms or --min-accuracy"),
    Case("recommend-latency-nan", rec("--latency-ms", "nan"), study, "'--latency-ms': nan is not a finite number"),
    Case("recommend-latency-inf", rec("--latency-ms", "inf"), study, "'--latency-ms': inf is not a finite number"),
    Case("recommend-latency-negative", rec("--latency-ms", "-5"), study, "'--latency-ms'"),
    Case("recommend-accuracy-above-one", rec("--min-accuracy", "1.5"), study, "'--min-accuracy'"),
    Case("recommend-nothing-meets-the-budget", rec("--latency-ms", "1"), study,
         "nothing in {t}/s.json meets latency <= 1 ms: the fastest is xs (teacher), ddim 4 steps"),
    Case("recommend-nothing-reaches-the-floor", rec("--min-accuracy", "0.95"), study,
         "nothing in {t}/s.json meets prompt accuracy >= 0.95"),
    Case("recommend-runtime-not-in-table", rec("--latency-ms", "60", "--runtime", "coreml"), study,
         "--runtime coreml: not in {t}/s.json (there: eager)"),
    Case("recommend-precision-not-in-table", rec("--latency-ms", "60", "--precision", "int8"), study,
         "--precision int8: not in {t}/s.json (there: fp32)"),
    Case("recommend-table-missing", rec("--latency-ms", "60"), None, "--table {t}/s.json: not found"),
    Case("recommend-table-is-a-folder", rec("--latency-ms", "60"), lambda c: user_folder(c, "s.json"),
         "--table {t}/s.json: is a folder"),
    Case("recommend-table-not-json", rec("--latency-ms", "60"), lambda c: study(c, "[{"), "corrupt {t}/s.json"),
    Case("recommend-table-not-rows", rec("--latency-ms", "60"), lambda c: study(c, '{"rows": []}'),
         "corrupt {t}/s.json: expected a list of rows"),
    Case("recommend-table-accuracy-out-of-range", rec("--latency-ms", "60"),
         lambda c: study(c, json.dumps([{**STUDY_ROW, "prompt_accuracy": 2}])),
         "corrupt {t}/s.json: row 0: 'prompt_accuracy' missing or not a number in [0, 1]"),
    Case("recommend-device-missing", rec("--latency-ms", "60", "--device", P("d.json")), study,
         "--device {t}/d.json: not found"),
    Case("recommend-device-not-run-device", rec("--latency-ms", "60", "--device", P("d.json")),
         lambda c: (study(c), user_file(c, "d.json", json.dumps({"schema": {"name": "mobilediff.scaling"}}))),
         "--device {t}/d.json is not a run_device result"),
    Case("recommend-store-line-not-finite", rec("--latency-ms", "60"),
         lambda c: study(c, '{"schema_version": 1, "latency_ms": NaN}'), "corrupt {t}/s.json"),
    Case("recommend-store-jsonl-nan", lambda c: ["mobilediff", "recommend", "--latency-ms", "60", "--table",
                                                 str(c.t / "c.jsonl")],
         lambda c: user_file(c, "c.jsonl", STORE_ROW.replace('"fd": 30.0', '"fd": NaN') + "\n"),
         "corrupt {t}/c.jsonl line 1: NaN is not a number JSON allows"),
    Case("recommend-store-jsonl-missing-field", lambda c: ["mobilediff", "recommend", "--latency-ms", "60", "--table",
                                                           str(c.t / "c.jsonl")],
         lambda c: user_file(c, "c.jsonl", STORE_ROW + "\n" + STORE_ROW.replace('"steps": 4, ', "") + "\n"),
         "corrupt {t}/c.jsonl line 2: missing field(s) steps"),
    Case("recommend-device-unknown-machine", rec("--latency-ms", "60", "--device", "pixel"), study,
         "--device pixel: no such file, and no machine of {t}/s.json matches it"),
    # benchmarks -----------------------------------------------------------------------------------------------
    Case("configurations-results-missing", lambda c: ["configurations", "--results", str(c.t / "nope"), "--out",
                                                      str(c.t / "c.jsonl")], None, "--results {t}/nope: not a folder"),
    Case("configurations-no-result-files", lambda c: ["configurations", "--results", str(c.t / "d"), "--out",
                                                      str(c.t / "c.jsonl")], user_folder, "no result files in {t}/d"),
    Case("configurations-corrupt-result", lambda c: ["configurations", "--results", str(c.t / "r"), "--out",
                                                     str(c.t / "c.jsonl")],
         lambda c: user_file(c, "r/scaling.json", "[{"), "corrupt {t}/r/scaling.json"),
    Case("configurations-out-is-a-folder", lambda c: ["configurations", "--results", str(c.t / "r"), "--out",
                                                      str(c.t / "d")],
         lambda c: (user_file(c, "r/scaling.json", json.dumps([STUDY_ROW])), user_folder(c)),
         "{t}/d is a folder; expected a file path"),
    Case("scaling_deploy-scaling-missing", lambda c: ["scaling_deploy", "--scaling", str(c.t / "nope.json"), "--out",
                                                      str(c.t / "r")], None, "--scaling {t}/nope.json: not found"),
    Case("scaling_deploy-scaling-not-a-study", lambda c: ["scaling_deploy", "--scaling", str(c.t / "s.json"), "--out",
                                                          str(c.t / "r")],
         lambda c: user_file(c, "s.json", json.dumps([{"model": "x"}])), "corrupt {t}/s.json: row 0 lacks pipeline"),
    Case("scaling_deploy-device-not-run-device", lambda c: ["scaling_deploy", "--scaling", str(c.t / "s.json"),
                                                            "--device", str(c.t / "d.json"), "--out", str(c.t / "r")],
         lambda c: (user_file(c, "s.json", json.dumps([STUDY_ROW])), user_file(c, "d.json", "{}")),
         "is not a run_device result"),
    Case("sampler_tables-steps-zero", lambda c: ["sampler_tables", "--steps", "0", "--out", str(c.t / "r")], None,
         "--steps: must be an integer >= 1"),
    Case("backbones-device-missing", lambda c: ["backbones", "--device", str(c.t / "nope.json"), "--out",
                                                str(c.t / "r")], None, "--device {t}/nope.json: no such file"),
    Case("backbones-unet-without-dit", lambda c: ["backbones", "--unet", "default:unet-l", "--out", str(c.t / "r")],
         None, "give both --unet and --dit"),
    Case("backbones-dit-not-a-pipeline", lambda c: ["backbones", "--unet", "default", "--dit", str(c.t / "d"),
                                                    "--n", "2", "--out", str(c.t / "r")], user_folder,
         "is not a diffusers pipeline directory"),
    Case("baseline_quality-guidance-nan", lambda c: ["baseline_quality", "--guidance", "1", "nan", "--out",
                                                     str(c.t / "r")], None, "--guidance: must be a finite number"),
    Case("baseline_quality-n-one", lambda c: ["baseline_quality", "--n", "1", "--out", str(c.t / "r")], None,
         "--n: must be an integer >= 2"),
    Case("baseline_quality-out-is-a-file", lambda c: ["baseline_quality", "--out", str(c.t / "f")], user_file,
         "{t}/f is a file"),
    Case("baseline_quality-out-read-only", lambda c: ["baseline_quality", "--out", str(c.t / "ro" / "r")],
         lambda c: c.read_only(), "{t}/ro is not writable"),
    Case("student_quality-fd-without-references", lambda c: ["student_quality", "--teacher", str(c.w.pipe),
                                                            "--student", str(c.w.pipe), "--prompts", str(c.t / "f"),
                                                            "--fd-features", str(c.t / "f"), "--out", str(c.t / "r")],
         user_file, "needs both --fd-features and --reference-images"),
    Case("student_quality-prompts-missing", lambda c: ["student_quality", "--teacher", str(c.w.pipe), "--student",
                                                      str(c.w.pipe), "--prompts", str(c.t / "nope.txt"), "--out",
                                                      str(c.t / "r")], None, "nope.txt"),
    Case("distillation-teacher-rows-not-json", lambda c: ["distillation", "--teacher", str(c.w.pipe), "--lcm",
                                                          str(c.w.pipe), "--progressive", str(c.t / "none"), "--n", "2",
                                                          "--teacher-rows", str(c.t / "rows.json"), "--out",
                                                          str(c.t / "r")],
         lambda c: (user_file(c, "rows.json", "[]"), user_file(c, "rows_meta.json", "{not json")),
         "corrupt {t}/rows_meta.json"),
    Case("distillation-slim-not-a-student", lambda c: ["distillation", "--slim", str(c.t / "p"), "--out", str(c.t / "r")],
         lambda c: pipe_copy(c, "p"), "--slim {t}/p: not a distilled student (no distillation.json)"),
    Case("distillation-lcm-guidance-inf", lambda c: ["distillation", "--lcm-guidance", "inf", "--out", str(c.t / "r")],
         None, "--lcm-guidance: must be a finite number"),
    Case("run_device-missing-bundle", lambda c: ["run_device", "--bundle", str(c.t / "nope"), "--device", "host",
                                                 "--out", str(c.t / "r"), "--no-memory"], None, "{t}/nope"),
    Case("run_device-bundle-newer-format", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device", "host",
                                                      "--out", str(c.t / "r"), "--no-memory"], bundle_newer,
         "format version 99"),
    Case("run_device-guidance-nan", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device", "host",
                                               "--student-guidance", "nan", "--out", str(c.t / "r")], bundle_copy,
         "--student-guidance: must be a finite number"),
    Case("run_device-out-is-a-file", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device", "host",
                                                "--out", str(c.t / "f")], lambda c: (bundle_copy(c), user_file(c)),
         "{t}/f is a file"),
    Case("run_device-fd-features-without-references", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device",
                                                                 "host", "--prompts", str(c.t / "p.txt"),
                                                                 "--fd-features", str(c.t / "d"), "--out",
                                                                 str(c.t / "r")],
         lambda c: (bundle_copy(c), user_file(c, "p.txt", "a red circle\na blue square\n"), user_folder(c)),
         "needs both --fd-features (the extractor) and --reference-images"),
    Case("run_device-prompts-missing", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device", "host",
                                                  "--runtimes", "onnx", "--baseline", "ddim1", "--prompts",
                                                  str(c.t / "nope.txt"), "--out", str(c.t / "r")], bundle_copy,
         "prompts file {t}/nope.txt does not exist"),
    Case("run_device-clip-folder-without-config", lambda c: ["run_device", "--bundle", str(c.t / "b"), "--device",
                                                             "host", "--runtimes", "onnx", "--baseline", "ddim1",
                                                             "--quality-n", "2", "--prompts", str(c.t / "p.txt"),
                                                             "--clip", str(c.t / "d"), "--out", str(c.t / "r")],
         lambda c: (bundle_copy(c), user_file(c, "p.txt", "a red circle\na blue square\n"), user_folder(c)),
         "no config.json in {t}/d: not a Hugging Face model folder"),
    Case("scaling-guidance-nan", scaling("--guidance", "1", "nan"), None, "--guidance: must be a finite number"),
    Case("scaling-n-one", scaling("--n", "1"), None, "--n: must be an integer >= 2"),
    Case("scaling-sampler-of-students", scaling("--samplers", "lcm"), None, "--samplers: invalid choice: 'lcm'"),
    Case("scaling-unknown-runtime", scaling("--runtime", "tflite"), None, "--runtime: invalid choice: 'tflite'"),
    Case("scaling-out-is-a-file", lambda c: ["scaling", "--model", str(c.w.pipe), "--out", str(c.t / "f")], user_file,
         "{t}/f is a file"),
    Case("scaling-cache-in-a-file", scaling("--cache", P("f/rows")), user_file, "cannot write {t}/f/rows/row.json: {t}/f is a file"),
    Case("scaling-missing-model", scaling("--model", P("nope")), None, "model directory not found: {t}/nope"),
    Case("scaling-pickle-model", scaling("--model", P("p")), pipe_pickle(".bin"), "diffusion_pytorch_model.bin"),
    Case("scaling-student-without-record", scaling("--students", P("p")), pipe_copy,
         "--students {t}/p: no distillation.json"),
    Case("scaling-student-of-no-model", scaling("--model", P("p"), "--students", P("s")),
         lambda c: (pipe_copy(c), student_copy(c)), "--students {t}/s: cannot tell which --model it belongs to"),
    # decoder (benchmarks/decoder.py) ----------------------------------------------------------------------------
    Case("decoder-missing-decoder", lambda c: ["decoder", "--decoder", str(c.t / "nope"), "--students", str(c.t / "s"),
                                               "--n", "2", "--out", str(c.t / "r")], student_copy,
         "decoder folder not found: {t}/nope"),
    Case("decoder-student-without-record", lambda c: ["decoder", "--decoder", str(c.t / "dec"), "--students",
                                                      str(c.t / "p"), "--n", "2", "--out", str(c.t / "r")],
         lambda c: (decoder_folder(c), pipe_copy(c)), "{t}/p is not a distilled student"),
    Case("decoder-of-another-latent-space", lambda c: ["decoder", "--decoder", str(c.t / "dec"), "--students",
                                                       str(c.t / "s"), "--n", "2", "--out", str(c.t / "r")],
         lambda c: (decoder_folder(c, scaling_factor=0.3), student_copy(c)),
         "decoder {t}/dec was distilled for latents of scaling_factor 0.3"),
    Case("decoder-n-one", lambda c: ["decoder", "--n", "1", "--out", str(c.t / "r")], None,
         "--n: must be an integer >= 2"),
    Case("op_profile-missing-bundle", lambda c: ["op_profile", "--bundle", str(c.t / "nope"), "--out", str(c.t / "r")],
         None, "{t}/nope"),
    Case("op_profile-bundle-newer-format", lambda c: ["op_profile", "--bundle", str(c.t / "b"), "--out", str(c.t / "r")],
         bundle_newer, "format version 99"),
    Case("op_profile-unknown-component", lambda c: ["op_profile", "--bundle", str(c.t / "b"), "--component", "fused9",
                                                    "--out", str(c.t / "r")], bundle_copy,
         "bundle has no component 'fused9'"),
    Case("op_profile-runs-zero", lambda c: ["op_profile", "--bundle", str(c.t / "b"), "--runs", "0", "--out",
                                            str(c.t / "r")], None, "--runs: must be an integer >= 1"),
    Case("ort_format-architecture-not-four-parts", lambda c: ["ort_format", "--architecture", "sd15:fp16", "--out",
                                                               str(c.t / "r")], None,
         "--architecture 'sd15:fp16': expected ARCH:SCALE:PRECISION:RESOLUTION"),
    Case("ort_format-architecture-unknown", lambda c: ["ort_format", "--architecture", "sdxl:full:fp16:512", "--out",
                                                        str(c.t / "r")], None, "unknown architecture 'sdxl'"),
    Case("ort_format-architecture-odd-resolution", lambda c: ["ort_format", "--architecture", "sd15:tiny:fp32:100",
                                                               "--out", str(c.t / "r")], None,
         "the resolution must be a multiple of 8 pixels, got '100'"),
    Case("ort_format-threads-zero", lambda c: ["ort_format", "--threads", "0", "--out", str(c.t / "r")], None,
         "--threads: must be an integer >= 1"),
    Case("real_architectures-peer-unknown", lambda c: ["real_architectures", "--peer", "other", "--out", str(c.t / "r")],
         None, "--peer: invalid choice: 'other'"),
    Case("real_architectures-max-memory-nan", lambda c: ["real_architectures", "--max-memory-gib", "nan", "--out",
                                                         str(c.t / "r")], None, "--max-memory-gib: must be a finite"),
    Case("real_architectures-runs-zero", lambda c: ["real_architectures", "--runs", "0", "--out", str(c.t / "r")], None,
         "--runs: must be an integer >= 1"),
    Case("memory-nothing-to-measure", lambda c: ["memory", "--out", str(c.t / "r")], None,
         "nothing to measure: pass --bundle B [B ...] and/or --arch A [A ...]"),
    Case("memory-not-a-bundle", lambda c: ["memory", "--bundle", str(c.t / "d"), "--out", str(c.t / "r")], user_folder,
         "{t}/d is not a bundle (no manifest.json)"),
    Case("quantization-runs-not-a-number", lambda c: ["quantization", "--runs", "many", "--out", str(c.t / "r")], None,
         "--runs: must be an integer, got 'many'"),
    Case("quantization-work-is-a-file", lambda c: ["quantization", "--work", str(c.t / "f"), "--out", str(c.t / "r")],
         user_file, "{t}/f is a file"),
    Case("xnnpack_convs-runs-zero", lambda c: ["xnnpack_convs", "--runs", "0", "--out", str(c.t / "r")], None,
         "--runs: must be an integer"),
    Case("xnnpack_convs-resolution-off-the-latent-grid", lambda c: ["xnnpack_convs", "--scale", "tiny", "--resolution",
                                                                    "100", "--out", str(c.t / "r")], None, "100"),
    Case("xnnpack_convs-out-is-a-file", lambda c: ["xnnpack_convs", "--out", str(c.t / "f")], user_file,
         "{t}/f is a file"),
    Case("export_parity-fused-steps-too-many", lambda c: ["export_parity", "--fused-steps", "17", "--out",
                                                          str(c.t / "r")], None, "--fused-steps: must be an integer between 0 and 16"),
    Case("transformer_matrix-unknown-variant", lambda c: ["transformer_matrix", "--variant", "flux", "--out",
                                                          str(c.t / "r")], None, "unknown variant 'flux'"),
    Case("optimum_check-out-under-a-file", lambda c: ["optimum_check", "--out", str(c.t / "f" / "r")], user_file,
         "{t}/f is a file"),
    Case("app_parity-fixtures-without-index", lambda c: ["app_parity", "--fixtures-ready", "--fixtures",
                                                         str(c.t / "fx"), "--out", str(c.t / "r")],
         lambda c: fixtures(c, None), "--fixtures {t}/fx: no index.json"),
    Case("app_parity-fixtures-index-not-json", lambda c: ["app_parity", "--fixtures-ready", "--fixtures",
                                                          str(c.t / "fx"), "--out", str(c.t / "r")],
         lambda c: fixtures(c, '{"models": '), "corrupt {t}/fx/index.json"),
    Case("train-lora-rank-zero", lambda c: ["mobilediff", "train-lora", "--model", str(c.w.pipe), "--rank", "0",
                                            "--out", str(c.t / "o")], None, "'--rank'"),
    Case("train-lora-out-is-a-file", lambda c: ["mobilediff", "train-lora", "--model", str(c.w.pipe), "--out",
                                                str(c.t / "f")], user_file, "{t}/f is a file"),
    Case("generate-lora-pickle", gen("--model", P("p"), "--lora", P("a.bin"), "--out", P("x.png")),
         lambda c: (pipe_copy(c), user_file(c, "a.bin")), "a pickle file (.bin) is never loaded"),
    Case("export-lora-another-architecture-scale-nan", lambda c: ["mobilediff", "export", "--model", str(c.w.pipe),
                                                                  "--target", "onnx", "--lora", str(c.t / "a.safetensors:nan"),
                                                                  "--out", str(c.t / "o")], None,
         "the scale must be a finite number"),
    Case("adapters-scale-nan", lambda c: ["adapters", "--scale", "nan", "--out", str(c.t / "r")], None,
         "--scale takes finite numbers"),
    Case("image_modes-strength-zero", lambda c: ["image_modes", "--strength", "0", "--out", str(c.t / "r")], None,
         "--strength must be in (0, 1], got 0"),
    Case("image_modes-out-is-a-file", lambda c: ["image_modes", "--model", "default", "--n", "2", "--out",
                                                 str(c.t / "f")], user_file, "{t}/f is a file"),
    Case("generate-bundle-lora-it-does-not-hold", gen("--bundle", P("b"), "--lora", "swap", "--out", P("x.png")),
         bundle_copy, "--lora swap: the bundle holds no run-time adapter of that name (it holds: none; export with "
                      "--runtime-lora)"),
    Case("export-runtime-lora-pickle", lambda c: ["mobilediff", "export", "--model", str(c.w.pipe), "--target", "onnx",
                                                  "--runtime-lora", str(c.t / "a.pt"), "--out", str(c.t / "o")],
         lambda c: user_file(c, "a.pt"), "a pickle file (.pt) is never loaded"),
    Case("export-runtime-lora-missing", lambda c: ["mobilediff", "export", "--model", str(c.w.pipe), "--target", "onnx",
                                                   "--runtime-lora", str(c.t / "none.safetensors"), "--out",
                                                   str(c.t / "o")], None, "none.safetensors: no such file"),
    Case("export-lora-rank-without-runtime-lora", lambda c: ["mobilediff", "export", "--model", str(c.w.pipe), "--target",
                                                             "onnx", "--lora-rank", "4", "--out", str(c.t / "o")], None,
         "--lora-rank sizes the run-time adapters' slots: give them with --runtime-lora"),
    Case("runtime_adapters-out-is-a-file", lambda c: ["runtime_adapters", "--fp32-only", "--out", str(c.t / "f")],
         user_file, "{t}/f is a file"),
    Case("lcm_lora-steps-zero", lambda c: ["lcm_lora", "--steps", "0", "--out", str(c.t / "r")], None,
         "--steps: must be an integer between 1 and 50, got 0"),
    Case("app_memory-not-a-bundle", lambda c: ["app_memory", "--bundle", str(c.t / "d"), "--out", str(c.t / "r")],
         user_folder, "{t}/d is not a bundle (no manifest.json)"),
]


# ------------------------------------------------------------------------------------------------ the checks
def run_in_process(argv: list[str]) -> int:
    """Exit code of ``mobilediff ARGV`` or of the command ``python benchmarks/<script>.py ARGV`` runs (its library
    ``main``), run in this process."""
    if argv[0] == "mobilediff":
        from mobilediff.cli import main

        try:
            main(argv[1:])
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        return 0
    from mobilediff.bench import script_main
    from mobilediff.bench.envelope import run_command

    return run_command(script_main(argv[0]), argv[1:])


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``: path -> sha256 of its bytes (or "<dir>")."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_refusal(code: int, stdout: str, stderr: str, expect: str) -> str:
    """Exit code 2, stderr exactly one short ``error:`` line containing ``expect``, no traceback; returns the line."""
    assert "Traceback" not in stdout + stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert expect in lines[0], (expect, lines[0])
    assert len(lines[0]) < 500, f"error line of {len(lines[0])} characters"
    return lines[0]


@pytest.fixture
def ctx(world, tmp_path):
    c = Ctx(t=tmp_path / "case", w=world)
    c.t.mkdir()
    yield c
    for d in reversed(c.mounts):
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, ctx, capsys):
    if case.setup is not None:
        case.setup(ctx)
    argv = [str(a) for a in case.argv(ctx)]
    before = snapshot(ctx.t, ctx.w.pipe, ctx.w.bundle)
    capsys.readouterr()
    code = run_in_process(argv)
    captured = capsys.readouterr()
    check_refusal(code, captured.out, captured.err, case.expect.format(t=ctx.t))
    assert snapshot(ctx.t, ctx.w.pipe, ctx.w.bundle) == before  # nothing written, removed or changed


def test_the_table_covers_every_command_and_benchmark():
    from mobilediff.bench import SCRIPTS
    from mobilediff.cli import cli

    commands = {c.argv(Ctx(Path("/t"), World(Path("/p"), Path("/b"))))[1] for c in CASES
                if c.name.split("-")[0] in ("generate", "export", "goldens", "evaluate", "train", "distill", "pack",
                                                 "recommend", "build")}
    scripts = {c.name.split("-")[0] for c in CASES}
    assert set(cli.commands) <= commands
    # every script runs a library command, and every one of those is in the table
    assert {p.stem for p in (REPO / "benchmarks").glob("*.py")} == set(SCRIPTS) <= scripts
    assert len(CASES) >= 40


@pytest.mark.parametrize("argv,expect", [
    (["-m", "mobilediff", "generate", "--prompt", "x", "--guidance", "nan", "--out", "{t}/x.png"],
     "'--guidance': nan is not a finite number"),
    ([str(REPO / "benchmarks" / "baseline_quality.py"), "--steps", "0", "--out", "{t}/r"],
     "--steps: must be an integer >= 1"),
], ids=["mobilediff", "benchmark-script"])
def test_a_real_process_exits_2_with_one_line(argv, expect, tmp_path):
    p = subprocess.run([sys.executable, *[a.format(t=tmp_path) for a in argv]], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    check_refusal(p.returncode, p.stdout, p.stderr, expect)
    assert not list(tmp_path.iterdir())


def test_a_long_prompt_warning_stays_one_short_line(world, tmp_path, capsys):
    from mobilediff.cli import main

    main(["generate", "--model", str(world.pipe), "--prompt", "a red circle " * 1000, "--steps", "1",
          "--out", str(tmp_path / "x.png")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and len(warnings[0]) <= 220 and warnings[0].endswith("…"), warnings
    assert (tmp_path / "x.png").is_file()


# ------------------------------------------------------------------------------------------------------ prompts
def test_a_prompt_of_bytes_a_shell_passes_is_refused_on_both_paths(world, tmp_path, capsys):
    """What `mobilediff generate --prompt $'abc\\xff'` hands Python (sys.argv of a real process), given to the CLI:
    refused in one line naming the prompt and the byte, from a pipeline and from a bundle; nothing written."""
    import ast

    from conftest import run_cli_here

    p = subprocess.run([sys.executable, "-c", "import sys; print(ascii(sys.argv[1:]))", b"a red circle", b"abc\xff"],
                       capture_output=True, text=True, check=True)
    prompts = ast.literal_eval(p.stdout)  # a list literal of two strings, printed by ascii()
    assert prompts == ["a red circle", "abc\udcff"]
    for source in (["--model", world.pipe], ["--bundle", world.bundle]):
        code, out, err = run_cli_here(capsys, "generate", *source, "--prompt", prompts[0], "--prompt", prompts[1],
                                      "--out", tmp_path / "x.png")
        check_refusal(code, out, err, "error: --prompt 2 is not valid UTF-8 (byte 0xff at 3)")
    assert not list(tmp_path.iterdir())


def test_tabs_and_newlines_in_a_prompt_are_spaces(world, tmp_path, capsys):
    """The control characters a prompt may hold are the tokenizer's whitespace: the same image as with spaces."""
    from conftest import run_cli_here

    for name, prompt in (("spaces", "a red circle at the top"), ("controls", "a red\tcircle\r\nat the top\n")):
        code, _, err = run_cli_here(capsys, "generate", "--model", world.pipe, "--prompt", prompt, "--steps", "1",
                                    "--out", tmp_path / f"{name}.png")
        assert code == 0, err
    assert (tmp_path / "spaces.png").read_bytes() == (tmp_path / "controls.png").read_bytes()


@pytest.mark.parametrize("prompt,message", [
    ("abc\udcff", "prompt is not valid UTF-8 (byte 0xff at 3)"),
    ("é\udce9", "prompt is not valid UTF-8 (byte 0xe9 at 2)"),  # after a 2-byte character: a byte offset
    ("x\ud800", "prompt is not valid UTF-8 (character U+D800 at 1)"),  # a surrogate no byte stands for
    ("a\x7fb", "prompt has a control character (U+007F at character 1)"),
    ("a\x85b", "prompt has a control character (U+0085 at character 1)"),
])
def test_the_library_refuses_the_same_prompts(prompt, message):
    """generate() and BundleRunner.generate() check their prompts too (mobilediff.sampling.check_prompt)."""
    from mobilediff.errors import MobilediffError
    from mobilediff.sampling import check_prompt, validate_generation

    with pytest.raises(MobilediffError) as e:
        check_prompt(prompt)
    assert str(e.value).startswith(message)
    with pytest.raises(MobilediffError, match="prompt 2 "):
        validate_generation(1, 1.0, ["ok", prompt], [0])
    for fine in ("café 😀 naïve", "tab\there", "line\nbreak\r\n", ""):
        check_prompt(fine)
