"""The images image-to-image and inpainting start from: an init image and a mask read from files, checked, in the
tensors the sampler takes (as diffusers' VaeImageProcessor makes them, so a run here matches diffusers' pipelines).

An init image is 8-bit RGB (grayscale and palette images are converted; an alpha channel is accepted only when every
pixel is opaque) at the exact size the model or bundle generates: it is never resized or cropped silently. A mask is
grayscale at the same size; a pixel >= 128 is repainted, below is kept (diffusers binarizes at 0.5); the latent mask
takes the pixel at (y * f, x * f), f the VAE factor (diffusers' nearest interpolation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mobilediff.errors import MobilediffError

_CONVERTIBLE = {"RGB", "L", "P", "1", "RGBA", "LA", "PA", "RGBa", "La"}


def _open(path: Path, option: str):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MobilediffError(f"{option} {path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise MobilediffError(f"{option} {path} is not an image file (PNG, JPEG, PPM, ...)") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise MobilediffError(f"{option} {path} is corrupt: {e}") from None


def _rgb(im, option: str, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of an image in a mode that converts to RGB without choices: refuses 16-bit and float images,
    CMYK and other colour spaces, and transparency (what should show through is the user's choice)."""
    if im.mode not in _CONVERTIBLE:
        raise MobilediffError(f"{option} {path} is a {im.mode} image: give 8-bit RGB or grayscale "
                              f"(convert 16-bit, float and CMYK images first)")
    if "A" in im.mode or "a" in im.mode or "transparency" in im.info:  # an alpha channel, or a tRNS colour key
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if (alpha < 255).any():
            raise MobilediffError(f"{option} {path} has transparent pixels ({int((alpha < 255).sum())}): flatten it "
                                  f"onto a background first")
    return np.asarray(im.convert("RGB"))


def _check_size(arr: np.ndarray, height: int, width: int, option: str, path: Path) -> None:
    if arr.shape[:2] != (height, width):
        raise MobilediffError(f"{option} {path} is {arr.shape[1]}x{arr.shape[0]} pixels, the model generates "
                              f"{width}x{height}: resize or crop it to that size")


def load_init_image(path: Path, height: int, width: int, option: str = "--init-image") -> torch.Tensor:
    """(1, 3, height, width) float32 in [-1, 1]: ``x / 127.5 - 1`` of the file's RGB pixels (diffusers'
    ``x / 255 * 2 - 1``). Raises MobilediffError in one line for a missing, unreadable or corrupt file, a mode that
    is not 8-bit RGB/grayscale, transparency, or another size."""
    im = _open(path, option)
    arr = _rgb(im, option, Path(path))
    _check_size(arr, height, width, option, Path(path))
    return image_tensor(arr)


def image_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1], as the apps compute it (``x / 127.5 - 1``)."""
    return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def load_mask(path: Path, height: int, width: int, factor: int, option: str = "--mask") -> torch.Tensor:
    """(1, 1, height / factor, width / factor) float32 of 0 (keep) and 1 (repaint): the file's pixel at
    (y * factor, x * factor) >= 128. Raises MobilediffError in one line for a file :func:`load_init_image` would
    refuse, a mask in colour (channels that differ: which one marks the region?), a mask that marks nothing to
    repaint, or one whose marked region falls between the latent's pixels."""
    im = _open(path, option)
    arr = _rgb(im, option, Path(path))
    _check_size(arr, height, width, option, Path(path))
    if not ((arr[..., 0] == arr[..., 1]) & (arr[..., 1] == arr[..., 2])).all():
        raise MobilediffError(f"{option} {path} is in colour: a mask is grayscale (white or >= 128: repaint, "
                              f"black: keep)")
    marked = arr[..., 0] >= 128
    if not marked.any():
        raise MobilediffError(f"{option} {path} marks nothing to repaint (no pixel >= 128): leave --mask out for "
                              f"image-to-image")
    latent = marked[::factor, ::factor]
    if not latent.any():
        raise MobilediffError(f"{option} {path}: its marked region misses every latent pixel (the model repaints "
                              f"{factor}x{factor}-pixel cells sampled at their top-left pixel): mark a larger region")
    return torch.from_numpy(latent.astype(np.float32))[None, None].contiguous()

