"""Quality metrics for any text-to-image model, not only the shapes domain.

Three families, each usable alone:

* teacher fidelity, no weights needed: :func:`psnr` and :func:`ssim` of a student's images against the teacher's
  images for the same prompts and seeds;
* text-image agreement: :class:`ClipScorer`, the CLIPScore of Hessel et al. 2021 (the torchmetrics convention) with a
  CLIP model from a local folder;
* distribution distance: :class:`FeatureExtractor` turns images into feature vectors with a user-supplied network (a
  TorchScript Inception as clean-fid and StyleGAN distribute it, a CLIP folder, a DINOv2-like folder) and :func:`fd`
  measures the Fréchet distance of two sets with :func:`mobilediff.evaluator.frechet_distance`.

:class:`MetricSet` bundles whichever of them a caller has and returns one dict of numbers.

Images are torch tensors (B, 3, H, W), float, in [-1, 1] (as :func:`mobilediff.data.from_uint8` makes them); values
outside are clipped, as saving them as an image would. Nothing here downloads anything or loads a pickle: Hugging Face
folders are read with ``local_files_only=True`` and ``use_safetensors=True``, and a ``.pt`` file is loaded only after
its zip layout shows it is a TorchScript archive (``torch.jit.save``), never when ``torch.save`` wrote it.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mobilediff.errors import MobilediffError
from mobilediff.evaluator import frechet_distance
from mobilediff.io import PICKLE_SUFFIXES

# ---- SSIM constants of Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity"
SSIM_WINDOW = 11  # taps of the Gaussian window per axis
SSIM_SIGMA = 1.5  # its standard deviation, pixels
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilisers: C1 = (K1 L)^2, C2 = (K2 L)^2 with data range L = 1

# OpenAI CLIP's normalisation (per channel, on [0, 1]), used when a folder has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

INCEPTION_SIZE = 299  # input side of the Inception v3 that FID is defined with
BATCH_SIZE = 32  # images per forward pass of a scorer or extractor, unless the caller says otherwise
PROBE_BATCH = 2  # images in the probe every loaded feature extractor must pass


# ---- checks shared by every metric ----------------------------------------------------------------------------------
def _check_images(images, name: str = "images") -> None:
    """Refuse anything but a finite float tensor (B, 3, H, W) with B, H, W >= 1."""
    if not isinstance(images, torch.Tensor):
        raise MobilediffError(f"{name} must be a torch tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or min(images.shape) == 0:
        raise MobilediffError(f"{name} must have shape (B, 3, H, W) with B, H, W >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise MobilediffError(f"{name} must be a float tensor in [-1, 1], got {images.dtype}")
    if not torch.isfinite(images).all():
        raise MobilediffError(f"{name} contain NaN or infinite values")


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> float64 in [0, 1], clipped (what saving as an image would keep)."""
    return ((images.detach().double() + 1) / 2).clamp(0, 1)


def _pair(images: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets checked and mapped to [0, 1] float64 on the images' device; refuse different shapes."""
    _check_images(images, "images")
    _check_images(reference, "reference")
    if images.shape != reference.shape:
        raise MobilediffError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} differ in shape")
    return _unit_range(images), _unit_range(reference).to(images.device)


# ---- teacher fidelity -----------------------------------------------------------------------------------------------
def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image against its reference, in dB.

    Both sets are mapped from [-1, 1] to [0, 1] (data range 1), so PSNR = 10 log10(1 / MSE) with the MSE over the
    3 x H x W values of an image; a constant offset d in [-1, 1] units gives -20 log10(d / 2).

    Args:
        images: (B, 3, H, W) float in [-1, 1], e.g. a student's images.
        reference: the same shape, e.g. the teacher's images for the same prompts and seeds.
    Returns:
        (B,) float64 on the images' device, dB; +inf where an image equals its reference exactly (MSE 0).
    Raises:
        MobilediffError: not (B, 3, H, W) float tensors, non-finite values, or shapes that differ.
    """
    x, y = _pair(images, reference)
    mse = (x - y).pow(2).flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(1.0 / mse)  # 1 / 0 is +inf in floating point: identical images give +inf dB


def _gaussian_taps(n: int, sigma: float, device: torch.device) -> torch.Tensor:
    """(n,) float64 Gaussian of standard deviation ``sigma`` sampled at offsets centred on the window, summing to 1."""
    offsets = torch.arange(n, dtype=torch.float64, device=device) - (n - 1) / 2
    taps = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    return taps / taps.sum()


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of each image against its reference.

    The standard form: both sets mapped to [0, 1] (data range L = 1), a Gaussian window of 11 x 11 taps with
    sigma 1.5 pixels, C1 = (0.01 L)^2, C2 = (0.03 L)^2, local statistics with population (not sample) variance,
    computed per channel over the 'valid' region (no padding: (H - 10) x (W - 10) positions), then averaged over
    channels and positions. With mu, sigma^2 and sigma_xy the window-weighted means, variances and covariance:

        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))

    Images under 11 pixels along an axis get the window clipped to the image along that axis: n = min(11, size)
    taps of the same sigma-1.5 Gaussian, centred and renormalised, so at least one valid position remains. (Values
    for such tiny images are not comparable with published SSIMs, which assume the full window.)

    Args:
        images: (B, 3, H, W) float in [-1, 1].
        reference: the same shape.
    Returns:
        (B,) float64 on the images' device, at most 1 (an image with itself gives exactly 1 up to rounding).
    Raises:
        MobilediffError: not (B, 3, H, W) float tensors, non-finite values, or shapes that differ.
    """
    x, y = _pair(images, reference)
    height, width = x.shape[-2:]
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    taps_h = _gaussian_taps(min(SSIM_WINDOW, height), SSIM_SIGMA, x.device)
    taps_w = _gaussian_taps(min(SSIM_WINDOW, width), SSIM_SIGMA, x.device)
    # the five maps whose local weighted means SSIM needs, filtered in one depthwise pass (the window is separable)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 15, H, W)
    channels = maps.shape[1]
    local = F.conv2d(maps, taps_h.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    local = F.conv2d(local, taps_w.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = local.chunk(5, dim=1)  # each (B, 3, H', W')
    var_x, var_y = mean_xx - mu_x**2, mean_yy - mu_y**2
    cov_xy = mean_xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


# ---- preprocessing for vision networks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagePreprocess:
    """How images (B, 3, H, W) in [-1, 1] become a vision network's input, done in torch (no torchvision).

    Steps: map to [0, 1]; resize with antialiased bicubic (clipped back to [0, 1], as an 8-bit image would be);
    centre-crop; normalise ``(x - mean) / std`` per channel.
    """

    resize: int | tuple[int, int]  # int: the shorter side becomes this many pixels, aspect kept; (h, w): exactly this
    crop: tuple[int, int]  # (h, w) of the centre crop taken after the resize, pixels
    mean: tuple[float, float, float]  # per-channel mean subtracted, in [0, 1] units
    std: tuple[float, float, float]  # per-channel divisor, in [0, 1] units (1/255 gives [0, 255] inputs)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize step for an input of height x width pixels."""
        if isinstance(self.resize, tuple):
            return self.resize
        short, long = sorted((height, width))
        # the long side rounds down, as transformers' get_resize_output_image_size does
        new_long = int(self.resize * long / short)
        return (self.resize, new_long) if height <= width else (new_long, self.resize)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, crop_h, crop_w) float32, normalised."""
        x = ((images.detach().float() + 1) / 2).clamp(0, 1)
        size = self.resized_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        crop_h, crop_w = self.crop
        if crop_h > size[0] or crop_w > size[1]:
            raise MobilediffError(f"cannot centre-crop {crop_h}x{crop_w} from images resized to {size[0]}x{size[1]}")
        top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
        x = x[..., top: top + crop_h, left: left + crop_w]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or MobilediffError naming the file as ``what`` (corrupt, not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MobilediffError(f"corrupt {what} {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise MobilediffError(f"corrupt {what} {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _side(value, path: Path, key: str) -> int | tuple[int, int] | None:
    """A preprocessor size entry (an int, {"shortest_edge": n} or {"height": h, "width": w}) as int or (h, w)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, dict):
        if isinstance(value.get("shortest_edge"), int) and value["shortest_edge"] > 0:
            return value["shortest_edge"]
        h, w = value.get("height"), value.get("width")
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            return (h, w)
    raise MobilediffError(f"unsupported {key} {value!r} in {path}: expected a positive int, "
                          "{'shortest_edge': n} or {'height': h, 'width': w}")


def _stats(value, default: tuple[float, float, float], path: Path, key: str) -> tuple[float, float, float]:
    """A per-channel mean or std entry: three finite numbers (std positive), or ``default`` when absent."""
    if value is None:
        return default
    if (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
            and np.isfinite(value).all() and (key != "image_std" or min(value) > 0)):
        return tuple(float(v) for v in value)
    raise MobilediffError(f"unsupported {key} {value!r} in {path}: expected three finite numbers")


def _folder_preprocess(folder: Path, model_size: int, fixed: bool, image_size: int | None) -> ImagePreprocess:
    """The preprocessing of a Hugging Face vision folder.

    Mean and std come from ``preprocessor_config.json`` when present (identity when its ``do_normalize`` is false),
    else OpenAI CLIP's. ``fixed`` (CLIP, whose position embeddings fix the input size): resize the shorter side to
    ``model_size`` and crop ``model_size`` square. Otherwise the file's ``size`` and ``crop_size`` (DINOv2: resize 256,
    crop 224), falling back to ``model_size``; ``image_size`` overrides both with resize and crop to that side.
    """
    path = folder / "preprocessor_config.json"
    config = _read_json(path, "preprocessor config") if path.is_file() else {}
    mean = _stats(config.get("image_mean"), CLIP_MEAN, path, "image_mean")
    std = _stats(config.get("image_std"), CLIP_STD, path, "image_std")
    if config.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if fixed or image_size is not None:
        side = model_size if image_size is None else image_size
        return ImagePreprocess(resize=side, crop=(side, side), mean=mean, std=std)
    resize = _side(config.get("size"), path, "size") or model_size
    crop = _side(config.get("crop_size"), path, "crop_size") or resize
    crop = crop if isinstance(crop, tuple) else (crop, crop)
    if isinstance(resize, tuple) and (crop[0] > resize[0] or crop[1] > resize[1]):
        raise MobilediffError(f"{path} crops {crop[0]}x{crop[1]} from images resized to {resize[0]}x{resize[1]}")
    if isinstance(resize, int) and max(crop) > resize:
        raise MobilediffError(f"{path} crops {crop[0]}x{crop[1]} from images whose shorter side is resized to {resize}")
    return ImagePreprocess(resize=resize, crop=crop, mean=mean, std=std)


# ---- loading Hugging Face folders -----------------------------------------------------------------------------------
def _folder_config(folder: Path) -> dict:
    """config.json of a model folder, after refusing a missing folder, a missing or corrupt config and a folder whose
    only weights are pickles or that has no weights at all."""
    folder = Path(folder)
    if not folder.exists():
        raise MobilediffError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise MobilediffError(f"{folder} is a file; expected a model folder with config.json and model.safetensors")
    if not (folder / "config.json").is_file():
        raise MobilediffError(f"no config.json in {folder}: not a Hugging Face model folder")
    config = _read_json(folder / "config.json", "model config")
    if not isinstance(config.get("model_type"), str):
        raise MobilediffError(f"{folder / 'config.json'} names no model_type")
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise MobilediffError(f"{folder} has only pickle weights ({', '.join(pickles)}): pickle-based weights are "
                                  "never loaded, convert them to model.safetensors")
        raise MobilediffError(f"no model.safetensors in {folder}")
    return config


def _from_pretrained(cls, folder: Path):
    """``cls.from_pretrained`` from a local folder, safetensors only, in eval mode; refuse weights that fail to load
    or that leave tensors of the model randomly initialised."""
    from safetensors import SafetensorError

    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                          output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "ignore_mismatched_sizes" in message:  # transformers' wording points at a flag, not at the cause
            message = "tensor shapes differ from what config.json describes"
        raise MobilediffError(f"could not load the weights in {folder}: {message}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise MobilediffError(f"weights in {folder} lack {len(missing)} tensor(s) of the model, e.g. {missing[0]}")
    return model.eval().requires_grad_(False)


def _load_clip(folder: Path, device: str | torch.device):
    """(CLIPModel, CLIPTokenizer, config dict) from a checked local CLIP folder."""
    config = _folder_config(folder)
    if config["model_type"] != "clip":
        raise MobilediffError(f"{folder} holds a {config['model_type']!r} model, not a CLIP model (model_type 'clip')")
    from transformers import CLIPModel, CLIPTokenizer

    # transformers builds an empty tokenizer (every word unknown) from a folder without vocabulary: look first
    if not ((folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))):
        raise MobilediffError(f"no CLIP tokenizer in {folder}: expected tokenizer.json or vocab.json and merges.txt")
    model = _from_pretrained(CLIPModel, folder).to(device)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise MobilediffError(f"could not load the CLIP tokenizer in {folder}: {str(e).splitlines()[0]}") from None
    words = tokenizer("a photo of a cat", add_special_tokens=False)["input_ids"]
    if not words or tokenizer.unk_token_id in words:
        raise MobilediffError(f"the CLIP tokenizer in {folder} does not know the words of 'a photo of a cat'")
    if len(tokenizer) > model.config.text_config.vocab_size:
        raise MobilediffError(f"tokenizer in {folder} has {len(tokenizer)} ids but the text model embeds "
                              f"{model.config.text_config.vocab_size}")
    return model, tokenizer


def _batches(n: int, batch_size: int):
    """Slices covering range(n) in steps of ``batch_size`` (refused unless positive)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MobilediffError(f"batch_size must be a positive integer, got {batch_size!r}")
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


# ---- CLIP score -----------------------------------------------------------------------------------------------------
def _check_prompts(prompts) -> None:
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise MobilediffError("prompts must be a non-empty list of strings")


class ClipScorer:
    """CLIPScore (Hessel et al. 2021, as torchmetrics computes it) with a CLIP model from a local folder.

    score = 100 * max(cos(E_image, E_text), 0), with E the projected embeddings of CLIP's two towers. Images are
    preprocessed in torch (:class:`ImagePreprocess`): shorter side resized to the vision tower's ``image_size``,
    centre crop, the folder's mean/std. Prompts longer than the text tower takes are truncated (end token kept).
    """

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, folder: Path):
        self.model = model  # transformers.CLIPModel, eval mode, no gradients
        self.tokenizer = tokenizer  # transformers.CLIPTokenizer
        self.preprocess = preprocess
        self.folder = Path(folder)
        # tokens per prompt, start and end tokens included: the tokenizer's limit within the position table
        self.max_length = min(int(tokenizer.model_max_length), model.config.text_config.max_position_embeddings)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> "ClipScorer":
        """Load ``transformers.CLIPModel`` and its ``CLIPTokenizer`` from ``folder`` (local files only, safetensors).

        Raises:
            MobilediffError: a missing folder, no or corrupt config.json, a model that is not CLIP, missing, corrupt,
                incomplete or pickle-only weights, an unreadable tokenizer or one with more ids than the model embeds,
                a corrupt preprocessor_config.json.
        """
        folder = Path(folder)
        model, tokenizer = _load_clip(folder, device)
        preprocess = _folder_preprocess(folder, model.config.vision_config.image_size, fixed=True, image_size=None)
        return cls(model, tokenizer, preprocess, folder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, projection_dim) float32 projected image embeddings (not normalised), CPU."""
        _check_images(images)
        out = []
        for part in _batches(len(images), batch_size):
            pixels = self.preprocess(images[part].to(self.device))
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            out.append(self.model.visual_projection(pooled).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_embeds(self, prompts: list[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """N prompts -> (N, projection_dim) float32 projected text embeddings (not normalised), CPU."""
        _check_prompts(prompts)
        out = []
        for part in _batches(len(prompts), batch_size):
            tokens = self.tokenizer(list(prompts[part]), padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.device)
            pooled = self.model.text_model(input_ids=tokens["input_ids"],
                                           attention_mask=tokens["attention_mask"]).pooler_output
            out.append(self.model.text_projection(pooled).float().cpu())
        return torch.cat(out)

    def score(self, images: torch.Tensor, prompts: list[str], batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """CLIPScore of each image with its prompt.

        Args:
            images: (B, 3, H, W) float in [-1, 1].
            prompts: B strings, prompt i describing image i.
            batch_size: images (and prompts) per forward pass.
        Returns:
            (B,) float32 on the CPU, in [0, 100].
        Raises:
            MobilediffError: bad images, prompts that are not B strings.
        """
        _check_images(images)
        if not isinstance(prompts, (list, tuple)) or len(prompts) != len(images):
            count = len(prompts) if isinstance(prompts, (list, tuple)) else type(prompts).__name__
            raise MobilediffError(f"CLIP score needs one prompt per image: got {len(images)} images and {count} "
                                  "prompts")
        _check_prompts(prompts)
        image_embeds = self.image_embeds(images, batch_size)  # (B, P)
        text_embeds = self.text_embeds(prompts, batch_size)  # (B, P)
        return 100 * F.cosine_similarity(image_embeds, text_embeds, dim=-1).clamp(min=0)


# ---- feature extractors for Fréchet distance ------------------------------------------------------------------------
def _check_torchscript_file(path: Path) -> None:
    """Refuse a file that is not a TorchScript archive, reading only its zip directory (nothing is unpickled).

    ``torch.jit.save`` writes a zip whose entries sit under one root folder and include ``<root>/code/...`` (the
    TorchScript source) and ``<root>/constants.pkl``; ``torch.save`` writes ``<root>/data.pkl`` with neither (a pickle
    of arbitrary Python objects), and the legacy ``torch.save`` format and plain pickles are not zips at all.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(1)
    except OSError as e:
        raise MobilediffError(f"cannot read {path}: {e.strerror}") from None
    if not zipfile.is_zipfile(path):
        if head == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 and later
            raise MobilediffError(f"refusing to load {path}: it is a pickle file; only TorchScript archives "
                                  "(torch.jit.save) are loaded")
        raise MobilediffError(f"{path} is not a TorchScript archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise MobilediffError(f"corrupt zip archive {path}: {e}") from None
    roots = {name.split("/", 1)[0] for name in names}
    root = roots.pop() if len(roots) == 1 else None
    is_torchscript = root is not None and f"{root}/constants.pkl" in names and any(
        name.startswith(f"{root}/code/") for name in names)
    if is_torchscript:
        return
    if root is not None and f"{root}/data.pkl" in names:
        raise MobilediffError(f"refusing to load {path}: torch.save wrote it (a pickle), not torch.jit.save; "
                              "only TorchScript archives are loaded")
    raise MobilediffError(f"{path} is a zip archive but not a TorchScript one (no code/ and constants.pkl)")


def _cause(error: Exception) -> str:
    """One line saying why ``error`` happened: TorchScript puts the cause on the last line of a traceback of the
    scripted source ("RuntimeError: Given groups=1, ..."), Python errors on the first."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if lines[0].startswith("The following operation failed in the TorchScript") else lines[0]


def _check_features(features, batch: int, source: str) -> torch.Tensor:
    """A network's output for ``batch`` images: refuse anything but a finite 2-D (batch, D) tensor."""
    if not isinstance(features, torch.Tensor):
        raise MobilediffError(f"{source} returned a {type(features).__name__}, expected a (B, D) tensor")
    if features.ndim != 2 or features.shape[0] != batch or features.shape[1] == 0:
        raise MobilediffError(f"{source} returned shape {tuple(features.shape)} for {batch} images, "
                              f"expected ({batch}, D)")
    if not torch.isfinite(features).all():
        raise MobilediffError(f"{source} returned NaN or infinite features")
    return features


class FeatureExtractor:
    """A vision network as a feature map for Fréchet distance: images (B, 3, H, W) in [-1, 1] -> (B, D) features.

    Four kinds, behind one call (``embed``, a thin wrapper that takes preprocessed pixels):

    * ``torchscript``: a ``torch.jit.save`` file, e.g. the ``inception-2015-12-05.pt`` clean-fid and StyleGAN
      distribute. It is called with (B, 3, S, S) float in [0, 255] (images resized to S x S by antialiased bicubic,
      S = ``image_size``, default 299) and must return (B, D); when its forward takes a ``return_features`` argument
      (that Inception does, and returns class probabilities without it) it is called with ``return_features=True``.
    * ``clip``: a CLIP folder; the features are the vision tower's projected embeddings (``image_embeds`` of
      ``CLIPVisionModelWithProjection``), with CLIP's preprocessing (:class:`ClipScorer`).
    * ``vision``: any other ``transformers.AutoModel`` vision folder whose output has ``pooler_output`` (DINOv2's
      normalised class token, a ViT's pooler); preprocessing from its preprocessor_config.json.
    * ``classifier``: a ``mobilediff train-features`` folder (:mod:`mobilediff.features`, model_type
      ``mobilediff-classifier``): a domain classifier's features before its label head, at its own resolution.
    """

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], preprocess: ImagePreprocess, kind: str,
                 source: Path, device: str | torch.device = "cpu"):
        self.embed = embed  # preprocessed (B, 3, h, w) float32 -> (B, D) tensor
        self.preprocess = preprocess
        self.kind = kind  # "torchscript", "clip", "vision" or "classifier"
        self.source = Path(source)
        self.device = torch.device(device)
        self.dim = self._probe()  # D, features per image

    @classmethod
    def load(cls, path: Path, image_size: int | None = None, device: str | torch.device = "cpu") -> "FeatureExtractor":
        """A feature extractor from a TorchScript file or a local Hugging Face vision folder.

        Args:
            path: a ``torch.jit.save`` file, a folder with config.json and model.safetensors, or the name of an
                embedded extractor (``default:emoji``: :data:`mobilediff.features.NAMED_EXTRACTORS`).
            image_size: input side S in pixels: a TorchScript network gets S x S (default 299); a vision folder
                gets its shorter side resized to S and an S x S centre crop (default: its preprocessor_config.json).
                A CLIP folder takes only its own image_size.
            device: where the network runs.
        Raises:
            MobilediffError: a missing path, a pickle (torch.save or plain) file, a zip that is not TorchScript, a
                folder refused by the checks of :meth:`ClipScorer.load` or without pooled output, a network that fails
                on a (2, 3, S, S) probe or whose output is not a finite (2, D) tensor.
        """
        from mobilediff.features import NAMED_EXTRACTORS

        path = NAMED_EXTRACTORS.get(str(path), Path(path))
        if image_size is not None and (type(image_size) is not int or image_size < 1):  # bool is an int: refused
            raise MobilediffError(f"image_size must be a positive integer, got {image_size!r}")
        if not path.exists():
            raise MobilediffError(f"feature extractor {path} does not exist")
        if path.is_dir():
            return cls._load_folder(path, image_size, device)
        return cls._load_torchscript(path, image_size, device)

    @classmethod
    def _load_torchscript(cls, path: Path, image_size: int | None, device) -> "FeatureExtractor":
        _check_torchscript_file(path)
        try:
            module = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError, OSError) as e:
            raise MobilediffError(f"could not load TorchScript archive {path}: {str(e).splitlines()[0]}") from None
        module.eval()
        try:
            arguments = {a.name for a in module.forward.schema.arguments}
        except (AttributeError, RuntimeError):
            raise MobilediffError(f"TorchScript archive {path} has no forward method to call") from None
        kwargs = {"return_features": True} if "return_features" in arguments else {}

        def embed(pixels: torch.Tensor) -> torch.Tensor:
            return module(pixels, **kwargs)

        side = INCEPTION_SIZE if image_size is None else image_size
        # mean 0 and std 1/255 turn [0, 1] into the [0, 255] range these networks take
        preprocess = ImagePreprocess(resize=(side, side), crop=(side, side), mean=(0.0, 0.0, 0.0),
                                     std=(1 / 255, 1 / 255, 1 / 255))
        return cls(embed, preprocess, "torchscript", path, device)

    @classmethod
    def _load_folder(cls, folder: Path, image_size: int | None, device) -> "FeatureExtractor":
        config = _folder_config(folder)
        if config["model_type"] == "clip":
            model, _ = _load_clip(folder, device)
            model_size = model.config.vision_config.image_size
            if image_size is not None and image_size != model_size:
                raise MobilediffError(f"the CLIP model in {folder} takes {model_size}x{model_size} images; "
                                      f"image_size {image_size} was asked")
            preprocess = _folder_preprocess(folder, model_size, fixed=True, image_size=None)

            def embed(pixels: torch.Tensor) -> torch.Tensor:
                return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

            return cls(embed, preprocess, "clip", folder, device)
        from mobilediff.features import MODEL_TYPE as CLASSIFIER_TYPE, load_classifier

        if config["model_type"] == CLASSIFIER_TYPE:
            net = load_classifier(folder, config).to(device)
            side = net.resolution
            if image_size is not None and image_size != side:
                raise MobilediffError(f"the classifier in {folder} takes {side}x{side} images; "
                                      f"image_size {image_size} was asked")
            # the network takes images in [-1, 1]: mean 0.5 and std 0.5 map [0, 1] there
            preprocess = ImagePreprocess(resize=(side, side), crop=(side, side), mean=(0.5, 0.5, 0.5),
                                         std=(0.5, 0.5, 0.5))
            return cls(net.features, preprocess, "classifier", folder, device)
        from transformers import AutoModel

        model = _from_pretrained(AutoModel, folder).to(device)
        model_size = getattr(model.config, "image_size", None)
        if not isinstance(model_size, int):
            raise MobilediffError(f"{folder} is a {config['model_type']!r} model without an image_size: "
                                  "not a vision model")
        preprocess = _folder_preprocess(folder, model_size, fixed=False, image_size=image_size)

        def embed(pixels: torch.Tensor) -> torch.Tensor:
            pooled = getattr(model(pixel_values=pixels), "pooler_output", None)
            if pooled is None:
                raise MobilediffError(f"the {config['model_type']!r} model in {folder} has no pooler_output to use "
                                      "as features")
            return pooled

        return cls(embed, preprocess, "vision", folder, device)

    def _describe(self) -> str:
        return f"{self.kind} feature extractor {self.source}"

    @torch.no_grad()
    def _probe(self) -> int:
        """Run two images through the network once; refuse it unless it returns finite (2, D). Returns D."""
        crop_h, crop_w = self.preprocess.crop
        # a smooth ramp, not a constant: some networks normalise per image and would return NaN on a flat input
        ramp = torch.linspace(-0.9, 0.9, crop_h * crop_w).view(1, 1, crop_h, crop_w)
        probe = torch.cat([ramp.expand(1, 3, -1, -1), -ramp.expand(1, 3, -1, -1)])  # (2, 3, h, w)
        features = self._run(probe, f"a ({PROBE_BATCH}, 3, {crop_h}, {crop_w}) probe")
        return int(_check_features(features, PROBE_BATCH, self._describe()).shape[1])

    def _run(self, images: torch.Tensor, what: str) -> torch.Tensor:
        """The network's output for (B, 3, H, W) images in [-1, 1]; a failure becomes one line naming ``what``."""
        try:
            return self.embed(self.preprocess(images.to(self.device)))
        except MobilediffError:
            raise
        except Exception as e:  # noqa: BLE001 - a user network may raise anything; the message says what failed
            raise MobilediffError(f"{self._describe()} fails on {what}: {_cause(e)}") from None

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Features of each image.

        Args:
            images: (B, 3, H, W) float in [-1, 1], any size (resized by :attr:`preprocess`).
            batch_size: images per forward pass.
        Returns:
            (B, D) float64 NumPy array.
        Raises:
            MobilediffError: bad images; a network output that is not a finite (batch, D) tensor.
        """
        _check_images(images)
        out = []
        for part in _batches(len(images), batch_size):
            batch = images[part]
            features = self._run(batch, f"a batch of {len(batch)} images")
            features = _check_features(features, len(batch), self._describe())
            if features.shape[1] != self.dim:
                raise MobilediffError(f"{self._describe()} returned {features.shape[1]} features per image, "
                                      f"{self.dim} at load")
            out.append(features.double().cpu().numpy())
        return np.concatenate(out)


def fd(extractor: FeatureExtractor, images: torch.Tensor, reference_images: torch.Tensor,
       batch_size: int = BATCH_SIZE) -> float:
    """Fréchet distance between the feature distributions of two image sets (FID with an Inception extractor).

    Args:
        extractor: the feature map (:meth:`FeatureExtractor.load`).
        images: (N, 3, H, W) in [-1, 1], N >= 2 (a covariance needs two samples).
        reference_images: (M, 3, H', W') in [-1, 1], M >= 2; sizes may differ from ``images``.
        batch_size: images per forward pass.
    Returns:
        ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) in squared feature units, >= 0.
    Raises:
        MobilediffError: fewer than 2 images on a side, bad images, a failing extractor.
    """
    _check_images(images, "images")
    _check_images(reference_images, "reference images")
    _check_fd_counts(len(images), len(reference_images))
    return frechet_distance(extractor.features(images, batch_size), extractor.features(reference_images, batch_size))


def _check_fd_counts(n: int, m: int) -> None:
    if n < 2 or m < 2:
        raise MobilediffError(f"Fréchet distance needs at least 2 images on each side, got {n} images and {m} "
                              "reference images")


# ---- all of them at once --------------------------------------------------------------------------------------------
@dataclass
class MetricSet:
    """The metrics a caller can compute, each optional, and :meth:`compute` that returns what applies.

    Build the FD reference once, e.g. ``MetricSet(fd_features=fx, fd_reference=fx.features(real_images))``.
    """

    clip: ClipScorer | None = None  # CLIPScore of generated images with their prompts
    fd_features: FeatureExtractor | None = None  # the feature map of the Fréchet distance
    fd_reference: np.ndarray | None = None  # (M, D) features of the reference images by fd_features, M >= 2
    batch_size: int = BATCH_SIZE  # images per forward pass of the networks

    def __post_init__(self):
        if (self.fd_features is None) != (self.fd_reference is None):
            raise MobilediffError("fd_features and fd_reference go together: give both or neither")
        if self.fd_reference is not None:
            ref = np.asarray(self.fd_reference)
            if ref.ndim != 2 or ref.shape[1] != self.fd_features.dim:
                raise MobilediffError(f"fd_reference must have shape (M, {self.fd_features.dim}), got {ref.shape}")
            if len(ref) < 2:
                raise MobilediffError(f"fd_reference holds {len(ref)} feature vector(s); Fréchet distance needs "
                                      "at least 2")
            if not np.isfinite(ref).all():
                raise MobilediffError("fd_reference contains NaN or infinite values")
            self.fd_reference = ref.astype(np.float64)

    def compute(self, images: torch.Tensor, prompts: list[str] | None = None,
                teacher: torch.Tensor | None = None) -> dict[str, float]:
        """Metrics of generated images, means over the set.

        Args:
            images: (B, 3, H, W) in [-1, 1], the generated images.
            prompts: B prompts, image i generated from prompt i; required when :attr:`clip` is set.
            teacher: (B, 3, H, W) in [-1, 1], the teacher's images for the same prompts and seeds, or None.
        Returns:
            ``psnr_db_vs_teacher`` (mean per-image PSNR in dB; +inf as soon as one image equals its teacher image)
            and ``ssim_vs_teacher`` when ``teacher`` is given; ``clip_score`` (mean, 0..100) when :attr:`clip` is set;
            ``fd`` when :attr:`fd_features` is. Other keys are absent, never None.
        Raises:
            MobilediffError: bad images, teacher shape differing from images', missing prompts with a CLIP scorer,
                fewer than 2 images with an FD extractor.
        """
        # every refusal before any network runs
        _check_images(images)
        if teacher is not None:
            _pair(images, teacher)
        if self.clip is not None and prompts is None:
            raise MobilediffError("a CLIP score needs the prompts of the images")
        if self.fd_features is not None:
            _check_fd_counts(len(images), len(self.fd_reference))
        results: dict[str, float] = {}
        if teacher is not None:
            results["psnr_db_vs_teacher"] = float(psnr(images, teacher).mean())
            results["ssim_vs_teacher"] = float(ssim(images, teacher).mean())
        if self.clip is not None:
            results["clip_score"] = float(self.clip.score(images, prompts, self.batch_size).mean())
        if self.fd_features is not None:
            results["fd"] = frechet_distance(self.fd_features.features(images, self.batch_size), self.fd_reference)
        return results
