"""Flow-matching diffusion transformers: train-base --objective flow, the flow samplers (mobilediff.samplers), and
distillation with velocity targets (mobilediff.train.flow_distill)."""
import json

import numpy as np
import pytest
import torch

from conftest import error_lines, run_cli_here
from mobilediff.loading import load_pipeline
from mobilediff.models import FlowSchedulerConfig
from mobilediff.sampler_table import sampler_table
from mobilediff.samplers import FLOW_SAMPLERS, is_flow, make_scheduler
from mobilediff.sampling import generate
from mobilediff.train import flow_distill as fd

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")
PROMPT = "a red circle at the top left"
TINY = ["--max-train-steps", "2", "--batch-size", "4", "--latent-cache", "16", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    from click.testing import CliRunner

    from mobilediff.cli import cli

    out = tmp_path_factory.mktemp("flow") / "run"
    res = CliRunner().invoke(cli, ["train-base", "--out", str(out), "--tiny", "--backbone", "dit", "--objective", "flow",
                                   "--flow-shift", "2", "--vae-steps", "2", "--unet-steps", "3"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from mobilediff.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("flow-teacher") / "t", dit=True, flow=True)


# ------------------------------------------------------------------------------------------------ samplers
def test_flow_configs_are_told_apart():
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    assert is_flow(FlowSchedulerConfig().build().config)
    assert is_flow(FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    assert not is_flow(DDIMScheduler(prediction_type="v_prediction").config)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_flow_euler_runs_the_training_grid_as_diffusers_flow_euler_with_fluxs_sigmas(shift, steps):
    """euler (and ddim) on a flow model: diffusers' FlowMatchEulerDiscreteScheduler at sigmas linspace(1, 1/N, N),
    shifted; its points are the grid the progressive students train at, and its step x + (s' - s) v."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = FlowSchedulerConfig(shift=shift).build().config
    euler, ddim = (sampler_table(make_scheduler(n, config), steps) for n in ("euler", "ddim"))
    assert euler.to_dict() | {"sampler": ""} == ddim.to_dict() | {"sampler": ""}
    grid = fd.flow_grid(steps, shift)
    assert np.allclose(euler.timesteps, (grid[:-1] * 1000).tolist(), atol=1e-3)
    reference = FlowMatchEulerDiscreteScheduler(shift=shift)
    reference.set_timesteps(steps, sigmas=np.linspace(1.0, 1.0 / steps, steps).tolist())
    assert np.allclose(euler.timesteps, reference.timesteps.tolist(), atol=1e-3)
    for i in range(steps):
        assert euler.latent_coef[i] == [1.0] and euler.noise_coef[i] == 0.0
        assert euler.output_coef[i] == pytest.approx([float(grid[i + 1] - grid[i])], abs=1e-6)


def test_flow_consistency_sampler_renoises_the_velocitys_x0():
    """lcm on a flow model: x_{i+1} = (1 - s') (x - s v) + s' noise, no noise after the last step."""
    config = FlowSchedulerConfig().build().config
    t = sampler_table(make_scheduler("lcm", config), 4)
    grid = fd.flow_grid(4, 1.0).tolist()
    for i in range(4):
        s, s_next = grid[i], grid[i + 1]
        assert t.latent_coef[i] == pytest.approx([1 - s_next], abs=1e-6) if s_next < 1 else True
        assert t.output_coef[i] == pytest.approx([-(1 - s_next) * s], abs=1e-6)
        assert t.noise_coef[i] == pytest.approx(s_next, abs=1e-6)


def test_every_flow_sampler_is_tabulated_for_a_flow_bundle():
    from mobilediff.exporter import sampler_tables
    from mobilediff.tiny import tiny_dit_pipeline

    names = {t["name"] for t in sampler_tables(tiny_dit_pipeline(flow=True))}
    assert names == set(FLOW_SAMPLERS)


# ------------------------------------------------------------------------------------------------ train-base
def test_flow_run_writes_a_pixart_pipeline_on_flow_sigmas(flow_run):
    cfg = json.loads((flow_run / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "DPMSolverMultistepScheduler"
    assert (cfg["prediction_type"], cfg["use_flow_sigmas"], cfg["flow_shift"]) == ("flow_prediction", True, 2.0)
    assert "flow matching (shift 2)" in (flow_run / "model" / "TRAINING.md").read_text()
    pipe = load_pipeline(flow_run / "model", transformers=True)
    for sampler in FLOW_SAMPLERS:
        for steps in (1, 3):
            images = generate(pipe, [PROMPT], [0], steps, sampler, 2.0)
            assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()


def test_flow_loss_trains_the_velocity_of_the_straight_path(monkeypatch):
    """The denoiser sees (1 - s) x0 + s noise at timestep s T and is pulled to noise - x0."""
    from mobilediff.tiny import tiny_train_config
    from mobilediff.train import base
    from mobilediff.train.loop import make_accelerator
    from dataclasses import replace
    from pathlib import Path

    cfg = tiny_train_config(base.TrainBaseConfig(out=Path("unused"), batch_size=2, latent_cache=2))
    cfg.model = replace(cfg.model, backbone="dit", objective="flow",
                        dit=replace(cfg.model.dit, caption_channels=cfg.model.text_encoder.hidden_size))
    cfg.caption_dropout, cfg.text_aux_weight = 0.0, 0.0
    model = base.Denoiser(cfg.model.text_encoder.build(), cfg.model.build_denoiser())
    h = cfg.model.dit.sample_size
    cache = {"latents": torch.randn(2, 4, h, h), "ids": torch.zeros(2, 77, dtype=torch.long),
             "mask": torch.zeros(2, 1, h, h)}
    seen = {}

    def fake_forward(ids, noisy, t):
        seen.update(noisy=noisy, t=t)
        return torch.zeros_like(noisy, requires_grad=True), torch.zeros(len(ids), cfg.model.text_encoder.hidden_size)

    objective = base.DenoiserObjective(cfg, make_accelerator("fp32"), model, base.SceneHead(cfg.model.text_encoder.hidden_size),
                                       cfg.model.scheduler.build(), cache, None, torch.zeros(1, 77, dtype=torch.long))
    objective.models["denoiser"] = fake_forward
    loss, _ = objective.loss(0)
    g = torch.Generator().manual_seed((cfg.seed + 1) * 1_000_003)
    idx = torch.randint(0, 2, (2,), generator=g)
    torch.rand(2, generator=g)
    noise = torch.randn((2, 4, h, h), generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    s = (t.float() + 1) / 1000
    x0 = cache["latents"][idx]
    assert torch.allclose(seen["t"], s * 1000)
    assert torch.allclose(seen["noisy"], (1 - s)[:, None, None, None] * x0 + s[:, None, None, None] * noise)
    pix = 1.0 + cfg.object_weight * cache["mask"][idx]
    expected = (((noise - x0) ** 2 * pix).mean(dim=(1, 2, 3)) / pix.mean(dim=(1, 2, 3))).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_resuming_a_flow_run_with_the_v_objective_is_refused(flow_run, capsys):
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", flow_run, "--tiny", "--backbone", "dit",
                                   "--vae-steps", 2, "--unet-steps", 4, "--resume", "latest")
    assert code != 0 and len(error_lines(stderr)) == 1 and "its objective is flow, this run's v" in stderr, stderr


@pytest.mark.parametrize("flags, message", [
    (["--objective", "flow"], "--objective flow needs --backbone dit"),
    (["--backbone", "dit", "--objective", "flow", "--min-snr-gamma", "5"], "--min-snr-gamma and --objective flow conflict"),
    (["--backbone", "dit", "--flow-shift", "3"], "--flow-shift needs --objective flow"),
])
def test_impossible_flow_options_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code, _, stderr = run_cli_here(capsys, "train-base", "--out", out, "--tiny", *flags)
    assert code != 0 and len(error_lines(stderr)) == 1 and message in stderr, stderr
    assert not out.exists()


def test_a_flow_pipeline_with_a_resolution_dependent_shift_is_refused():
    from mobilediff.errors import MobilediffError
    from mobilediff.transformer_family import check_configs

    with pytest.raises(MobilediffError, match="use_dynamic_shifting"):
        check_configs({"scheduler": "FlowMatchEulerDiscreteScheduler"},
                      {"scheduler": {"shift": 3.0, "use_dynamic_shifting": True}})
    with pytest.raises(MobilediffError, match="without use_flow_sigmas"):
        check_configs({}, {"scheduler": {"prediction_type": "flow_prediction", "use_flow_sigmas": False,
                                         "beta_schedule": "linear"}})


# ------------------------------------------------------------------------------------------------ distillation
def test_the_student_grid_is_every_other_teacher_point():
    for shift in (1.0, 3.0):
        for n in (1, 2, 4, 8):
            assert torch.allclose(fd.flow_grid(2 * n, shift)[::2], fd.flow_grid(n, shift))


def test_progressive_target_is_the_straight_step_onto_the_teachers_two_steps():
    """With a velocity field that changes along the path, the student's target reaches in one Euler step exactly
    where two teacher Euler steps land, and differs from the teacher's own velocity."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    s, mid, nxt = torch.full((3,), 1.0), torch.full((3,), 0.75), torch.full((3,), 0.5)

    def teacher(sample, t):
        return sample * (1 + t[:, None, None, None]) - 0.3

    x_next = fd.euler(fd.euler(x, teacher(x, s), s, mid), teacher(fd.euler(x, teacher(x, s), s, mid), mid), mid, nxt)
    target = (x_next - x) / (nxt - s)[:, None, None, None]
    assert torch.allclose(fd.euler(x, target, s, nxt), x_next, atol=1e-6)
    assert not torch.allclose(target, teacher(x, s))


def test_caption_mask_is_the_tokenizers_attention_mask():
    from transformers import CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR

    tok = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    enc = tok([PROMPT, ""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    assert torch.equal(fd.caption_mask(enc.input_ids, tok.eos_token_id), enc.attention_mask)


def test_slim_transformer_keeps_the_remaining_blocks_weights(teacher):
    pipe = load_pipeline(teacher, transformers=True)
    net = pipe.transformer
    assert fd.default_block_removal(6) == "block-2,block-3" and fd.default_block_removal(2) == "block-0"
    student = fd.slim_transformer(net, [0])
    assert student.config.num_layers == net.config.num_layers - 1
    for k, v in student.transformer_blocks[0].state_dict().items():
        assert torch.equal(v, net.transformer_blocks[1].state_dict()[k])
    assert torch.equal(student.proj_out.weight, net.proj_out.weight)


@pytest.mark.parametrize("spec, message", [("block-1,block-1", "names a block twice"), ("mid", "named block-K"),
                                           ("block-0,block-1", "removes every block")])
def test_bad_block_removals_are_refused(spec, message):
    from mobilediff.errors import MobilediffError

    with pytest.raises(MobilediffError, match=message):
        fd.parse_block_removal(spec, 2)


@pytest.mark.parametrize("method, flags, written, plan", [
    ("progressive", ["--steps", "1", "--teacher-steps", "4"], ["steps-2", "steps-1"], ("euler", 1)),
    ("lcm", ["--steps", "2"], ["model"], ("lcm", 2)),
    ("slim", ["--steps", "2"], ["model"], ("euler", 2)),
])
def test_each_method_writes_a_student_that_samples_with_its_plan(teacher, tmp_path, capsys, method, flags, written,
                                                                  plan):
    from mobilediff.card import model_card

    out = tmp_path / "run"
    code, _, stderr = run_cli_here(capsys, "distill", "--teacher", teacher, "--method", method, "--out", out, *flags,
                                   *TINY)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir() if (p / "distillation.json").is_file()) == sorted(written)
    student_dir = out / written[-1]
    record = json.loads((student_dir / "distillation.json").read_text())
    assert record["objective"] == "flow" and (record["sampling"]["sampler"], record["sampling"]["steps"]) == plan
    pipe = load_pipeline(student_dir, transformers=True)
    card = model_card(pipe, student_dir, str(student_dir))
    assert (card.plan.sampler, card.plan.steps, card.plan.guidance) == (*plan, 1.0)
    images = generate(pipe, [PROMPT], [0], card.plan.steps, card.plan.sampler, card.plan.guidance)
    assert torch.isfinite(images).all()
    # the run continues from its checkpoints, and another removal's checkpoint is refused
    code, _, stderr = run_cli_here(capsys, "distill", "--teacher", teacher, "--method", method, "--out", out, *flags,
                                   *TINY, "--resume", "latest")
    assert code == 0, stderr
    if method == "slim":
        code, _, stderr = run_cli_here(capsys, "distill", "--teacher", teacher, "--method", method, "--out", out,
                                       *flags, *TINY, "--remove", "block-1", "--resume", "latest")
        assert code != 0 and "its removed is [0], this run's [1]" in stderr



def test_a_flow_bundle_generates_the_pipelines_image_with_every_flow_sampler(flow_run, tmp_path):
    """The exported flow model's bundle (sampler tables of the flow samplers) against diffusers' PixArt pipeline run
    with the same sampler: the deterministic ones, and the consistency sampler's fresh draws."""
    from mobilediff.bundle import read_manifest
    from mobilediff.engine import BundleRunner
    from mobilediff.exporter import export_bundle
    from mobilediff.parity import psnr

    pipe = load_pipeline(flow_run / "model", transformers=True)
    bundle = export_bundle(pipe, "onnx", tmp_path / "b", source="tiny-flow", model_dir=flow_run / "model",
                           ort_format=False)
    assert read_manifest(bundle).prediction_type == "flow_prediction"
    runner = BundleRunner(bundle, "onnx")
    for sampler, steps, scale in (("euler", 1, 1.0), ("euler", 2, 3.0), ("dpmpp", 4, 4.5), ("lcm", 4, 1.0)):
        got = runner.generate(PROMPT, seed=3, steps=steps, sampler=sampler, guidance=scale)
        want = generate(pipe, [PROMPT], [3], steps, sampler, scale)
        assert psnr(got, want) >= 60, (sampler, steps, psnr(got, want))
