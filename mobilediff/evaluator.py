"""The shapes-domain evaluator: exact quality metrics for text-to-image models trained on :mod:`mobilediff.data`.

A small CNN trained on the generator's ground truth reads an image and predicts the background colour and,
for each of the 9 grid cells, whether it holds a shape and which shape, colour and size. From it:

* **per-attribute accuracy** -- over the objects a caption names: position (a shape is where the caption
  says), shape, colour, size; over images: background and count (no extra or missing objects);
* **prompt accuracy** -- the fraction of images whose every attribute is right;
* **Fréchet distance (FD)** -- between Gaussian fits of the evaluator's 128-d penultimate features of
  generated and real images (FID's formula in a feature space that knows this domain).

Usage: ``Evaluator.load()`` gives the shipped network; ``score(images, scenes)`` gives a MetricReport.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mobilediff.data import (BACKGROUNDS, COLORS, GRID, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, ShapesConfig,
                             ShapesDataset, labels_tensor, _POS_WORDS, _SHAPE_WORDS, _SIZE_WORDS)
from mobilediff.errors import MobilediffError, shorten
from mobilediff.io import atomic_write_json, load_tensors, save_tensors

EVALUATOR_DIR = Path(__file__).parent / "assets" / "evaluator"
N_CELLS = GRID * GRID
ATTRIBUTES = ("background", "count", "position", "shape", "color", "size")


@dataclass(frozen=True)
class EvaluatorConfig:
    channels: tuple[int, ...] = (32, 64, 96, 128)  # conv widths; every level halves the side: 64 -> 4
    feature_dim: int = 128  # dimension of the FD feature space
    resolution: int = 64


class EvaluatorNet(nn.Module):
    """CNN -> 128-d feature -> heads for background (4) and per-cell shape (5), colour (6), size (2)."""

    def __init__(self, cfg: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(cfg.channels):
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.backbone = nn.Sequential(*layers)
        self.levels = len(cfg.channels)
        side = cfg.resolution // 2 ** len(cfg.channels)  # 4 for 64 px
        self.to_feature = nn.Linear(c_in * side * side, cfg.feature_dim)
        self.background = nn.Linear(cfg.feature_dim, len(BACKGROUNDS))
        self.shape = nn.Linear(cfg.feature_dim, N_CELLS * (len(SHAPES) + 1))
        self.color = nn.Linear(cfg.feature_dim, N_CELLS * len(COLORS))
        self.size = nn.Linear(cfg.feature_dim, N_CELLS * len(SIZES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, feature_dim)."""
        return F.silu(self.to_feature(self.backbone(x).flatten(1)))

    def level_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 64, 64) in [-1, 1] -> the activations at the end of every level of the backbone, (B, C_l, H_l, W_l)
        with H_l = 64 / 2^l, then the feature (B, feature_dim): the evaluator's view of an image at every scale (a
        perceptual loss reads them)."""
        out, h = [], x
        per_level = len(self.backbone) // self.levels
        for i, layer in enumerate(self.backbone):
            h = layer(h)
            if (i + 1) % per_level == 0:
                out.append(h)
        return out + [F.silu(self.to_feature(h.flatten(1)))]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        b = x.shape[0]
        return {"feature": f, "background": self.background(f),
                "shape": self.shape(f).view(b, N_CELLS, -1), "color": self.color(f).view(b, N_CELLS, -1),
                "size": self.size(f).view(b, N_CELLS, -1)}


def evaluator_loss(out: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    occ = labels["shape"] > 0
    loss = F.cross_entropy(out["background"], labels["background"])
    loss = loss + F.cross_entropy(out["shape"].flatten(0, 1), labels["shape"].flatten())
    loss = loss + F.cross_entropy(out["color"][occ], labels["color"][occ])
    loss = loss + F.cross_entropy(out["size"][occ], labels["size"][occ])
    return loss


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur and noise of the kind a generator's output shows, so the evaluator judges content, not crispness."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=g) * 1.2  # blur std in pixels, 0 .. 1.2
    k = torch.arange(-2, 3, dtype=torch.float32)
    w = torch.exp(-k.view(1, -1) ** 2 / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    w = w / w.sum(1, keepdim=True)  # (B, 5)
    xp = F.pad(x, (2, 2, 2, 2), mode="replicate")
    # separable blur, per image kernel
    cols = torch.stack([xp[..., :, i:i + x.shape[-1]] for i in range(5)], -1)  # (B, 3, H+4, W, 5)
    xh = (cols * w.view(b, 1, 1, 1, 5)).sum(-1)
    rows = torch.stack([xh[..., i:i + x.shape[-2], :] for i in range(5)], -1)  # (B, 3, H, W, 5)
    x = (rows * w.view(b, 1, 1, 1, 5)).sum(-1)
    noise = torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) * 0.1)
    return (x + noise).clamp(-1, 1)


@dataclass
class Prediction:
    background: np.ndarray  # (B,)
    shape: np.ndarray  # (B, 9), 0 = empty, k = SHAPES[k-1]
    color: np.ndarray  # (B, 9)
    size: np.ndarray  # (B, 9)
    feature: np.ndarray  # (B, feature_dim)


@dataclass
class MetricReport:
    """Quality of a set of images against their scenes; ``fd`` is None unless real features were given."""

    n: int
    prompt_accuracy: float
    attribute_accuracy: dict[str, float]
    fd: float | None = None
    per_image_correct: list[bool] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_image_correct")
        return d


class Evaluator:
    """The trained evaluator network and the metrics computed from it."""

    def __init__(self, net: EvaluatorNet, cfg: EvaluatorConfig):
        self.net = net.eval()
        self.cfg = cfg

    @classmethod
    def load(cls, path: Path = EVALUATOR_DIR) -> "Evaluator":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise MobilediffError(f"evaluator not found: {cfg_file}")
        try:
            raw = json.loads(cfg_file.read_text())["architecture"]
            cfg = EvaluatorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise MobilediffError(f"corrupt evaluator config {cfg_file}: {type(e).__name__}: {e}") from None
        net = EvaluatorNet(cfg)
        try:
            net.load_state_dict(load_tensors(path / "evaluator.safetensors"))
        except RuntimeError as e:
            raise MobilediffError(f"evaluator weights {path / 'evaluator.safetensors'} do not fit {cfg_file}: "
                                  f"{str(e).splitlines()[0][:200]}") from None
        return cls(net, cfg)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> Prediction:
        """images: (B, 3, 64, 64) float in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != self.cfg.resolution:
            raise MobilediffError(f"evaluator expects (B, 3, {self.cfg.resolution}, {self.cfg.resolution}) images, "
                                  f"got {tuple(images.shape)}")
        outs = [self.net(images[i:i + batch_size].float()) for i in range(0, len(images), batch_size)]
        cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return Prediction(background=cat["background"].argmax(-1).numpy(), shape=cat["shape"].argmax(-1).numpy(),
                          color=cat["color"].argmax(-1).numpy(), size=cat["size"].argmax(-1).numpy(),
                          feature=cat["feature"].double().numpy())

    def score(self, images: torch.Tensor, scenes: list[Scene], real_features: np.ndarray | None = None) -> MetricReport:
        """Prompt and attribute accuracy of ``images`` against ``scenes``; FD against ``real_features`` if given."""
        if len(images) != len(scenes):
            raise MobilediffError(f"{len(images)} images but {len(scenes)} prompts")
        p = self.predict(images)
        report = score_predictions(p, scenes)
        if real_features is not None:
            report.fd = frechet_distance(p.feature, real_features)
        return report

    def real_features(self, scenes: list[Scene], config: ShapesConfig = ShapesConfig()) -> np.ndarray:
        """Features of ground-truth renders of ``scenes`` (the real side of FD)."""
        from mobilediff.data import render

        return self.predict(render(scenes, config)).feature


def score_predictions(p: Prediction, scenes: list[Scene]) -> MetricReport:
    hits = {a: [] for a in ATTRIBUTES}
    per_image = []
    for i, s in enumerate(scenes):
        ok = [p.background[i] == s.background, int((p.shape[i] > 0).sum()) == len(s.objects)]
        hits["background"].append(ok[0])
        hits["count"].append(ok[1])
        for o in s.objects:
            c = o.position
            obj = {"position": p.shape[i, c] > 0, "shape": p.shape[i, c] == o.shape + 1,
                   "color": p.color[i, c] == o.color, "size": p.size[i, c] == o.size}
            for k, v in obj.items():
                hits[k].append(bool(v))
            ok += list(obj.values())
        per_image.append(bool(all(ok)))
    return MetricReport(n=len(scenes), prompt_accuracy=float(np.mean(per_image)),
                        attribute_accuracy={k: float(np.mean(v)) for k, v in hits.items()}, per_image_correct=per_image)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of feature sets a (N, D) and b (M, D):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise MobilediffError("Fréchet distance needs at least 2 samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as pytorch-fid does
        eps = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = covmean.real
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)))


# ---- captions back to scenes ---------------------------------------------------------------------
def _alternation(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_SIZE_OF = {w: i for i, s in enumerate(SIZES) for w in _SIZE_WORDS[s]}
_SHAPE_OF = {w: i for i, s in enumerate(SHAPES) for w in _SHAPE_WORDS[s]}
_POS_OF = {w: i for i, p in enumerate(POSITIONS) for w in _POS_WORDS[p]}
_OBJ_RE = re.compile(rf"\ba ({_alternation(_SIZE_OF)}) ({_alternation(COLORS)}) ({_alternation(_SHAPE_OF)}),? "
                     rf"({_alternation(_POS_OF)})\b")
_BG_RE = re.compile(rf"\b({_alternation(BACKGROUNDS)}) (?:background|backdrop)\b")


def parse_caption(caption: str) -> Scene:
    """Recover the scene a shapes-domain caption describes. Raises MobilediffError if it is not one."""
    text = caption.strip().lower()
    bg = _BG_RE.search(text)
    objs = [ShapeObject(shape=_SHAPE_OF[m[2]], color=COLORS.index(m[1]), size=_SIZE_OF[m[0]], position=_POS_OF[m[3]])
            for m in _OBJ_RE.findall(text)]
    if bg is None or not objs or len({o.position for o in objs}) != len(objs):
        raise MobilediffError(f"not a shapes-domain caption (need objects with size, colour, shape, position and "
                              f"a background): {shorten(caption, 80)!r}")
    return Scene(background=BACKGROUNDS.index(bg.group(1)), objects=tuple(objs), caption=caption)


# ---- training ------------------------------------------------------------------------------------
def train_evaluator(out: Path, steps: int = 2500, batch_size: int = 64, lr: float = 2e-3, seed: int = 1234,
                    cfg: EvaluatorConfig = EvaluatorConfig(), eval_samples: int = 4096, progress: bool = True,
                    force: bool = False, resume: str | None = None, checkpoint_every: int = 0) -> dict:
    """Train the evaluator on fresh ground-truth samples and write it (safetensors + config.json) to the folder
    ``out``, all or nothing (:func:`mobilediff.io.atomic_dir`).

    ``checkpoint_every`` K > 0 also keeps training checkpoints (every K steps and the last; the two newest) in
    ``out/checkpoints``, which appear with the rest of ``out`` when the command succeeds. ``resume``: such a
    checkpoint folder (of another ``out``), from whose step training continues to ``steps``; it must fit the
    architecture and lie within ``steps`` (batch size, learning rate and seed may differ; with the same ones the
    result is that of one uninterrupted run).

    Raises MobilediffError, before training, if ``out`` exists and ``force`` is false, another process is writing
    it, or the checkpoint cannot be continued; after, if ``out`` appeared meanwhile (never replaced without
    ``force``) or cannot be written."""
    from mobilediff.io import atomic_dir

    out = Path(out)
    if out.exists() and not force:
        raise MobilediffError(f"output directory {out} already exists (pass --force to replace it)")
    ckpt = _evaluator_checkpoint(resume, cfg, steps)
    # OUT is claimed before training, not after it: a second writer of OUT fails now (mobilediff.io)
    with atomic_dir(out, force=force) as tmp:
        net, metrics = _fit(steps, batch_size, lr, seed, cfg, eval_samples, progress, ckpt,
                            tmp if checkpoint_every > 0 else None, checkpoint_every)
        save_tensors(net.state_dict(), tmp / "evaluator.safetensors")
        atomic_write_json(tmp / "config.json", {"architecture": asdict(cfg), "metrics": metrics})
    return metrics


def _evaluator_checkpoint(resume: str | None, cfg: EvaluatorConfig, steps: int):
    """The train-evaluator checkpoint ``resume`` names (None: a fresh run), checked before anything is written: a
    complete checkpoint folder of this architecture, within ``steps``. Raises MobilediffError naming it."""
    if resume is None:
        return None
    if resume == "latest":
        raise MobilediffError("train-evaluator writes --out whole when it finishes, so there is no unfinished run in "
                              "it to continue: pass a checkpoint folder to --resume (OUT/checkpoints/checkpoint-N of a "
                              "run with --checkpoint-every)")
    from mobilediff.train.checkpoint import check_continues, check_fits, load_checkpoint

    ckpt = load_checkpoint(Path(resume))
    if not (ckpt.path / "evaluator.safetensors").is_file():
        raise MobilediffError(f"checkpoint {ckpt.path} is not a train-evaluator checkpoint (no evaluator.safetensors)")
    with torch.random.fork_rng(devices=[]):
        shapes = {k: tuple(v.shape) for k, v in EvaluatorNet(cfg).state_dict().items()}
    check_fits(ckpt, {"evaluator": shapes})
    check_continues(ckpt, {"command": "train-evaluator"}, steps, f"--steps {steps}")
    return ckpt


def _fit(steps: int, batch_size: int, lr: float, seed: int, cfg: EvaluatorConfig, eval_samples: int,
         progress: bool, ckpt=None, run_dir: Path | None = None,
         checkpoint_every: int = 0) -> tuple["EvaluatorNet", dict]:
    """Train an evaluator (see :func:`train_evaluator`), from the start or from the checkpoint ``ckpt``, keeping
    checkpoints in ``run_dir`` (if given) every ``checkpoint_every`` steps; return it and its metrics."""
    import warnings

    from tqdm.auto import tqdm

    from mobilediff.train.checkpoint import restore, run_record, save_checkpoint

    torch.manual_seed(seed)
    net = EvaluatorNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    data = ShapesDataset(seed=seed, config=ShapesConfig(resolution=cfg.resolution))
    g = torch.Generator().manual_seed(seed)
    start = 0
    if ckpt is not None:
        restore(ckpt, {"evaluator": net}, opt)
        g.set_state(load_tensors(ckpt.path / "augment_rng.safetensors")["state"])
        start = ckpt.step
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    with warnings.catch_warnings():  # (stepping the schedule to the checkpoint's step, no optimizer step between)
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            sched.step()
    bar = tqdm(range(start, steps), desc="train evaluator", disable=not progress, mininterval=2.0, initial=start,
               total=steps)
    for step in bar:
        images, _, scenes = data.batch(step * batch_size, batch_size)
        loss = evaluator_loss(net(augment(images, g)), labels_tensor(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if run_dir is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save_checkpoint(run_dir, step + 1, {"evaluator": net.state_dict(), "augment_rng": {"state": g.get_state()}},
                            opt, run_record(command="train-evaluator"))
    ev = Evaluator(net.eval(), cfg)
    # fresh samples from a seed the training never saw: clean, and with generator-like degradation
    test = ShapesDataset(seed=seed + 777, config=ShapesConfig(resolution=cfg.resolution))
    images, _, scenes = test.batch(0, eval_samples)
    clean = ev.score(images, scenes)
    degraded = ev.score(augment(images, torch.Generator().manual_seed(1)), scenes)
    a, b = ev.predict(images[: eval_samples // 2]).feature, ev.predict(images[eval_samples // 2:]).feature
    metrics = {"clean": clean.to_dict(), "degraded": degraded.to_dict(),
               "fd_real_vs_real_2048": frechet_distance(a, b), "train_steps": steps, "batch_size": batch_size}
    return net, metrics
