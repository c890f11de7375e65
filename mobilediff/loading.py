"""Load a diffusers Stable-Diffusion-family pipeline directory safely.

Checks come before any weights are read: the folder exists, holds a model_index.json, every component
folder has safetensors weights (pickle-only folders are refused, never loaded), and every safetensors
header parses. Errors are MobilediffError with one line naming the file.
"""
from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError
from mobilediff.io import PICKLE_SUFFIXES, SHARED_FILE, check_safetensors_header, shared_components

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default_model"
DEFAULT_STUDENTS = Path(__file__).parent / "assets" / "students"
DEFAULT_FAMILY = Path(__file__).parent / "assets" / "family"
# the emoji model: its own VAE and text encoder, trained on the Noto emoji sprites (docs/models.md), and its student
EMOJI_MODEL_DIR = Path(__file__).parent / "assets" / "emoji"
WEIGHTED_COMPONENTS = ("unet", "transformer", "vae", "text_encoder")
SHAREABLE = ("text_encoder", "tokenizer", "unet", "vae")
# the family's sizes, smallest first (a size folder with another name is listed after these, by name)
FAMILY_SIZES = ("xs", "s", "m", "l", "xl")
_FOLDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class FamilyMember:
    """One size of the embedded model family: ``mobilediff/assets/family/unet-<size>/`` (it borrows the default
    model's text encoder, tokenizer and VAE) and its distilled students in ``students/<kind>/``; or, with backbone
    ``dit``, ``dit-<size>/``: a PixArt-style diffusion transformer of that UNet size's FLOPs, trained the same way
    (train-base --backbone dit)."""

    size: str  # "xs", "s", "m", ...
    path: Path
    students: dict[str, Path]  # kind ("progressive-1", "progressive-4", "lcm", ...) -> pipeline folder
    backbone: str = "unet"  # "unet" | "dit"

    @property
    def name(self) -> str:
        return f"default:{self.backbone}-{self.size}"

    def student_name(self, kind: str) -> str:
        return f"{self.name}:{kind}"


def find_family(root: Path = DEFAULT_FAMILY, backbone: str = "unet") -> list[FamilyMember]:
    """The family members present under ``root``, smallest size first: every ``<backbone>-<size>/`` folder holding a
    ``model_index.json``, with every ``students/<kind>/`` folder of it that holds one too. A size that is not on disk
    (not trained yet) is simply not listed. Folder names other than lower-case letters, digits and dashes are
    skipped (they could not be spelled as a model name)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for folder in root.glob(f"{backbone}-*"):
        size = folder.name.removeprefix(f"{backbone}-")
        if not _FOLDER_NAME.fullmatch(size) or not (folder / "model_index.json").is_file():
            continue
        students = {}
        if (folder / "students").is_dir():
            for s in sorted((folder / "students").iterdir()):
                if _FOLDER_NAME.fullmatch(s.name) and (s / "model_index.json").is_file():
                    students[s.name] = s
        found.append(FamilyMember(size=size, path=folder, students=students, backbone=backbone))
    order = {s: i for i, s in enumerate(FAMILY_SIZES)}
    return sorted(found, key=lambda m: (order.get(m.size, len(order)), m.size))


def family_names(family: list[FamilyMember]) -> dict[str, Path]:
    """``default:unet-<size>`` and ``default:unet-<size>:<student kind>`` -> folder, for :data:`NAMED_MODELS`."""
    out = {}
    for m in family:
        out[m.name] = m.path
        out.update({m.student_name(kind): path for kind, path in m.students.items()})
    return out


FAMILY = find_family()  # the UNet sizes: the scaling study's members
DIT_FAMILY = find_family(backbone="dit")  # diffusion transformers matched to a UNet size (the backbone study)
# embedded models by name: the default model, its distilled students, the emoji model and its student, and the
# UNet-size family that is on disk
NAMED_MODELS = {"default": DEFAULT_MODEL_DIR, "default:lcm": DEFAULT_STUDENTS / "lcm",
                **{f"default:progressive-{n}": DEFAULT_STUDENTS / "progressive" / f"steps-{n}" for n in (1, 2, 4, 8)},
                **{f"default:{p.name}": p for p in sorted(DEFAULT_STUDENTS.glob("slim-*")) if p.is_dir()},
                "default:emoji": EMOJI_MODEL_DIR, "default:emoji:lcm": EMOJI_MODEL_DIR / "students" / "lcm",
                **family_names(FAMILY), **family_names(DIT_FAMILY)}


def resolve_model(model: str | Path | None) -> Path:
    """'default' or None -> the embedded default model; 'default:lcm', 'default:progressive-N', 'default:slim-N' -> its
    embedded students (the slim ones on disk); 'default:emoji' and 'default:emoji:lcm' -> the emoji model and its student; 'default:unet-<size>' and 'default:unet-<size>:<student>' -> the family members on disk (docs/models.md), 'default:dit-<size>' the diffusion transformers;
    otherwise the given folder."""
    if model is None:
        return DEFAULT_MODEL_DIR
    return NAMED_MODELS.get(str(model), Path(model))


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
    shared = shared_components(path)
    for comp in WEIGHTED_COMPONENTS:
        if comp not in index or index[comp] in (None, [None, None]):
            continue
        cdir = shared.get(comp, path / comp)
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


CONFIG_FILES = {"text_encoder": "config.json", "unet": "config.json", "transformer": "config.json",
                "vae": "config.json", "scheduler": "scheduler_config.json"}


def check_architecture(path: Path, index: dict) -> None:
    """Refuse a pipeline folder outside the Stable Diffusion family (mobilediff.family) from its model_index.json
    and component configs, before any weights are read. A missing or unreadable config is left to the loader."""
    from mobilediff import family, transformer_family

    path = Path(path)
    shared = shared_components(path)
    rules = transformer_family if transformer_family.is_transformer_pipeline(index.get("_class_name", "")) else family
    classes, configs = {}, {}
    for comp in rules.CLASSES:
        entry = index.get(comp)
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] is None:
            continue
        classes[comp] = entry[1]
        if comp in CONFIG_FILES:
            f = shared.get(comp, path / comp) / CONFIG_FILES[comp]
            try:
                configs[comp] = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
    rules.check_configs(classes, configs)


def drop_load_paths(folder: Path) -> None:
    """Remove diffusers' ``_name_or_path`` (the folder a model was loaded from when it was saved, an absolute path of
    the machine that wrote it) from every component config under ``folder``: a saved pipeline records no path of the
    machine that made it, and nothing reads the key back."""
    for f in sorted(Path(folder).rglob("*config.json")):
        try:
            config = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(config, dict) and "_name_or_path" in config:
            del config["_name_or_path"]
            f.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_pipeline(model: str | Path | None = None, scheduler=None, transformers: bool = False):
    """Load a StableDiffusionPipeline (fp32, CPU) from a checked folder, safetensors only. ``transformers``: a PixArt
    pipeline (mobilediff.transformer_family) is taken too; otherwise it is refused in one line (the caller's work
    needs a UNet)."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    from mobilediff.transformer_family import PIPELINES as TRANSFORMER_PIPELINES

    path = resolve_model(model)
    index = check_pipeline_dir(path)
    cls = index.get("_class_name", "")
    if cls not in ("StableDiffusionPipeline", "LatentConsistencyModelPipeline", "StableDiffusionInpaintPipeline",
                   *TRANSFORMER_PIPELINES):
        raise MobilediffError(f"unsupported pipeline class {cls!r} in {path}: expected StableDiffusionPipeline "
                              f"(or StableDiffusionInpaintPipeline, {', '.join(TRANSFORMER_PIPELINES)})")
    if cls in TRANSFORMER_PIPELINES and not transformers:
        raise MobilediffError(f"{path} is a {cls}: this command needs a UNet pipeline of the Stable Diffusion family "
                              f"(PixArt models are taken by export, generate and evaluate)")
    check_architecture(path, index)
    if cls in TRANSFORMER_PIPELINES:
        return _load_transformer_pipeline(getattr(diffusers, cls), path, index, scheduler)
    kwargs = {"use_safetensors": True, "safety_checker": None, "feature_extractor": None,
              "requires_safety_checker": False}
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    try:
        kwargs.update(_borrowed_components(path, index))
        pipe = StableDiffusionPipeline.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise MobilediffError(f"could not load pipeline from {path}: {str(e).splitlines()[0]}") from None
    from mobilediff.family import check_tokenizer

    check_tokenizer(pipe.tokenizer, pipe.text_encoder)
    pipe.to(torch.float32)  # weights may be stored in fp16 (students); the reference computes in fp32
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _borrowed_components(path: Path, index: dict) -> dict:
    """The components a packed pipeline folder borrows from its base (``shared_components.json``), loaded."""
    out = {}
    for comp, src in shared_components(path).items():
        library, cls_name = index[comp]
        cls = getattr(importlib.import_module(library), cls_name)
        extra = {"use_safetensors": True} if comp in WEIGHTED_COMPONENTS else {}
        out[comp] = cls.from_pretrained(str(src), **extra)
    return out


def _load_transformer_pipeline(pipeline_class, path: Path, index: dict, scheduler=None):
    """A PixArt pipeline (mobilediff.transformer_family) from a checked folder, safetensors only, fp32 on the CPU;
    a packed one with the components it borrows from its base."""
    from mobilediff.transformer_family import check_pipeline

    kwargs = {"use_safetensors": True}
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    try:
        kwargs.update(_borrowed_components(path, index))
        pipe = pipeline_class.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise MobilediffError(f"could not load pipeline from {path}: {str(e).splitlines()[0]}") from None
    check_pipeline(pipe)
    pipe.to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pack_pipeline(model: Path, base: Path | None, out: Path, store_fp16: tuple[str, ...] = (),
                  decoder: Path | None = None, force: bool = False) -> dict:
    """Write ``model`` to ``out`` keeping only what differs from ``base``: components whose config and tensors
    equal the base's (as stored: in fp16 for those of ``store_fp16``) are borrowed from it (``shared_components.json``),
    and the weights of the components named in
    ``store_fp16`` are stored in fp16 (loaded back in fp32). Components ``model`` itself borrows are read from where
    it borrows them. ``base`` None: nothing is borrowed (the full form). ``decoder``: a tiny decoder folder
    (``mobilediff distill-decoder``) that replaces the model's VAE, refused unless it decodes the model's latent
    space (:mod:`mobilediff.decoder`). Returns {component: "shared" | "own" | "own, fp16" | "decoder ..."}."""
    import shutil

    from mobilediff.io import tree_sha256
    from mobilediff.io import atomic_dir, atomic_write_json, load_tensors, save_tensors

    model = Path(model)
    index = check_pipeline_dir(model)
    if base is not None:
        base = Path(base)
        check_pipeline_dir(base)
    sources = {item.name: item for item in model.iterdir() if item.name != SHARED_FILE}
    sources.update(shared_components(model))
    if decoder is not None:
        from mobilediff.decoder import CLASS, check_decoder_dir, check_fits, latent_space

        check_fits(decoder, check_decoder_dir(decoder), latent_space(sources.get("vae", model / "vae")))
        sources["vae"] = Path(decoder)
        index["vae"] = ["diffusers", CLASS]
    report, shared = {}, {}
    with atomic_dir(out, force=force) as tmp:
        for comp, item in sorted(sources.items()):
            if not item.is_dir():
                shutil.copy2(item, tmp / comp)
                continue
            if (base is not None and comp in SHAREABLE and (base / comp).is_dir()
                    and _same_component(item, base / comp, fp16=comp in store_fp16)):
                shared[comp] = tree_sha256(base / comp, "**/*")
                report[comp] = "shared"
                continue
            shutil.copytree(item, tmp / comp)
            report[comp] = f"decoder {item}" if comp == "vae" and decoder is not None else "own"
            if comp in store_fp16:
                for f in (tmp / comp).glob("*.safetensors"):
                    save_tensors({k: v.half() if v.is_floating_point() else v for k, v in load_tensors(f).items()}, f,
                                 metadata={"format": "pt"})
                report[comp] += ", fp16"
        if decoder is not None:
            atomic_write_json(tmp / "model_index.json", index)
        if shared:
            rel = os.path.relpath(base.resolve(), Path(out).resolve())
            atomic_write_json(tmp / SHARED_FILE, {"base": rel, "components": shared})
    return report


def _same_component(a: Path, b: Path, fp16: bool = False) -> bool:
    """Same files, same JSON configs (ignoring version stamps), same tensors; ``fp16``: ``a``'s floating-point tensors
    as they would be stored in fp16 (the base stores them so)."""
    from mobilediff.io import load_tensors

    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    for n in names:
        fa, fb = a / n, b / n
        if n.endswith(".safetensors"):  # keys compared without the text_model. prefix (see save_pipeline)
            ta, tb = ({k.removeprefix("text_model."): v for k, v in load_tensors(f).items()} for f in (fa, fb))
            if fp16:
                ta = {k: v.half() if v.is_floating_point() else v for k, v in ta.items()}
            if ta.keys() != tb.keys() or any(not torch.equal(ta[k], tb[k]) for k in ta):
                return False
        elif n.endswith(".json") and n != "tokenizer.json":
            ja, jb = (json.loads(f.read_text()) for f in (fa, fb))
            strip = ("_diffusers_version", "transformers_version", "_name_or_path")
            if {k: v for k, v in ja.items() if k not in strip} != {k: v for k, v in jb.items() if k not in strip}:
                return False
        elif fa.read_bytes() != fb.read_bytes():
            return False
    return True


TEXT_MODEL_PREFIXES = ("text_model.", "text_projection.")


def save_pipeline(pipe, path: Path, tokenizer_dir: Path | None = None) -> None:
    """``pipe.save_pretrained(path)`` (safetensors), written so that transformers 4.x loads it too.

    transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` key prefix; transformers 4.x then
    finds none of its keys and silently starts the text encoder from random weights. Both versions load the
    prefixed keys, so the text encoder's file is rewritten with them. ``tokenizer_dir``: a folder whose files
    replace the saved tokenizer (the CLIP BPE files vocab.json / merges.txt that the apps read)."""
    import shutil

    from mobilediff.io import load_tensors, save_tensors

    path = Path(path)
    pipe.save_pretrained(str(path), safe_serialization=True)
    drop_load_paths(path)
    for f in sorted((path / "text_encoder").glob("*.safetensors")):
        tensors = load_tensors(f)
        if not all(k.startswith(TEXT_MODEL_PREFIXES) for k in tensors):
            save_tensors({k if k.startswith(TEXT_MODEL_PREFIXES) else f"text_model.{k}": v for k, v in tensors.items()},
                         f, metadata={"format": "pt"})
    if tokenizer_dir is not None and Path(tokenizer_dir).is_dir():
        shutil.rmtree(path / "tokenizer")
        shutil.copytree(tokenizer_dir, path / "tokenizer")


