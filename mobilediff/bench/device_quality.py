"""run_device's quality of any model: the metric set of :mod:`mobilediff.metrics` on the user's prompts
(``--prompts FILE``) in place of the shapes-domain evaluator.

Every end-to-end row generates the first ``--quality-n`` prompts of the file, image i from noise seed
``NOISE_SEED + i`` (as :mod:`mobilediff.quality` does for the shapes set), and is scored with

* teacher fidelity: PSNR and SSIM of each image against the image of the same prompt and seed made by the row's
  baseline -- the float teacher's baseline row (``--baseline``, 50-step DDIM by default) on the same runtime, the
  eager teacher's for eager rows: the row ``speedup_vs_baseline`` divides by. Those images are made once per
  runtime, before the first row is scored, and kept (the teacher row itself reuses them: PSNR +inf, SSIM 1);
* the Fréchet distance in the features of ``--fd-features`` against ``--reference-images`` (decoded at the bundles'
  image size), when given;
* the CLIP score with ``--clip``, when given.

:func:`read_prompt_file` and :func:`load_prompt_quality` read and check every input and load every network before any
timing starts.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mobilediff.bench.bundles import BundleInfo, Plan
from mobilediff.errors import MobilediffError

if TYPE_CHECKING:  # torch and the metric networks load only when --prompts is given
    import torch

    from mobilediff.metrics import MetricSet

METRICS = "teacher-fidelity/fd/clip"  # quality["metrics"] of a row scored here (the shapes evaluator's rows lack it)


@dataclass(frozen=True)
class PromptMetricsOptions:
    """What the user named for the metric set (run_device's ``--prompts`` and the flags that go with it)."""

    prompts: Path  # .txt (one a line), .jsonl or .csv ('text') prompt file, read by mobilediff.sources.load_prompts
    fd_features: Path | None = None  # FD extractor: a TorchScript file or a model folder (FeatureExtractor.load)
    reference_images: Path | None = None  # folder of real images the FD compares against; with fd_features only
    fd_image_size: int | None = None  # input side, pixels, of the extractor (FeatureExtractor.load's image_size)
    clip: Path | None = None  # local CLIP folder for the CLIP score (ClipScorer.load)

    def check(self) -> None:
        """Refuse combinations that cannot be scored, before any file is read."""
        if (self.fd_features is None) != (self.reference_images is None):
            raise MobilediffError("a Fréchet distance needs both --fd-features (the extractor) and --reference-images "
                                  "(the real images): give both or neither")
        if self.fd_image_size is not None and self.fd_features is None:
            raise MobilediffError("--fd-image-size sets the input side of --fd-features: pass --fd-features too")


@dataclass(frozen=True)
class TeacherImages:
    """The images every row of one runtime is compared with: its baseline row's."""

    model: str  # the baseline row's model (a bundle name, or "eager:<source>")
    plan: Plan  # its plan (the teacher's --baseline)
    images: torch.Tensor  # (n, 3, H, W) float in [-1, 1]


@dataclass
class PromptQuality:
    """The loaded metric set and its prompts; ``teachers`` fills as the run makes each runtime's reference."""

    prompts: list[str]  # the prompts every row generates, image i from seed NOISE_SEED + i
    metric_set: MetricSet  # FD reference features computed once, at load
    record: dict  # settings["metric_set"] of the result
    teachers: dict[str, TeacherImages] = field(default_factory=dict)  # runtime -> its baseline's images


def read_prompt_file(options: PromptMetricsOptions, n: int) -> list[str]:
    """The first ``n`` usable prompts of ``options.prompts`` (all of them, with a warning, when it holds fewer).

    Raises:
        MobilediffError: a missing, unreadable or malformed file, or fewer than 2 usable prompts (FD and the CLIP
            score are means over a set; a covariance needs two images).
    """
    from mobilediff.sources import DataOptions, load_prompts

    prompts = load_prompts(DataOptions(prompts=options.prompts))
    if len(prompts) < 2:
        raise MobilediffError(f"--prompts {options.prompts} holds {len(prompts)} usable prompt; the metrics need at "
                              f"least 2")
    if len(prompts) < n:
        print(f"warning: --prompts {options.prompts} holds {len(prompts)} usable prompts: quality is scored on those "
              f"{len(prompts)}, not --quality-n {n}", file=sys.stderr)
    return prompts[:n]


def image_size(bundles: list[BundleInfo]) -> tuple[int, int]:
    """(H, W) of the images every bundle makes; refuses bundles of several sizes (fidelity compares images of one
    size, and the FD reference is decoded at it)."""
    sizes = {(b.manifest.geometry.height, b.manifest.geometry.width): b.name for b in bundles}
    if len(sizes) > 1:
        (a, first), (c, second) = list(sizes.items())[:2]
        raise MobilediffError(f"--prompts compares every row with its teacher's images, so every bundle must make one "
                              f"image size: {first} makes {a[0]}x{a[1]}, {second} {c[0]}x{c[1]}")
    return next(iter(sizes))


def load_prompt_quality(options: PromptMetricsOptions, prompts: list[str], size: tuple[int, int]) -> PromptQuality:
    """Load the metric set: the FD extractor and the reference images' features (decoded at ``size`` = (H, W)) and
    the CLIP scorer, each only when asked for.

    Raises:
        MobilediffError: anything :meth:`FeatureExtractor.load`, :func:`load_reference_images`,
            :meth:`ClipScorer.load` or :class:`MetricSet` refuse (a missing path, pickle weights, a folder without its
            config, fewer than 2 reference images, a failing network).
    """
    from mobilediff.metrics import ClipScorer, FeatureExtractor, MetricSet
    from mobilediff.sources import load_reference_images

    extractor = reference = None
    record = {"prompts": str(options.prompts), "n": len(prompts), "metrics": METRICS, "fd_features": None,
              "reference_images": None, "clip": None}
    if options.fd_features is not None:
        extractor = FeatureExtractor.load(options.fd_features, image_size=options.fd_image_size)
        real = load_reference_images(options.reference_images, size)
        reference = extractor.features(real)
        record["fd_features"] = {"path": str(options.fd_features), "kind": extractor.kind, "dim": extractor.dim,
                                 "image_size": options.fd_image_size}
        record["reference_images"] = {"path": str(options.reference_images), "count": len(reference),
                                      "decoded_at": list(size)}
    clip = ClipScorer.load(options.clip) if options.clip is not None else None
    if clip is not None:
        record["clip"] = str(options.clip)
    metric_set = MetricSet(clip=clip, fd_features=extractor, fd_reference=reference)
    return PromptQuality(prompts=prompts, metric_set=metric_set, record=record)


def baseline_teachers(bundles: list[BundleInfo], runtimes, eager_dirs) -> dict[str, tuple[BundleInfo, Plan]]:
    """Per runtime, the teacher bundle whose row :func:`mobilediff.bench.device_run.attach_baselines` takes as the
    baseline -- the first fp32 teacher with files for the runtime, else the first fp16 one; for eager, the first
    teacher with an eager reference (``eager_dirs``: the loaded reference folders) -- with its baseline plan."""
    out = {}
    for precision in ("fp32", "fp16"):
        for b in bundles:
            if b.role != "teacher":
                continue
            for rt in runtimes:
                if rt == "eager":
                    if b.eager_dir is not None and str(b.eager_dir) in eager_dirs:
                        out.setdefault(rt, (b, b.plans[0]))  # an eager row is always fp32
                elif rt in b.targets and b.precision == precision:
                    out.setdefault(rt, (b, b.plans[0]))
    return out


def row_images(runtime: str, obj, plan: Plan, prompts: list[str], bar):
    """(n, 3, H, W) images of ``prompts`` (seeds NOISE_SEED + i) from a BundleRunner or, for eager, a pipeline."""
    from mobilediff.quality import NOISE_SEED, bundle_images
    from mobilediff.sampling import generate

    bar.set_postfix_str(f"{runtime} {plan.sampler}-{plan.steps}")
    n = len(prompts)
    if runtime == "eager":
        images = generate(obj, prompts, [NOISE_SEED + i for i in range(n)], plan.steps, plan.sampler, plan.guidance,
                          progress=None)
        bar.update(n)
        return images
    return bundle_images(obj, n, plan.sampler, plan.steps, plan.guidance, progress=bar.update, prompts=prompts)


def make_teacher_images(pq: PromptQuality, runtime: str, model: str, obj, plan: Plan, bar) -> None:
    """Generate and keep the reference images of ``runtime`` (its baseline row ``model``, run by ``obj``)."""
    pq.teachers[runtime] = TeacherImages(model, plan, row_images(runtime, obj, plan, pq.prompts, bar))


def score_row(pq: PromptQuality, runtime: str, model: str, obj, plan: Plan, bar) -> dict:
    """The quality of one end-to-end row: its images (the kept ones when it is its runtime's reference) scored with
    the metric set, fidelity against its runtime's reference (None without one)."""
    teacher = pq.teachers.get(runtime)
    if teacher is not None and (teacher.model, teacher.plan) == (model, plan):
        images = teacher.images
        bar.update(len(pq.prompts))
    else:
        images = row_images(runtime, obj, plan, pq.prompts, bar)
    m = pq.metric_set.compute(images, pq.prompts, None if teacher is None else teacher.images)
    return {"n": len(images), "metrics": METRICS, "psnr_db_vs_teacher": m.get("psnr_db_vs_teacher"),
            "ssim_vs_teacher": m.get("ssim_vs_teacher"), "fd": m.get("fd"), "clip_score": m.get("clip_score"),
            "prompt_accuracy": None, "attribute_accuracy": None,
            "fidelity_vs": None if teacher is None else teacher.model}
