"""Export generalises over the Stable Diffusion family: a matrix of tiny architecture variants, and the refusals.

Every variant is a ``StableDiffusionPipeline`` of diffusers / transformers classes with random weights, built here,
that differs from the embedded default model along the axes the family allows: the tokenizer (vocabulary size,
special ids and where they sit, pad token, maximum length), the text encoder (class, width, depth, heads,
activation, a vocabulary larger than the tokenizer's), the UNet (block types, mid block, levels, layers per block,
transformer layers per block, head sizes as one number or per level, linear or convolutional attention projections,
upcast attention, a guidance-embedding input), the latent space (channels, VAE depth and scaling factor, the
AutoencoderTiny decoder) and the source scheduler (class, prediction type, beta schedule, timestep spacing, number
of training timesteps, sample clipping). Each variant is exported to ONNX, ExecuTorch and Core ML; the bundle must
pass the exporter's own parity floor against PyTorch, and ``generate --bundle``'s runner must reproduce the PyTorch
pipeline's image.

Variants share component objects where an axis does not need a new one (a scheduler or prediction-type variant
reuses the text encoder, UNet and VAE of another). A component with the same module and the same declared inputs
and outputs is exported once per target (:func:`_export_once`); every bundle still validates each file against
PyTorch on its own example inputs, so each variant's parity record is its own.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import error_lines, run_cli
from mobilediff.bundle import read_manifest
from mobilediff.errors import MobilediffError
from mobilediff.parity import MIN_PSNR_DB, psnr

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

PROMPT = "a red circle at the top left"
SEED = 3
STEPS = 2
GUIDANCE = 4.0
GENERATE_MIN_PSNR_DB = 40.0  # bundle runner vs the PyTorch pipeline: the bar of tests/test_export.py


# ---- the components, built once per module ---------------------------------------------------------------------

# tokenizer name -> (maximum length, special tokens first, pad token); "clip" is the real CLIP vocabulary
TOKENIZERS = {
    "clip": None,
    "tiny-pad!": (8, False, "!"),  # SD 2.x's pad token "!" (id 0), specials last
    "tiny-first": (12, True, "<|endoftext|>"),  # <|startoftext|> = 0, <|endoftext|> = 1 = pad
    "tiny-short": (5, False, "<|endoftext|>"),
}
# text encoder name -> (tokenizer, class, CLIPTextConfig fields beyond the tokenizer's)
TEXT_ENCODERS = {
    "te16": ("clip", "CLIPTextModel", dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, hidden_act="quick_gelu")),
    "te24-proj": ("tiny-pad!", "CLIPTextModelWithProjection",
                  dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=3,
                       hidden_act="gelu", projection_dim=8, extra_vocab=21)),
    "te32": ("tiny-first", "CLIPTextModel", dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                                 num_attention_heads=4, hidden_act="gelu_new")),
    "te16-short": ("tiny-short", "CLIPTextModel", dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                                       num_attention_heads=1, hidden_act="quick_gelu")),
}
# UNet name -> UNet2DConditionModel arguments (cross_attention_dim must equal its text encoder's width)
UNETS = {
    "sd15": dict(in_channels=4, block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=4,
                 norm_num_groups=4),
    "sd2": dict(in_channels=4, block_out_channels=(8, 16),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
                attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
                transformer_layers_per_block=(1, 2), norm_num_groups=4),
    "lcm": dict(in_channels=4, block_out_channels=(16,), down_block_types=("CrossAttnDownBlock2D",),
                up_block_types=("CrossAttnUpBlock2D",), mid_block_type=None, cross_attention_dim=32,
                attention_head_dim=8, time_cond_proj_dim=8, norm_num_groups=8),
    "plain-mid": dict(in_channels=8, block_out_channels=(8, 8), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), mid_block_type="UNetMidBlock2D",
                      layers_per_block=2, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=4),
    "deep": dict(in_channels=3, block_out_channels=(8, 8, 8),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                 attention_head_dim=(4, 2, 2), transformer_layers_per_block=2, norm_num_groups=4),
}
# VAE name -> (class, arguments)
VAES = {
    "kl2": ("AutoencoderKL", dict(block_out_channels=(4, 8), latent_channels=4, scaling_factor=0.18215)),
    "kl3": ("AutoencoderKL", dict(block_out_channels=(4, 4, 8), latent_channels=4, scaling_factor=0.13025)),
    "kl1-c8": ("AutoencoderKL", dict(block_out_channels=(8,), latent_channels=8, scaling_factor=1.0)),
    "kl2-c3": ("AutoencoderKL", dict(block_out_channels=(4, 8), latent_channels=3, scaling_factor=0.5,
                                     layers_per_block=2)),
    "tiny": ("AutoencoderTiny", dict(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                     num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)),
}
SD15_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@dataclasses.dataclass(frozen=True)
class Variant:
    text_encoder: str
    unet: str
    vae: str
    scheduler: tuple[str, dict]  # source scheduler class and its config
    sampler: str  # what the bundle is sampled with in the generate check
    axes: str  # what this variant varies (documentation, shown in failures)


VARIANTS = {
    "sd15-pndm": Variant("te16", "sd15", "kl2", ("PNDMScheduler", dict(**SD15_BETAS, skip_prk_steps=True,
                                                                       steps_offset=1, set_alpha_to_one=False)),
                         "ddim", "SD 1.x: CLIP vocabulary, mixed cross-attn/plain blocks, int heads, PNDM, epsilon"),
    "sd15-dpm-v": Variant("te16", "sd15", "kl2", ("DPMSolverMultistepScheduler",
                                                 dict(beta_schedule="linear", prediction_type="v_prediction",
                                                      timestep_spacing="trailing")),
                          "dpmpp", "DPM-Solver source, v_prediction, linear betas, trailing spacing"),
    "sd15-ddim-v": Variant("te16", "sd15", "kl2", ("DDIMScheduler", dict(**SD15_BETAS, prediction_type="v_prediction")),
                           "euler", "DDIM source with its default clip_sample on, v_prediction, leading spacing"),
    "sd15-taesd": Variant("te16", "sd15", "tiny", ("DDIMScheduler", dict(**SD15_BETAS, clip_sample=False)),
                          "ddim", "AutoencoderTiny decoder under a CFG teacher"),
    "sd2-v": Variant("te24-proj", "sd2", "kl3", ("EulerDiscreteScheduler", dict(**SD15_BETAS,
                                                                              prediction_type="v_prediction",
                                                                              timestep_spacing="linspace")),
                     "euler", "SD 2.x: pad '!', CLIPTextModelWithProjection gelu 2 layers, text vocab > tokenizer's, "
                              "linear projections, per-level heads and transformer layers, upcast attention, "
                              "3-level VAE, Euler v_prediction"),
    "sd2-ddim-eps": Variant("te24-proj", "sd2", "kl3", ("DDIMScheduler", dict(beta_schedule="squaredcos_cap_v2",
                                                                             timestep_spacing="trailing",
                                                                             clip_sample=False)),
                            "ddim", "DDIM source, cosine betas, epsilon"),
    "lcm": Variant("te32", "lcm", "tiny", ("LCMScheduler", dict(**SD15_BETAS, original_inference_steps=50)),
                   "lcm", "LCM student: specials first, gelu_new, guidance embedding, one level, no mid block, TAESD"),
    "lcm-ddim-source-v": Variant("te32", "lcm", "tiny", ("DDIMScheduler", dict(**SD15_BETAS,
                                                                              prediction_type="v_prediction")),
                                 "lcm", "LCM student from a DDIM scheduler config (clip_sample on), v_prediction"),
    "plain-mid-c8": Variant("te32", "plain-mid", "kl1-c8", ("DDPMScheduler", dict(prediction_type="sample",
                                                                                 num_train_timesteps=500)),
                            "ddim", "plain mid block, 2 layers per block, 8 latent channels, 1-level VAE, DDPM "
                                    "source (clip_sample on), sample prediction, T = 500"),
    "deep-c3": Variant("te16", "deep", "kl2-c3", ("EulerDiscreteScheduler", dict(**SD15_BETAS)),
                       "dpmpp", "3 UNet levels, per-level heads, 2 transformer layers, 3 latent channels"),
    "short-vocab": Variant("te16-short", "sd15", "kl2", ("PNDMScheduler", dict(**SD15_BETAS, skip_prk_steps=True)),
                           "ddim", "5-token prompts, 579-id vocabulary, one attention head"),
    "tiny-c8-lcm-source": Variant("te32", "plain-mid", "kl1-c8", ("LCMScheduler", dict(prediction_type="sample")),
                                  "euler", "CFG teacher from an LCM scheduler config, sample prediction"),
}
# The fast tier: together these vary every axis at least once (tokenizer, text encoder, UNet, latent space, the three
# prediction types); every other variant, and the other targets of these, are in the extended tier (not in the
# default run, which CI makes: `python -m pytest -m extended`). An export takes seconds per
# component even at these sizes (torch.export, then ONNX translation and optimisation, or XNNPACK lowering).
FAST_ONNX = ("sd2-v", "lcm", "plain-mid-c8")
FAST_EXECUTORCH = ()  # ExecuTorch bundles of real models run in CI through the apps' fixtures
FAST_COREML = ("lcm",)


class Library:
    """Builds each named component once (seeded), so that variants that share a name share the object."""

    def __init__(self, root: Path):
        self.root, self.cache = root, {}

    def _once(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def tokenizer_dir(self, name: str) -> Path:
        from mobilediff.loading import DEFAULT_MODEL_DIR
        from mobilediff.tiny import write_tiny_tokenizer

        if TOKENIZERS[name] is None:
            return DEFAULT_MODEL_DIR / "tokenizer"
        length, first, pad = TOKENIZERS[name]
        return self._once(("tokdir", name), lambda: write_tiny_tokenizer(self.root / f"tok-{name}", length, first, pad))

    def tokenizer(self, name: str):
        from transformers import CLIPTokenizer

        return self._once(("tok", name), lambda: CLIPTokenizer.from_pretrained(str(self.tokenizer_dir(name))))

    def text_encoder(self, name: str):
        import transformers

        from mobilediff.tiny import text_encoder_ids

        def build():
            tok_name, cls, fields = TEXT_ENCODERS[name]
            fields = dict(fields)
            ids = text_encoder_ids(self.tokenizer(tok_name))
            ids["vocab_size"] += fields.pop("extra_vocab", 0)
            torch.manual_seed(11)
            return getattr(transformers, cls)(transformers.CLIPTextConfig(**ids, **fields)).eval()

        return self._once(("te", name), build)

    def unet(self, name: str):
        from diffusers import UNet2DConditionModel

        def build():
            torch.manual_seed(12)
            kw = UNETS[name]
            return UNet2DConditionModel(sample_size=8, out_channels=kw["in_channels"],
                                        **{"layers_per_block": 1, **kw}).eval()

        return self._once(("unet", name), build)

    def vae(self, name: str):
        import diffusers

        def build():
            cls, kw = VAES[name]
            torch.manual_seed(13)
            if cls == "AutoencoderKL":
                n = len(kw["block_out_channels"])
                kw = dict(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                          norm_num_groups=4, **kw)
            return getattr(diffusers, cls)(**kw).eval()

        return self._once(("vae", name), build)

    def pipeline(self, name: str):
        """A fresh pipeline of the variant's (shared) components and a fresh scheduler of its source class."""
        import diffusers
        from diffusers import StableDiffusionPipeline

        v = VARIANTS[name]
        cls, cfg = v.scheduler
        pipe = StableDiffusionPipeline(
            vae=self.vae(v.vae), text_encoder=self.text_encoder(v.text_encoder), unet=self.unet(v.unet),
            tokenizer=self.tokenizer(TEXT_ENCODERS[v.text_encoder][0]), scheduler=getattr(diffusers, cls)(**cfg),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def _spec_key(spec, target: str, precision: str) -> tuple:
    """What determines an exported file: the module object, the declared I/O and dims, the target and precision
    (and the tensors' descriptions, which only a Core ML package carries)."""
    inner = next(getattr(spec.module, a) for a in ("unet", "vae", "text_encoder") if hasattr(spec.module, a))
    io = spec.to_dict()
    if target != "coreml":
        io = {k: [{f: v for f, v in t.items() if f != "description"} for t in io[k]] for k in ("inputs", "outputs")}
    return id(inner), spec.name, json.dumps([io, spec.dims], sort_keys=True), target, precision


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return Library(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="module")
def _export_once(library, tmp_path_factory):
    """Export a component shared by several variants once per target: the targets' ``export`` is wrapped so that a
    second export of the same module with the same declared I/O copies the first file (validation still runs on
    the bundle's own inputs, in mobilediff.exporter.export_component). ``library`` keeps every module alive, so
    object ids stay unique."""
    import mobilediff.exporter as exporter
    from mobilediff.targets import get_target

    store = tmp_path_factory.mktemp("exported")
    files: dict[tuple, tuple[Path, dict]] = {}
    counts = {"exported": 0, "reused": 0}

    class Cached:
        def __init__(self, target: str):
            self.mod, self.target = get_target(target), target

        def __getattr__(self, attr):
            return getattr(self.mod, attr)

        def export(self, spec, path, precision):
            key = _spec_key(spec, self.target, precision)
            if key in files:
                src, facts = files[key]
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, path)
                counts["reused"] += 1
                return dict(facts)
            facts = self.mod.export(spec, path, precision)
            keep = store / f"{len(files)}-{Path(path).name}"
            (shutil.copytree if Path(path).is_dir() else shutil.copy2)(path, keep)
            files[key] = keep, facts
            counts["exported"] += 1
            return facts

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(exporter, "get_target", Cached)
        yield counts


@pytest.fixture(scope="module")
def bundles(library, _export_once, tmp_path_factory):
    """bundles(variant, target) -> the exported bundle folder; each is exported once."""
    from mobilediff.exporter import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    cache = {}

    def get(name: str, target: str) -> Path:
        if (name, target) not in cache:
            cache[name, target] = export_bundle(library.pipeline(name), target, root / f"{name}-{target}", source=name)
        return cache[name, target]

    return get


MATRIX: list[dict] = []  # one row per variant x target checked in this run (see matrix_report)


@pytest.fixture(scope="module", autouse=True)
def matrix_report():
    """With MOBILEDIFF_MATRIX_REPORT=FILE set, the rows checked in this run (variant, target, lowest component PSNR,
    generate PSNR) are written to FILE as JSON at the end: the numbers behind "exported / total per target, lowest
    parity" (``MOBILEDIFF_MATRIX_REPORT=m.json python -m pytest -m "extended or not extended"
    tests/test_architectures.py`` for the whole matrix)."""
    import os

    yield
    path = os.environ.get("MOBILEDIFF_MATRIX_REPORT")
    if path:
        Path(path).write_text(json.dumps({"variants": len(VARIANTS), "rows": MATRIX}, indent=1) + "\n")


def _variants(fast: tuple[str, ...] | None = None):
    """All variants as parameters; with ``fast``, the ones not in it are marked extended (and slow)."""
    return [pytest.param(n, marks=() if fast is None or n in fast else (pytest.mark.slow, pytest.mark.extended))
            for n in VARIANTS]


def _check_manifest(pipe, bundle: Path, target: str) -> None:
    """The manifest describes the model from its own configs and tokenizer, and every graph passed parity."""
    m = read_manifest(bundle)
    tok, geo = pipe.tokenizer, m.geometry
    assert (m.tokenizer.bos_id, m.tokenizer.eos_id, m.tokenizer.pad_id, m.tokenizer.max_length) == \
        (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.model_max_length)
    assert {"tokenizer/vocab.json", "tokenizer/merges.txt"} <= set(m.tokenizer.files)
    assert geo.latent_channels == pipe.unet.config.in_channels == pipe.vae.config.latent_channels
    assert geo.scaling_factor == pytest.approx(pipe.vae.config.scaling_factor)
    assert geo.vae_scale_factor == pipe.vae_scale_factor and geo.height == pipe.unet.config.sample_size * geo.vae_scale_factor
    assert m.prediction_type == pipe.scheduler.config.prediction_type
    assert m.component("text_encoder").inputs[0].shape == ["batch", tok.model_max_length]
    assert m.component("unet").inputs[2].shape == ["batch", tok.model_max_length, pipe.text_encoder.config.hidden_size]
    assert m.guidance.type == ("embedding" if pipe.unet.config.time_cond_proj_dim else "classifier_free")
    for name, comp in m.components.items():
        # an ONNX graph comes with its ORT-format form (ONNX Runtime's mobile format), checked the same way
        assert [f.target for f in comp.files] == ([target, "ort"] if target == "onnx" else [target]), name
        for f in comp.files:
            assert (bundle / f.path).exists(), name
            if target != "coreml":
                assert f.parity["psnr_db"] >= MIN_PSNR_DB["fp32"], (name, f.target, f.parity)
    MATRIX.append({"variant": bundle.name.rsplit("-", 1)[0], "target": target,
                   "min_component_psnr_db": None if target == "coreml" else
                   min(c.files[0].parity["psnr_db"] for c in m.components.values())})


def _check_generate(library, name: str, bundle: Path, runtime: str) -> float:
    """``generate --bundle``'s runner against the PyTorch pipeline with the same sampler, steps, guidance, seed."""
    from mobilediff.engine import BundleRunner
    from mobilediff.sampling import generate

    v = VARIANTS[name]
    got = BundleRunner(bundle, runtime).generate(PROMPT, SEED, STEPS, v.sampler, GUIDANCE)
    ref = generate(library.pipeline(name), [PROMPT], [SEED], STEPS, v.sampler, GUIDANCE)
    assert got.shape == ref.shape
    db = psnr(got, ref)
    assert db >= GENERATE_MIN_PSNR_DB, f"{name} ({v.axes}): {runtime} bundle vs PyTorch {db:.1f} dB"
    MATRIX[-1]["generate_psnr_db"] = db
    return db


# ---- the matrix ------------------------------------------------------------------------------------------------


def test_the_matrix_varies_every_axis():
    """Each axis of the family takes more than one value across the variants (the matrix stays a matrix)."""
    unets = {v.unet for v in VARIANTS.values()}
    values = {
        "tokenizer": {TEXT_ENCODERS[v.text_encoder][0] for v in VARIANTS.values()},
        "text encoder class": {TEXT_ENCODERS[v.text_encoder][1] for v in VARIANTS.values()},
        "activation": {TEXT_ENCODERS[v.text_encoder][2]["hidden_act"] for v in VARIANTS.values()},
        "text depth": {TEXT_ENCODERS[v.text_encoder][2]["num_hidden_layers"] for v in VARIANTS.values()},
        "text width": {TEXT_ENCODERS[v.text_encoder][2]["hidden_size"] for v in VARIANTS.values()},
        "mid block": {UNETS[u].get("mid_block_type", "UNetMidBlock2DCrossAttn") for u in unets},
        "levels": {len(UNETS[u]["block_out_channels"]) for u in unets},
        "layers per block": {UNETS[u].get("layers_per_block", 1) for u in unets},
        "transformer layers": {str(UNETS[u].get("transformer_layers_per_block", 1)) for u in unets},
        "head dims": {type(UNETS[u]["attention_head_dim"]).__name__ for u in unets},
        "linear projection": {UNETS[u].get("use_linear_projection", False) for u in unets},
        "guidance embedding": {bool(UNETS[u].get("time_cond_proj_dim")) for u in unets},
        "latent channels": {VAES[v.vae][1]["latent_channels"] for v in VARIANTS.values()},
        "vae class": {VAES[v.vae][0] for v in VARIANTS.values()},
        "vae depth": {len(VAES[v.vae][1].get("block_out_channels", ())) for v in VARIANTS.values()},
        "scaling factor": {VAES[v.vae][1].get("scaling_factor", 1.0) for v in VARIANTS.values()},
        "scheduler class": {v.scheduler[0] for v in VARIANTS.values()},
        "prediction type": {v.scheduler[1].get("prediction_type", "epsilon") for v in VARIANTS.values()},
        "sampler": {v.sampler for v in VARIANTS.values()},
    }
    assert len(VARIANTS) >= 12
    assert {k: len(s) for k, s in values.items() if len(s) < 2} == {}
    assert values["prediction type"] == {"epsilon", "v_prediction", "sample"}
    assert {"DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler",
            "LCMScheduler"} <= values["scheduler class"]


@pytest.mark.parametrize("name", _variants(FAST_ONNX))
def test_onnx_bundle_matches_pytorch(library, bundles, name):
    pipe = library.pipeline(name)
    bundle = bundles(name, "onnx")
    _check_manifest(pipe, bundle, "onnx")
    _check_generate(library, name, bundle, "onnx")


@pytest.mark.parametrize("name", _variants(FAST_EXECUTORCH))
def test_executorch_bundle_matches_pytorch(library, bundles, name):
    pipe = library.pipeline(name)
    bundle = bundles(name, "executorch")
    _check_manifest(pipe, bundle, "executorch")
    m = read_manifest(bundle)
    assert all(c.files[0].export["delegated_nodes"] > 0 for c in m.components.values())  # XNNPACK took part
    _check_generate(library, name, bundle, "executorch")


@pytest.mark.filterwarnings("ignore:Function _TORCH_OPS_REGISTRY:DeprecationWarning")
@pytest.mark.parametrize("name", _variants(FAST_COREML))
def test_coreml_bundle_is_structurally_valid(library, bundles, name):
    """Core ML converts here but predicts only on macOS: the exporter checked each package's declared I/O, spec
    version and compute precision (mobilediff.targets.coreml.validate); on macOS it also checked the numbers."""
    pipe = library.pipeline(name)
    bundle = bundles(name, "coreml")
    _check_manifest(pipe, bundle, "coreml")
    for comp in read_manifest(bundle).components.values():
        f = comp.files[0]
        assert f.export["spec_version"] == 8 and f.export["ops"] > 0
        assert f.parity["inputs"] == [i.name for i in comp.inputs] and f.parity["fp16_ops"] == 0


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
                                       "DPMSolverMultistepScheduler", "LCMScheduler", "DDPMScheduler",
                                       "EulerAncestralDiscreteScheduler", "UniPCMultistepScheduler",
                                       "LMSDiscreteScheduler", "DPMSolverSinglestepScheduler"])
def test_sampler_tables_read_the_source_scheduler_config(scheduler):
    """Every supported source scheduler class gives its betas, prediction type, spacing and T to every sampler: the
    tables equal those from a DDIM config with the same values, whatever the source class. (A class without a
    timestep_spacing option, DPMSolverSinglestepScheduler, leaves each sampler at its own default spacing.)"""
    import inspect

    import diffusers

    from mobilediff.family import CLASSES
    from mobilediff.sampler_table import sampler_table
    from mobilediff.samplers import SAMPLERS, make_scheduler

    assert scheduler in CLASSES["scheduler"]
    for prediction_type in ("epsilon", "v_prediction", "sample"):
        cfg = dict(**SD15_BETAS, prediction_type=prediction_type, timestep_spacing="trailing", num_train_timesteps=700)
        cls = getattr(diffusers, scheduler)
        if "timestep_spacing" not in inspect.signature(cls.__init__).parameters:
            cfg.pop("timestep_spacing")
        source = cls(**cfg).config
        reference = diffusers.DDIMScheduler(**cfg).config
        if "timestep_spacing" not in cfg:
            reference = {k: v for k, v in reference.items() if k != "timestep_spacing"}
        for sampler in SAMPLERS:
            got, want = (sampler_table(make_scheduler(sampler, c), 3) for c in (source, reference))
            assert got.timesteps == want.timesteps
            assert got.timesteps[0] == 699 or "timestep_spacing" not in cfg  # trailing spacing over T = 700
            for field in ("output_coef", "latent_coef"):
                a, b = (torch.tensor([c for row in getattr(t, field) for c in row]) for t in (got, want))
                assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-6), (sampler, prediction_type, field)


def test_prediction_type_reaches_the_tables(bundles):
    """The same components under epsilon and v_prediction sources: the manifest records each, and the sampler
    coefficients (the only place an app meets the prediction type) differ."""
    eps, v = (read_manifest(bundles(n, "onnx")) for n in ("sd2-ddim-eps", "sd2-v"))
    assert (eps.prediction_type, v.prediction_type) == ("epsilon", "v_prediction")
    assert eps.sampler_table("ddim", 4).output_coef != v.sampler_table("ddim", 4).output_coef


# ---- outside the family: refused in one line before anything is written ----------------------------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def pipeline_copy(tiny_pipeline_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, dst)
    return dst


REFUSED_FOLDERS = [
    ("model_index.json", {"unet": ["diffusers", "UNet3DConditionModel"]},
     "unsupported unet class UNet3DConditionModel: mobilediff supports UNet2DConditionModel"),
    ("unet/config.json", {"addition_embed_type": "text_time", "addition_time_embed_dim": 256},
     "unsupported unet config addition_embed_type='text_time': mobilediff supports addition_embed_type=None "
     "(Stable Diffusion's conditioning: text only)"),
    ("unet/config.json", {"class_embed_type": "timestep"},
     "unsupported unet config class_embed_type='timestep': mobilediff supports class_embed_type=None "
     "(Stable Diffusion's conditioning: text only)"),
    ("unet/config.json", {"down_block_types": ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D"]},
     "unsupported unet down_block SimpleCrossAttnDownBlock2D: mobilediff supports CrossAttnDownBlock2D, DownBlock2D"),
    ("unet/config.json", {"in_channels": 8},
     "unsupported unet in_channels 8 with out_channels 4: mobilediff supports in_channels = out_channels (a denoiser of "
     "the latent) or 2 x out_channels + 1 (an inpainting UNet: the latent, the mask and the masked image's latent)"),
    ("unet/config.json", {"time_embedding_type": "learned"},
     "unsupported unet config time_embedding_type='learned': mobilediff supports positional, fourier"),
    ("unet/config.json", {"time_embedding_type": "fourier", "time_embedding_dim": 33},
     "unsupported unet config time_embedding_dim=33 with time_embedding_type='fourier': mobilediff supports an even "
     "Fourier time embedding width (sines and cosines in pairs)"),
    ("model_index.json", {"vae": ["diffusers", "VQModel"]},
     "unsupported vae class VQModel: mobilediff supports AutoencoderKL, AutoencoderTiny"),
    ("vae/config.json", {"shift_factor": 0.0609},
     "unsupported vae config shift_factor=0.0609: mobilediff supports shift_factor 0 or None (StableDiffusionPipeline "
     "decodes latent / scaling_factor, unshifted)"),
    ("model_index.json", {"text_encoder": ["transformers", "T5EncoderModel"]},
     "unsupported text_encoder class T5EncoderModel: mobilediff supports CLIPTextModel, CLIPTextModelWithProjection"),
    ("model_index.json", {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]},
     "unsupported scheduler class FlowMatchEulerDiscreteScheduler: mobilediff supports DDIMScheduler, DDPMScheduler, "
     "PNDMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, "
     "DPMSolverSinglestepScheduler, LMSDiscreteScheduler, UniPCMultistepScheduler, LCMScheduler"),
    ("scheduler/scheduler_config.json", {"prediction_type": "flow_prediction"},
     "unsupported scheduler config prediction_type='flow_prediction': mobilediff supports epsilon, v_prediction, "
     "sample"),
    ("scheduler/scheduler_config.json", {"thresholding": True},
     "unsupported scheduler config thresholding=True: mobilediff supports thresholding=False (sampler steps must be "
     "linear)"),
]


@pytest.mark.parametrize("file,changes,message", REFUSED_FOLDERS,
                         ids=[f"{f.split('/')[0]}-{next(iter(c))}" for f, c, _ in REFUSED_FOLDERS])
def test_folder_outside_the_family_is_refused_before_weights_are_read(pipeline_copy, file, changes, message,
                                                                       monkeypatch):
    import diffusers

    from mobilediff.loading import load_pipeline

    _edit_json(pipeline_copy / file, **changes)

    def no_loading(*a, **k):
        raise AssertionError("weights were read before the architecture was checked")

    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", no_loading)
    with pytest.raises(MobilediffError) as err:
        load_pipeline(pipeline_copy)
    assert str(err.value) == message


def test_cli_export_refuses_sdxl_conditioning_in_one_line(pipeline_copy, tmp_path):
    _edit_json(pipeline_copy / "unet" / "config.json", addition_embed_type="text_time", addition_time_embed_dim=256)
    out = tmp_path / "bundle"
    code, _, stderr = run_cli("export", "--model", pipeline_copy, "--target", "onnx", "--out", out)
    assert code == 2 and error_lines(stderr) == [
        "error: unsupported unet config addition_embed_type='text_time': mobilediff supports addition_embed_type=None "
        "(Stable Diffusion's conditioning: text only)"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_fourier_time_embedding_is_in_the_family_and_exports_with_parity(pipeline_copy, tmp_path):
    """UNet2DConditionModel's Gaussian Fourier time embedding (``time_embedding_type="fourier"``: sin and cos of the
    raw timestep times fixed random frequencies, a function of the timestep alone): a folder with it loads, and its
    UNet exports to ONNX at the fp32 floor."""
    from diffusers import UNet2DConditionModel

    from mobilediff.components import declare, latent_geometry
    from mobilediff.exporter import export_component
    from mobilediff.loading import load_pipeline

    config = json.loads((pipeline_copy / "unet" / "config.json").read_text())
    torch.manual_seed(0)
    fourier = dict(time_embedding_type="fourier", flip_sin_to_cos=True, time_embedding_dim=32)
    UNet2DConditionModel(**{**{k: v for k, v in config.items() if not k.startswith("_")}, **fourier}).save_pretrained(
        pipeline_copy / "unet")
    pipe = load_pipeline(pipeline_copy)  # the family check reads the folder's config first
    assert pipe.unet.config.time_embedding_type == "fourier"
    entry = export_component(declare(pipe, latent_geometry(pipe))["unet"], "onnx", "fp32", tmp_path / "bundle")
    assert entry["parity"]["psnr_db"] >= MIN_PSNR_DB["fp32"], entry["parity"]


def _with(library, **components):
    pipe = library.pipeline("sd15-pndm")
    for name, value in components.items():
        setattr(pipe, name, value)
    return pipe


def _unet3d(library):
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 8),
                                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4, layers_per_block=1)


def _sdxl_unet(library):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16), cross_attention_dim=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4,
                                norm_num_groups=4, layers_per_block=1, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 16)


def _class_unet(library):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16), cross_attention_dim=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4,
                                norm_num_groups=4, layers_per_block=1, num_class_embeds=10)


def _big_vocab_tokenizer(library):
    return library.tokenizer("clip")  # 49,408 ids for a text encoder that embeds 579


def _t5(library):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=16, num_layers=1, num_heads=2))


REFUSED_PIPELINES = [
    ("unet", _unet3d, "unsupported unet class UNet3DConditionModel: mobilediff supports UNet2DConditionModel"),
    ("unet", _sdxl_unet, "unsupported unet config addition_embed_type='text_time'"),
    ("unet", _class_unet, "unsupported unet config num_class_embeds=10"),
    ("text_encoder", _t5, "unsupported text_encoder class T5EncoderModel"),
    ("tokenizer", _big_vocab_tokenizer, "unsupported tokenizer vocabulary of 49408 ids > text encoder vocab_size"),
]


@pytest.mark.parametrize("component,build,message", REFUSED_PIPELINES,
                         ids=["unet3d", "sdxl-added-conditions", "class-embeddings", "t5", "tokenizer-vocab"])
def test_pipeline_outside_the_family_is_refused_before_anything_is_written(library, tmp_path, component, build,
                                                                          message):
    from mobilediff.exporter import export_bundle

    pipe = _with(library, **{component: build(library)})
    if component == "tokenizer":
        pipe.text_encoder = library.text_encoder("te16-short")
    with pytest.raises(MobilediffError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as err:
        export_bundle(pipe, "onnx,executorch", tmp_path / "b")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())
