"""`mobilediff distill` on a tiny random teacher: the target arithmetic against diffusers, two-step runs of each
method, exact resume (also past a checkpoint cut off mid-save), NaN stops, and bad input."""
import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import error_lines, poison_loss_at, run_cli, run_cli_here
from mobilediff.errors import MobilediffError
from mobilediff.train.checkpoint import complete_checkpoints
from mobilediff.train.diffusion import (boundary_scalings, ddim_alpha_prod_prev, ddim_step, ddim_timesteps,
                                        pred_original_and_epsilon, progressive_target)
from mobilediff.train.distill import DistillConfig, TeacherPredictor, distill, make_lcm_student, progressive_rounds


def _cfg(teacher, out, method, **kw):
    base = dict(teacher=str(teacher), method=method, steps=1 if method == "progressive" else 2, out=out,
                max_train_steps=2, batch_size=4, latent_cache=16, checkpoint_every=1, teacher_steps=4, warmup_steps=1)
    return DistillConfig(**{**base, **kw})


def _unet(model_dir):
    return load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")


def _scheduler():
    from diffusers import DDIMScheduler

    from mobilediff.loading import DEFAULT_MODEL_DIR

    return DDIMScheduler.from_pretrained(str(DEFAULT_MODEL_DIR / "scheduler"))


@pytest.mark.parametrize("pred", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("n", [1, 2, 8])
def test_batched_ddim_step_equals_diffusers(pred, n):
    from diffusers import DDIMScheduler

    s = DDIMScheduler.from_config(_scheduler().config, prediction_type=pred)
    ts = ddim_timesteps(s, n)
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(0)
    for t in ts:
        z, out = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
        want = s.step(out, int(t), z).prev_sample
        tb = torch.full((3,), int(t))
        x0, eps = pred_original_and_epsilon(out, z, s.alphas_cumprod[tb], pred)
        torch.testing.assert_close(ddim_step(x0, eps, ddim_alpha_prod_prev(s, tb, n)), want, rtol=1e-5, atol=1e-5)


def test_progressive_target_makes_one_student_step_land_on_the_teachers_two():
    """If the student predicts the target x0, DDIMScheduler's single n-step update reaches the 2n-step result."""
    s = _scheduler()
    n = 4
    ts = ddim_timesteps(s, n)
    s.set_timesteps(n)
    g = torch.Generator().manual_seed(1)
    for t in ts:
        tb = torch.full((2,), int(t))
        z, z2 = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
        a_t, a_p = s.alphas_cumprod[tb].view(-1, 1, 1, 1), ddim_alpha_prod_prev(s, tb, n).view(-1, 1, 1, 1)
        ratio = ((1 - a_p) / (1 - a_t)).sqrt()
        x_tgt = (z2 - ratio * z) / (a_p.sqrt() - ratio * a_t.sqrt())
        v = a_t.sqrt() * z - x_tgt  # a v-prediction whose x0 is x_tgt: x0 = sqrt(a) z - sqrt(1-a) v
        v = v / (1 - a_t).sqrt()
        torch.testing.assert_close(s.step(v, int(t), z).prev_sample, z2, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("guidance", [None, 3.5])
def test_progressive_target_takes_the_teachers_two_ddim_steps(guidance):
    """z2 is two DDIMScheduler steps at 2n steps of the teacher's prediction: classifier-free guided at the given
    scale, or (guidance None: a teacher that is an earlier, guidance-folded student) its conditional prediction."""
    from diffusers import DDIMScheduler

    from mobilediff.tiny import tiny_pipeline

    unet = tiny_pipeline(seed=3).unet.eval()
    s = DDIMScheduler.from_config(_scheduler().config, timestep_spacing="trailing", clip_sample=False)
    n = 2
    ts2 = ddim_timesteps(s, 2 * n)
    g = torch.Generator().manual_seed(2)
    size = unet.config.sample_size
    z = torch.randn(2, unet.config.in_channels, size, size, generator=g)
    cond = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    uncond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).expand_as(cond)
    t, t_mid = torch.full((2,), int(ts2[0])), torch.full((2,), int(ts2[1]))
    scale = None if guidance is None else torch.full((2,), guidance)
    predict = TeacherPredictor(unet, s.alphas_cumprod.float(), cond, uncond, scale, s.config.prediction_type)
    _, z2 = progressive_target(predict, s, z, t, t_mid, n)

    ref = copy.deepcopy(s)
    ref.set_timesteps(2 * n)
    want = z
    with torch.no_grad():
        for tt in ts2[:2]:
            oc = unet(want, tt, encoder_hidden_states=cond).sample
            if guidance is not None:
                ou = unet(want, tt, encoder_hidden_states=uncond).sample
                oc = ou + guidance * (oc - ou)
            want = ref.step(oc, int(tt), want).prev_sample
    torch.testing.assert_close(z2, want, rtol=1e-4, atol=1e-4)


def test_progressive_guides_only_the_first_round(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Round 1 folds the guidance in; later rounds' teachers (earlier students) are not guided again."""
    import mobilediff.train.distill as distill_mod

    seen = []
    real = distill_mod.progressive_target

    def spy(predict, scheduler, z, t, t_mid, n):
        seen.append((n, None if predict.guidance_scale is None else predict.guidance_scale.unique().item()))
        return real(predict, scheduler, z, t, t_mid, n)

    monkeypatch.setattr(distill_mod, "progressive_target", spy)
    distill(_cfg(tiny_pipeline_dir, tmp_path / "run", "progressive", guidance=3.5))
    assert sorted(set(seen), key=lambda x: -x[0]) == [(2, 3.5), (1, None)]


def test_boundary_scalings_equal_lcm_scheduler():
    from diffusers import LCMScheduler

    s = LCMScheduler.from_config(_scheduler().config)
    for t in (0, 19, 259, 999):
        cs, co = boundary_scalings(torch.tensor([t]))
        want = s.get_scalings_for_boundary_condition_discrete(t)
        assert abs(cs.item() - want[0]) < 1e-7 and abs(co.item() - want[1]) < 1e-6


def test_lcm_student_starts_as_the_teacher(tiny_pipeline_dir):
    from diffusers import UNet2DConditionModel

    teacher = UNet2DConditionModel.from_pretrained(str(tiny_pipeline_dir / "unet"))
    student = make_lcm_student(teacher, 256)
    assert student.config.time_cond_proj_dim == 256
    z, ehs = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    t = torch.tensor([999, 19])
    with torch.no_grad():
        want = teacher(z, t, encoder_hidden_states=ehs).sample
        got = student(z, t, encoder_hidden_states=ehs, timestep_cond=torch.randn(2, 256)).sample
    torch.testing.assert_close(got, want)


def test_lcm_warm_start_from_an_earlier_student(tiny_pipeline_dir, tmp_path):
    """--init-student: the new run's first step starts from the earlier student's weights, not the teacher's."""
    from mobilediff.train.distill import load_init_student
    from mobilediff.loading import load_pipeline

    first = distill(_cfg(tiny_pipeline_dir, tmp_path / "a", "lcm", max_train_steps=2, lr=1e-2))[-1]
    teacher = load_pipeline(tiny_pipeline_dir)
    student = make_lcm_student(teacher.unet, 256)
    load_init_student(student, str(first))
    ref = _unet(first)
    for k, v in student.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    assert student.time_embedding.cond_proj.weight.abs().sum() > 0  # trained, no longer the zero init
    second = distill(_cfg(tiny_pipeline_dir, tmp_path / "b", "lcm", max_train_steps=1, init_student=str(first)))[-1]
    info = json.loads((second / "distillation.json").read_text())
    assert info["config"]["init_student"] == str(first)


def test_progressive_rounds():
    assert progressive_rounds(16, 1) == [8, 4, 2, 1]
    assert progressive_rounds(16, 4) == [8, 4]
    for bad in (16, 3, 0, 32):
        with pytest.raises(MobilediffError, match="must be one of 8, 4, 2, 1"):
            progressive_rounds(16, bad)


@pytest.mark.parametrize("method", ["lcm", pytest.param("progressive", marks=pytest.mark.extended)])
def test_two_step_cli_run_writes_students_that_sample(tiny_pipeline_dir, tmp_path, method):
    out = tmp_path / method
    extra = (["--steps", 2, "--ddim-timesteps", 10, "--guidance-range", 3, 4] if method == "lcm"
             else ["--steps", 1, "--teacher-steps", 4])
    code, stdout, stderr = run_cli("distill", "--teacher", tiny_pipeline_dir, "--method", method, "--out", out,
                                   "--max-train-steps", 2, "--batch-size", 4, "--latent-cache", 16, *extra)
    assert code == 0, stderr
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    students = [out / "model"] if method == "lcm" else [out / "steps-2", out / "steps-1"]
    assert stdout.split() == [w for p in students for w in ("student", "written", "to", str(p))]
    for path in students:
        info = json.loads((path / "distillation.json").read_text())
        assert info["method"] == method and info["stats"]["train_steps"] == 2
        assert info["command"].startswith("mobilediff distill")
        pipe = load_pipeline(path)
        smp = info["sampling"]
        if method == "lcm":
            assert pipe.unet.config.time_cond_proj_dim == 256
            assert type(pipe.scheduler).__name__ == "LCMScheduler"
            assert pipe.scheduler.config.original_inference_steps == 10
            assert (info["config"]["guidance_min"], info["config"]["guidance_max"]) == (3.0, 4.0)
            assert json.loads((path / "model_index.json").read_text())["_class_name"] == "LatentConsistencyModelPipeline"
        else:
            assert smp == {"sampler": "ddim", "steps": int(path.name.split("-")[1]), "guidance": 1.0}
            assert pipe.scheduler.config.timestep_spacing == "trailing"
        images = generate(pipe, ["a red circle"], [0], smp["steps"], smp["sampler"], smp["guidance"])
        assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
        # the teacher's tokenizer files travel as they are (for the default model: the CLIP BPE files the apps read)
        assert sorted(p.name for p in (path / "tokenizer").iterdir()) == sorted(
            p.name for p in (tiny_pipeline_dir / "tokenizer").iterdir())
        assert not list(path.rglob("*.bin"))


@pytest.mark.parametrize("method", ["lcm", "progressive", "slim"])
def test_stopped_and_resumed_run_equals_uninterrupted(tiny_pipeline_dir, tmp_path, method, monkeypatch):
    """A NaN at global step 3 stops the run (for progressive: inside its second round) and leaves checkpoint 3
    intact; a checkpoint cut off mid-save (no COMPLETE marker) is never resumed from; the resumed run ends with
    the uninterrupted run's weights."""
    kw = {"lcm": {"max_train_steps": 4}, "progressive": {},
          "slim": {"max_train_steps": 4, "remove": "mid,attention-1"}}[method]
    full = distill(_cfg(tiny_pipeline_dir, tmp_path / "full", method, **kw))[-1]
    cut = tmp_path / "cut"
    with monkeypatch.context() as m, pytest.raises(MobilediffError, match="non-finite loss at step 3"):
        poison_loss_at(m, 3)
        distill(_cfg(tiny_pipeline_dir, cut, method, **kw))
    assert [c.step for c in complete_checkpoints(cut)] == [2, 3]
    assert not (cut / "model").exists() and not (cut / "steps-1").exists()
    # a later checkpoint whose save was cut off: the marker is missing
    partial = cut / "checkpoints" / "checkpoint-0000009"
    shutil.copytree(cut / "checkpoints" / "checkpoint-0000003", partial)
    (partial / "COMPLETE").unlink()
    resumed = distill(_cfg(tiny_pipeline_dir, cut, method, **kw), resume="latest")[-1]
    a, b = _unet(full), _unet(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(MobilediffError, match="incomplete"):
        distill(_cfg(tiny_pipeline_dir, cut, method, **kw), resume=str(partial))


def test_a_checkpoint_of_another_architecture_is_refused_before_any_work(tiny_pipeline_dir, tmp_path, monkeypatch):
    """A slim student's checkpoint given to a progressive run in a new --out: refused from the weights' names and
    shapes before a round trains or --out is made (it used to be refused only after the first round)."""
    import mobilediff.train.distill as distill_module

    slim = tmp_path / "slim"
    distill(_cfg(tiny_pipeline_dir, slim, "slim", max_train_steps=1, remove="mid,attention-1"))
    (ckpt,) = complete_checkpoints(slim)

    def no_work(*args, **kwargs):
        raise AssertionError("training started before the checkpoint was checked")

    monkeypatch.setattr(distill_module, "run_leg", no_work)
    out = tmp_path / "progressive"
    message = (rf"^checkpoint {ckpt.path} does not fit this run \(student: no weight \S+; \d+ missing, 0 unexpected, "
               r"0 of another shape\): a checkpoint of another architecture$")
    with pytest.raises(MobilediffError, match=message):
        distill(_cfg(tiny_pipeline_dir, out, "progressive"), resume=str(ckpt.path))
    assert not out.exists()


def test_bad_input_one_line_nothing_written(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out"
    lcm_student = tmp_path / "student"
    distill(_cfg(tiny_pipeline_dir, tmp_path / "s", "lcm", max_train_steps=1))
    shutil.copytree(tmp_path / "s" / "model", lcm_student)
    pickles = tmp_path / "pickles"
    shutil.copytree(tiny_pipeline_dir, pickles)
    for f in pickles.glob("unet/*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    cases = [
        (["--teacher", tmp_path / "missing", "--method", "lcm", "--steps", 4], f"model directory not found: {tmp_path / 'missing'}"),
        (["--teacher", lcm_student, "--method", "lcm", "--steps", 4], "already takes a guidance embedding"),
        (["--teacher", pickles, "--method", "lcm", "--steps", 4], "holds only pickle weights"),
        (["--teacher", tiny_pipeline_dir, "--method", "progressive", "--steps", 3],
         "--steps must be one of 8, 4, 2, 1, got 3"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 0], "samples at 1..50 steps"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 51], "samples at 1..50 steps"),
        (["--teacher", tiny_pipeline_dir, "--method", "dmd", "--steps", 1], "Invalid value for '--method'"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--ddim-timesteps", 30],
         "--ddim-timesteps must divide 1000, got 30"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--ddim-timesteps", 0],
         "--ddim-timesteps must divide 1000, got 0"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 20, "--ddim-timesteps", 10],
         "samples at 1..10 steps"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--guidance-range", 5, 2],
         "--guidance-range needs 1 <= MIN <= MAX, got 5 2"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--guidance-range", 2, 3],
         "--guidance 3.5 (the student's default) is outside the trained --guidance-range 2 3"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--init-student", tmp_path / "nope"],
         "--init-student: no student pipeline"),
        (["--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--init-student", tiny_pipeline_dir],
         "not an LCM student with time_cond_proj_dim 256"),
        (["--teacher", tiny_pipeline_dir, "--method", "progressive", "--steps", 1, "--init-student", lcm_student],
         "--init-student is for --method lcm"),
        (["--teacher", tiny_pipeline_dir, "--method", "slim", "--steps", 4], "level 0 has no attention to remove"),
        (["--teacher", tiny_pipeline_dir, "--method", "slim", "--steps", 4, "--remove", "blocks"],
         "--remove: unknown block 'blocks'"),
        (["--teacher", tiny_pipeline_dir, "--method", "slim", "--steps", 0, "--remove", "mid"],
         "a slim student samples at 1..1000 DDIM steps, got 0"),
        (["--teacher", lcm_student, "--method", "slim", "--steps", 4, "--remove", "mid"],
         "already takes a guidance embedding"),
        (["--teacher", tiny_pipeline_dir, "--method", "slim", "--steps", 4, "--remove", "mid", "--feature-weight",
          "nan"], "--feature-weight"),
    ]
    for args, msg in cases:
        code, _, stderr = run_cli_here(capsys, "distill", *args, "--out", out)
        lines = error_lines(stderr)
        assert code == 2 and len(lines) == 1 and msg in lines[0], (args, stderr)
        assert not out.exists()
    out.mkdir()
    code, _, stderr = run_cli_here(capsys, "distill", "--teacher", tiny_pipeline_dir, "--method", "lcm", "--steps", 4, "--out", out)
    assert code == 2 and error_lines(stderr) == [
        f"error: output directory {out} already exists (pass --resume latest to continue, or --force)"]
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_packed_student_borrows_unchanged_components(tiny_pipeline_dir, tmp_path):
    """A packed student stores only its UNet (fp16) and scheduler, loads like the full one, and is refused once the
    base's borrowed files change."""
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_pipeline_dir, teacher)
    full = distill(_cfg(teacher, tmp_path / "run", "lcm", max_train_steps=1))[0]
    packed = tmp_path / "packed"
    code, stdout, stderr = run_cli("pack", "--model", full, "--base", teacher, "--out", packed, "--fp16", "unet")
    assert code == 0, stderr
    assert "text_encoder shared" in stdout and "vae shared" in stdout and "unet own, fp16" in stdout
    assert sorted(p.name for p in packed.iterdir() if p.is_dir()) == ["scheduler", "unet"]
    a = generate(load_pipeline(full), ["a red circle"], [0], 2, "lcm", 3.5)
    b = generate(load_pipeline(packed), ["a red circle"], [0], 2, "lcm", 3.5)
    assert (a - b).abs().max() < 2e-2  # fp16 storage of the UNet weights only
    (teacher / "vae" / "config.json").write_text((teacher / "vae" / "config.json").read_text() + " ")
    code, _, stderr = run_cli("generate", "--model", packed, "--prompt", "a red circle", "--steps", 1,
                              "--sampler", "lcm", "--out", tmp_path / "x.png")
    assert code == 2 and len(error_lines(stderr)) == 1 and "whose files changed since" in error_lines(stderr)[0]
    assert not (tmp_path / "x.png").exists()


def test_packed_teacher_is_distilled_from_its_borrowed_vae(tiny_pipeline_dir, tmp_path):
    """A teacher packed against a base (a family member: its own UNet, the rest borrowed) is a teacher like any
    other: its latent cache is encoded with the VAE it borrows."""
    from mobilediff.loading import pack_pipeline

    teacher = tmp_path / "teacher"
    pack_pipeline(tiny_pipeline_dir, tiny_pipeline_dir, teacher, ("unet",))
    assert not (teacher / "vae").exists()
    (student,) = distill(_cfg(teacher, tmp_path / "run", "lcm", max_train_steps=1))
    assert (student / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # the student keeps the tokenizer files the teacher borrows (not a re-serialised copy), so packing it against
    # the same base borrows the tokenizer too instead of storing it again
    base_tok, student_tok = tiny_pipeline_dir / "tokenizer", student / "tokenizer"
    assert sorted(p.name for p in student_tok.iterdir()) == sorted(p.name for p in base_tok.iterdir())
    assert all((student_tok / p.name).read_bytes() == p.read_bytes() for p in base_tok.iterdir())
    report = pack_pipeline(student, tiny_pipeline_dir, tmp_path / "packed-student", ("unet",))
    assert report["tokenizer"] == "shared" and report["vae"] == "shared"


def test_slim_student_is_the_teacher_minus_the_removed_blocks(tiny_pipeline_dir):
    from mobilediff.flops import count_gflop
    from mobilediff.loading import load_pipeline
    from mobilediff.train.slim import parse_removal, slim_config, slim_unet

    teacher = load_pipeline(tiny_pipeline_dir).unet
    student = slim_unet(teacher, parse_removal("mid,attention-1"))
    assert student.mid_block is None
    assert [type(b).__name__ for b in student.down_blocks] == ["DownBlock2D", "DownBlock2D"]
    assert [type(b).__name__ for b in student.up_blocks] == ["UpBlock2D", "UpBlock2D"]
    t, s = teacher.state_dict(), student.state_dict()
    assert set(s) < set(t)
    assert set(t) - set(s) == {k for k in t if k.startswith(("mid_block.", "down_blocks.1.attentions.",
                                                              "up_blocks.0.attentions."))}
    for k in s:  # every kept weight is the teacher's
        torch.testing.assert_close(s[k], t[k], rtol=0, atol=0, msg=k)
    x, ctx = torch.randn(1, 4, 16, 16), torch.randn(1, 77, teacher.config.cross_attention_dim)
    assert student(x, torch.tensor([500]), encoder_hidden_states=ctx).sample.shape == (1, 4, 16, 16)
    args = (x, torch.tensor([500]), ctx)
    assert count_gflop(student, args) < count_gflop(teacher, args)
    for spec, msg in [("", "expected a comma-separated list"), ("mid,", "expected a comma-separated list"),
                      ("attn-0", "unknown block 'attn-0'"), ("mid,mid", "names a block twice")]:
        with pytest.raises(MobilediffError, match=msg):
            parse_removal(spec)
    for spec, msg in [("attention-0", "level 0 has no attention to remove"),
                      ("attention-2", "has resolution levels 0..1")]:
        with pytest.raises(MobilediffError, match=msg):
            slim_config(dict(teacher.config), parse_removal(spec))
    with pytest.raises(MobilediffError, match="has no middle block"):
        slim_config(dict(student.config), ["mid"])


def test_slim_run_from_a_guided_teacher_and_from_a_progressive_student(tiny_pipeline_dir, tmp_path):
    """From the classifier-free-guided teacher the target is guided (and recorded so); from a progressive student
    the target is its own prediction and the student's plan must be the teacher's; the student samples."""
    from mobilediff.loading import load_pipeline
    from mobilediff.sampling import generate

    out = distill(_cfg(tiny_pipeline_dir, tmp_path / "slim", "slim", steps=4, remove="mid,attention-1"))[-1]
    assert out == tmp_path / "slim" / "model"
    info = json.loads((out / "distillation.json").read_text())
    assert info["method"] == "slim" and info["removed"] == ["mid", "attention-1"] and info["target_guidance"] == 3.5
    assert info["sampling"] == {"sampler": "ddim", "steps": 4, "guidance": 1.0}
    pipe = load_pipeline(out)
    assert pipe.unet.mid_block is None and pipe.scheduler.config.timestep_spacing == "trailing"
    teacher = _unet(tiny_pipeline_dir)
    trained = _unet(out)
    assert set(trained) < set(teacher) and any(not torch.equal(trained[k], teacher[k]) for k in trained)
    images = generate(pipe, ["a red circle"], [0], 4, "ddim", 1.0)
    assert images.shape == (1, 3, 32, 32) and torch.isfinite(images).all()
    progressive = distill(_cfg(tiny_pipeline_dir, tmp_path / "p", "progressive", max_train_steps=1))[0]  # steps-2
    out = distill(_cfg(progressive, tmp_path / "slim2", "slim", steps=2, remove="mid"))[-1]
    assert json.loads((out / "distillation.json").read_text())["target_guidance"] is None
    with pytest.raises(MobilediffError, match="a slim student learns a DDIM student at its own step count"):
        distill(_cfg(progressive, tmp_path / "slim3", "slim", steps=4, remove="mid"))
    assert not (tmp_path / "slim3").exists()
