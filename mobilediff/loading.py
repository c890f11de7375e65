"""Load a diffusers Stable-Diffusion-family pipeline directory safely.

Checks come before any weights are read: the folder exists, holds a model_index.json, every component
folder has safetensors weights (pickle-only folders are refused, never loaded), and every safetensors
header parses. Errors are MobilediffError with one line naming the file.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from mobilediff.errors import MobilediffError
from mobilediff.io import PICKLE_SUFFIXES

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default_model"
WEIGHTED_COMPONENTS = ("unet", "vae", "text_encoder")


def resolve_model(model: str | Path | None) -> Path:
    """'default' or None -> the embedded default model; otherwise the given folder."""
    if model is None or str(model) == "default":
        return DEFAULT_MODEL_DIR
    return Path(model)


def check_safetensors_header(path: Path) -> None:
    """Parse a safetensors header (8-byte length + JSON) and check the data size; raise if corrupt."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"data section is {size - 8 - n} bytes, header says {end}")
    except (ValueError, struct.error, KeyError, TypeError) as e:
        raise MobilediffError(f"corrupt safetensors file {path}: {e}") from None


def check_pipeline_dir(path: Path) -> dict:
    """Validate a pipeline folder without loading weights; return its model_index.json."""
    path = Path(path)
    if not path.is_dir():
        raise MobilediffError(f"model directory not found: {path}")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise MobilediffError(f"{path} is not a diffusers pipeline directory (no model_index.json)")
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError as e:
        raise MobilediffError(f"corrupt {index_file}: {e}") from None
    for comp in WEIGHTED_COMPONENTS:
        if comp not in index or index[comp] in (None, [None, None]):
            continue
        cdir = path / comp
        if not cdir.is_dir():
            raise MobilediffError(f"missing component folder {cdir}")
        st = sorted(cdir.glob("*.safetensors"))
        if not st:
            pickles = [p.name for p in cdir.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise MobilediffError(
                    f"{cdir} holds only pickle weights ({', '.join(pickles)}): refusing to load them; convert to safetensors")
            raise MobilediffError(f"no safetensors weights in {cdir}")
        for f in st:
            check_safetensors_header(f)
    return index


def load_pipeline(model: str | Path | None = None, scheduler=None):
    """Load a StableDiffusionPipeline (fp32, CPU) from a checked folder, safetensors only."""
    from diffusers import StableDiffusionPipeline

    path = resolve_model(model)
    index = check_pipeline_dir(path)
    cls = index.get("_class_name", "")
    if cls not in ("StableDiffusionPipeline", "LatentConsistencyModelPipeline"):
        raise MobilediffError(f"unsupported pipeline class {cls!r} in {path}: expected StableDiffusionPipeline")
    kwargs = {"use_safetensors": True, "safety_checker": None, "feature_extractor": None,
              "requires_safety_checker": False}
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    try:
        pipe = StableDiffusionPipeline.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise MobilediffError(f"could not load pipeline from {path}: {str(e).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe
