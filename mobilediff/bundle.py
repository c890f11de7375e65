"""The bundle: ``manifest.json`` + one file per component, target and precision + tokenizer files.

This is the one contract with the apps (see shared/DESIGN.md, "The bundle"). Fields are only ever added:
a reader accepts any manifest whose ``format_version`` it knows and ignores fields it does not, and
refuses a newer major format. Every file a reader opens is checked against its sha256 first.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from mobilediff.errors import MobilediffError

FORMAT = "mobilediff.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def file_name(component: str, target: str, precision: str, ext: str) -> str:
    return f"{component}_{target}_{precision}.{ext}"


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory (e.g. a .mlpackage) as sorted (relative path, bytes) pairs."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    else:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def size_bytes(path: Path) -> int:
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def guidance_embedding_tensor(scale, dim: int):
    """diffusers' guidance-scale embedding (LCM): w = (scale - 1) * 1000, sinusoidal over ``dim`` features.
    ``scale`` is a (B,) tensor; traceable, so the fused graph uses it too."""
    import torch

    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    emb = (scale - 1.0).reshape(-1, 1) * 1000.0 * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 == 1 else emb


def guidance_embedding(scale: float, dim: int) -> list[float]:
    import torch

    return guidance_embedding_tensor(torch.tensor([float(scale)]), dim)[0].tolist()


def guidance_record(pipe, default_scale: float) -> dict:
    dim = pipe.unet.config.time_cond_proj_dim
    if dim:
        return {"type": "embedding", "input": "timestep_cond", "embedding_dim": dim, "default_scale": default_scale,
                "formula": "w = (scale - 1) * 1000; f_k = exp(-k * ln(10000) / (dim/2 - 1)), k < dim/2; "
                           "embedding = [sin(w f_0..), cos(w f_0..)] (zero-padded to dim)",
                "default_embedding": guidance_embedding(default_scale, dim)}
    return {"type": "classifier_free", "default_scale": default_scale, "unconditional_prompt": "",
            "formula": "out = out_uncond + scale * (out_cond - out_uncond); UNet batch rows [uncond, cond]"}


def read_manifest(bundle: Path) -> dict:
    """Load and check a bundle's manifest (format, version). Raises MobilediffError with one line."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise MobilediffError(f"bundle directory not found: {bundle}")
    path = bundle / MANIFEST
    if not path.is_file():
        raise MobilediffError(f"{bundle} has no {MANIFEST} (not a bundle, or an interrupted export)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MobilediffError(f"{path} is not a mobilediff bundle manifest (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise MobilediffError(f"{path} has format version {version!r}; this mobilediff reads versions 1..{FORMAT_VERSION} "
                              f"(upgrade mobilediff to read newer bundles)")
    return manifest


def verify_file(bundle: Path, entry: dict) -> Path:
    """The path of a manifest file entry, after checking that it and each of its external data files (an entry's
    optional ``external_data`` list, e.g. the weights of an ONNX graph over 1.5 GiB) exist and match their sha256."""
    path = Path(bundle) / entry["path"]
    for part in [entry] + list(entry.get("external_data", [])):
        file = Path(bundle) / part["path"]
        if not file.exists():
            raise MobilediffError(f"bundle file missing: {file}")
        if sha256_path(file) != part["sha256"]:
            raise MobilediffError(f"bundle file {file} does not match its sha256 in the manifest (modified or corrupt)")
    return path


def component_file(manifest: dict, bundle: Path, component: str, target: str, precision: str | None = None) -> tuple[Path, dict]:
    """Verified path and entry of ``component`` for ``target`` (and precision, if given)."""
    comp = manifest.get("components", {}).get(component)
    if comp is None:
        raise MobilediffError(f"bundle has no component {component!r}")
    files = [f for f in comp["files"] if f["target"] == target and (precision is None or f["precision"] == precision)]
    if not files:
        have = sorted({f"{f['target']}/{f['precision']}" for f in comp["files"]})
        raise MobilediffError(f"bundle has no {target} file for {component} (it has: {', '.join(have) or 'none'})")
    return verify_file(bundle, files[0]), files[0]


def sampler_entry(manifest: dict, sampler: str, steps: int) -> dict:
    for table in manifest.get("samplers", []):
        if table["name"] == sampler and table["steps"] == steps:
            return table
    have = ", ".join(f"{t['name']}:{t['steps']}" for t in manifest.get("samplers", []))
    raise MobilediffError(f"bundle has no {sampler} table for {steps} steps (it has: {have})")
