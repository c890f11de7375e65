"""Training and evaluation data as an input: one set of options for every command that consumes data, one interface
behind them.

A command states what its method needs (:data:`NEEDS`): ``prompts`` (captions alone), ``images`` (captioned images),
or ``latents`` (captioned latents of the model's own VAE, which images give, or the teacher renders from prompts
with ``--synthesize N``). :func:`check_needs` refuses a missing need in one line before any work.

Sources, all answering ``batch(first, count) -> (images (B, 3, H, W) in [-1, 1], captions, scenes | None)``:

- the **shapes** domain (:mod:`mobilediff.data`): infinite, procedural, with ground truth per image (``scenes``);
  the default when no data option is given, so every embedded model trains and scores as before;
- a user's **captioned images** (``--images DIR`` or ``--wds PATTERN``, :mod:`mobilediff.sources.files`), decoded
  once at the model's resolution into an :class:`ImageSet` whose pixels are cached on disk keyed by the data's
  sha256 and the decoding options, with a fixed held-out validation split (by a hash of each item's key, so adding
  files never moves an existing item between splits);
- a user's **prompts** (``--prompts FILE``), for methods that need captions only.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the CLI imports this package's options without loading torch
    import torch

from mobilediff.errors import MobilediffError
from mobilediff.sources.files import (FITS, Example, Skips, content_hash, decode_image, parse_background,
                                      read_image_folder, read_prompts, read_webdataset)

# what each consumer of data needs; "latents" are met by images (encoded with the model's VAE) or --synthesize
NEEDS = {
    "train-base": "images",
    "distill:progressive": "prompts",
    "distill:lcm": "latents",
    "distill:slim": "latents",
    "distill:lora": "latents",
    "distill:lcm-lora": "latents",
    "distill-decoder": "latents",
    "calibration": "prompts",
    "evaluate": "prompts",
}
CACHE_ENV = "MOBILEDIFF_CACHE"


def default_cache_dir() -> Path:
    """Where decoded images and latents are cached between runs: $MOBILEDIFF_CACHE, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mobilediff"


@dataclass(frozen=True)
class DataOptions:
    """The data options every data-consuming command takes (see ``mobilediff <command> --help``)."""

    prompts: Path | None = None  # .txt / .jsonl / .csv of prompts
    images: Path | None = None  # imagefolder (metadata.jsonl) or images with sidecar <stem>.txt captions
    wds: str | None = None  # webdataset shards, a brace pattern
    synthesize: int = 0  # the teacher renders this many latents from --prompts (for methods that need latents)
    strict: bool = False  # refuse the data at the first unusable item instead of skipping and counting it
    fit: str = "crop"  # how an image of another aspect reaches the model's: crop (centre), pad or stretch
    background: str = "white"  # what transparent pixels are composited on
    validation_fraction: float = 0.05  # share of captioned images held out (never trained on)
    cache_dir: Path | None = None  # default: default_cache_dir()

    @property
    def given(self) -> bool:
        """Whether the user named any data (else the embedded shapes domain is used)."""
        return any(x is not None for x in (self.prompts, self.images, self.wds))

    @property
    def has_images(self) -> bool:
        return self.images is not None or self.wds is not None

    def validate(self) -> None:
        """Refuse impossible combinations before anything is read."""
        if self.images is not None and self.wds is not None:
            raise MobilediffError("--images and --wds both given: choose one image source")
        if self.synthesize < 0:
            raise MobilediffError(f"--synthesize must be >= 0, got {self.synthesize}")
        if self.synthesize and self.prompts is None:
            raise MobilediffError("--synthesize N renders images from --prompts: pass --prompts FILE too")
        if self.synthesize and self.has_images:
            raise MobilediffError("--synthesize renders latents from prompts; it cannot be combined with --images/--wds")
        if self.fit not in FITS:
            raise MobilediffError(f"--fit {self.fit!r}: choose one of {', '.join(FITS)}")
        if not 0 <= self.validation_fraction < 1:
            raise MobilediffError(f"--validation-fraction must be in [0, 1), got {self.validation_fraction}")
        parse_background(self.background)


def provides(options: DataOptions) -> set[str]:
    """What the data named by ``options`` can give: the shapes domain and images give everything."""
    if not options.given or options.has_images:
        return {"prompts", "images", "latents"}
    return {"prompts", "latents"} if options.synthesize else {"prompts"}


def check_needs(options: DataOptions, consumer: str) -> None:
    """Raise MobilediffError in one line if ``consumer`` (a key of NEEDS) cannot run on the data of ``options``."""
    options.validate()
    need = NEEDS[consumer]
    if need in provides(options):
        return
    how = {"images": "--images DIR or --wds PATTERN",
           "latents": "--images DIR, --wds PATTERN, or --prompts FILE with --synthesize N (the teacher renders them)",
           "prompts": "--prompts FILE"}[need]
    raise MobilediffError(f"{consumer.replace(':', ' --method ')} needs {need}: pass {how}")


# ---------------------------------------------------------------------------------------------- prompts


def load_prompts(options: DataOptions, warn=None) -> list[str]:
    """The prompts of ``--prompts`` (skips reported through ``warn``), or of the captioned images."""
    skips = Skips(strict=options.strict)
    if options.prompts is not None:
        prompts = read_prompts(options.prompts, skips)
    else:
        prompts = [e.caption for e in _examples(options, skips)]
        if not prompts:
            raise MobilediffError(f"{options.images or options.wds}: no usable captioned image ({skips.summary()})")
    if skips.total:
        (warn or _warn)(f"skipped {skips.total} prompts: {skips.summary()}")
    return prompts


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _examples(options: DataOptions, skips: Skips):
    if options.images is not None:
        return read_image_folder(options.images, skips)
    return read_webdataset(options.wds, skips)


# ---------------------------------------------------------------------------------------------- captioned images


@dataclass
class DataReport:
    """What a data source held and what was done with it (``--dry-run`` prints it; the run record keeps it)."""

    source: str
    examples: int = 0  # usable captioned images (train + validation)
    train: int = 0
    validation: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_examples: dict[str, str] = field(default_factory=dict)  # reason -> first item
    image_sizes: dict[str, int] = field(default_factory=dict)  # shorter side bucket -> count
    aspect: dict[str, int] = field(default_factory=dict)  # "square" | "landscape" | "portrait" -> count
    resolution: tuple[int, int] = (0, 0)  # (H, W) the images were decoded at
    fit: str = "crop"
    caption_tokens: dict[str, int] = field(default_factory=dict)  # token-length bucket -> count (with bos/eos)
    tokenizer_limit: int | None = None
    captions_truncated: int = 0
    fingerprint: str = ""

    def text(self) -> str:
        if self.resolution == (0, 0):  # prompts alone
            lines = [f"data: {self.source}", f"  usable prompts: {self.examples}"]
        else:
            lines = [f"data: {self.source}",
                     f"  usable captioned images: {self.examples} ({self.train} train, {self.validation} held out)",
                     f"  decoded at {self.resolution[0]}x{self.resolution[1]} ({self.fit})"]
        if self.skipped:
            lines.append(f"  skipped: {sum(self.skipped.values())}")
            lines += [f"    {n} {reason} (e.g. {self.skipped_examples.get(reason, '')})" for reason, n in self.skipped.items()]
        if self.image_sizes:
            lines.append("  shorter side: " + ", ".join(f"{k}: {v}" for k, v in self.image_sizes.items()))
            lines.append("  aspect: " + ", ".join(f"{k}: {v}" for k, v in self.aspect.items()))
        if self.caption_tokens:
            lines.append("  caption tokens: " + ", ".join(f"{k}: {v}" for k, v in self.caption_tokens.items())
                         + f" (tokenizer limit {self.tokenizer_limit}; {self.captions_truncated} truncated)")
        return "\n".join(lines)


_SIDE_BUCKETS = (64, 128, 256, 512, 1024)


def _side_bucket(side: int) -> str:
    lo = 0
    for b in _SIDE_BUCKETS:
        if side < b:
            return f"{lo}-{b - 1}"
        lo = b
    return f">={_SIDE_BUCKETS[-1]}"


def _is_validation(key: str, fraction: float) -> bool:
    """A fixed split: an item is held out by a hash of its key alone (adding items never moves another)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return h / 2**64 < fraction


@dataclass
class ImageSet:
    """Captioned images decoded at one resolution.

    ``pixels`` (N, H, W, 3) uint8 (memory-mapped from the cache), ``captions`` and ``keys`` (N,), ``validation`` (N,)
    bool: the held-out rows. ``batch`` draws training rows in a seeded order that reshuffles every epoch, so a run is
    a pure function of (seed, index) and resumes exactly."""

    pixels: np.ndarray
    captions: list[str]
    keys: list[str]
    validation: np.ndarray
    report: DataReport
    seed: int = 0

    def __post_init__(self):
        self.train_rows = np.flatnonzero(~self.validation)
        self.validation_rows = np.flatnonzero(self.validation)
        if len(self.train_rows) == 0:
            raise MobilediffError(f"{self.report.source}: every one of its {len(self.keys)} images is held out for "
                                  f"validation; lower --validation-fraction or add images")

    @property
    def fingerprint(self) -> str:
        return self.report.fingerprint

    def rows(self, first: int, count: int) -> np.ndarray:
        """Row indices of training samples ``first .. first+count-1`` (epoch e is a permutation seeded by (seed, e))."""
        n = len(self.train_rows)
        out = np.empty(count, dtype=np.int64)
        for j, i in enumerate(range(first, first + count)):
            epoch, pos = divmod(i, n)
            perm = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(n)
            out[j] = self.train_rows[perm[pos]]
        return out

    def images(self, rows: np.ndarray) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] of ``rows``."""
        from mobilediff.data import from_uint8

        return from_uint8(np.asarray(self.pixels[np.asarray(rows)]))

    def batch(self, first: int, count: int) -> tuple[torch.Tensor, list[str], None]:
        rows = self.rows(first, count)
        return self.images(rows), [self.captions[r] for r in rows], None

    def split_batch(self, split: str) -> tuple[torch.Tensor, list[str]]:
        """All images and captions of ``split`` ("train" or "validation"), in row order."""
        rows = self.train_rows if split == "train" else self.validation_rows
        return self.images(rows), [self.captions[r] for r in rows]


def load_images(options: DataOptions, size: tuple[int, int], tokenizer=None, seed: int = 0,
                show_progress: bool = True, warn=None) -> ImageSet:
    """Decode the captioned images of ``options`` at ``size`` = (H, W), through the on-disk cache.

    The cache entry is keyed by the sha256 of every item (key, caption, file bytes) and the decoding options, so a
    second run with the same data reads it at once and any change re-decodes. Skipped items are counted in the
    report (``strict``: refused). With ``tokenizer``, captions longer than its limit are counted and reported once
    through ``warn``. Raises MobilediffError when nothing usable remains."""
    from tqdm.auto import tqdm

    from mobilediff.io import atomic_path, atomic_write_json

    options.validate()
    if not options.has_images:
        raise MobilediffError("no image source: pass --images DIR or --wds PATTERN")
    source = f"--images {options.images}" if options.images is not None else f"--wds {options.wds}"
    skips = Skips(strict=options.strict)
    examples: list[Example] = list(_examples(options, skips))
    background = parse_background(options.background)
    key = json.dumps({"data": content_hash(examples), "size": list(size), "fit": options.fit,
                      "background": list(background), "format": 1}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache = Path(options.cache_dir or default_cache_dir()) / "images"
    pixels_file, meta_file = cache / f"{digest}.npy", cache / f"{digest}.json"
    meta = None
    if pixels_file.is_file() and meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            pixels = np.load(pixels_file, mmap_mode="r")
            if meta.get("key") != key or pixels.shape != (len(meta["keys"]), *size, 3):
                meta = None
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            meta = None  # a damaged cache entry is rebuilt
    if meta is None:
        decoded, kept, sides = [], [], []
        for e in tqdm(examples, desc="decode images", unit="img", disable=not show_progress, leave=False):
            try:
                array, original = decode_image(e.data, size, options.fit, background)
            except ValueError as err:
                skips.skip(str(err), e.key)
                continue
            decoded.append(array)
            kept.append(e)
            sides.append(original)
        if not kept:
            raise MobilediffError(f"{source}: no usable captioned image"
                                  + (f" ({skips.total} skipped: {skips.summary()})" if skips.total else ""))
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(pixels_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.stack(decoded))
        meta = {"key": key, "keys": [e.key for e in kept], "captions": [e.caption for e in kept],
                "sizes": [list(s) for s in sides], "skipped": dict(skips.counts), "skipped_examples": skips.examples}
        atomic_write_json(meta_file, meta)
        pixels = np.load(pixels_file, mmap_mode="r")
    else:
        for reason, n in meta["skipped"].items():  # the decode-time skips of the run that filled the cache
            if reason not in skips.counts:
                skips.counts[reason] = n
                skips.examples[reason] = meta["skipped_examples"].get(reason, "")
        if options.strict and skips.total:
            reason = next(iter(skips.counts))
            raise MobilediffError(f"{skips.examples[reason]}: {reason} (--strict refuses the data)")
    keys, captions = meta["keys"], meta["captions"]
    validation = np.array([_is_validation(k, options.validation_fraction) for k in keys], dtype=bool)
    report = DataReport(source=source, examples=len(keys), train=int((~validation).sum()),
                        validation=int(validation.sum()), skipped=dict(skips.counts.most_common()),
                        skipped_examples=dict(skips.examples), resolution=tuple(size), fit=options.fit,
                        fingerprint=digest)
    report.image_sizes = dict(sorted(Counter(_side_bucket(min(w, h)) for w, h in meta["sizes"]).items(),
                                     key=lambda kv: int(kv[0].split("-")[0].lstrip(">="))))
    report.aspect = dict(Counter("square" if w == h else "landscape" if w > h else "portrait"
                                 for w, h in meta["sizes"]).most_common())
    if tokenizer is not None:
        caption_report(report, captions, tokenizer)
        if report.captions_truncated:
            (warn or _warn)(f"{report.captions_truncated} of {len(captions)} captions are longer than the tokenizer's "
                            f"{report.tokenizer_limit} tokens and are truncated")
    if skips.total:
        (warn or _warn)(f"{source}: skipped {skips.total} items: {skips.summary()}")
    return ImageSet(pixels=pixels, captions=captions, keys=keys, validation=validation, report=report, seed=seed)


def caption_report(report: DataReport, captions: list[str], tokenizer) -> None:
    """Fill ``report``'s caption-length histogram (tokens with bos/eos) and count those over the tokenizer's limit."""
    limit = tokenizer.model_max_length
    lengths = [len(ids) for ids in tokenizer(captions, truncation=False).input_ids]
    edges = sorted({8, 16, 32, 64, 77, limit})
    hist: Counter = Counter()
    for n in lengths:
        hist[next((f"<={e}" for e in edges if n <= e), f">{edges[-1]}")] += 1
    report.caption_tokens = {k: hist[k] for k in [f"<={e}" for e in edges] + [f">{edges[-1]}"] if hist[k]}
    report.tokenizer_limit = limit
    report.captions_truncated = sum(n > limit for n in lengths)


def report_dict(report: DataReport) -> dict:
    return json.loads(json.dumps(asdict(report)))


def load_reference_images(folder: Path, size: tuple[int, int], fit: str = "crop", background: str = "white",
                          warn=None) -> torch.Tensor:
    """Every image under ``folder`` (captions not needed: the reference set of a Fréchet distance), decoded at
    ``size`` = (H, W): (N, 3, H, W) in [-1, 1]. Unreadable images are skipped and reported through ``warn``; raises
    MobilediffError for a missing folder or one without a readable image."""
    from mobilediff.data import from_uint8
    from mobilediff.sources.files import _walk_images

    folder = Path(folder)
    if not folder.is_dir():
        raise MobilediffError(f"--reference-images {folder}: not a folder")
    skips, arrays = Skips(), []
    rgb = parse_background(background)
    for path in _walk_images(folder):
        try:
            arrays.append(decode_image(path.read_bytes(), size, fit, rgb)[0])
        except (OSError, ValueError) as e:
            skips.skip(str(e) if isinstance(e, ValueError) else f"unreadable file ({e.strerror})", path.name)
    if not arrays:
        raise MobilediffError(f"--reference-images {folder}: no readable image"
                              + (f" ({skips.summary()})" if skips.total else ""))
    if skips.total:
        (warn or _warn)(f"--reference-images: skipped {skips.total}: {skips.summary()}")
    return from_uint8(np.stack(arrays))
