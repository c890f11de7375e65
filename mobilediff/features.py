"""A domain feature extractor for Fréchet distance: a small CNN classifier trained on labelled images of the domain.

FID's Inception network knows photographs; on a narrow domain (64 px emoji sprites, icons, a product catalogue) its
features say little, and it needs weights from elsewhere. A classifier trained on the domain's own labels (e.g. the
emoji sub-categories of ``emoji.json``) gives a feature space that separates what the domain distinguishes, the
way the shapes evaluator does for the shapes domain (:mod:`mobilediff.evaluator`).

The trained folder (``config.json`` with ``model_type: "mobilediff-classifier"`` + ``model.safetensors``) is a
feature extractor like any other: ``--fd-features DIR`` (:class:`mobilediff.metrics.FeatureExtractor`), whose
features are the network's ``feature_dim``-d layer before the label head.

Usage: ``mobilediff train-features --images DIR --label subcategory --out DIR``.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilediff.errors import MobilediffError, shorten
from mobilediff.io import atomic_write_json, load_tensors, save_tensors

MODEL_TYPE = "mobilediff-classifier"
# embedded extractors by name (--fd-features NAME): the emoji sub-category classifier (docs/models.md)
NAMED_EXTRACTORS = {"default:emoji": Path(__file__).parent / "assets" / "features" / "emoji"}
MIN_PER_LABEL = 2  # a label seen fewer times than this in the data is folded into "other"
OTHER = "other"


@dataclass(frozen=True)
class ClassifierConfig:
    channels: tuple[int, ...] = (32, 64, 128, 128)  # conv widths; every level halves the side
    feature_dim: int = 128  # dimension of the feature space (the FD's)
    resolution: int = 64  # input side, pixels (images are resized to it)
    num_labels: int = 2

    def __post_init__(self):
        if not self.channels or any(type(c) is not int or c < 8 or c % 8 for c in self.channels):
            raise MobilediffError(f"classifier channels must be positive multiples of 8, got {self.channels}")
        for name in ("feature_dim", "resolution", "num_labels"):
            value = getattr(self, name)
            if type(value) is not int or value < (2 if name == "num_labels" else 1):
                raise MobilediffError(f"classifier {name} must be an integer >= {2 if name == 'num_labels' else 1}, "
                                      f"got {value!r}")
        if self.resolution < 2 ** len(self.channels):
            raise MobilediffError(f"classifier resolution {self.resolution} is below the {2 ** len(self.channels)} "
                                  f"pixels its {len(self.channels)} levels need")


class ClassifierNet(nn.Module):
    """Conv levels (stride 2, GroupNorm, SiLU) -> global average pool -> ``feature_dim`` features -> label logits."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.backbone = nn.Sequential(*layers)
        self.to_feature = nn.Linear(c_in, cfg.feature_dim)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_labels)
        self.resolution = cfg.resolution

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, feature_dim)."""
        return self.to_feature(self.backbone(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.features(x)))


def read_labels(images: Path, field: str) -> dict[str, str]:
    """file_name -> label of an imagefolder's ``metadata.jsonl`` column ``field`` (rows without it are left out).

    Raises MobilediffError: no metadata.jsonl (labels live there), a corrupt one, no row with the field, a label
    that is not a non-empty string or number."""
    from mobilediff.sources.files import _read_text, read_jsonl

    if not Path(images).is_dir():
        raise MobilediffError(f"image folder {images} does not exist" if not Path(images).exists()
                              else f"--images {images} is a file; expected an imagefolder with metadata.jsonl")
    meta = Path(images) / "metadata.jsonl"
    if not meta.is_file():
        raise MobilediffError(f"--label needs an imagefolder with metadata.jsonl; {images} has none")
    out = {}
    for i, row in read_jsonl(_read_text(meta, "metadata file"), str(meta)):
        if field not in row or not isinstance(row.get("file_name"), str):
            continue
        value = row[field]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
            raise MobilediffError(f"{meta} line {i}: label {field!r} must be a non-empty string or number, "
                                  f"got {shorten(repr(value), 40)}")
        out[row["file_name"]] = str(value).strip()
    if not out:
        raise MobilediffError(f"no row of {meta} has a {field!r} field to train on")
    return out


def _label_set(labels: list[str]) -> list[str]:
    """The label vocabulary: every label seen at least MIN_PER_LABEL times, sorted, then "other" if any is rarer."""
    counts = Counter(labels)
    kept = sorted(name for name, n in counts.items() if n >= MIN_PER_LABEL and name != OTHER)
    if len(kept) < len(counts):
        kept.append(OTHER)
    if len(kept) < 2:
        raise MobilediffError(f"a classifier needs at least 2 labels with {MIN_PER_LABEL}+ images each; the data has "
                              f"{len(counts)} label(s)")
    return kept


def _augment(x: torch.Tensor, generator: torch.Generator, shift: int) -> torch.Tensor:
    """Random shifts of up to ``shift`` pixels (edge padding) and horizontal flips, per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=generator)
    out = torch.stack([padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)


@torch.no_grad()
def _accuracy(net: ClassifierNet, images: torch.Tensor, targets: torch.Tensor, batch: int = 256) -> float:
    if len(images) == 0:
        return float("nan")
    right = 0
    for i in range(0, len(images), batch):
        right += int((net(images[i: i + batch]).argmax(1) == targets[i: i + batch]).sum())
    return right / len(images)


def train_classifier(options, label_field: str, out: Path, steps: int = 2000, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, cfg: ClassifierConfig | None = None, force: bool = False,
                     progress: bool = True, command: str = "") -> dict:
    """Train a classifier on the ``label_field`` of the images of ``options`` (a DataOptions with ``--images``, an
    imagefolder) and write it to the folder ``out``, all or nothing.

    Images are decoded at ``cfg.resolution`` through the data cache; the held-out split of ``options`` is never
    trained on and gives the validation accuracy. Returns the training record (also in OUT/config.json).

    Raises MobilediffError, before training: ``out`` exists without ``force``, no imagefolder, no usable labels."""
    from tqdm.auto import tqdm

    from mobilediff.io import atomic_dir
    from mobilediff.sources import load_images

    out = Path(out)
    if out.exists() and not force:
        raise MobilediffError(f"output directory {out} already exists (pass --force to replace it)")
    if options.images is None:
        raise MobilediffError("train-features reads labels from an imagefolder's metadata.jsonl: pass --images DIR")
    by_file = read_labels(options.images, label_field)
    base = cfg or ClassifierConfig()
    data = load_images(options, (base.resolution, base.resolution), show_progress=progress)
    rows = [i for i, key in enumerate(data.keys) if key in by_file]
    if not rows:
        raise MobilediffError(f"none of the usable images of {options.images} has a {label_field!r} label")
    names = _label_set([by_file[data.keys[i]] for i in rows])
    index = {name: j for j, name in enumerate(names)}
    targets = torch.tensor([index.get(by_file.get(k, ""), index.get(OTHER, -1)) for k in data.keys])
    labelled = targets >= 0
    train_rows = [int(r) for r in data.train_rows if labelled[r]]
    val_rows = [int(r) for r in data.validation_rows if labelled[r]]
    if len(train_rows) < 2:
        raise MobilediffError(f"only {len(train_rows)} labelled training image(s); a classifier needs more")
    cfg = ClassifierConfig(channels=base.channels, feature_dim=base.feature_dim, resolution=base.resolution,
                           num_labels=len(names))
    train_x, train_y = data.images(np.array(train_rows)), targets[train_rows]
    val_x, val_y = data.images(np.array(val_rows, dtype=np.int64)), targets[val_rows]

    torch.manual_seed(seed)
    net = ClassifierNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    generator = torch.Generator().manual_seed(seed)
    shift = max(1, cfg.resolution // 16)
    start = time.perf_counter()
    with atomic_dir(out, force=force) as tmp:
        bar = tqdm(range(steps), desc="train features", unit="step", disable=not progress)
        net.train()
        for step in bar:
            pick = torch.randint(0, len(train_rows), (min(batch_size, len(train_rows)),), generator=generator)
            loss = F.cross_entropy(net(_augment(train_x[pick], generator, shift)), train_y[pick],
                                   label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        net.eval()
        record = {"label_field": label_field, "labels": names, "steps": steps, "batch_size": batch_size, "lr": lr,
                  "seed": seed, "train_images": len(train_rows), "validation_images": len(val_rows),
                  "train_accuracy": _accuracy(net, train_x, train_y),
                  "validation_accuracy": _accuracy(net, val_x, val_y),
                  "chance_accuracy": max(Counter(train_y.tolist()).values()) / len(train_rows),
                  "seconds": round(time.perf_counter() - start, 1), "data": data.report.source,
                  "command": command}
        save_tensors(net.state_dict(), tmp / "model.safetensors")
        atomic_write_json(tmp / "config.json", {"model_type": MODEL_TYPE, "architecture": asdict(cfg),
                                                "training": record})
    return record


def load_classifier(folder: Path, config: dict) -> ClassifierNet:
    """The network of a train-features folder whose parsed config.json is ``config``; refuses an architecture that
    does not build or weights that do not fit it (one line naming the folder)."""
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise MobilediffError(f"{folder / 'config.json'} has no 'architecture' object")
    try:
        cfg = ClassifierConfig(**{**arch, "channels": tuple(arch.get("channels", ()))})
    except TypeError as e:
        raise MobilediffError(f"{folder / 'config.json'}: unknown classifier architecture ({e})") from None
    except MobilediffError as e:
        raise MobilediffError(f"{folder / 'config.json'}: {e}") from None
    net = ClassifierNet(cfg)
    state = load_tensors(folder / "model.safetensors")
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise MobilediffError(f"weights in {folder} do not fit the architecture of its config.json (e.g. {diff[0]})")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)
