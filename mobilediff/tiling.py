"""Tiled VAE decoding, exported as one graph: the latent is cut into overlapping tiles, each decoded by the same
decoder weights, and the tiles' images blended across their overlaps with linear ramps into the full image.

A 512 px SD VAE decoder's activations are what a phone cannot hold: its last up-block works on 128 x 512 x 512
tensors (128 MiB each in fp32) and the upsampling into it on 256 channels (256 MiB); ONNX Runtime peaked at 3.1 GiB
for a decoder of 189 MiB of weights (benchmarks/results/memory_512.md). A tile's activations scale with its area,
and each tile's input is made to depend on the previous tile's image, so a runtime free to schedule independent
branches in any order (ONNX Runtime's default order starts them all) decodes one tile at a time and frees its
activations before the next; the graph's inputs and outputs are the whole latent and the whole image, so engines run
it as they run any decoder (the bundle contract is unchanged).

The cost: tiles overlap, so more pixels are decoded (:attr:`TiledDecoder.compute_ratio`), and the decoder's group
normalisations see one tile's statistics instead of the whole image's, so a tiled decode differs from the whole one
(the peers' tiled decoders share this); export measures the difference on the component's example latent and records
it (``export.tiling.psnr_db_vs_whole``).
"""
from __future__ import annotations

import math

import torch

from mobilediff.attention import _after
from mobilediff.errors import MobilediffError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``size`` with at least ``overlap`` shared between neighbours, as
    few as that allows, spread evenly."""
    if tile >= size:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def _ramp(length: int, lead: int, trail: int) -> torch.Tensor:
    """Weights along one axis of a tile: rising over its first ``lead`` pixels, falling over its last ``trail``."""
    w = torch.ones(length)
    if lead:
        w[:lead] = torch.arange(1, lead + 1, dtype=torch.float32) / (lead + 1)
    if trail:
        w[length - trail:] = torch.arange(trail, 0, -1, dtype=torch.float32) / (trail + 1)
    return w


def _axis_weights(starts: list[int], tile: int, factor: int) -> list[torch.Tensor]:
    """Per tile along one axis, its blend weights in image pixels (ramps over the parts shared with neighbours)."""
    out = []
    for i, s in enumerate(starts):
        lead = (starts[i - 1] + tile - s) * factor if i > 0 else 0
        trail = (s + tile - starts[i + 1]) * factor if i + 1 < len(starts) else 0
        out.append(_ramp(tile * factor, lead, trail))
    return out


class TiledDecoder(torch.nn.Module):
    """``decoder`` (latent ``(B, C, H, W)`` -> image ``(B, 3, H * factor, W * factor)``) run per tile of
    ``tile`` latent pixels with ``overlap`` between neighbours, blended."""

    def __init__(self, decoder: torch.nn.Module, latent_hw: tuple[int, int], factor: int, tile: int, overlap: int):
        super().__init__()
        h, w = latent_hw
        check_tiling(tile, overlap, (h, w))
        self.inner, self.factor, self.tile, self.overlap = decoder, factor, tile, overlap
        self.latent_hw = (h, w)
        self.tile_hw = (min(tile, h), min(tile, w))
        self.rows, self.cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        wy = _axis_weights(self.rows, self.tile_hw[0], factor)
        wx = _axis_weights(self.cols, self.tile_hw[1], factor)
        total = torch.zeros(h * factor, w * factor)
        masks = []
        for i, y in enumerate(self.rows):
            for j, x in enumerate(self.cols):
                m = wy[i][:, None] * wx[j][None, :]
                total[y * factor:(y + self.tile_hw[0]) * factor, x * factor:(x + self.tile_hw[1]) * factor] += m
                masks.append(m)
        for k, (i, j) in enumerate((i, j) for i in range(len(self.rows)) for j in range(len(self.cols))):
            y, x = self.rows[i], self.cols[j]
            part = total[y * factor:(y + self.tile_hw[0]) * factor, x * factor:(x + self.tile_hw[1]) * factor]
            self.register_buffer(f"blend{k}", (masks[k] / part)[None, None].contiguous(), persistent=False)

    @property
    def tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def compute_ratio(self) -> float:
        """Latent pixels decoded / latent pixels: the extra decoding the overlaps cost."""
        return self.tiles * self.tile_hw[0] * self.tile_hw[1] / (self.latent_hw[0] * self.latent_hw[1])

    def forward(self, latent_sample: torch.Tensor):
        h, w = self.latent_hw
        th, tw = self.tile_hw
        f = self.factor
        image = None
        k = 0
        for y in self.rows:
            for x in self.cols:
                tile = latent_sample[:, :, y:y + th, x:x + tw]
                if image is not None:  # after the previous tile: see mobilediff.attention._after
                    tile = _after(tile, image)
                part = self.inner(tile)[0] * getattr(self, f"blend{k}")
                # the tile placed in the full image: padded with zeros around it (no in-place writes: a plain graph)
                placed = torch.nn.functional.pad(part, (x * f, (w - x - tw) * f, y * f, (h - y - th) * f))
                image = placed if image is None else image + placed
                k += 1
        return (image,)

    def record(self) -> dict:
        return {"tile": self.tile, "overlap": self.overlap, "tiles": [len(self.rows), len(self.cols)],
                "tile_latent": list(self.tile_hw), "row_starts": self.rows, "col_starts": self.cols,
                "compute_ratio": round(self.compute_ratio, 4)}


def check_tiling(tile: int, overlap: int, latent_hw: tuple[int, int] | None = None) -> None:
    """Raise MobilediffError on a tiling that cannot be built."""
    if tile < 1:
        raise MobilediffError(f"--decoder-tile must be >= 1 latent pixel, got {tile}")
    if overlap < 0:
        raise MobilediffError(f"--decoder-overlap must be >= 0, got {overlap}")
    if 2 * overlap >= tile:
        raise MobilediffError(f"--decoder-overlap ({overlap}) must be less than half of --decoder-tile ({tile})")


def tiled_spec(spec, geometry: dict, tile: int, overlap: int):
    """The VAE decoder component ``spec`` with its module tiled (same inputs and outputs); None when one tile covers
    the whole latent (nothing to tile)."""
    import dataclasses

    h, w = geometry["latent_height"], geometry["latent_width"]
    check_tiling(tile, overlap, (h, w))
    if tile >= h and tile >= w:
        return None
    factor = geometry["height"] // h
    return dataclasses.replace(spec, module=TiledDecoder(spec.module, (h, w), factor, tile, overlap).eval())
