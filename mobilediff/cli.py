"""The `mobilediff` command line. Every command validates its arguments before work starts; a
MobilediffError becomes one line on stderr and exit code 2."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from mobilediff.errors import MobilediffError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MobilediffError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """mobilediff: distil, quantize, export and benchmark small latent diffusion models for phones."""


@main.command("train-base")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder; the pipeline lands in OUT/model.")
@click.option("--vae-steps", type=click.IntRange(min=1), default=1200, show_default=True, help="Optimizer steps of the VAE stage.")
@click.option("--unet-steps", type=click.IntRange(min=1), default=3600, show_default=True, help="Optimizer steps of the text-encoder + UNet stage.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Global batch of the denoiser stage.")
@click.option("--vae-batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Global batch of the VAE stage.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=6e-4, show_default=True, help="Peak learning rate of the denoiser stage.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=200, show_default=True, help="Save a checkpoint every K steps.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data order, noise and initialisation.")
@click.option("--mixed-precision", type=click.Choice(["bf16", "fp32"]), default="bf16", show_default=True, help="Autocast precision of the forward pass.")
@click.option("--tiny", is_flag=True, help="Tiny components and 32x32 images (for smoke tests only).")
@click.option("--resume", default=None, help="'latest' (newest complete checkpoint in OUT) or a checkpoint folder.")
@click.option("--force", is_flag=True, help="Delete an existing OUT first.")
def train_base_cmd(out, vae_steps, unet_steps, batch_size, vae_batch_size, lr, checkpoint_every, seed, mixed_precision,
                   tiny, resume, force):
    """Train the embedded default model family (VAE, text encoder, UNet) on the shapes domain."""
    from mobilediff.training import TrainBaseConfig, train_base

    cfg = TrainBaseConfig(out=out, vae_steps=vae_steps, unet_steps=unet_steps, batch_size=batch_size,
                          vae_batch_size=vae_batch_size, lr=lr, checkpoint_every=checkpoint_every, seed=seed,
                          mixed_precision=mixed_precision)
    if tiny:
        from mobilediff.tiny import tiny_train_config

        cfg = tiny_train_config(cfg)
    path = train_base(cfg, resume=resume, force=force, command="mobilediff " + shlex.join(sys.argv[1:]))
    click.echo(f"pipeline written to {path}")


if __name__ == "__main__":
    main()
