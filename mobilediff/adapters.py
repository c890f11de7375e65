"""The embedded LoRA adapters (``--lora default:NAME``) and the data they were trained on.

    python -m mobilediff.adapters swap-colours --out DIR [--n 4096] [--swap red,blue]
        the shapes domain with two colours exchanged in the images, the captions unchanged: an adapter trained on it
        makes the default model draw "red" as blue and "blue" as red (a colour change the evaluator can count)
    python -m mobilediff.adapters monochrome --images DIR --out DIR
        an imagefolder's images in grayscale (ITU-R 601 luma), the captions unchanged: an emoji style

Each writes an imagefolder (PNGs + metadata.jsonl with ``file_name`` and ``text``) that ``train-lora --images``
reads. The adapters' own folders (``mobilediff/assets/adapters/NAME``) hold ``adapter.safetensors``,
``training.json`` and ``TRAINING.md`` with the commands that made them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobilediff.errors import MobilediffError


ADAPTERS_DIR = Path(__file__).parent / "assets" / "adapters"
SWAP_SEED = 4242  # the scenes of the swap-colours data (no other training run uses it)


def adapter_path(value: str) -> Path:
    """``default:NAME`` -> the embedded adapter's file; anything else is a path as given."""
    if value.startswith("default:"):
        name = value.split(":", 1)[1]
        path = ADAPTERS_DIR / name / "adapter.safetensors"
        if not path.is_file():
            have = sorted(p.name for p in ADAPTERS_DIR.iterdir() if (p / "adapter.safetensors").is_file()) \
                if ADAPTERS_DIR.is_dir() else []
            raise MobilediffError(f"no embedded adapter {value!r} (embedded: {', '.join('default:' + h for h in have) or 'none'})")
        return path
    return Path(value)


def _write_folder(out: Path, items, force: bool) -> int:
    from PIL import Image

    from mobilediff.io import atomic_dir

    n = 0
    with atomic_dir(out, force=force) as tmp:
        with open(tmp / "metadata.jsonl", "w", encoding="utf-8") as meta:
            for name, array, text in items:
                Image.fromarray(array).save(tmp / name)
                meta.write(json.dumps({"file_name": name, "text": text}) + "\n")
                n += 1
    return n


def swap_colours(out: Path, n: int = 4096, swap: tuple[str, str] = ("red", "blue"), force: bool = False) -> int:
    """The shapes domain's scenes ``0..n-1`` of seed :data:`SWAP_SEED`, rendered with the colours ``swap`` exchanged
    and captioned as before. Returns the number of images."""
    from dataclasses import replace

    from mobilediff.data import COLORS, ShapesDataset, render, to_uint8

    a, b = (COLORS.index(c) if c in COLORS else None for c in swap)
    if a is None or b is None or a == b:
        raise MobilediffError(f"--swap takes two different colours of {', '.join(COLORS)}, got {','.join(swap)}")
    data = ShapesDataset(seed=SWAP_SEED)

    def items():
        for start in range(0, n, 256):
            scenes = data.scenes(start, min(256, n - start))
            swapped = [replace(s, objects=tuple(replace(o, color={a: b, b: a}.get(o.color, o.color))
                                                for o in s.objects)) for s in scenes]
            for i, (s, img) in enumerate(zip(scenes, to_uint8(render(swapped)))):
                yield f"{start + i:05d}.png", img, s.caption

    return _write_folder(out, items(), force)


def monochrome(images: Path, out: Path, force: bool = False) -> int:
    """An imagefolder's images in grayscale (composited on white where transparent), same captions."""
    import numpy as np
    from PIL import Image

    meta = Path(images) / "metadata.jsonl"
    if not meta.is_file():
        raise MobilediffError(f"--images {images}: no metadata.jsonl (an imagefolder: PNGs + metadata.jsonl)")

    def items():
        for line in meta.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            with Image.open(Path(images) / row["file_name"]) as im:
                rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            gray = Image.alpha_composite(white, rgba).convert("L").convert("RGB")
            yield Path(row["file_name"]).with_suffix(".png").name, np.asarray(gray), row["text"]

    return _write_folder(out, items(), force)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobilediff.adapters", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("swap-colours", help="the shapes domain with two colours exchanged in the images")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--n", type=int, default=4096)
    s.add_argument("--swap", default="red,blue")
    s.add_argument("--force", action="store_true")
    m = sub.add_parser("monochrome", help="an imagefolder in grayscale")
    m.add_argument("--images", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.command == "swap-colours":
            if a.n < 1:
                raise MobilediffError(f"--n must be >= 1, got {a.n}")
            count = swap_colours(a.out, a.n, tuple(a.swap.split(",")), a.force)
        else:
            count = monochrome(a.images, a.out, a.force)
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{count} captioned images written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
