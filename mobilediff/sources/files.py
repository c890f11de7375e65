"""Reading a user's prompts and captioned images from local files, with every bad file skipped and counted (or
refused under ``strict``), never crashing on one.

Layouts read (the ones diffusers' training scripts and the Hugging Face ``imagefolder`` loader use):

- prompts: ``.txt`` (one prompt a line), ``.jsonl`` or ``.csv`` with a ``text`` field;
- ``imagefolder``: images anywhere under a folder plus ``metadata.jsonl`` lines ``{"file_name": ..., "text": ...}``
  (``file_name`` relative to the folder), or a sidecar caption ``<image stem>.txt`` beside each image;
- webdataset shards: ``.tar`` files named by a brace pattern (``shards-{000..009}.tar``, expanded with
  ``braceexpand``, the library webdataset itself uses); the members of one example share a key (the member path
  up to the first dot of its file name, webdataset's rule) and hold one image (``jpg``, ``jpeg``, ``png``, ``webp``)
  and one caption (``txt``, ``caption``, or ``json`` with a ``text`` or ``caption`` field), the keys diffusers' LCM
  distillation script reads.

Images are decoded with Pillow: EXIF orientation applied, palette/grey/CMYK/16-bit/float modes converted to 8-bit
RGB, transparency composited on a stated background, then resized to the model's resolution (``fit``: the shorter
side scaled and the centre cropped, the whole image padded with the background, or stretched).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from mobilediff.errors import MobilediffError, shorten

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
WDS_CAPTION_KEYS = ("txt", "caption", "json")
FITS = ("crop", "pad", "stretch")
MAX_CAPTION_CHARS = 2000  # longer lines are not captions (a tokenizer keeps the first few dozen words anyway)
MIN_IMAGE_SIDE = 8  # smaller images hold nothing a model could learn from (a 1x1 pixel, an icon's favicon)
MAX_IMAGE_PIXELS = 64_000_000  # Pillow's decompression-bomb guard, stated here (a 8000x8000 photo still loads)
NAMED_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}


@dataclass
class Skips:
    """Items left out of a data source, counted by reason (``strict``: the first one is an error instead)."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first item skipped for it

    def skip(self, reason: str, item: str) -> None:
        if self.strict:
            raise MobilediffError(f"{item}: {reason} (--strict refuses the data; leave it out to skip such items)")
        self.counts[reason] += 1
        self.examples.setdefault(reason, item)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason} (e.g. {shorten(self.examples[reason], 60)})"
                         for reason, n in self.counts.most_common())


@dataclass(frozen=True)
class Example:
    """One captioned image as read from disk: ``key`` names it (a path relative to the folder, or shard:key);
    ``data`` is the encoded image file."""

    key: str
    caption: str
    data: bytes


# ---------------------------------------------------------------------------------------------- captions


def clean_caption(text: object) -> str | None:
    """A caption as the tokenizer should see it, or None if it is unusable: not a string, empty, holding control
    characters (a NUL byte, an escape sequence), or longer than MAX_CAPTION_CHARS. Runs of whitespace (line breaks
    included) become one space."""
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    if not text or len(text) > MAX_CAPTION_CHARS:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):  # control characters, lone surrogates
        return None
    return text


def _caption_problem(text: object) -> str:
    if not isinstance(text, str):
        return "caption is not text"
    text = " ".join(text.split())
    if not text:
        return "empty caption"
    if len(text) > MAX_CAPTION_CHARS:
        return f"caption longer than {MAX_CAPTION_CHARS} characters"
    return "caption holds control characters"


def usable_caption(value: object, item: str, skips: Skips) -> str | None:
    """``value`` as a clean caption, or None after counting ``item`` in ``skips`` under the reason it is unusable."""
    caption = clean_caption(value)
    if caption is None:
        skips.skip(_caption_problem(value), item)
    return caption


def _read_text(path: Path, what: str) -> str:
    """A file's text, strict UTF-8 (a byte-order mark allowed); refuses other encodings naming the byte."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise MobilediffError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise MobilediffError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MobilediffError(f"{what} {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def read_jsonl(text: str, where: str) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines text; raises MobilediffError naming ``where`` and
    the line for a line that is not JSON or not an object."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MobilediffError(f"{where} line {i}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise MobilediffError(f"{where} line {i}: expected an object, got {type(row).__name__}")
        rows.append((i, row))
    return rows


def read_prompts(path: Path, skips: Skips) -> list[str]:
    """The prompts of a ``.txt`` (one a line; blank lines ignored), ``.jsonl`` or ``.csv`` (a ``text`` column) file.
    Unusable prompts are skipped and counted in ``skips``; raises MobilediffError for a missing, unreadable,
    non-UTF-8 or malformed file and for one without any usable prompt."""
    path = Path(path)
    if not path.exists():
        raise MobilediffError(f"prompts file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise MobilediffError(f"prompts file {path}: unknown format {suffix or '(no suffix)'!r}; use .txt (one prompt a "
                              f"line), .jsonl or .csv (a 'text' field)")
    text = _read_text(path, "prompts file")
    raw: list[tuple[str, object]] = []
    if suffix == ".txt":
        raw = [(f"{path.name}:{i}", line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    elif suffix == ".jsonl":
        for i, row in read_jsonl(text, f"prompts file {path}"):
            if "text" not in row:
                raise MobilediffError(f"prompts file {path} line {i}: no 'text' field")
            raw.append((f"{path.name}:{i}", row["text"]))
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as e:
            raise MobilediffError(f"prompts file {path}: malformed CSV ({e})") from None
        if not rows or "text" not in rows[0]:
            raise MobilediffError(f"prompts file {path}: no 'text' column in its header")
        raw = [(f"{path.name}:{i}", row["text"]) for i, row in enumerate(rows, 2)]
    prompts = []
    for where, value in raw:
        caption = usable_caption(value, where, skips)
        if caption is not None:
            prompts.append(caption)
    if not prompts:
        raise MobilediffError(f"prompts file {path} holds no usable prompt"
                              + (f" ({skips.summary()})" if skips.total else ""))
    return prompts


# ---------------------------------------------------------------------------------------------- image folders


def _walk_images(root: Path) -> list[Path]:
    """Image files under ``root``, sorted, symlinked folders not followed (no loops), hidden entries ignored."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(folder) / name)
    return found


def _read_bytes(path: Path, item: str, skips: Skips) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as e:  # a dangling or looping symlink, a permission error, a folder named like an image
        skips.skip(f"unreadable file ({e.strerror or type(e).__name__})", item)
        return None


def read_image_folder(root: Path, skips: Skips) -> Iterator[Example]:
    """Captioned images of an ``imagefolder`` (``metadata.jsonl``) or of sidecar ``<stem>.txt`` captions.

    Raises MobilediffError for a missing folder, a corrupt metadata file, a folder without images or without any
    caption; items that cannot be used (missing file, file outside the folder, no caption, bad caption) are skipped
    and counted."""
    root = Path(root)
    if not root.exists():
        raise MobilediffError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise MobilediffError(f"--images {root} is a file; expected a folder (imagefolder layout or sidecar captions)")
    meta = root / "metadata.jsonl"
    if meta.exists():
        rows = []
        for i, row in read_jsonl(_read_text(meta, "metadata file"), str(meta)):
            if not isinstance(row.get("file_name"), str):
                raise MobilediffError(f"{meta} line {i}: no 'file_name' string")
            if "text" not in row:
                raise MobilediffError(f"{meta} line {i}: no 'text' field (the caption)")
            rows.append(row)
        if not rows:
            raise MobilediffError(f"{meta} lists no images")
        resolved_root = root.resolve()
        for row in rows:
            name = row["file_name"]
            path = root / name
            try:
                inside = path.resolve().is_relative_to(resolved_root)
            except (OSError, RuntimeError):  # a symlink loop
                inside = False
            if not inside:
                skips.skip("file outside the folder", name)
                continue
            if not path.is_file():
                skips.skip("missing file", name)
                continue
            caption = usable_caption(row["text"], name, skips)
            if caption is None:
                continue
            data = _read_bytes(path, name, skips)
            if data is not None:
                yield Example(name, caption, data)
        return
    images = _walk_images(root)
    if not images:
        raise MobilediffError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    sidecars = [p.with_suffix(".txt") for p in images]
    if not any(s.is_file() for s in sidecars):
        raise MobilediffError(f"image folder {root} has no captions: add metadata.jsonl (lines with 'file_name' and "
                              f"'text') or a <image>.txt beside each image")
    for path, side in zip(images, sidecars):
        name = str(path.relative_to(root))
        if not side.is_file():
            skips.skip("no caption file", name)
            continue
        try:
            text = side.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError):
            skips.skip("caption file unreadable or not UTF-8", name)
            continue
        caption = usable_caption(text, name, skips)
        if caption is None:
            continue
        data = _read_bytes(path, name, skips)
        if data is not None:
            yield Example(name, caption, data)


# ---------------------------------------------------------------------------------------------- webdataset


def expand_shards(pattern: str) -> list[Path]:
    """The shard files of a brace pattern, each checked to exist."""
    from braceexpand import braceexpand

    try:
        paths = [Path(p) for p in braceexpand(pattern)]
    except Exception as e:  # braceexpand raises plain exceptions on unbalanced braces
        raise MobilediffError(f"--wds {pattern!r}: not a brace pattern ({e})") from None
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MobilediffError(f"--wds {pattern!r}: {len(missing)} of {len(paths)} shards missing (first: {missing[0]})")
    return paths


def _wds_caption(value: bytes, ext: str) -> object:
    text = value.decode("utf-8")
    if ext != "json":
        return text
    row = json.loads(text)
    return row.get("text", row.get("caption")) if isinstance(row, dict) else None


def read_webdataset(pattern: str, skips: Skips) -> Iterator[Example]:
    """Captioned images of webdataset tar shards, in shard and member order."""
    for shard in expand_shards(pattern):
        try:
            tar = tarfile.open(shard, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise MobilediffError(f"--wds shard {shard}: not a readable tar file ({e})") from None
        groups: dict[str, dict[str, bytes]] = {}
        order: list[str] = []
        with tar:
            try:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if not dot or base.startswith("."):
                        continue
                    key = f"{folder}/{stem}" if folder else stem
                    if key not in groups:
                        groups[key] = {}
                        order.append(key)
                    f = tar.extractfile(member)
                    groups[key][ext.lower()] = f.read() if f is not None else b""
            except (tarfile.TarError, OSError, EOFError) as e:
                raise MobilediffError(f"--wds shard {shard}: corrupt tar file ({e})") from None
        for key in order:
            parts, item = groups[key], f"{shard.name}:{key}"
            image_ext = next((e for e in WDS_IMAGE_KEYS if e in parts), None)
            caption_ext = next((e for e in WDS_CAPTION_KEYS if e in parts), None)
            if image_ext is None:
                skips.skip("no image in the example", item)
                continue
            if caption_ext is None:
                skips.skip("no caption (txt, caption or json)", item)
                continue
            try:
                value = _wds_caption(parts[caption_ext], caption_ext)
            except (UnicodeDecodeError, json.JSONDecodeError):
                skips.skip("caption not UTF-8 text or JSON", item)
                continue
            caption = usable_caption(value, item, skips)
            if caption is None:
                continue
            yield Example(item, caption, parts[image_ext])


# ---------------------------------------------------------------------------------------------- decoding


def parse_background(text: str) -> tuple[int, int, int]:
    """An RGB colour: a name (white, black, gray) or ``#rrggbb``."""
    if text in NAMED_BACKGROUNDS:
        return NAMED_BACKGROUNDS[text]
    t = text.removeprefix("#")
    if len(t) == 6:
        try:
            return tuple(int(t[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            pass
    raise MobilediffError(f"--background {text!r}: use white, black, gray or #rrggbb")


def _to_rgb(im, background: tuple[int, int, int]):
    """An 8-bit RGB image from any Pillow mode; transparency composited on ``background``."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # 16-bit / 32-bit grey
        a = np.asarray(im, dtype=np.float64)
        scale = 257.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        im = Image.fromarray(np.clip(a / scale, 0, 255).round().astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        base = Image.new("RGBA", im.size, (*background, 255))
        return Image.alpha_composite(base, im).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGB


def decode_image(data: bytes, size: tuple[int, int], fit: str,
                 background: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """An encoded image file as (H, W, 3) uint8 at ``size`` = (H, W), and the file's own (width, height) after its
    EXIF orientation. Raises ValueError with a short reason for a file that is not an image, truncated, too small or
    too large."""
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        im = Image.open(io.BytesIO(data))
        im.load()  # decodes now: a truncated file fails here, not later
    except Image.DecompressionBombError:
        raise ValueError(f"image larger than {MAX_IMAGE_PIXELS} pixels") from None
    except Exception as e:  # Pillow raises many types for corrupt data (OSError, SyntaxError, ValueError, ...)
        raise ValueError(f"not a readable image ({type(e).__name__})") from None
    if min(im.size) < MIN_IMAGE_SIDE:
        raise ValueError(f"image smaller than {MIN_IMAGE_SIDE} px")
    im = ImageOps.exif_transpose(im) or im
    original = im.size
    rgb = _to_rgb(im, background)
    h, w = size
    if fit == "stretch":
        rgb = rgb.resize((w, h), Image.Resampling.LANCZOS)
    elif fit == "pad":
        rgb = ImageOps.pad(rgb, (w, h), Image.Resampling.LANCZOS, color=background)
    else:
        rgb = ImageOps.fit(rgb, (w, h), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8), original


def content_hash(examples: list[Example]) -> str:
    """sha256 over every example's key, caption and file bytes: what a cache of their decoded pixels is keyed by."""
    h = hashlib.sha256()
    for e in examples:
        for part in (e.key.encode(), e.caption.encode(), hashlib.sha256(e.data).digest()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()
