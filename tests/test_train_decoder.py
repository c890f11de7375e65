"""`mobilediff distill-decoder` on a tiny random model: a two-step run writes a decoder and a pipeline that decodes
the sampler's latents as they are, a stopped run resumes bit-identically, and pack / export take the decoder
(`--decoder`), its ONNX and ExecuTorch graphs at the parity floor."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import poison_loss_at, run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.train.checkpoint import complete_checkpoints
from mobilediff.train.decoder import DecoderDistillConfig, distill_decoder, perceptual_distance

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
PLAN = {"sampler": "ddim", "steps": 2, "guidance": 1.0}


@pytest.fixture(scope="module")
def student(tiny_pipeline_dir, tmp_path_factory):
    """The tiny model as a distilled student (a record with its own sampling plan): OUT/model must keep it."""
    d = tmp_path_factory.mktemp("student") / "student"
    shutil.copytree(tiny_pipeline_dir, d)
    (d / "distillation.json").write_text(json.dumps({"method": "progressive", "teacher": "tiny", "sampling": PLAN}))
    return d


def _cfg(model, out, **kw):
    base = dict(model=str(model), out=out, max_train_steps=2, batch_size=4, latent_cache=16, checkpoint_every=1,
                warmup_steps=1)
    return DecoderDistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(student, tmp_path_factory):
    """A two-step run through the command line, with sampled latents joined to the encoded ones."""
    from mobilediff.cli import main

    out = tmp_path_factory.mktemp("decoder") / "run"
    main(["distill-decoder", "--model", str(student), "--out", str(out), "--max-train-steps", "2", "--batch-size", "4",
          "--latent-cache", "16", "--sampled-latents", "4"])
    return out


def test_two_step_run_writes_a_pipeline_that_decodes_the_samplers_latents(student, run):
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    record = json.loads((run / "decoder" / "decoder.json").read_text())
    teacher_vae = json.loads((student / "vae" / "config.json").read_text())
    assert record["latent"] == {"latent_channels": 4, "vae_scale_factor": 2,
                                "scaling_factor": teacher_vae["scaling_factor"], "shift_factor": 0.0}
    assert record["architecture"] == {"width": 24, "blocks": [6, 0]}  # the default pattern for a 2-level VAE
    assert record["stats"]["train_steps"] == 2 and record["stats"]["pool"] == 16 + 4
    assert record["gflop_per_image"]["decoder"] > 0 and record["command"].startswith("mobilediff ")
    # the model keeps everything but its VAE, its distillation record (the sampling plan) included
    assert json.loads((run / "model" / "distillation.json").read_text())["sampling"] == PLAN
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderTiny"] and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    pipe, teacher = load_pipeline(run / "model"), load_pipeline(student)
    assert type(pipe.vae).__name__ == "AutoencoderTiny" and pipe.vae.config.scaling_factor == 1.0
    z = generate(teacher, ["a red circle"], [3], 2, "ddim", 1.0, latents_only=True)
    assert torch.equal(z, generate(pipe, ["a red circle"], [3], 2, "ddim", 1.0, latents_only=True))
    # StableDiffusionPipeline decodes latents / scaling_factor = the sampler's latent itself
    image = generate(pipe, ["a red circle"], [3], 2, "ddim", 1.0)
    with torch.no_grad():
        want = pipe.vae.decode(z).sample.clamp(-1, 1)
        assert pipe.vae.encode(image).latents.abs().max() == 0  # the untrained encoder is zero, not plausible
    torch.testing.assert_close(image, want, rtol=0, atol=1e-5)
    assert image.shape == (1, 3, 32, 32)


def test_stopped_and_resumed_run_equals_uninterrupted(student, tmp_path, monkeypatch):
    """A NaN at step 3 stops the run, leaving checkpoint 3; a later checkpoint cut off mid-save is never resumed
    from; the resumed run ends with the uninterrupted run's weights, bit for bit."""
    full = distill_decoder(_cfg(student, tmp_path / "full", max_train_steps=4))[0]
    cut = tmp_path / "cut"
    with monkeypatch.context() as m, pytest.raises(MobilediffError, match="non-finite loss at step 3"):
        poison_loss_at(m, 3)
        distill_decoder(_cfg(student, cut, max_train_steps=4))
    assert [c.step for c in complete_checkpoints(cut)] == [2, 3] and not (cut / "decoder").exists()
    partial = cut / "checkpoints" / "checkpoint-0000009"
    shutil.copytree(cut / "checkpoints" / "checkpoint-0000003", partial)
    (partial / "COMPLETE").unlink()
    with pytest.raises(MobilediffError, match="already exists"):
        distill_decoder(_cfg(student, cut, max_train_steps=4))
    resumed = distill_decoder(_cfg(student, cut, max_train_steps=4), resume="latest")[0]
    a, b = (load_file(p / "diffusion_pytorch_model.safetensors") for p in (full, resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line)["step"] for line in (cut / "log.jsonl").read_text().splitlines()]
    assert log == sorted(set(log))  # every step logged once over the two sessions
    with pytest.raises(MobilediffError, match="incomplete"):
        distill_decoder(_cfg(student, cut, max_train_steps=4), resume=str(partial))


def test_perceptual_distance_is_zero_at_the_target_and_trains_the_student_only():
    from mobilediff.evaluator import Evaluator

    net = Evaluator.load().net.requires_grad_(False)  # as DecoderObjective holds it
    g = torch.Generator().manual_seed(0)
    teacher = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1  # resized to the evaluator's 64 px
    assert perceptual_distance(net, teacher, teacher, 64).item() == 0
    student = (teacher + 0.1 * torch.randn(teacher.shape, generator=g)).requires_grad_(True)
    d = perceptual_distance(net, student, teacher, 64)
    d.backward()
    assert d.item() > 0 and student.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_pack_takes_the_decoder(student, tiny_pipeline_dir, run, tmp_path, capsys):
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    packed = tmp_path / "packed"
    code, stdout, stderr = run_cli_here(capsys, "pack", "--model", student, "--base", tiny_pipeline_dir, "--decoder",
                                        run / "decoder", "--out", packed)
    assert code == 0, stderr
    assert "unet shared" in stdout and "text_encoder shared" in stdout and f"vae decoder {run / 'decoder'}" in stdout
    assert sorted(p.name for p in packed.iterdir() if p.is_dir()) == ["scheduler", "vae"]
    assert json.loads((packed / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderTiny"]
    a = generate(load_pipeline(packed), ["a blue square"], [1], 2, "ddim", 1.0)
    b = generate(load_pipeline(run / "model"), ["a blue square"], [1], 2, "ddim", 1.0)
    assert torch.equal(a, b)
    # a packed model (it borrows its components) takes a decoder too
    again = tmp_path / "again"
    code, _, stderr = run_cli_here(capsys, "pack", "--model", packed, "--base", tiny_pipeline_dir, "--decoder",
                                   run / "decoder", "--out", again)
    assert code == 0, stderr
    assert torch.equal(generate(load_pipeline(again), ["a blue square"], [1], 2, "ddim", 1.0), a)


@pytest.mark.slow
def test_export_takes_the_decoder_at_the_parity_floor(student, run, tmp_path, capsys):
    """`export --decoder`: the bundle's decoder is the AutoencoderTiny (ONNX and ExecuTorch graphs >= 60 dB against
    PyTorch), its geometry says scaling_factor 1 (the decoder takes the sampler's latent), the manifest names the
    decoder, and generating from the bundle alone matches the PyTorch pipeline with the decoder."""
    from mobilediff.bundle import read_manifest
    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component
    from mobilediff.loading import load_pipeline
    from mobilediff.parity import psnr
    from mobilediff.engine import BundleRunner
    from mobilediff.sampling import generate

    out = tmp_path / "b"
    code, _, stderr = run_cli_here(capsys, "export", "--model", student, "--decoder", run / "decoder", "--target",
                                   "onnx", "--out", out)
    assert code == 0, stderr
    m = read_manifest(out)
    assert m.geometry.scaling_factor == 1.0 and m.geometry.shift_factor == 0.0
    dec = m.component("vae_decoder")
    assert dec.source_class == "AutoencoderTiny" and dec.files[0].parity["psnr_db"] >= 60
    assert m.source.decoder["path"] == str(run / "decoder") and len(m.source.decoder["weights_sha256"]) == 64
    assert (m.plan.sampler, m.plan.steps, m.plan.guidance) == ("ddim", 2, 1.0)  # the student's own plan
    pipe = load_pipeline(run / "model")
    got = BundleRunner(out, "onnx").generate("a red circle at the top", 7, 2, "ddim", 1.0)
    assert psnr(got, generate(pipe, ["a red circle at the top"], [7], 2, "ddim", 1.0)) >= 40
    spec = declare(pipe, latent_geometry(pipe))["vae_decoder"]
    entry = export_component(spec, "executorch", "fp32", tmp_path / "et")
    assert entry["parity"]["psnr_db"] >= 60 and entry["export"]["delegated_nodes"] > 0


def test_decoder_benchmark_pairs_each_student_row_with_both_decoders(tmp_path):
    """The decoder benchmark (mobilediff.bench.decoder.main, what benchmarks/decoder.py runs) on a tiny 64-px
    student (the evaluator's resolution) and a random decoder of its latent space: one VAE row and one tiny row per
    plan, paired on the same latents, the decoders' cost measured, the bars checked, every report file written; a
    model without a sampling plan is refused before any sampling."""
    import dataclasses

    from mobilediff.bench import decoder as bench
    from mobilediff.decoder import KIND, RECORD, build_tiny
    from mobilediff.models import VaeConfig
    from mobilediff.tiny import TINY_MODEL, tiny_pipeline

    vae = VaeConfig(sample_size=64, block_out_channels=(4, 8, 8), layers_per_block=1, latent_channels=4,
                    norm_num_groups=4)  # 64 px <-> 16 x 16 latents
    pipe = tiny_pipeline(0, dataclasses.replace(TINY_MODEL, vae=vae))
    student = tmp_path / "student"
    pipe.save_pretrained(str(student), safe_serialization=True)
    (student / "distillation.json").write_text(json.dumps({"method": "progressive", "teacher": "t", "sampling": PLAN}))
    dec = tmp_path / "dec"
    build_tiny(4, 8, (1, 1, 0), seed=0).save_pretrained(str(dec), safe_serialization=True)
    (dec / RECORD).write_text(json.dumps({"kind": KIND, "latent": {
        "latent_channels": 4, "vae_scale_factor": 4, "scaling_factor": pipe.vae.config.scaling_factor,
        "shift_factor": 0.0}}))
    out = tmp_path / "results"
    res = bench.main(["--decoder", str(dec), "--students", str(student), "--n", "2", "--psnr-samples", "3",
                      "--out", str(out)])
    assert [(r["decoder"], r["steps"]) for r in res["rows"]] == [("vae", 2), ("tiny", 2)]
    (pair,) = res["pairs"]
    assert pair["accuracy_drop_points"] == pytest.approx(100 * (pair["vae_accuracy"] - pair["tiny_accuracy"]))
    vae_row, tiny_row = res["decoders"]
    assert 0 < tiny_row["params"] < vae_row["params"] and tiny_row["psnr_db"] < 100
    assert tiny_row["gflop_per_image"] > 0 and vae_row["gflop_per_image"] > 0
    assert {t["check"] for t in res["targets"]} == {"tiny_decoder_gflop", "tiny_decoder_accuracy_drop_points"}
    saved = json.loads((out / "decoder.json").read_text())
    assert saved["meta"]["n"] == 2 and "grid" not in saved
    for f in ("decoder.md", "decoder.png", "decoder_grid.png"):
        assert (out / f).stat().st_size > 0
    (student / "distillation.json").unlink()
    with pytest.raises(MobilediffError, match="not a distilled student"):
        bench.main(["--decoder", str(dec), "--students", str(student), "--n", "2", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
