"""The emoji data: Noto emoji sprites with their Unicode names as captions, as an ``imagefolder``.

Real images nobody on this project made: the npm package ``emoji-datasource-google`` (pinned below; its sha512 is
checked before anything is read) ships Google's Noto emoji as 64x64 RGBA PNGs (``img/google/64/``; Noto emoji images
are Apache-2.0, the package's data MIT) and ``emoji.json`` with every emoji's name, category and sub-category. Each
image becomes one example captioned with its lower-cased name and, for the skin-tone variants, the tone ("father
christmas, medium-dark skin tone"); ``metadata.jsonl`` also records the category and sub-category (the emoji
classifier used as a Fréchet-distance feature extractor trains on them). Nothing is committed: this module rebuilds
the folder from the pinned package.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from mobilediff.errors import MobilediffError
from mobilediff.sources.npm import NpmPackage, check_integrity, download

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
# the registry's dist.integrity of the version above
SHA512 = "ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="
NPM = NpmPackage(PACKAGE, VERSION, SHA512, "Apache-2.0")
IMAGE_DIR = "package/img/google/64/"
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}
NOTICE = f"""Images: Noto Emoji by Google (Apache License 2.0), as shipped in the npm package {PACKAGE}@{VERSION}
(package data: MIT License, Copyright (c) 2013 Cal Henderson). Captions are the emoji's Unicode names from its
emoji.json. Built by `mobilediff build-emoji-data`.
"""


def _tone_phrase(code: str) -> str:
    tones = [SKIN_TONES.get(part, part.lower()) for part in code.split("-")]
    if len(set(tones)) == 1:
        return f"{tones[0]} skin tone"
    return " and ".join(dict.fromkeys(tones)) + " skin tones"


def emoji_rows(emoji: list[dict]) -> list[dict]:
    """One row per emoji image with a Google sprite: file name, caption, category, sub-category, short name."""
    rows = []
    for e in sorted(emoji, key=lambda e: e.get("sort_order", 0)):
        name = (e.get("name") or e.get("short_name") or "").lower().strip()
        if not name:
            continue
        base = {"category": e.get("category", ""), "subcategory": e.get("subcategory", ""),
                "short_name": e.get("short_name", "")}
        if e.get("has_img_google") and e.get("image"):
            rows.append({"file_name": e["image"], "text": name, **base})
        for code, variant in sorted((e.get("skin_variations") or {}).items()):
            if variant.get("has_img_google") and variant.get("image"):
                rows.append({"file_name": variant["image"], "text": f"{name}, {_tone_phrase(code)}", **base})
    return rows


def build_emoji_folder(out: Path, tarball: Path | None = None, force: bool = False) -> dict:
    """Write the emoji ``imagefolder`` to ``out`` (atomically): the PNGs, ``metadata.jsonl`` and a NOTICE. Fetches
    the pinned package from the npm registry unless ``tarball`` (the same package, checked the same way) is given. Returns counts."""
    from mobilediff.io import atomic_dir

    with tempfile.TemporaryDirectory() as work:
        tarball = Path(tarball) if tarball is not None else download(NPM, Path(work))
        if not tarball.is_file():
            raise MobilediffError(f"--tarball {tarball} does not exist")
        check_integrity(NPM, tarball)
        with tarfile.open(tarball, "r:gz") as tar:
            emoji = json.load(tar.extractfile("package/emoji.json"))
            rows = emoji_rows(emoji)
            members = {m.name[len(IMAGE_DIR):]: m for m in tar.getmembers() if m.name.startswith(IMAGE_DIR) and m.isfile()}
            rows = [r for r in rows if r["file_name"] in members]
            with atomic_dir(out, force=force) as tmp:
                for r in rows:
                    (tmp / r["file_name"]).write_bytes(tar.extractfile(members[r["file_name"]]).read())
                (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                (tmp / "NOTICE").write_text(NOTICE)
    return {"images": len(rows), "package": f"{PACKAGE}@{VERSION}", "out": str(out)}
