"""The "shapes" domain: a procedural, seeded, captioned text-to-image dataset.

Every image shows one or two coloured shapes, each in a cell of a 3x3 grid, on a coloured background.
Because the generator knows the ground truth of every image, quality of a text-to-image model trained
on it can be measured exactly (see :mod:`mobilediff.evaluator`).

Determinism: sample ``i`` of a dataset with seed ``s`` depends only on ``(s, i)`` -- its scene and
caption come from ``numpy.random.Generator(PCG64([s, i]))`` -- so a training run that resumes at step
``k`` sees exactly the batches it would have seen, and the dataset is infinite.
Rendering is vectorised over a batch in torch (supersampled for anti-aliased edges), so producing a
batch of 128 images at 64x64 takes a few milliseconds, far below one training step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# ---- vocabulary of the domain -------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "diamond")
COLORS = ("red", "green", "blue", "yellow", "purple", "cyan")
BACKGROUNDS = ("white", "black", "gray", "pink")
SIZES = ("small", "large")
# row-major 3x3 grid, index = 3 * row + col
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
GRID = 3

COLOR_RGB = {
    "red": (220, 40, 40), "green": (40, 175, 60), "blue": (40, 80, 225),
    "yellow": (240, 210, 40), "purple": (150, 60, 200), "cyan": (40, 205, 215),
}
BACKGROUND_RGB = {"white": (235, 235, 235), "black": (25, 25, 25), "gray": (128, 128, 128), "pink": (250, 185, 205)}

# ---- caption phrasing ---------------------------------------------------------------------------
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square",), "triangle": ("triangle",),
                "diamond": ("diamond", "rhombus")}
_POS_WORDS = {
    "top left": ("at the top left", "in the top left corner", "in the upper left"),
    "top": ("at the top", "at the top center", "in the upper middle"),
    "top right": ("at the top right", "in the top right corner", "in the upper right"),
    "left": ("on the left", "at the left", "in the middle left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "at the right", "in the middle right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left"),
    "bottom": ("at the bottom", "at the bottom center", "in the lower middle"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right"),
}
_BG_PHRASES = ("on a {bg} background", "against a {bg} background", "over a {bg} backdrop")
_ONE_TEMPLATES = (
    "{obj} {pos} {bgp}",
    "{bg} background with {obj} {pos}",
    "{obj} {pos}, {bg} background",
    "a picture of {obj} {pos} {bgp}",
)
_TWO_TEMPLATES = (
    "{obj} {pos} and {obj2} {pos2} {bgp}",
    "{bg} background with {obj} {pos} and {obj2} {pos2}",
    "{obj} {pos}, {obj2} {pos2}, {bg} background",
)


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: indices into SHAPES, COLORS, SIZES and POSITIONS."""

    shape: int
    color: int
    size: int
    position: int


@dataclass(frozen=True)
class Scene:
    """Ground truth of one image; ``caption`` mentions every attribute of every object."""

    background: int
    objects: tuple[ShapeObject, ...]
    caption: str
    # rendering jitter, in pixels / relative units, per object: (dx, dy, scale)
    jitter: tuple[tuple[float, float, float], ...] = field(default=(), compare=False)
    # per-image colour jitter added to every RGB value, in [0, 255] units
    tint: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), compare=False)

    def cell_labels(self) -> dict[str, np.ndarray]:
        """Per-cell targets of the evaluator: shape (0 = empty, 1.. = SHAPES), colour, size (-1 = empty)."""
        shape = np.zeros(GRID * GRID, dtype=np.int64)
        color = np.full(GRID * GRID, -1, dtype=np.int64)
        size = np.full(GRID * GRID, -1, dtype=np.int64)
        for o in self.objects:
            shape[o.position] = o.shape + 1
            color[o.position] = o.color
            size[o.position] = o.size
        return {"shape": shape, "color": color, "size": size}


@dataclass(frozen=True)
class ShapesConfig:
    """Settings of the procedural domain."""

    resolution: int = 64  # output images are resolution x resolution RGB
    p_two_objects: float = 0.25  # probability that a scene holds two objects
    supersample: int = 4  # rendering supersampling factor for anti-aliased edges
    small_radius: float = 0.09  # half-size of a small shape, as a fraction of the image side
    large_radius: float = 0.145  # half-size of a large shape
    position_jitter: float = 0.02  # max centre offset, as a fraction of the image side
    size_jitter: float = 0.06  # max relative change of a shape's size
    color_jitter: float = 10.0  # max per-image RGB offset, in [0, 255] units


def _object_phrase(rng: np.random.Generator, o: ShapeObject) -> str:
    size = rng.choice(_SIZE_WORDS[SIZES[o.size]])
    shape = rng.choice(_SHAPE_WORDS[SHAPES[o.shape]])
    return f"a {size} {COLORS[o.color]} {shape}"


def make_caption(rng: np.random.Generator, background: int, objects: tuple[ShapeObject, ...]) -> str:
    """A caption naming every attribute of ``objects`` and the background, in a random phrasing."""
    bg = BACKGROUNDS[background]
    fields = {"bg": bg, "bgp": rng.choice(_BG_PHRASES).format(bg=bg),
              "obj": _object_phrase(rng, objects[0]), "pos": rng.choice(_POS_WORDS[POSITIONS[objects[0].position]])}
    if len(objects) == 1:
        template = rng.choice(_ONE_TEMPLATES)
    else:
        fields["obj2"] = _object_phrase(rng, objects[1])
        fields["pos2"] = rng.choice(_POS_WORDS[POSITIONS[objects[1].position]])
        template = rng.choice(_TWO_TEMPLATES)
    return template.format(**fields)


def sample_scene(seed: int, index: int, config: ShapesConfig = ShapesConfig()) -> Scene:
    """Scene ``index`` of the dataset with ``seed``: a pure function of its arguments."""
    rng = np.random.Generator(np.random.PCG64([int(seed), int(index)]))
    background = int(rng.integers(len(BACKGROUNDS)))
    n = 2 if rng.random() < config.p_two_objects else 1
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    objects = tuple(
        ShapeObject(shape=int(rng.integers(len(SHAPES))), color=int(rng.integers(len(COLORS))),
                    size=int(rng.integers(len(SIZES))), position=int(c))
        for c in cells
    )
    jitter = tuple(
        (float(rng.uniform(-1, 1) * config.position_jitter), float(rng.uniform(-1, 1) * config.position_jitter),
         float(1 + rng.uniform(-1, 1) * config.size_jitter))
        for _ in objects
    )
    tint = tuple(float(x) for x in rng.uniform(-1, 1, size=3) * config.color_jitter)
    caption = make_caption(rng, background, objects)
    return Scene(background=background, objects=objects, caption=caption, jitter=jitter, tint=tint)


def _shape_mask(kind: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Boolean mask of a shape from offsets to its centre (image coordinates, y down) and half-size r."""
    name = SHAPES[kind]
    if name == "circle":
        return dx * dx + dy * dy <= r * r
    if name == "square":
        return torch.maximum(dx.abs(), dy.abs()) <= 0.85 * r
    if name == "diamond":
        return dx.abs() + dy.abs() <= 1.15 * r
    if name == "triangle":  # apex up at -r, base at +0.8 r, half-width r at the base
        t = (dy + r) / (1.8 * r)
        return (t >= 0) & (t <= 1) & (dx.abs() <= r * t)
    raise ValueError(f"unknown shape index {kind}")


def render(scenes: list[Scene], config: ShapesConfig = ShapesConfig()) -> torch.Tensor:
    """Render scenes to a float tensor (B, 3, H, W) in [-1, 1] (the range diffusers' VAEs expect)."""
    res, ss = config.resolution, config.supersample
    n = res * ss
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # pixel centres in [0, 1]
    ys, xs = coords.view(n, 1), coords.view(1, n)
    out = torch.empty(len(scenes), 3, n, n)
    for b, scene in enumerate(scenes):
        img = out[b]
        img.copy_(torch.tensor(BACKGROUND_RGB[BACKGROUNDS[scene.background]], dtype=torch.float32).view(3, 1, 1))
        for o, (jx, jy, js) in zip(scene.objects, scene.jitter or ((0.0, 0.0, 1.0),) * len(scene.objects)):
            row, col = divmod(o.position, GRID)
            cx, cy = (col + 0.5) / GRID + jx, (row + 0.5) / GRID + jy
            r = (config.small_radius, config.large_radius)[o.size] * js
            # only the shape's bounding box is touched: rendering cost stays tiny
            x0, x1 = max(0, int((cx - 1.2 * r) * n)), min(n, int((cx + 1.2 * r) * n) + 1)
            y0, y1 = max(0, int((cy - 1.2 * r) * n)), min(n, int((cy + 1.2 * r) * n) + 1)
            mask = _shape_mask(o.shape, xs[:, x0:x1] - cx, ys[y0:y1] - cy, torch.tensor(r))
            color = torch.tensor(COLOR_RGB[COLORS[o.color]], dtype=torch.float32).view(3, 1, 1)
            patch = img[:, y0:y1, x0:x1]
            patch.copy_(torch.where(mask, color, patch))
        img += torch.tensor(scene.tint).view(3, 1, 1)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    return (out.clamp(0, 255) / 127.5 - 1.0).contiguous()


class ShapesDataset:
    """Infinite, seeded dataset of (image, caption, scene) -- index ``i`` always gives the same sample."""

    def __init__(self, seed: int = 0, config: ShapesConfig = ShapesConfig()):
        self.seed = seed
        self.config = config

    def scenes(self, start: int, count: int) -> list[Scene]:
        return [sample_scene(self.seed, start + i, self.config) for i in range(count)]

    def batch(self, start: int, count: int) -> tuple[torch.Tensor, list[str], list[Scene]]:
        """Samples ``start .. start+count-1``: images (B, 3, H, W) in [-1, 1], captions, scenes."""
        scenes = self.scenes(start, count)
        return render(scenes, self.config), [s.caption for s in scenes], scenes


def labels_tensor(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Stack evaluator targets for scenes: background (B,), shape/color/size (B, 9)."""
    cells = [s.cell_labels() for s in scenes]
    return {
        "background": torch.tensor([s.background for s in scenes]),
        "shape": torch.from_numpy(np.stack([c["shape"] for c in cells])),
        "color": torch.from_numpy(np.stack([c["color"] for c in cells])),
        "size": torch.from_numpy(np.stack([c["size"] for c in cells])),
    }


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
