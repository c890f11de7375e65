"""Quality of a text-to-image pipeline on the shapes domain: fixed prompts and seeds, evaluator metrics.

Every report in benchmarks/ uses :func:`evaluate_pipeline` with the same prompt set (scenes 0..n-1 of the
dataset with seed EVAL_SEED, which no training run uses) and the same initial-noise seeds, so numbers are
comparable across samplers, step counts, students and runtimes. FD is measured against ground-truth
renders of the very same scenes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mobilediff.data import Scene, ShapesDataset
from mobilediff.errors import MobilediffError
from mobilediff.evaluator import Evaluator, MetricReport

EVAL_SEED = 20261124  # prompt set of every quality report; training uses seeds 0.. and 1234
NOISE_SEED = 1000  # image i starts from torch.Generator().manual_seed(NOISE_SEED + i)
EVAL_BATCH = 128  # images generated per pipeline call by evaluate_pipeline


def eval_scenes(n: int, seed: int = EVAL_SEED) -> list[Scene]:
    return ShapesDataset(seed=seed).scenes(0, n)


def evaluate_pipeline(pipe, evaluator: Evaluator, sampler: str, steps: int, guidance: float, n: int = 256,
                      batch_size: int = EVAL_BATCH, real_features: np.ndarray | None = None,
                      progress: Callable[[int], None] | None = None) -> MetricReport:
    """Generate n images for the fixed prompt set and score them (prompt/attribute accuracy, FD)."""
    from mobilediff.sampling import generate

    scenes = eval_scenes(n)
    images = generate(pipe, [s.caption for s in scenes], [NOISE_SEED + i for i in range(n)], steps, sampler,
                      guidance, batch_size=batch_size, progress=progress)
    if real_features is None:
        real_features = evaluator.real_features(scenes)
    return evaluator.score(images, scenes, real_features)


def progress_batches(n: int, batch_size: int = EVAL_BATCH) -> int:
    """How many pipeline calls evaluate_pipeline makes for n images: its ``progress`` fires per step of each one."""
    return -(-n // batch_size)


def bundle_images(runner, n: int, sampler: str, steps: int, guidance: float | None,
                  progress: Callable[[int], None] | None = None, prompts: list[str] | None = None):
    """The fixed prompt set and noise seeds of :func:`evaluate_pipeline`, sampled from a bundle through a host
    runtime (:class:`mobilediff.engine.BundleRunner`), one image at a time as an app would: (n, 3, H, W) in [-1, 1].

    ``prompts``: the first ``n`` of these instead of the shapes set (any model's prompts, e.g. ``--prompts FILE``),
    image i still from noise seed NOISE_SEED + i. Raises MobilediffError when fewer than ``n`` are given."""
    import torch

    if prompts is None:
        captions = [scene.caption for scene in eval_scenes(n)]
    elif len(prompts) < n:
        raise MobilediffError(f"{n} images asked of {len(prompts)} prompts")
    else:
        captions = list(prompts[:n])
    out = []
    for i, caption in enumerate(captions):
        out.append(runner.generate(caption, NOISE_SEED + i, steps, sampler, guidance))
        if progress is not None:
            progress(1)
    return torch.cat(out)
