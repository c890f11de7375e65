"""The `mobilediff` command line. Every command validates its arguments before work starts; a
MobilediffError becomes one line on stderr and exit code 2."""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import replace
import sys
from pathlib import Path

import click

from mobilediff.attention import DEFAULT_BUDGET_MIB as DEFAULT_ATTENTION_BUDGET
from mobilediff.errors import MobilediffError, shorten
from mobilediff.samplers import SAMPLERS
from mobilediff.sources.files import FITS
from mobilediff.targets import FUSED_TARGETS, HOST_RUNTIMES, TARGETS


SEED = click.IntRange(min=0, max=2**63 - 1)  # what torch.Generator.manual_seed takes


class Finite(click.FloatRange):
    """A float option that must be finite (click's FloatRange lets nan through every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


DATA_FIELDS = ("prompts", "images", "wds", "synthesize", "strict", "fit", "background", "validation_fraction",
               "cache_dir")


def data_options(*, images: bool = True, synthesize: bool = False):
    """The data options every data-consuming command takes (mobilediff.sources.DataOptions), plus --dry-run."""
    opts = [click.option("--prompts", type=click.Path(path_type=Path), default=None,
                         help="Your prompts: .txt (one a line), .jsonl or .csv with a 'text' field.")]
    if images:
        opts += [click.option("--images", type=click.Path(path_type=Path), default=None,
                              help="Your captioned images: an imagefolder (metadata.jsonl with file_name and text) or "
                                   "images with a sidecar <image>.txt caption each."),
                 click.option("--wds", default=None,
                              help="Your captioned images as webdataset shards, e.g. 'shards-{000..009}.tar' "
                                   "(jpg|png|webp + txt|caption|json per example)."),
                 click.option("--fit", type=click.Choice(FITS), default="crop", show_default=True,
                              help="How an image reaches the model's size: shorter side scaled and centre cropped, "
                                   "padded with --background, or stretched."),
                 click.option("--background", default="white", show_default=True,
                              help="What transparent pixels are composited on: white, black, gray or #rrggbb."),
                 click.option("--validation-fraction", type=Finite(min=0, max=1, max_open=True), default=0.05,
                              show_default=True, help="Share of the images held out (a fixed split by a hash of "
                                                      "each file's name; never trained on).")]
    if synthesize:
        opts.append(click.option("--synthesize", type=click.IntRange(min=0), default=0, show_default=True,
                                 help="With --prompts only: the teacher renders this many latents from them (its "
                                      "own plan) for methods that need images."))
    opts += [click.option("--strict", is_flag=True, help="Refuse the data at the first unusable item (default: skip "
                                                         "and count it)."),
             click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                          help="Where decoded images are cached between runs (default: $MOBILEDIFF_CACHE or "
                               "~/.cache/mobilediff)."),
             click.option("--dry-run", is_flag=True, help="Report the data (counts, sizes, caption lengths, "
                                                          "skips) and stop before any training.")]

    def deco(f):
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


def pop_data_options(kwargs: dict):
    """(DataOptions, dry_run) taken out of a command's keyword arguments."""
    from mobilediff.sources import DataOptions

    fields = {k: kwargs.pop(k) for k in DATA_FIELDS if k in kwargs}
    options = DataOptions(**{k: v for k, v in fields.items() if v is not None or k in ("prompts", "images", "wds")})
    options.validate()
    return options, kwargs.pop("dry_run", False)


def _print_data_report(source, model: str) -> None:
    """--dry-run of a command that reads a model: the data as that model's tokenizer and resolution would see it."""
    if not source.given:
        click.echo("data: the shapes domain (procedural, unlimited)")
        return
    from mobilediff.loading import load_pipeline
    from mobilediff.sources import load_images, load_prompts

    pipe = load_pipeline(model)
    if source.has_images:
        from mobilediff.components import image_size

        images = load_images(source, image_size(pipe), pipe.tokenizer)
        click.echo(images.report.text())
    else:
        from mobilediff.sources import DataReport, caption_report

        prompts = load_prompts(source)
        report = DataReport(source=f"--prompts {source.prompts}", examples=len(prompts), train=len(prompts))
        caption_report(report, prompts, pipe.tokenizer)
        click.echo(report.text())


def _refuse_conflicts(*rules: tuple[str, str, str, str]) -> None:
    """Options that contradict each other, or one that does nothing without another, refused in one line before any
    work. A rule is ("conflicts", a, b, why) or ("needs", a, b, why) over parameter names; an option counts as given
    when it is on the command line (or in the environment), not when it holds its default. A name may carry a value,
    "name=value": that option counts as given only with that value (:data:`LATEST_WITH_FORCE`)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    flags = {p.name: p.opts[0] for p in ctx.command.params}

    def given(option: str) -> bool:
        name, _, value = option.partition("=")
        if ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            return False
        return not value or str(ctx.params[name]) == value

    def flag(option: str) -> str:
        name, _, value = option.partition("=")
        return f"{flags[name]} {value}" if value else flags[name]

    for kind, a, b, why in rules:
        if kind == "conflicts" and given(a) and given(b):
            raise MobilediffError(f"{flag(a)} and {flag(b)} conflict: {why}")
        if kind == "needs" and given(a) and not given(b):
            raise MobilediffError(f"{flag(a)} needs {flag(b)}: {why}")


# the training commands' --resume latest continues OUT in place; another --resume starts a new run in OUT
LATEST_WITH_FORCE = ("conflicts", "resume=latest", "force", "--force deletes OUT, --resume latest continues it")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """mobilediff: distil, quantize, export and benchmark small latent diffusion models for phones."""


# commands that import none of the libraries quiet_libraries silences: they answer in well under a second
LIBRARY_FREE = frozenset({"recommend"})


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input of any kind becomes one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not {"-h", "--help"} & set(args) and not (args and args[0] in LIBRARY_FREE):
        # silencing the libraries imports diffusers and torch (seconds): help, and commands that never load them,
        # run without them
        from mobilediff.quiet import quiet_libraries

        quiet_libraries()
    try:
        cli.main(args=argv, prog_name="mobilediff", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code or 2)
    except MobilediffError as e:
        # under `accelerate launch` every process refuses the same input: the main process says so once (a process
        # that fails alone is named by the launcher, with its exit code)
        if os.environ.get("RANK", "0") == "0":
            click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # a path the user gave: missing, unwritable, a file where a folder belongs, a full disk
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        sys.exit(2)


def _source_folder(flag: str, value: str | None) -> Path | None:
    """A folder a training run reads weights from: a named model ('default', mobilediff.loading.NAMED_MODELS) or a
    path; refused in one line when it is not a folder."""
    if value is None:
        return None
    from mobilediff.loading import resolve_model

    if not resolve_model(value).is_dir():
        raise MobilediffError(f"{flag} {value}: no such folder or named model")
    return Path(value)  # kept as given (a name stays a name in the run's records); the run resolves it


@cli.command("train-base")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; the pipeline lands in OUT/model. It is made where nothing is (an existing one only with --resume or --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--vae-steps", type=click.IntRange(min=1), default=1600, show_default=True, help="Optimizer steps of the VAE stage.")
@click.option("--unet-steps", type=click.IntRange(min=1), default=1600, show_default=True, help="Optimizer steps of the text-encoder + UNet stage.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Global batch of the denoiser stage.")
@click.option("--vae-batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch of the VAE stage.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=6e-4, show_default=True, help="Peak learning rate of the denoiser stage.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=200, show_default=True, help="Save a checkpoint every K steps.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of data order, noise and initialisation.")
@click.option("--mixed-precision", type=click.Choice(["bf16", "fp32"]), default="fp32", show_default=True, help="Autocast precision of the forward pass.")
@click.option("--text-aux-weight", type=Finite(min=0), default=0.5, show_default=True, help="Weight of the auxiliary caption-parsing loss on the text encoder (0 disables it).")
@click.option("--min-snr-gamma", type=Finite(min=0), default=0.0, show_default=True, help="Min-SNR-gamma loss weighting (0: plain v-prediction loss).")
@click.option("--object-weight", type=Finite(min=0), default=4.0, show_default=True, help="Extra denoiser-loss weight on latent pixels covered by shapes.")
@click.option("--small-object-weight", type=Finite(min=0), default=0.0, show_default=True, help="Further denoiser-loss weight on latent pixels covered by small shapes.")
@click.option("--timestep-bias-range", type=(click.IntRange(min=0), click.IntRange(min=1)), default=(0, 1000), show_default=True, help="Timesteps [BEGIN, END) drawn --timestep-bias-multiplier times as often as the rest.")
@click.option("--timestep-bias-multiplier", type=Finite(min=0, min_open=True), default=1.0, show_default=True, help="Sampling weight of --timestep-bias-range against the other timesteps (1: uniform).")
@click.option("--freeze-text-encoder", is_flag=True, help="Train the UNet alone; the text encoder stays bit-identical to the one loaded (students that borrow it stay valid).")
@click.option("--latent-cache", type=click.IntRange(min=0), default=32768, show_default=True, help="Encode this many samples once and draw batches from them (0: fresh samples every step).")
@click.option("--init-from", default=None, help="Start the denoiser stage from this checkpoint or pipeline folder's (or named model's) weights (fresh optimizer and schedule); attention blocks the source lacks start as the identity.")
@click.option("--text-encoder-from", default=None, help="Start the text encoder (only) from this pipeline folder or named model ('default': the embedded default model's); pair with --freeze-text-encoder.")
@click.option("--vae-from", default=None, help="Use this pipeline folder's or named model's VAE ('default': the embedded default model's) instead of training one.")
@click.option("--unet-channels", default=None, help="UNet block_out_channels, comma-separated (default 32,64,64; with --tiny 16,32): the model size of a family member.")
@click.option("--unet-layers", type=click.IntRange(min=1), default=None, help="UNet layers_per_block (default 1; with --tiny too).")
@click.option("--tiny", is_flag=True, help="Tiny components and 32x32 images (for smoke tests only).")
@click.option("--backbone", type=click.Choice(["unet", "dit"]), default="unet", show_default=True, help="The denoiser: the family's UNet, or a PixArt-style diffusion transformer sized by default to the default UNet's FLOPs per call (written as a PixArtAlphaPipeline with this run's CLIP text encoder).")
@click.option("--dit-width", type=click.IntRange(min=1), default=None, help="Transformer width with --backbone dit (default 128; a multiple of the heads).")
@click.option("--dit-layers", type=click.IntRange(min=1), default=None, help="Transformer blocks with --backbone dit (default 6).")
@click.option("--dit-heads", type=click.IntRange(min=1), default=None, help="Attention heads with --backbone dit (default 4).")
@click.option("--objective", type=click.Choice(["v", "flow"]), default="v", show_default=True, help="v: v-prediction on the cosine noise schedule (the family's). flow: flow matching (rectified flow: the straight path from latent to noise, the velocity as target, as SD3 and SANA), with --backbone dit; the pipeline samples with the flow samplers (euler / ddim, dpmpp, lcm: the consistency sampler).")
@click.option("--flow-shift", type=Finite(min=0, min_open=True), default=None, help="With --objective flow: the sampling schedule's shift towards high noise, sigma' = shift sigma / (1 + (shift - 1) sigma) (default 1: none; SD3 uses 3 at 1024 px).")
@data_options()
@click.option("--resume", default=None, help="'latest' (each stage from its newest complete checkpoint in OUT), or a checkpoint folder of either stage (OUT/vae_run/checkpoints/checkpoint-N, OUT/unet_run/...): one of OUT's continues in place; another run's continues in OUT as a new run folder (OUT must not exist, or pass --force), a denoiser-stage one with the VAE of its run folder (or --vae-from). Must match: the architecture (model sizes, --tiny, --unet-channels/--unet-layers) and the stage's steps at least the checkpoint's (--vae-steps/--unet-steps); may differ: batch sizes, learning rate, loss weights, seed, data, checkpoint cadence (the run continues with them; the same ones reproduce an uninterrupted run). Anything else is refused before OUT is written.")
@click.option("--force", is_flag=True, help="Delete an existing OUT first.")
def train_base_cmd(out, vae_steps, unet_steps, batch_size, vae_batch_size, lr, checkpoint_every, seed, mixed_precision,
                   text_aux_weight, min_snr_gamma, object_weight, small_object_weight, timestep_bias_range, timestep_bias_multiplier,
                   freeze_text_encoder, latent_cache, init_from, text_encoder_from, vae_from, unet_channels, unet_layers,
                   tiny, backbone, dit_width, dit_layers, dit_heads, objective, flow_shift, resume, force, **data):
    """Train a model of the default family's architecture (VAE, text encoder, UNet): on the shapes domain, or on your
    captioned images (--images / --wds; object weights and the caption-parsing loss apply to the shapes domain only)."""
    _refuse_conflicts(LATEST_WITH_FORCE,
                      ("conflicts", "vae_from", "vae_steps", "the VAE is taken, not trained"),
                      ("conflicts", "vae_from", "vae_batch_size", "the VAE is taken, not trained"),
                      ("conflicts", "init_from", "resume", "a resumed run continues from its checkpoint's weights"),
                      ("needs", "dit_width", "backbone=dit", "it sizes the diffusion transformer"),
                      ("needs", "dit_layers", "backbone=dit", "it sizes the diffusion transformer"),
                      ("needs", "dit_heads", "backbone=dit", "it sizes the diffusion transformer"),
                      ("conflicts", "unet_channels", "backbone=dit", "the diffusion transformer has no UNet"),
                      ("conflicts", "unet_layers", "backbone=dit", "the diffusion transformer has no UNet"),
                      ("needs", "objective=flow", "backbone=dit", "flow matching is trained on the diffusion "
                                                                   "transformer (a PixArt pipeline)"),
                      ("needs", "flow_shift", "objective=flow", "it shifts the flow-matching schedule"),
                      ("conflicts", "min_snr_gamma", "objective=flow", "min-SNR weighting is for the v-prediction "
                                                                       "loss; the flow loss is unweighted"))
    from mobilediff.io import check_output
    from mobilediff.sources import check_needs
    from mobilediff.train.base import TrainBaseConfig, train_base
    from mobilediff.train.loop import main_process

    init_from, text_encoder_from, vae_from = (_source_folder(flag, value) for flag, value in (
        ("--init-from", init_from), ("--text-encoder-from", text_encoder_from), ("--vae-from", vae_from)))
    source, dry_run = pop_data_options(data)
    if source.given:
        check_needs(source, "train-base")
    if not dry_run:
        check_output(out, folder=True)

    cfg = TrainBaseConfig(out=out, vae_steps=vae_steps, unet_steps=unet_steps, batch_size=batch_size,
                          vae_batch_size=vae_batch_size, lr=lr, checkpoint_every=checkpoint_every, seed=seed,
                          mixed_precision=mixed_precision, text_aux_weight=text_aux_weight, init_from=init_from,
                          min_snr_gamma=min_snr_gamma, object_weight=object_weight,
                          small_object_weight=small_object_weight, timestep_bias_range=tuple(timestep_bias_range),
                          timestep_bias_multiplier=timestep_bias_multiplier, freeze_text_encoder=freeze_text_encoder,
                          latent_cache=latent_cache, text_encoder_from=text_encoder_from, vae_from=vae_from,
                          source=source, dry_run=dry_run)
    if tiny:
        from mobilediff.tiny import tiny_train_config

        cfg = tiny_train_config(cfg)
    if unet_channels is not None or unet_layers is not None:  # after --tiny: the sizes apply to its UNet too
        from mobilediff.models import sized_unet

        cfg.model = replace(cfg.model, unet=sized_unet(cfg.model.unet, unet_channels, unet_layers))
    if backbone == "dit":
        from mobilediff.models import sized_dit

        cfg.model = replace(cfg.model, backbone="dit", dit=sized_dit(cfg.model.dit, dit_width, dit_layers, dit_heads,
                                                                    cfg.model.text_encoder.hidden_size))
    if objective == "flow":
        cfg.model = replace(cfg.model, objective="flow", flow=replace(cfg.model.flow, shift=flow_shift or 1.0))
    path = train_base(cfg, resume=resume, force=force, command="mobilediff " + shlex.join(sys.argv[1:]))
    if main_process() and path is not None:  # once under `accelerate launch`
        click.echo(f"pipeline written to {path}")


@cli.command("build-emoji-data")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create: the imagefolder (PNGs + metadata.jsonl + NOTICE).")
@click.option("--tarball", type=click.Path(path_type=Path, dir_okay=False), default=None, help="The pinned npm package's tarball, if already downloaded (checked against its sha512 all the same); default: downloaded from the npm registry.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def build_emoji_data_cmd(out, tarball, force):
    """Build the emoji imagefolder (Noto emoji sprites captioned with their names) from the pinned npm package."""
    from mobilediff.io import check_output
    from mobilediff.sources.emoji import build_emoji_folder

    check_output(out, folder=True)
    info = build_emoji_folder(out, tarball=tarball, force=force)
    click.echo(f"{info['images']} captioned images of {info['package']} written to {out}")


@cli.command("train-evaluator")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for evaluator.safetensors + config.json. It appears whole when the command succeeds, never over anything already there (unless --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--steps", type=click.IntRange(min=1), default=2500, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per step.")
@click.option("--seed", type=SEED, default=1234, show_default=True, help="Seed of data and initialisation.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True, help="Also keep training checkpoints (every K steps and the last; the two newest) in OUT/checkpoints, which appear with the rest of OUT when the command succeeds (0: none).")
@click.option("--resume", default=None, help="A checkpoint folder of another run (OUT/checkpoints/checkpoint-N, kept with --checkpoint-every), continued to --steps in this OUT. Must match: the architecture, --steps at least the checkpoint's step; may differ: batch size, seed, checkpoint cadence (the same ones reproduce an uninterrupted run). Anything else is refused before OUT is written.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def train_evaluator_cmd(out, steps, batch_size, seed, checkpoint_every, resume, force):
    """Train the shapes-domain evaluator on fresh ground-truth samples and report its accuracy."""
    import json

    from mobilediff.evaluator import train_evaluator
    from mobilediff.io import check_output

    check_output(out, folder=True)
    if out.exists() and not force:
        raise MobilediffError(f"output directory {out} already exists (pass --force to replace it)")
    metrics = train_evaluator(out, steps=steps, batch_size=batch_size, seed=seed, force=force, resume=resume,
                              checkpoint_every=checkpoint_every)
    click.echo(json.dumps(metrics, indent=2))


@cli.command("train-features")
@click.option("--images", type=click.Path(path_type=Path), required=True, help="An imagefolder whose metadata.jsonl holds a label column besides file_name and text.")
@click.option("--label", "label_field", required=True, help="The metadata.jsonl field to classify (e.g. 'subcategory'); labels seen once are pooled as 'other'.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for model.safetensors + config.json (model_type mobilediff-classifier), usable as --fd-features. It appears whole when the command succeeds, never over anything already there (unless --force).")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Images per step.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=2e-3, show_default=True, help="Peak learning rate (AdamW, cosine decay).")
@click.option("--resolution", type=click.IntRange(min=16, max=1024), default=64, show_default=True, help="Image side the classifier reads; images are fitted to it.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of data order, augmentation and initialisation.")
@click.option("--fit", type=click.Choice(FITS), default="crop", show_default=True, help="How an image reaches the resolution (as the data options of train-base).")
@click.option("--background", default="white", show_default=True, help="What transparent pixels are composited on: white, black, gray or #rrggbb.")
@click.option("--validation-fraction", type=Finite(min=0, max=1, max_open=True), default=0.05, show_default=True, help="Share of the images held out for the validation accuracy (a fixed split by a hash of each file's name).")
@click.option("--strict", is_flag=True, help="Refuse the data at the first unusable item (default: skip and count it).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Where decoded images are cached between runs.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def train_features_cmd(images, label_field, out, steps, batch_size, lr, resolution, seed, fit, background,
                       validation_fraction, strict, cache_dir, force):
    """Train a domain classifier on labelled images as the feature extractor of a Fréchet distance (--fd-features)
    where Inception's photo features say little (icons, emoji, sprites)."""
    import json

    from mobilediff.features import ClassifierConfig, train_classifier
    from mobilediff.io import check_output
    from mobilediff.sources import DataOptions

    options = DataOptions(images=images, fit=fit, background=background, validation_fraction=validation_fraction,
                          strict=strict, cache_dir=cache_dir)
    options.validate()
    check_output(out, folder=True)
    record = train_classifier(options, label_field, out, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                              cfg=ClassifierConfig(resolution=resolution), force=force,
                              command="mobilediff " + shlex.join(sys.argv[1:]))
    click.echo(json.dumps({k: v for k, v in record.items() if k != "labels"}, indent=2))


@cli.command("distill")
@click.option("--teacher", default="default", show_default=True, help="Teacher pipeline folder (diffusers format) or 'default'.")
@click.option("--method", type=click.Choice(["lcm", "progressive", "slim", "lcm-lora"]), required=True, help="Latent consistency distillation, progressive (halving) distillation, block-removal distillation into a slimmer UNet (slim), or latent consistency distillation into a LoRA adapter on the frozen teacher (lcm-lora: OUT/adapter/adapter.safetensors, used with --lora or --runtime-lora and the lcm sampler at guidance 1). A flow-matching diffusion transformer (train-base --objective flow) distils with velocity targets: lcm (flow consistency at --guidance, sampled with the flow lcm sampler), progressive (Euler steps), slim (--remove block-K).")
@click.option("--steps", type=int, required=True, help="lcm: the student's default step count (1..50); progressive: the last round's step count (teacher-steps / 2^k); slim: the DDIM step count the student trains at and samples with (a progressive teacher's own).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; students land in OUT/model (lcm, slim) or OUT/steps-N (progressive). It is made where nothing is (an existing one only with --resume or --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--max-train-steps", type=click.IntRange(min=1), default=1000, show_default=True, help="lcm, slim: optimizer steps; progressive: optimizer steps per halving round.")
@click.option("--teacher-steps", type=click.IntRange(min=2), default=16, show_default=True, help="progressive: the teacher's DDIM step count the first round halves.")
@click.option("--guidance", type=Finite(min=0), default=3.5, show_default=True, help="progressive, slim: guidance scale of the teacher's target (slim from a progressive student: unused, its own prediction is the target); lcm: the student's default guidance.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Global batch.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=1e-4, show_default=True, help="Peak learning rate.")
@click.option("--latent-cache", type=click.IntRange(min=1), default=8192, show_default=True, help="Shapes-domain samples encoded once with the teacher's VAE.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True, help="Save a checkpoint every K steps.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of data order and noise.")
@click.option("--mixed-precision", type=click.Choice(["bf16", "fp32"]), default="fp32", show_default=True, help="Autocast precision of the student's forward pass.")
@click.option("--guidance-range", type=Finite(min=0), nargs=2, default=(2.0, 6.0), show_default=True, help="lcm: the guidance scales drawn per training example (uniform in MIN MAX; equal values train one scale).")
@click.option("--ddim-timesteps", type=int, default=50, show_default=True, help="lcm: the skipping-step solver's grid (1000 / N apart); the student samples from this grid.")
@click.option("--init-student", default=None, help="lcm: start from an earlier LCM student of the same architecture (a pipeline folder) instead of the teacher's weights.")
@click.option("--remove", default=None, help="slim: blocks removed from the teacher's denoiser, comma-separated. A UNet's: mid (the middle block), attention-K (the transformers of resolution level K, 0 = highest); default mid,attention-0. A diffusion transformer's: block-K (K = 0 .. blocks - 1); default its middle third.")
@click.option("--feature-weight", type=Finite(min=0), default=1.0, show_default=True, help="slim: weight of the block-output (feature) distillation term.")
@click.option("--lora-rank", type=click.IntRange(min=1), default=8, show_default=True, help="lcm-lora: rank of the adapter on the UNet's linear layers (attention projections, feed-forward, time-embedding projections).")
@data_options(synthesize=True)
@click.option("--resume", default=None, help="'latest' (newest complete checkpoint in OUT) or a checkpoint folder (RUN/checkpoints/checkpoint-N): one of OUT's continues in place; another run's continues in OUT as a new run folder (OUT must not exist, or pass --force; a progressive checkpoint brings its run's earlier rounds' students). Must match: the method, the teacher's weights, the student's architecture (slim: --remove), --max-train-steps at least the checkpoint's step (progressive: the same --max-train-steps and --teacher-steps, which number the rounds' steps); may differ: batch size, learning rate, guidance, loss weights, seed, data, checkpoint cadence (the same ones reproduce an uninterrupted run). Anything else is refused before OUT is written.")
@click.option("--force", is_flag=True, help="Delete an existing OUT first.")
def distill_cmd(teacher, method, steps, out, max_train_steps, teacher_steps, guidance, batch_size, lr, latent_cache,
                checkpoint_every, seed, mixed_precision, guidance_range, ddim_timesteps, init_student, remove,
                feature_weight, lora_rank, resume, force, **data):
    """Distil a few-step student (LCM or progressive) from a classifier-free-guided teacher, a slimmer UNet (slim), or
    an LCM-LoRA adapter that makes the teacher few-step (lcm-lora; --guidance: the teacher's guidance it learns).

    Data: the shapes domain unless given. progressive needs prompts (--prompts alone: it trains on the teacher's own
    trajectories from noise; images give noised real latents); lcm and slim need latents: --images, --wds, or
    --prompts with --synthesize N."""
    _refuse_conflicts(LATEST_WITH_FORCE,
                      ("conflicts", "init_student", "resume", "a resumed run continues from its checkpoint's weights"))
    from mobilediff.io import check_output
    from mobilediff.train.distill import DistillConfig, distill
    from mobilediff.train.loop import main_process

    source, dry_run = pop_data_options(data)
    if dry_run:
        from mobilediff.sources import check_needs

        if source.given:
            check_needs(source, f"distill:{method}")
        _print_data_report(source, teacher)
        return
    check_output(out, folder=True)

    cfg = DistillConfig(teacher=teacher, method=method, steps=steps, out=out, max_train_steps=max_train_steps,
                        teacher_steps=teacher_steps, guidance=guidance, batch_size=batch_size, lr=lr,
                        latent_cache=latent_cache, checkpoint_every=checkpoint_every, seed=seed,
                        mixed_precision=mixed_precision, guidance_min=guidance_range[0],
                        guidance_max=guidance_range[1], ddim_timesteps=ddim_timesteps, init_student=init_student,
                        remove=remove, feature_weight=feature_weight, lora_rank=lora_rank, source=source)
    paths = distill(cfg, resume=resume, force=force, command="mobilediff " + shlex.join(sys.argv[1:]))
    if main_process():  # once under `accelerate launch`
        for path in paths:
            click.echo(f"{'adapter' if method == 'lcm-lora' else 'student'} written to {path}")


@cli.command("train-lora")
@click.option("--model", default="default", show_default=True, help="Pipeline folder or named model the adapter is for (its UNet is frozen).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; the adapter lands in OUT/adapter/adapter.safetensors (diffusers' LoRA layout, usable as --lora on generate and export). It is made where nothing is (an existing one only with --resume or --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--rank", type=click.IntRange(min=1), default=4, show_default=True, help="Rank of the adapter's matrices on the UNet's attention projections (to_q, to_k, to_v, to_out.0).")
@click.option("--max-train-steps", type=click.IntRange(min=1), default=500, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--latent-cache", type=click.IntRange(min=1), default=8192, show_default=True, help="Shapes-domain samples encoded once (without data options).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True, help="Save a checkpoint every K steps.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of data order, noise and initialisation.")
@data_options(synthesize=True)
@click.option("--resume", default=None, help="'latest' (newest complete checkpoint in OUT) or a checkpoint folder of a train-lora run; must match the model's weights, the rank and --max-train-steps at least its step.")
@click.option("--force", is_flag=True, help="Delete an existing OUT first.")
def train_lora_cmd(model, out, rank, max_train_steps, batch_size, lr, latent_cache, checkpoint_every, seed, resume,
                   force, **data):
    """Train a LoRA adapter on your captioned images (or latents the model renders from your prompts): the model's
    own denoising loss, its weights frozen. Use it with --lora on generate and export."""
    _refuse_conflicts(LATEST_WITH_FORCE)
    from mobilediff.io import check_output
    from mobilediff.train.distill import DistillConfig, distill
    from mobilediff.train.loop import main_process

    source, dry_run = pop_data_options(data)
    if dry_run:
        from mobilediff.sources import check_needs

        if source.given:
            check_needs(source, "distill:lora")
        _print_data_report(source, model)
        return
    check_output(out, folder=True)
    cfg = DistillConfig(teacher=model, method="lora", steps=1, out=out, max_train_steps=max_train_steps,
                        batch_size=batch_size, lr=lr, latent_cache=latent_cache, checkpoint_every=checkpoint_every,
                        seed=seed, lora_rank=rank, warmup_steps=min(50, max_train_steps // 10), source=source)
    paths = distill(cfg, resume=resume, force=force, command="mobilediff " + shlex.join(sys.argv[1:]))
    if main_process():
        for path in paths:
            click.echo(f"adapter written to {path / 'adapter.safetensors'}")


@cli.command("distill-decoder")
@click.option("--model", default="default", show_default=True, help="Pipeline folder or named model whose VAE is distilled (its encoder makes the latents, its decoder the targets); OUT/model is this model with the tiny decoder.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; the decoder lands in OUT/decoder, the model with it in OUT/model. It is made where nothing is (an existing one only with --resume or --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--width", type=click.IntRange(min=1), default=24, show_default=True, help="Decoder channels, the same at every level (AutoencoderTiny's decoder keeps one width).")
@click.option("--blocks", default=None, help="Residual blocks per level, coarsest first, comma-separated (default: 6 at the coarsest level, 1 at every middle one, 0 at full resolution; for the default model 6,1,0).")
@click.option("--max-train-steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch.")
@click.option("--lr", type=Finite(min=0, min_open=True), default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--latent-cache", type=click.IntRange(min=1), default=8192, show_default=True, help="Shapes-domain samples encoded once with the model's VAE (and decoded once by it: the targets).")
@click.option("--sampled-latents", type=click.IntRange(min=0), default=0, show_default=True, help="Also train on this many latents sampled once with the model's own default plan.")
@click.option("--perceptual-weight", type=Finite(min=0), default=None, help="Weight of the shapes evaluator's feature term against the pixel L1 + L2 (0: pixels only). Default: 0.25 on the shapes domain, 0 on your data (the evaluator knows only shapes).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True, help="Save a checkpoint every K steps.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of initialisation, data order and sampled latents.")
@data_options(synthesize=True)
@click.option("--resume", default=None, help="'latest' (newest complete checkpoint in OUT) or a checkpoint folder (RUN/checkpoints/checkpoint-N): one of OUT's continues in place; another run's continues in OUT as a new run folder (OUT must not exist, or pass --force). Must match: the model's VAE weights, the decoder's architecture (--width, --blocks), --max-train-steps at least the checkpoint's step; may differ: batch size, learning rate, loss weights, latent pool, seed, data, checkpoint cadence (the same ones reproduce an uninterrupted run). Anything else is refused before OUT is written.")
@click.option("--force", is_flag=True, help="Delete an existing OUT first.")
def distill_decoder_cmd(model, out, width, blocks, max_train_steps, batch_size, lr, latent_cache, sampled_latents,
                        perceptual_weight, checkpoint_every, seed, resume, force, **data):
    """Distil a tiny decoder (AutoencoderTiny) from a model's VAE decoder, for its latents: of the shapes domain, of
    your images (--images / --wds), or rendered by the model from your prompts (--prompts with --synthesize N)."""
    _refuse_conflicts(LATEST_WITH_FORCE)
    from mobilediff.io import check_output
    from mobilediff.train.decoder import DecoderDistillConfig, distill_decoder, parse_blocks
    from mobilediff.train.loop import main_process

    source, dry_run = pop_data_options(data)
    if source.given:
        from mobilediff.sources import check_needs

        check_needs(source, "distill-decoder")
    if dry_run:
        _print_data_report(source, model)
        return
    check_output(out, folder=True)
    if perceptual_weight is None:
        perceptual_weight = 0.0 if source.given else 0.25
    cfg = DecoderDistillConfig(model=model, out=out, width=width, blocks=parse_blocks(blocks),
                               max_train_steps=max_train_steps, batch_size=batch_size, lr=lr, latent_cache=latent_cache,
                               sampled_latents=sampled_latents, perceptual_weight=perceptual_weight,
                               checkpoint_every=checkpoint_every, seed=seed, source=source)
    decoder, pipeline = distill_decoder(cfg, resume=resume, force=force, command="mobilediff " + shlex.join(sys.argv[1:]))
    if main_process():  # once under `accelerate launch`
        click.echo(f"decoder written to {decoder}")
        click.echo(f"pipeline written to {pipeline}")


@cli.command("pack")
@click.option("--model", required=True, help="Pipeline folder to pack (e.g. a distilled student).")
@click.option("--base", default="default", show_default=True, help="Pipeline folder whose identical components are borrowed.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Packed pipeline folder to create. It appears whole when the command succeeds, never over anything already there (unless --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--fp16", "fp16", multiple=True, type=click.Choice(["unet", "transformer", "text_encoder", "vae"]), help="Store this component's weights in fp16 (repeatable).")
@click.option("--decoder", type=click.Path(path_type=Path), default=None, help="A tiny decoder folder (mobilediff distill-decoder) or 'default:tiny' (the default model's) that replaces the model's VAE; refused unless it decodes the model's latents.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def pack_cmd(model, base, out, fp16, decoder, force):
    """Store only what a pipeline does not share with a base (students of the embedded model)."""
    from mobilediff.io import check_output
    from mobilediff.loading import pack_pipeline, resolve_model

    check_output(out, folder=True)

    from mobilediff.decoder import resolve_decoder

    report = pack_pipeline(resolve_model(model), resolve_model(base), out, tuple(fp16), decoder=resolve_decoder(decoder),
                           force=force)
    click.echo(f"packed {out}: " + ", ".join(f"{k} {v}" for k, v in report.items()))


def _sampling_defaults(plan, steps, sampler, guidance):
    """Fill unset --steps/--sampler/--guidance from a default sampling plan (a bundle's manifest, or a model's own:
    see mobilediff.card)."""
    return (steps if steps is not None else plan.steps, sampler or plan.sampler,
            guidance if guidance is not None else plan.guidance)


def _model_plan(model, adapters=()):
    from mobilediff.card import model_card
    from mobilediff.loading import load_pipeline, resolve_model

    pipe = load_pipeline(model, transformers=True)
    plan = model_card(pipe, resolve_model(model), str(model)).plan
    if adapters:
        from mobilediff.lora import apply_adapters

        apply_adapters(pipe, list(adapters))
    return pipe, plan


def _adapters(values):
    """--lora FILE[:SCALE] values, each file checked to exist and to be safetensors before any model is loaded."""
    from mobilediff.lora import parse_adapter, read_adapter

    adapters = [parse_adapter(v) for v in values]
    for a in adapters:
        read_adapter(a.path)
    return adapters


def _warn(msg: str) -> None:
    """One short warning line (a message quoting a long prompt is cut)."""
    click.echo(f"warning: {shorten(msg, 200)}", err=True)


@cli.command("generate")
@click.option("--model", default="default", show_default=True, help="Pipeline folder (diffusers format) or 'default'.")
@click.option("--prompt", "prompts", multiple=True, required=True, help="Text prompt; repeat for several (grid rows). UTF-8 text: invalid UTF-8 bytes and control characters are refused, except tab, newline and carriage return (read as spaces).")
@click.option("--seed", "seeds", type=SEED, multiple=True, default=(0,), show_default=True, help="Noise seed; repeat for several (grid columns).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps (>= 1). Default: 50, or what a distilled student was made for.")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default=None, help="Sampler (a diffusers scheduler). Default: ddim, or a student's own.")
@click.option("--guidance", type=Finite(min=0), default=None, help="Classifier-free guidance scale (<= 1 disables it). Default: 5.0, or a student's own.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output PNG: one image, or a prompts x seeds grid. Written whole or not at all; a file already there is replaced (concurrent runs leave one complete image, the last to finish), a folder never.")
@click.option("--scale", type=click.IntRange(1, 16), default=4, show_default=True, help="Nearest-neighbour upscaling of the saved PNG.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Generate from an exported bundle instead of a pipeline (no PyTorch model runs).")
@click.option("--runtime", type=click.Choice(HOST_RUNTIMES), default=HOST_RUNTIMES[0], show_default=True, help="Host runtime for --bundle.")
@click.option("--low-memory", is_flag=True, help="With --bundle: load each component when its turn comes and release it before the next, ONNX Runtime without its CPU arena and memory pattern (the same image; each image reloads the components). For real-size models on a small machine: docs/results.md, Memory.")
@click.option("--lora", "loras", multiple=True, metavar="FILE[:SCALE]", help="With --model: merge this LoRA adapter (safetensors) into the model first, times SCALE (default 1); repeatable. With --bundle: switch on the bundle's run-time adapter NAME (export --runtime-lora) at SCALE; repeat to mix them.")
@click.option("--init-image", type=click.Path(path_type=Path), default=None, help="Image-to-image: start from this image (8-bit RGB or grayscale, exactly the model's size) instead of noise alone; a bundle needs export --image-modes.")
@click.option("--mask", type=click.Path(path_type=Path), default=None, help="Inpainting, with --init-image: a grayscale image of the same size; white (>= 128) is repainted, black kept.")
@click.option("--strength", type=Finite(min=0), default=None, help="With --init-image: how much of the sampling runs over the image, in (0, 1] (steps x strength steps, diffusers' rule; 1: from noise). Default: 0.75 for image-to-image, 1 for inpainting.")
def generate_cmd(model, prompts, seeds, steps, sampler, guidance, out, scale, bundle, runtime, low_memory, loras,
                 init_image, mask, strength):
    """Generate images from a pipeline (PyTorch reference) or from an exported bundle (host runtimes): from text,
    or from an image (--init-image, --mask, --strength)."""
    _refuse_conflicts(("conflicts", "bundle", "model", "a bundle holds its own model"),
                      ("needs", "runtime", "bundle", "the runtime runs a bundle's graphs"),
                      ("needs", "low_memory", "bundle", "it is how a bundle's graphs are loaded"),
                      ("needs", "mask", "init_image", "a mask marks what to repaint of an image"),
                      ("needs", "strength", "init_image", "the strength is how far the image is noised"))
    if strength is not None and not 0 < strength <= 1:
        raise MobilediffError(f"--strength must be in (0, 1], got {strength:g}")
    if init_image is not None and strength is None:
        strength = 1.0 if mask is not None else 0.75
    from PIL import Image
    from tqdm.auto import tqdm

    from mobilediff.io import atomic_path, check_output
    from mobilediff.sampling import check_prompt_length, check_prompts, generate, image_grid, validate_generation

    check_prompts(prompts, "--prompt")
    if out.suffix.lower() != ".png":
        raise MobilediffError(f"--out must be a .png file, got {out}")
    check_output(out)
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = [s for _ in prompts for s in seeds]
    if bundle is not None:
        import torch

        from mobilediff.bundle import read_manifest
        from mobilediff.engine import BundleRunner
        from mobilediff.targets import LOW_MEMORY

        manifest = read_manifest(bundle)
        steps, sampler, guidance = _sampling_defaults(manifest.plan, steps, sampler, guidance)
        validate_generation(steps, guidance, list(prompts), list(seeds))
        manifest.sampler_table(sampler, steps)  # fail fast on a missing table
        image = mask_latent = None
        if init_image is not None:
            from mobilediff.engine import require_image_mode

            require_image_mode(manifest, bundle, mask is not None)
            image, mask_latent = _image_inputs(init_image, mask, manifest.geometry.height, manifest.geometry.width,
                                               manifest.geometry.vae_scale_factor, steps, strength)
        from mobilediff.runtime_lora import parse_selection

        mix = parse_selection(loras, [f["name"] for f in (manifest.adapters or {}).get("files", [])])
        runner = BundleRunner(bundle, runtime, settings=LOW_MEMORY[runtime] or None, resident=False, adapters=mix) \
            if low_memory else BundleRunner(bundle, runtime, adapters=mix)
        for p in prompts:
            runner.tokenizer.warn_if_truncated(p, _warn)
        with tqdm(total=len(all_prompts), desc=f"{runtime} {sampler} {steps} steps") as bar:
            images = []
            for p, sd in zip(all_prompts, all_seeds):
                images.append(runner.generate(p, sd, steps, sampler, guidance, init_image=image, mask=mask_latent,
                                              strength=strength))
                bar.update(1)
        images = torch.cat(images)
    else:
        from mobilediff.components import image_size
        from mobilediff.sampling import generate_from_image

        adapters = _adapters(loras)
        pipe, plan = _model_plan(model, adapters)
        steps, sampler, guidance = _sampling_defaults(plan, steps, sampler, guidance)
        validate_generation(steps, guidance, list(prompts), list(seeds))
        image = mask_latent = None
        if init_image is not None:
            image, mask_latent = _image_inputs(init_image, mask, *image_size(pipe), int(pipe.vae_scale_factor),
                                               steps, strength)
        from mobilediff import transformer_family

        transformer = transformer_family.is_transformer_pipeline(pipe)
        for p in prompts:
            check_prompt_length(pipe.tokenizer, p.lower().strip() if transformer else p, _warn,
                                transformer_family.text_length(pipe) if transformer else None)
        with tqdm(total=steps * ((len(all_prompts) + 63) // 64), desc=f"{sampler} {steps} steps") as bar:
            if image is None:
                images = generate(pipe, all_prompts, all_seeds, steps, sampler, guidance, progress=bar.update)
            else:
                images = generate_from_image(pipe, all_prompts, all_seeds, steps, sampler, guidance, image, strength,
                                             mask_latent, progress=bar.update)
    grid = image_grid(images, len(prompts), len(seeds), pad=0 if len(all_prompts) == 1 else 2)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    click.echo(f"wrote {out} ({len(all_prompts)} image{'s' if len(all_prompts) > 1 else ''})")


def _image_inputs(init_image: Path, mask: Path | None, height: int, width: int, factor: int, steps: int,
                  strength: float):
    """The init image and latent mask of generate --init-image/--mask, read and checked before any model runs."""
    from mobilediff.image_input import load_init_image, load_mask
    from mobilediff.sampler_table import strength_steps

    strength_steps(steps, strength)
    image = load_init_image(init_image, height, width)
    return image, (load_mask(mask, height, width, factor) if mask is not None else None)


@cli.command("export")
@click.option("--model", default="default", show_default=True, help="Pipeline folder (diffusers format) or 'default'.")
@click.option("--target", required=True, help=f"{' | '.join(TARGETS)} | all (or a comma-separated list)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder to create (manifest.json + component files). It appears whole when the command succeeds, never over anything already there (unless --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Image height (default: the model's own, its UNet config's sample_size, an int or a [height, width] pair, times the VAE factor).")
@click.option("--width", type=click.IntRange(min=1), default=None, help="Image width (default: the model's own).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="Compute precision of the exported graphs.")
@click.option("--fused-steps", type=click.IntRange(1, 16), default=None, help=f"Also export one program: text encoder + N unrolled denoiser steps + VAE decoder ({', '.join(FUSED_TARGETS)}).")
@click.option("--fused-sampler", type=click.Choice(list(SAMPLERS)), default=None, help="Sampler of the fused program (default: lcm for LCM students, else ddim).")
@click.option("--guidance", type=Finite(min=0), default=None, help="Guidance scale of the manifest's default sampling plan (default: what a distilled student was made for, else 5.0). At most 1 exports a denoiser without a classifier-free-guidance batch.")
@click.option("--quantize", default=None, help="Quantization recipe (per target: onnx int8-static|int8-dynamic|int8-weights|int4-weights|fp16; executorch int8|int8-decoder|int4-weights; coreml palettize4|palettize6|palettize8|int8-weights|mixed).")
@click.option("--decoder", type=click.Path(path_type=Path), default=None, help="Export with this tiny decoder (a mobilediff distill-decoder folder, or 'default:tiny': the default model's) in place of the model's VAE decoder; refused unless it decodes the model's latents.")
@click.option("--calibration-prompts", type=click.Path(path_type=Path), default=None, help="Prompts whose sampling trajectories calibrate a static int8 recipe (.txt one a line, .jsonl/.csv with a 'text' field; at most the first 64 are used). Default: 32 prompts of the shapes domain.")
@click.option("--attention-budget", type=Finite(min=0), default=DEFAULT_ATTENTION_BUDGET, show_default=True, metavar="MIB", help="Attention whose fp32 score tensor (batch x heads x queries x keys) is larger is exported in query chunks that fit it, so a runtime never holds the whole (the same result; 0: never chunk).")
@click.option("--decoder-tile", type=click.IntRange(min=1), default=None, metavar="LATENT_PX", help="Export the VAE decoder as one graph that decodes tiles of this many latent pixels (square) one after another and blends their overlaps: its activations shrink with the tile area (a 512 px SD decoder at 40: 4 tiles), at the cost of the overlaps' extra decoding and a decode that differs from the whole one (measured at export: export.tiling in the manifest). Default: the whole latent at once.")
@click.option("--decoder-overlap", type=click.IntRange(min=0), default=8, show_default=True, metavar="LATENT_PX", help="Latent pixels neighbouring decoder tiles share (blended); less than half of --decoder-tile.")
@click.option("--ort-format/--no-ort-format", default=True, show_default=True, help="With the onnx target, also write each graph in ORT format (ONNX Runtime's mobile format, optimized for arm once; the apps load it when present), with its mobile usability report (NNAPI, Core ML) and the bundle's required-operators config for a reduced ONNX Runtime build.")
@click.option("--lora", "loras", multiple=True, metavar="FILE[:SCALE]", help="Merge this LoRA adapter (a safetensors file in the diffusers/PEFT or kohya layout) into the UNet and text encoder before export, times SCALE (default 1); repeat to mix several. Checked against the model first: an adapter for another architecture is refused. Recorded in the manifest's source.adapters.")
@click.option("--runtime-lora", "runtime_loras", multiple=True, metavar="FILE[:SCALE]", help="Hold this LoRA adapter as a run-time adapter: the UNet (and text encoder, if it adapts it) take its low-rank update as an input, the adapter is written to adapters/NAME.safetensors, and generate --lora NAME[:SCALE] and the apps switch or mix adapters without re-export (SCALE: the scale its parity is checked at, default 1). Repeatable; checked against the model merged with it on every target.")
@click.option("--lora-rank", type=int, default=None, help="Rank slots of the run-time adapters: how much rank a mix may use (default: the sum of the --runtime-lora adapters' ranks, so all can be on at once).")
@click.option("--image-modes", is_flag=True, help="Also export the VAE encoder and the sampler tables' image-to-image rows, so the bundle runs image-to-image and inpainting (generate --init-image/--mask/--strength, the apps) besides text-to-image.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def export_cmd(model, target, out, height, width, precision, fused_steps, fused_sampler, guidance, quantize, decoder,
               calibration_prompts, attention_budget, decoder_tile, decoder_overlap, ort_format, loras, runtime_loras,
               lora_rank, image_modes, force):
    """Export the text encoder, denoiser and VAE decoder to a validated bundle."""
    _refuse_conflicts(("needs", "fused_sampler", "fused_steps", "it is the fused program's sampler"))
    from mobilediff.decoder import resolve_decoder
    from mobilediff.exporter import ExportConfig, run_export
    from mobilediff.io import check_output
    from mobilediff.loading import load_pipeline, resolve_model

    # every option checked once, before the model or the user's prompts are read (an empty tuple stands for the
    # user's prompts: only a static int8 recipe takes them)
    cfg = ExportConfig.of(target, out, height=height, width=width, precision=precision, fused_steps=fused_steps,
                          fused_sampler=fused_sampler, guidance=guidance, force=force, source=str(model),
                          quantize=quantize, calibration_prompts=() if calibration_prompts is not None else 32,
                          model_dir=resolve_model(model), decoder=resolve_decoder(decoder), ort_format=ort_format,
                          attention_budget_mib=attention_budget, decoder_tile=decoder_tile,
                          decoder_overlap=decoder_overlap, image_modes=image_modes,
                          runtime_adapters=tuple(_adapters(runtime_loras)), lora_rank=lora_rank)
    check_output(out, folder=True)
    if out.exists() and not force:
        raise MobilediffError(f"output directory {out} already exists (pass --force to replace it)")
    if calibration_prompts is not None:
        import dataclasses

        from mobilediff.sources import DataOptions, load_prompts

        prompts = load_prompts(DataOptions(prompts=calibration_prompts), warn=_warn)[:64]
        cfg = dataclasses.replace(cfg, calibration_prompts=tuple(prompts))
    if cfg.decoder is not None:
        from mobilediff.decoder import check_decoder_dir, check_fits, latent_space, vae_folder

        check_fits(cfg.decoder, check_decoder_dir(cfg.decoder), latent_space(vae_folder(cfg.model_dir)))
    adapters = _adapters(loras)
    pipe = load_pipeline(model, transformers=True)
    if cfg.decoder is not None:
        from mobilediff.decoder import with_decoder

        pipe = with_decoder(pipe, cfg.decoder, cfg.model_dir)
    if adapters:
        import dataclasses

        from mobilediff.lora import apply_adapters

        cfg = dataclasses.replace(cfg, adapters=tuple(apply_adapters(pipe, adapters)))
    path = run_export(pipe, cfg, progress=lambda m: click.echo(f"export {m}", err=True))
    click.echo(f"bundle written to {path}")


@cli.command("goldens")
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Bundle folder (mobilediff export) to record.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create: goldens.json + goldens.safetensors. It appears whole when the command succeeds, never over anything already there (unless --force); a second command writing it at the same time fails at once, naming the first.")
@click.option("--runtime", type=click.Choice(HOST_RUNTIMES), default=HOST_RUNTIMES[0], show_default=True,
              help="Host runtime that runs the bundle's graphs.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Noise seed of the recorded sampling plans.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
def goldens_cmd(bundle, out, runtime, seed, force):
    """Record the vectors the apps' engines are tested against: token ids, noise, every component call per plan."""
    from mobilediff.goldens import write_goldens
    from mobilediff.io import check_output

    check_output(out, folder=True)
    path = write_goldens(bundle, out, runtime, seed, force, progress=lambda m: click.echo(f"goldens {m}", err=True))
    click.echo(f"goldens written to {path}")


@cli.command("evaluate")
@click.option("--model", default=None, help="Score a pipeline ('default' or a folder) on the fixed prompt set.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="Or score a folder of PNGs listed in its metadata.jsonl ({\"file_name\": ..., \"text\": prompt}).")
@click.option("--n", type=click.IntRange(min=2), default=256, show_default=True, help="Number of prompts (with --model).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps (with --model). Default: 50, or what a distilled student was made for.")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default=None, help="Sampler (with --model). Default: ddim, or a student's own.")
@click.option("--guidance", type=Finite(min=0), default=None, help="Guidance scale (with --model). Default: 5.0, or a student's own.")
@click.option("--prompts", type=click.Path(path_type=Path), default=None, help="With --model: your prompts (.txt one a line, .jsonl/.csv with a 'text' field) instead of the shapes domain's fixed set; the first --n are used (fewer if the file holds fewer).")
@click.option("--teacher", default=None, help="With --model: teacher fidelity, PSNR and SSIM of each image against this pipeline's DDIM-50 image from the same prompt and noise (needs no weights beyond the teacher's).")
@click.option("--clip", "clip_dir", type=click.Path(path_type=Path), default=None, help="With --model: CLIP score (100 x cosine, Hessel et al.) with the CLIP model in this local folder (transformers CLIPModel, safetensors).")
@click.option("--fd-features", type=click.Path(path_type=Path), default=None, help="With --model: Fréchet distance in the features of this extractor: a TorchScript file (e.g. clean-fid's Inception: the standard FID), a local vision model folder (CLIP, DINOv2), a train-features folder, or default:emoji (the embedded emoji classifier).")
@click.option("--fd-image-size", type=click.IntRange(min=8), default=None, help="Side the images are resized to for a TorchScript --fd-features (default 299, Inception's).")
@click.option("--reference-images", type=click.Path(path_type=Path), default=None, help="The real images --fd-features compares against (any images in a folder).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the report as JSON here.")
def evaluate_cmd(model, images_dir, n, steps, sampler, guidance, prompts, teacher, clip_dir, fd_features, fd_image_size,
                 reference_images, out):
    """Quality of a pipeline's images: on the shapes domain, prompt and attribute accuracy and Fréchet distance with its
    evaluator; for any model, teacher fidelity (--teacher), CLIP score (--clip) and FD with your feature extractor
    (--fd-features + --reference-images) on your prompts (--prompts)."""
    import json

    from mobilediff.evaluator import Evaluator
    from mobilediff.io import atomic_write_json, check_output

    if (model is None) == (images_dir is None):
        raise MobilediffError("give exactly one of --model or --images")
    if images_dir is not None and any(x is not None for x in (prompts, teacher, clip_dir, fd_features, reference_images)):
        raise MobilediffError("--prompts, --teacher, --clip, --fd-features and --reference-images go with --model")
    if (fd_features is None) != (reference_images is None):
        raise MobilediffError("a Fréchet distance needs both --fd-features (the extractor) and --reference-images "
                              "(the real images)")
    if out is not None:
        check_output(out)
    if images_dir is not None:
        rows = _read_image_rows(images_dir)  # checked before the evaluator loads
    else:
        pipe, plan = _model_plan(model)
        steps, sampler, guidance = _sampling_defaults(plan, steps, sampler, guidance)
    if model is not None and (prompts is not None or any(x is not None for x in (teacher, clip_dir, fd_features))):
        result = _evaluate_any(model, pipe, n, steps, sampler, guidance, prompts, teacher, clip_dir, fd_features,
                               fd_image_size, reference_images)
        click.echo(json.dumps(result, indent=2))
        if out is not None:
            atomic_write_json(out, result)
        return
    evaluator = Evaluator.load()
    if model is not None:
        from tqdm.auto import tqdm

        from mobilediff.quality import evaluate_pipeline

        with tqdm(total=steps * ((n + 127) // 128), desc=f"{sampler} {steps} steps") as bar:
            report = evaluate_pipeline(pipe, evaluator, sampler, steps, guidance, n=n, progress=bar.update)
        result = {"model": str(model), "sampler": sampler, "steps": steps, "guidance": guidance, **report.to_dict()}
    else:
        result = {"images": str(images_dir), **_score_folder(evaluator, images_dir, rows).to_dict()}
    click.echo(json.dumps(result, indent=2))
    if out is not None:
        atomic_write_json(out, result)


@cli.command("recommend")
@click.option("--latency-ms", type=Finite(min=0, min_open=True), default=None, help="Latency budget per image (ms): the most accurate configuration within it.")
@click.option("--min-accuracy", type=Finite(min=0, max=1), default=None, help="Quality floor (prompt accuracy, 0..1): the fastest configuration that reaches it.")
@click.option("--runtime", default=None, help="Only configurations on this runtime, as the table (or --device file) names it: eager, onnx, executorch, ...")
@click.option("--precision", default=None, help="Only configurations at this precision, as the table (or --device file) names it: fp32, int8, int8-static, int8-decoder, ...")
@click.option("--device", default=None, help="Latencies from: a run_device.json (benchmarks/run_device.py; its rows, plus the table's configurations composed from its component medians), or a machine of the table (its id, kind such as 'host', or part of its description). Default: every row of the table.")
@click.option("--table", type=click.Path(path_type=Path, dir_okay=True), default=None, help="The measured configurations: a store (.jsonl, docs/configurations.md; default benchmarks/results/configurations.jsonl) or a scaling study's scaling.json.")
def recommend_cmd(latency_ms, min_accuracy, runtime, precision, device, table):
    """The best model, sampler, steps, runtime, precision and decoder for a latency budget or a quality floor, with
    the export command that makes it."""
    from mobilediff.recommend import DEFAULT_STORE, candidates_for, format_recommendation, recommend

    if (latency_ms is None) == (min_accuracy is None):
        raise MobilediffError("give exactly one of --latency-ms or --min-accuracy")
    if table is None:
        if not DEFAULT_STORE.is_file():
            raise MobilediffError(f"no configurations at {DEFAULT_STORE}: run python benchmarks/configurations.py, or "
                                  f"give --table FILE")
        table = DEFAULT_STORE
    candidates, notes, source = candidates_for(table, device)
    rec = recommend(candidates, latency_ms=latency_ms, min_accuracy=min_accuracy, runtime=runtime,
                    precision=precision, notes=notes, source=source)
    click.echo(format_recommendation(rec))


def _evaluate_any(model, pipe, n, steps, sampler, guidance, prompts_file, teacher, clip_dir, fd_features, fd_image_size,
                  reference_images) -> dict:
    """evaluate's metric set for any model (mobilediff.metrics): every weight file is loaded and every input read
    before any image is generated."""
    from tqdm.auto import tqdm

    from mobilediff.metrics import ClipScorer, FeatureExtractor, MetricSet
    from mobilediff.quality import NOISE_SEED, eval_scenes
    from mobilediff.sampling import generate, image_size
    from mobilediff.sources import DataOptions, load_prompts, load_reference_images

    if prompts_file is not None:
        prompts = load_prompts(DataOptions(prompts=prompts_file))[:n]
    else:
        prompts = [s.caption for s in eval_scenes(n)]
    seeds = [NOISE_SEED + i for i in range(len(prompts))]
    clip = ClipScorer.load(clip_dir) if clip_dir is not None else None
    extractor = reference = None
    if fd_features is not None:
        extractor = FeatureExtractor.load(fd_features, image_size=fd_image_size)
        real = load_reference_images(reference_images, image_size(pipe), warn=_warn)
        reference = extractor.features(real)
    teacher_pipe = None
    if teacher is not None:
        teacher_pipe, teacher_plan = _model_plan(teacher)
        if image_size(teacher_pipe) != image_size(pipe):
            raise MobilediffError(f"--teacher {teacher} makes {image_size(teacher_pipe)} images, the model "
                                  f"{image_size(pipe)}: fidelity compares images of one size")
    metrics = MetricSet(clip=clip, fd_features=extractor, fd_reference=reference)
    with tqdm(total=steps * -(-len(prompts) // 64), desc=f"{sampler} {steps} steps") as bar:
        images = generate(pipe, prompts, seeds, steps, sampler, guidance, progress=bar.update)
    teacher_images = None
    if teacher_pipe is not None:
        with tqdm(total=50 * -(-len(prompts) // 64), desc="teacher ddim 50 steps") as bar:
            teacher_images = generate(teacher_pipe, prompts, seeds, 50, "ddim", teacher_plan.guidance,
                                      progress=bar.update)
    result = {"model": str(model), "sampler": sampler, "steps": steps, "guidance": guidance, "n": len(prompts),
              "prompts": str(prompts_file) if prompts_file is not None else "the shapes domain's fixed set"}
    if teacher is not None:
        result["teacher"] = {"model": str(teacher), "sampler": "ddim", "steps": 50, "guidance": teacher_plan.guidance}
    if clip_dir is not None:
        result["clip"] = str(clip_dir)
    if fd_features is not None:
        result["fd_features"] = {"extractor": str(fd_features), "kind": extractor.kind,
                                 "reference_images": str(reference_images), "reference_count": len(reference)}
    result["metrics"] = metrics.compute(images, prompts, teacher_images)
    if teacher_images is not None and (clip is not None or extractor is not None):
        from mobilediff.bench.bars import bar, check_ratio

        teacher_metrics = metrics.compute(teacher_images, prompts)
        result["teacher_metrics"] = teacher_metrics
        ratios = {}
        for key, bar_id in (("clip_score", "student_4step_clip_ratio"), ("fd", "student_4step_fd_ratio")):
            if key in teacher_metrics and teacher_metrics[key] > 0:
                ratio = {"ratio": result["metrics"][key] / teacher_metrics[key]}
                if steps == 4:  # the bars are stated for 4-step students
                    b = bar(bar_id)
                    ratio.update(bar=bar_id, op=b.op, value=b.value,
                                 passed=check_ratio(bar_id, result["metrics"][key], teacher_metrics[key]))
                ratios[key] = ratio
        result["vs_teacher"] = ratios
    return result


def _read_image_rows(folder: Path) -> list[tuple[Path, object]]:
    """(image path, scene) for each line of ``folder``/metadata.jsonl ({"file_name": ..., "text": caption}), each line
    and caption checked; the images themselves are opened when scored. Raises MobilediffError naming the file and
    line."""
    from mobilediff.evaluator import parse_caption
    from mobilediff.sources.files import read_jsonl

    if not folder.is_dir():
        raise MobilediffError(f"--images {folder}: not a folder")
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise MobilediffError(f"{meta} not found (one JSON line per image: file_name, text)")
    try:
        text = meta.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MobilediffError(f"{meta} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    rows = []
    for i, r in read_jsonl(text, str(meta)):
        for key in ("file_name", "text"):
            if not isinstance(r.get(key), str) or not r[key]:
                raise MobilediffError(f"{meta} line {i}: {key!r} missing or not a non-empty string")
        try:
            scene = parse_caption(r["text"])
        except MobilediffError as e:
            raise MobilediffError(f"{meta} line {i}: {e}") from None
        rows.append((folder / r["file_name"], scene))
    if not rows:
        raise MobilediffError(f"{meta} lists no images")
    return rows


def _score_folder(evaluator, folder: Path, rows: list[tuple[Path, object]]):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from mobilediff.data import from_uint8

    scenes, arrays = [], []
    res = evaluator.cfg.resolution
    for f, scene in rows:
        try:
            with Image.open(f) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise MobilediffError(f"cannot read image {f}: {shorten(getattr(e, 'strerror', None) or e, 160)}") from None
        if img.size != (res, res):
            img = img.resize((res, res), Image.BILINEAR)
        arrays.append(np.asarray(img))
        scenes.append(scene)
    images = from_uint8(np.stack(arrays))
    return evaluator.score(images, scenes, evaluator.real_features(scenes) if len(scenes) > 1 else None)


if __name__ == "__main__":
    main()
