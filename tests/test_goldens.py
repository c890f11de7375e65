"""`mobilediff goldens` on a tiny exported bundle: the recorded vectors are what the bundle really computes."""
import json

import pytest
import torch

from conftest import error_lines, run_cli
from mobilediff.bundle import classifier_free_guidance, read_manifest
from mobilediff.exporter import export_bundle
from mobilediff.goldens import NOISE_SEEDS, TOKENIZER_PROMPTS, write_goldens
from mobilediff.io import load_tensors
from mobilediff.engine import BundleRunner
from mobilediff.sampler_table import run_table
from mobilediff.tiny import tiny_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    pipe = tiny_pipeline(seed=0)
    root = tmp_path_factory.mktemp("goldens")
    bundle = export_bundle(pipe, "onnx", root / "b", source="tiny")
    out = write_goldens(bundle, root / "g")
    return pipe, bundle, json.loads((out / "goldens.json").read_text()), load_tensors(out / "goldens.safetensors")


def test_token_ids_and_noise_are_the_tokenizer_and_torch(recorded):
    pipe, bundle, index, tensors = recorded
    assert [t["prompt"] for t in index["tokenizer"]] == list(TOKENIZER_PROMPTS)
    length = read_manifest(bundle).tokenizer.max_length
    for t in index["tokenizer"]:
        want = pipe.tokenizer([t["prompt"]], padding="max_length", max_length=length, truncation=True).input_ids[0]
        assert t["ids"] == list(want) and len(t["ids"]) == length
    assert [n["seed"] for n in index["noise"]] == list(NOISE_SEEDS)
    for n in index["noise"]:
        assert torch.equal(tensors[n["tensor"]], torch.randn(n["shape"], generator=torch.Generator().manual_seed(n["seed"])))


def test_each_plan_replays_from_its_recorded_denoiser_outputs(recorded):
    """The sampler loop over the manifest's table, fed the recorded UNet outputs, gives every recorded latent: what an
    app's loop is checked against without a runtime."""
    _, bundle, index, tensors = recorded
    m = read_manifest(bundle)
    assert index["plans"][0]["name"] == "default" and (index["plans"][0]["sampler"], index["plans"][0]["steps"]) == (
        m.plan.sampler, m.plan.steps)
    assert {p["sampler"] for p in index["plans"]} == {t.name for t in m.samplers}
    for plan in index["plans"]:
        unet_calls = [c for c in plan["calls"] if c["component"] == "unet"]
        assert len(unet_calls) == plan["steps"] == len(plan["latents"])
        outputs = iter(tensors[c["outputs"]["out_sample"]] for c in unet_calls)

        def denoise(x, t):
            out = next(outputs)
            return classifier_free_guidance(*out.chunk(2), plan["guidance"]) if out.shape[0] == 2 else out

        seen = []
        noise = tensors[f"noise/seed{plan['seed']}"] if plan["seed"] in NOISE_SEEDS else None
        fresh = iter(tensors[k] for k in plan["fresh_noise"])  # LCM's renoising draws, recorded in order
        run_table(m.sampler_table(plan["sampler"], plan["steps"]), denoise, noise, lambda i: next(fresh),
                  lambda i, x: seen.append(x))
        for got, key in zip(seen, plan["latents"]):
            assert torch.allclose(got, tensors[key], atol=1e-6)
        image = BundleRunner(bundle, "onnx").generate(plan["prompt"], plan["seed"], plan["steps"], plan["sampler"],
                                                      plan["guidance"])
        assert torch.equal(image, tensors[plan["decoded"]])
        assert tensors[plan["image"]].dtype == torch.uint8 and tensors[plan["image"]].shape[-1] == 3


def test_recorded_latents_are_diffusers_own_scheduler_steps(recorded):
    """An independent reference for the recorded sampling: diffusers' own scheduler (the class each table was
    measured from, configured as mobilediff.samplers says), stepped with the recorded denoiser outputs from the
    recorded noise, calls the denoiser at the recorded timesteps and inputs and gives every recorded latent. Nothing
    of mobilediff's table code runs here."""
    import diffusers

    from mobilediff.samplers import SAMPLERS

    pipe, _, index, tensors = recorded
    checked = set()
    for plan in index["plans"]:
        # LCM renoises after each step but the last: diffusers draws from the generator the noise came from, so a
        # generator seeded as generate seeds it and advanced past the initial noise replays the recorded draws
        assert bool(plan["fresh_noise"]) == (plan["sampler"] == "lcm")
        g = torch.Generator().manual_seed(plan["seed"])
        torch.randn(tensors[f"noise/seed{plan['seed']}"].shape, generator=g)
        spec = SAMPLERS[plan["sampler"]]
        sched = getattr(diffusers, spec.scheduler_class).from_config(pipe.scheduler.config, **dict(spec.overrides))
        sched.set_timesteps(plan["steps"])
        unet_calls = [c for c in plan["calls"] if c["component"] == "unet"]
        assert len(unet_calls) == len(sched.timesteps) == len(plan["latents"])
        x = tensors[f"noise/seed{plan['seed']}"] * sched.init_noise_sigma
        # float32 holds the initial latent to eps * |x|: at Euler's first sigma (2e4 for this schedule) that is 1e-3,
        # and two float32 evaluations of the same step (the table's and diffusers') may differ by a few of it
        atol = 1e-5 + 4 * torch.finfo(torch.float32).eps * x.abs().max().item()
        for t, call, key in zip(sched.timesteps, unet_calls, plan["latents"]):
            given = tensors[call["inputs"]["sample"]]
            assert torch.allclose(given, sched.scale_model_input(x, t).expand_as(given), atol=atol)
            assert torch.allclose(tensors[call["inputs"]["timestep"]], t.float().expand(given.shape[0]))
            out = tensors[call["outputs"]["out_sample"]]
            out = classifier_free_guidance(*out.chunk(2), plan["guidance"]) if out.shape[0] == 2 else out
            x = sched.step(out, t, x, **({"generator": g} if plan["sampler"] == "lcm" else {})).prev_sample
            assert torch.allclose(x, tensors[key], atol=atol), (plan["name"], int(t), (x - tensors[key]).abs().max())
        checked.add(plan["sampler"])
    assert checked == {"ddim", "dpmpp", "euler", "lcm"}  # a teacher's bundle has LCM tables (LCM-LoRA adapters)


def test_goldens_refuse_an_existing_output_in_one_line(recorded, tmp_path):
    _, bundle, _, _ = recorded
    (tmp_path / "g").mkdir()
    code, _, stderr = run_cli("goldens", "--bundle", bundle, "--out", tmp_path / "g")
    assert code == 2 and error_lines(stderr) == [
        f"error: output directory {tmp_path / 'g'} already exists (pass --force to replace it)"]
