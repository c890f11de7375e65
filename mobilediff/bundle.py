"""The bundle manifest as typed, frozen dataclasses, with the one reader and the one writer of ``manifest.json``.

A bundle is ``manifest.json`` + one file per component, target and precision + the tokenizer files. It is the one
contract with the apps (docs/bundle.md describes it field by field): an app holding only the bundle can generate
exactly what ``mobilediff generate --bundle`` generates. Fields are only ever added: a reader accepts any manifest
whose ``format_version`` it knows, keeps fields it does not know (``extra``) and refuses a newer major format in one
line. Every file a reader opens is checked against its sha256 first.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobilediff.errors import MobilediffError

FORMAT = "mobilediff.bundle"
FORMAT_VERSION = 2  # the newest this reader knows
# bundles of a transformer denoiser (mobilediff.transformer_family): masked text inputs, a unigram tokenizer; every
# other bundle is still written as format 1, which the first readers take
TRANSFORMER_FORMAT_VERSION = 2
TOKENIZER_KINDS = ("clip-bpe", "unigram")
MANIFEST = "manifest.json"
ROLES = ("teacher", "student")
COMPONENTS = ("text_encoder", "unet", "vae_decoder")  # every bundle holds these three
IMAGE_ENCODER = "vae_encoder"  # and image-to-image / inpainting bundles this one
ADAPTER_INPUT = "lora_weights"  # the extra last input of every component run-time adapters slot (manifest adapters)


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


# ---------------------------------------------------------------------------------------------------------------
# guidance: the classifier-free rule and the LCM guidance-scale embedding, used by every sampler loop


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


def classifier_free_guidance(uncond, cond, scale):
    """The one CFG rule: ``out = uncond + scale * (cond - uncond)`` (rows [uncond, cond] of one UNet batch)."""
    return uncond + scale * (cond - uncond)


# ---------------------------------------------------------------------------------------------------------------
# the manifest's parts


_JSON_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list, tuple),
               "tuple": (list, tuple), "dict": (dict,), "None": (type(None),)}
_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "list": "a list", "tuple": "a list", "dict": "an object", "None": "null"}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _check_type(value: Any, annotation: str, where: str) -> None:
    """Refuse a JSON value of the wrong type for a field annotated with plain types (``int``, ``str | None``, ...);
    record-typed fields are checked by their own record. A bool is not a number, a number is not a string."""
    names = [a.strip() for a in annotation.split("|")]
    if not all(n in _JSON_TYPES for n in names):
        return
    ok = any(isinstance(value, _JSON_TYPES[n]) and not (isinstance(value, bool) and n in ("int", "float"))
             for n in names)
    if not ok:
        want = " or ".join(_TYPE_WORDS[n] for n in names)
        raise MobilediffError(_at(where, f"expected {want}, got {json.dumps(value)[:40]}"))


class _Record:
    """Shared (de)serialisation: known fields by name, unknown ones kept in ``extra`` and written back; fields of
    plain types are type-checked when read."""

    _NESTED: dict[str, Any] = {}  # field -> record class (or (list, class) / (dict, class))
    _KEYS: tuple[str, ...] = ()  # keys a writer may add besides the fields (kept in ``extra``)
    _OMIT_NONE: tuple[str, ...] = ()  # fields written only when set

    @classmethod
    def from_dict(cls, d: Any, where: str = "", strict: bool = False):
        """The record read from JSON ``d``; ``where`` is its field path in the manifest ("" for the manifest itself),
        which every error names. ``strict`` (a writer building a manifest): a key that is not a field is an error,
        not an unknown field kept in ``extra``."""
        if not isinstance(d, dict):
            raise MobilediffError(_at(where, f"expected an object, got {json.dumps(d)[:40]}"))
        names = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        missing = [n for n, f in names.items() if n not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise MobilediffError(f"missing field {_join(where, missing[0])!r}")
        kw = {}
        for n in names:
            if n not in d:
                continue
            v, kind, at = d[n], cls._NESTED.get(n), _join(where, n)
            if kind is None:
                _check_type(v, names[n].type, at)
                kw[n] = v
            elif v is None:
                kw[n] = v
            elif isinstance(kind, tuple) and kind[0] is list:
                if not isinstance(v, list):
                    raise MobilediffError(_at(at, "expected a list"))
                kw[n] = tuple(kind[1].from_dict(x, f"{at}[{i}]", strict) for i, x in enumerate(v))
            elif isinstance(kind, tuple) and kind[0] is dict:
                if not isinstance(v, dict):
                    raise MobilediffError(_at(at, "expected an object"))
                kw[n] = {k: kind[1].from_dict(x, f"{at}.{k}", strict) for k, x in v.items()}
            else:
                kw[n] = kind.from_dict(v, at, strict)
        extra = {k: v for k, v in d.items() if k not in names}
        unknown = [k for k in extra if k not in cls._KEYS]
        if strict and unknown:  # a misspelled field would otherwise be written as an unknown one
            raise ValueError(f"{_join(where, unknown[0])}: not a field of {cls.__name__}")
        try:
            return cls(**kw, extra=extra)
        except (TypeError, ValueError) as e:
            raise MobilediffError(_at(where, str(e))) from None

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if isinstance(v, _Record):
                v = v.to_dict()
            elif isinstance(v, tuple) and v and isinstance(v[0], _Record):
                v = [x.to_dict() for x in v]
            elif isinstance(v, dict) and v and all(isinstance(x, _Record) for x in v.values()):
                v = {k: x.to_dict() for k, x in v.items()}
            elif isinstance(v, tuple):
                v = list(v)
            if v is None and f.name in self._OMIT_NONE:
                continue
            out[f.name] = v
        return {**out, **self.extra}


@dataclass(frozen=True)
class TensorEntry(_Record):
    """One input or output of a graph. ``shape`` may name dimensions ("batch"); ``static_shape`` fixes them."""

    name: str
    shape: list
    static_shape: list
    dtype: str  # "float32" | "int32"
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ExternalData(_Record):
    path: str  # relative to the bundle
    sha256: str
    size_bytes: int
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class FileEntry(_Record):
    """One exported graph of a component: target, precision, where it is, and how it was checked."""

    target: str  # "onnx" | "executorch" | "coreml"
    precision: str  # "fp32" | "fp16": the compute precision the graph was exported at
    path: str  # relative to the bundle
    sha256: str
    size_bytes: int
    quantization: str | None = None  # recipe name when the graph is quantized
    external_data: tuple = ()  # ExternalData: files the graph reads from beside it (ONNX weights over 1.5 GiB)
    export_seconds: float | None = None
    export: dict = field(default_factory=dict)  # target facts: opset, delegated subgraphs, deployment target, ...
    parity: dict = field(default_factory=dict)  # the check against PyTorch: psnr_db, max_abs_error, floor, ...
    extra: dict = field(default_factory=dict, compare=False)
    _NESTED = {"external_data": (list, ExternalData)}

    @property
    def tag(self) -> str:
        """The precision part of the file name: the quantization recipe if any, else the precision."""
        return self.quantization or self.precision


@dataclass(frozen=True)
class ComponentEntry(_Record):
    inputs: tuple  # TensorEntry, in call order
    outputs: tuple  # TensorEntry
    dims: dict  # static value of every named dimension, e.g. {"batch": 2}
    files: tuple  # FileEntry
    source_class: str = ""
    gflop: float | None = None  # FLOPs of one call at ``dims`` (mobilediff.flops); None in bundles made before it
    extra: dict = field(default_factory=dict, compare=False)
    _NESTED = {"inputs": (list, TensorEntry), "outputs": (list, TensorEntry), "files": (list, FileEntry)}

    def file(self, target: str, precision: str | None = None) -> FileEntry | None:
        """The first file for ``target`` whose precision or quantization tag is ``precision`` (any if None)."""
        for f in self.files:
            if f.target == target and precision in (None, f.precision, f.quantization):
                return f
        return None


@dataclass(frozen=True)
class Tokenizer(_Record):
    files: tuple  # relative paths (tokenizer/vocab.json, tokenizer/merges.txt, ...)
    max_length: int  # pad (with pad_id) or truncate every prompt to this many ids, BOS and EOS included
    bos_id: int | None  # None: no BOS (a unigram tokenizer)
    eos_id: int
    pad_id: int
    lowercase: bool = True
    note: str = ""
    file_sha256: dict = field(default_factory=dict)  # relative path -> sha256 (bundles written before it: empty)
    # "clip-bpe": vocab.json + merges.txt, BOS ids EOS pad; "unigram" (format 2): tokenizer.json, ids EOS pad + a mask
    # (absent: "clip-bpe", as every format-1 bundle)
    kind: str | None = None
    extra: dict = field(default_factory=dict, compare=False)
    _KEYS = ("class",)  # the source tokenizer's class name
    _OMIT_NONE = ("kind",)

    def __post_init__(self):
        if self.kind is not None and self.kind not in TOKENIZER_KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(TOKENIZER_KINDS)}")
        if self.unigram_kind is False and self.bos_id is None:
            raise ValueError("a clip-bpe tokenizer needs bos_id")

    @property
    def unigram_kind(self) -> bool:
        return self.kind == "unigram"


@dataclass(frozen=True)
class Geometry(_Record):
    height: int  # image pixels
    width: int
    vae_scale_factor: int
    latent_channels: int
    latent_height: int
    latent_width: int
    scaling_factor: float  # decoder input = final latent / scaling_factor + shift_factor
    shift_factor: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, self.latent_channels, self.latent_height, self.latent_width)


@dataclass(frozen=True)
class SamplerEntry(_Record):
    """A sampler as data (mobilediff.sampler_table): step i is a linear combination of the current and earlier
    latents, the model outputs and fresh noise, with coefficients measured from diffusers' scheduler."""

    name: str  # "ddim" | "dpmpp" | "euler" | "lcm"
    steps: int
    init_noise_sigma: float
    timesteps: list
    input_scale: list
    latent_coef: list  # [i][k]: weight of latent_{i-k}
    output_coef: list  # [i][k]: weight of output_{i-k}
    noise_coef: list
    sampler: str = ""  # the diffusers scheduler class it was measured from
    # image-to-image / inpainting bundles (mobilediff.sampler_table.image_tables): [image_coef, noise_coef] that noise
    # a clean latent to timestep j; {start j: table of the run from step j} where it is not this table's rows from j
    add_noise: list | None = None
    starts: dict | None = None
    extra: dict = field(default_factory=dict, compare=False)
    _OMIT_NONE = ("add_noise", "starts")


@dataclass(frozen=True)
class Guidance(_Record):
    """``classifier_free``: UNet rows [uncond (the ``unconditional_prompt``), cond], combined by
    :func:`classifier_free_guidance` when the scale is > 1. ``embedding``: one row; the scale enters as the
    UNet's ``input`` (``timestep_cond``), :func:`guidance_embedding` of it."""

    type: str  # "classifier_free" | "embedding"
    default_scale: float
    formula: str = ""
    unconditional_prompt: str | None = None
    input: str | None = None
    embedding_dim: int | None = None
    default_embedding: list | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.type not in ("classifier_free", "embedding"):
            raise ValueError(f"unknown guidance type {self.type!r} (known: classifier_free, embedding)")
        if not (math.isfinite(self.default_scale) and self.default_scale >= 0):
            raise ValueError(f"default_scale must be a finite number >= 0, got {self.default_scale}")
        if self.type == "embedding" and (not self.input or not self.embedding_dim or self.embedding_dim < 1):
            raise ValueError("an embedding guidance names its UNet input and embedding_dim "
                             f"(input {self.input!r}, embedding_dim {self.embedding_dim!r})")


@dataclass(frozen=True)
class ModelRole(_Record):
    """What the exported model is: a teacher (trained directly) or a distilled student, and from what."""

    role: str  # "teacher" | "student"
    method: str | None = None  # students: "progressive" | "lcm"
    name: str = ""  # what it was exported from ("default:progressive-4", a folder name)
    source_sha256: str | None = None  # the pipeline folder's weights
    teacher: str | None = None  # students: their teacher
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"unknown model role {self.role!r} (known: {', '.join(ROLES)})")


@dataclass(frozen=True)
class SamplingPlan(_Record):
    """The default sampling plan: what an app does when the user sets nothing. A table ``sampler``/``steps``
    is always in the manifest's ``samplers``."""

    sampler: str
    steps: int
    guidance: float
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a finite number >= 0, got {self.guidance}")


IMAGE_MODES = ("img2img", "inpaint")
MASK_INPUT = "encoder_attention_mask"  # a masked caption's denoiser input, after encoder_hidden_states
INPAINTING_INPUTS = ("mask", "masked_image_latents")  # an inpainting UNet's inputs after encoder_hidden_states


@dataclass(frozen=True)
class ImageModes(_Record):
    """Image-to-image and inpainting (``export --image-modes``): the bundle holds a ``vae_encoder`` and every sampler
    table its ``add_noise`` rows (and ``starts``). The rules an app follows, as diffusers' StableDiffusionImg2Img- and
    (4-channel UNet) StableDiffusionInpaintPipeline run them (mobilediff.sampler_table.run_image_table):

    - image: RGB at the bundle's height x width, ``x / 127.5 - 1``; encoder -> (mean, std); draws from the seed's
      generator in this order: eps (latent-shaped, only for a ``gaussian`` posterior), the noise, for inpainting with
      a ``gaussian`` posterior one more latent-shaped draw (diffusers encodes the masked image with the generator; its
      latent is unused), then the sampler's fresh noise; clean latent ``z0 = (mean + std * eps - shift_factor) * scaling_factor``;
    - ``k = min(floor(steps * strength), steps)`` steps run, from step ``j = steps - k``: the table ``starts[j]`` if
      listed, else the table's rows from j; first latent ``add_noise[j][0] * z0 + add_noise[j][1] * noise``
      (inpainting at strength 1: ``noise * init_noise_sigma``);
    - mask: grayscale, repaint where ``value >= 128``; the latent mask is its pixel ``(y * f, x * f)`` (f the VAE
      factor); after run step i, ``latent = (1 - m) * known + m * latent`` with ``known = add_noise[j+i+1]`` applied
      to (z0, noise), or z0 after the last step."""

    modes: list  # of IMAGE_MODES
    encoder_posterior: str  # "gaussian" | "deterministic"
    # "standard": the UNet denoises the latent alone (the rules above); "inpainting": an inpainting UNet (9 channels)
    # that also takes ``mask`` and ``masked_image_latents``: inpainting only, no blend (docs/bundle.md)
    denoiser: str = "standard"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        bad = [m for m in self.modes if m not in IMAGE_MODES]
        if not self.modes:
            raise ValueError(f"modes is empty (known: {', '.join(IMAGE_MODES)})")
        if bad:
            raise ValueError(f"unknown image mode {bad[0]!r} in modes (known: {', '.join(IMAGE_MODES)})")
        if self.encoder_posterior not in ("gaussian", "deterministic"):
            raise ValueError(f"encoder_posterior must be gaussian or deterministic, got {self.encoder_posterior!r}")
        if self.denoiser not in ("standard", "inpainting"):
            raise ValueError(f"denoiser must be standard or inpainting, got {self.denoiser!r}")
        if self.denoiser == "inpainting" and list(self.modes) != ["inpaint"]:
            raise ValueError(f"modes lists {', '.join(self.modes)}, but an inpainting denoiser runs the inpaint mode "
                             "alone")

    @property
    def inpainting_denoiser(self) -> bool:
        return self.denoiser == "inpainting"


@dataclass(frozen=True)
class Source(_Record):
    model: str = ""
    pipeline_class: str = ""
    weights_sha256: str | None = None
    decoder: dict | None = None  # export --decoder: the tiny decoder that replaced the VAE (path, class, sha256)
    adapters: list | None = None  # export --lora: the adapters fused in (file, sha256, scale, components, rank)
    extra: dict = field(default_factory=dict, compare=False)
    _OMIT_NONE = ("decoder", "adapters")


@dataclass(frozen=True)
class Manifest(_Record):
    format: str
    format_version: int
    created: str
    source: Source
    versions: dict
    geometry: Geometry
    prediction_type: str
    tokenizer: Tokenizer
    components: dict  # name -> ComponentEntry ("text_encoder", "unet", "vae_decoder")
    samplers: tuple  # SamplerEntry
    guidance: Guidance
    model: ModelRole | None = None  # absent in the first bundles of format 1: read as a teacher
    default_sampling: SamplingPlan | None = None  # absent in the first bundles: see :meth:`plan`
    quantization: dict | None = None  # recipe, per-target settings, calibration summary
    fused: dict | None = None  # --fused-steps: one program text -> N steps -> image (components' layout + table)
    image: ImageModes | None = None  # --image-modes: image-to-image and inpainting
    adapters: dict | None = None  # --runtime-lora: rank slots per component and the adapter files (runtime_lora)
    extra: dict = field(default_factory=dict, compare=False)
    _NESTED = {"source": Source, "geometry": Geometry, "tokenizer": Tokenizer, "components": (dict, ComponentEntry),
               "samplers": (list, SamplerEntry), "guidance": Guidance, "model": ModelRole,
               "default_sampling": SamplingPlan, "image": ImageModes}
    _OMIT_NONE = ("image", "adapters")

    def __post_init__(self):
        missing = [c for c in COMPONENTS if c not in self.components]
        if missing:
            raise ValueError(f"components has no {missing[0]!r} (a bundle holds {', '.join(COMPONENTS)})")
        if not self.samplers:
            raise ValueError("samplers is empty (a bundle without sampler tables cannot sample)")
        if self.tokenizer.unigram_kind and self.format_version < TRANSFORMER_FORMAT_VERSION:
            raise ValueError(f"a unigram tokenizer needs format version {TRANSFORMER_FORMAT_VERSION}")
        text = [t.name for t in self.components["text_encoder"].inputs]
        if "attention_mask" in text or self.tokenizer.unigram_kind:  # a masked caption: both graphs take the mask
            unet = [t.name for t in self.components["unet"].inputs]
            if text[:2] != ["input_ids", "attention_mask"]:
                raise ValueError(f"components.text_encoder.inputs are {', '.join(text)}: a masked text encoder takes "
                                 f"input_ids and attention_mask, in that order")
            if unet[3:4] != [MASK_INPUT]:
                raise ValueError(f"components.unet.inputs are {', '.join(unet)}: with a masked text encoder the "
                                 f"denoiser takes {MASK_INPUT} as input 4")
        if self.image is not None:
            if IMAGE_ENCODER not in self.components:
                raise ValueError(f"components has no {IMAGE_ENCODER!r}: image modes {', '.join(self.image.modes)} "
                                 f"need a {IMAGE_ENCODER!r} component")
            if self.image.inpainting_denoiser:
                # mask and masked_image_latents after encoder_hidden_states (and a guidance embedding's input)
                names = [t.name for t in self.components["unet"].inputs]
                at = 3 + (self.guidance.type == "embedding")
                if names[at:at + 2] != list(INPAINTING_INPUTS):
                    raise ValueError(f"components.unet.inputs are {', '.join(names)}: an inpainting denoiser takes "
                                     f"{' and '.join(INPAINTING_INPUTS)} as inputs {at + 1} and {at + 2}")
            lacking = [f"{t.name}:{t.steps}" for t in self.samplers if not t.add_noise or len(t.add_noise) != t.steps]
            if lacking:
                raise ValueError(f"image modes need every sampler table's add_noise rows (samplers {lacking[0]})")

        if self.adapters is not None:
            _check_adapters(self)

    def supports(self, mode: str) -> bool:
        """Whether the bundle runs ``mode`` ("txt2img" unless its denoiser is an inpainting UNet; "img2img",
        "inpaint" when exported with them)."""
        if mode == "txt2img":
            return self.image is None or not self.image.inpainting_denoiser
        return self.image is not None and mode in self.image.modes

    @property
    def role(self) -> ModelRole:
        """The model's role (bundles written before the field existed: an LCM student for a guidance-embedding
        denoiser, else a teacher)."""
        if self.model is not None:
            return self.model
        lcm = self.guidance.type == "embedding"
        return ModelRole(role="student" if lcm else "teacher", method="lcm" if lcm else None, name=self.source.model,
                         source_sha256=self.source.weights_sha256)

    @property
    def plan(self) -> SamplingPlan:
        """The default sampling plan (bundles written before the field existed: LCM 4 steps for guidance-embedding
        models, else DDIM 50, at the manifest's default guidance)."""
        if self.default_sampling is not None:
            return self.default_sampling
        lcm = self.guidance.type == "embedding"
        return SamplingPlan(sampler="lcm" if lcm else "ddim", steps=4 if lcm else 50, guidance=self.guidance.default_scale)

    def component(self, name: str) -> ComponentEntry:
        comp = self.components.get(name)
        if comp is None:
            raise MobilediffError(f"bundle has no component {name!r} (it has: {', '.join(self.components) or 'none'})")
        return comp

    def sampler_table(self, sampler: str, steps: int) -> SamplerEntry:
        for table in self.samplers:
            if table.name == sampler and table.steps == steps:
                return table
        have = ", ".join(f"{t.name}:{t.steps}" for t in self.samplers)
        raise MobilediffError(f"bundle has no {sampler} table for {steps} steps (it has: {have})")

    def targets(self) -> set[str]:
        """Targets every component has a file for."""
        per = [{f.target for f in c.files} for c in self.components.values()]
        return set.intersection(*per) if per else set()


def _check_adapters(manifest: "Manifest") -> None:
    """The ``adapters`` record (mobilediff.runtime_lora): every slotted component declares ``lora_weights`` as its
    last input, of the slots' size, and the slots' offsets tile it; every adapter file fits the slots."""
    a = manifest.adapters
    if a.get("input", ADAPTER_INPUT) != ADAPTER_INPUT:
        raise ValueError(f"adapters.input must be {ADAPTER_INPUT}, got {json.dumps(a['input'])[:40]}")
    slots, files = a.get("slots"), a.get("files")
    if not isinstance(slots, dict) or not slots:
        raise ValueError("adapters.slots must name at least one component (component -> rank slots)")
    if not isinstance(files, list):
        raise ValueError("adapters.files must be a list of the adapter files")
    for name, s in slots.items():
        comp = manifest.components.get(name)
        if comp is None:
            raise ValueError(f"adapters.slots names component {name!r}, which the bundle does not have "
                             f"(it has: {', '.join(manifest.components)})")
        try:
            rank, layers = int(s["rank"]), s["layers"]
            offset = 0
            for l in layers:
                if l["down_offset"] != offset or l["up_offset"] != offset + rank * l["in_features"]:
                    raise ValueError(f"adapters.slots.{name}: the offsets of {l['module']} do not follow the layout")
                offset += rank * (l["in_features"] + l["out_features"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"adapters.slots.{name}: malformed ({e})") from None
        if "size" in s and s["size"] != offset:  # absent: the layers' sum
            raise ValueError(f"adapters.slots.{name}.size is {json.dumps(s['size'])[:40]} but the layers hold "
                             f"{offset} values")
        last = comp.inputs[-1] if comp.inputs else None
        if last is None or last.name != ADAPTER_INPUT or list(last.static_shape) != [offset]:
            raise ValueError(f"adapters.slots.{name}: the component's last input must be lora_weights of {offset} "
                             f"values")
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not all(k in f for k in ("name", "path", "sha256", "rank")):
            raise ValueError(f"adapters.files[{i}] needs name, path, sha256 and rank")
        if f["name"] in [g["name"] for g in files[:i]]:  # a mix names its adapters
            raise ValueError(f"adapters.files[{i}].name {f['name']!r} is given twice (adapter names are unique)")
        if any(int(f["rank"]) > int(s["rank"]) for s in slots.values()):
            raise ValueError(f"adapters.files[{i}] ({f['name']}) has rank {f['rank']}, more than the slots hold")


# ---------------------------------------------------------------------------------------------------------------
# the one reader and the one writer


def read_manifest(bundle: Path) -> Manifest:
    """Load and check a bundle's manifest (format, version, field types). Raises MobilediffError with one line."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise MobilediffError(f"bundle directory not found: {bundle}")
    path = bundle / MANIFEST
    if not path.is_file():
        raise MobilediffError(f"{bundle} has no {MANIFEST} (not a bundle, or an interrupted export)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MobilediffError(f"corrupt {path}: {e}") from None
    except OSError as e:
        raise MobilediffError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise MobilediffError(f"{path} is not a mobilediff bundle manifest (format {got!r})")
    version = raw.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise MobilediffError(f"{path} has format version {version!r}; this mobilediff reads versions 1..{FORMAT_VERSION} "
                              f"(upgrade mobilediff to read newer bundles)")
    try:
        manifest = Manifest.from_dict(raw)
    except MobilediffError as e:
        raise MobilediffError(f"{path}: {e}") from None
    _check_finite(manifest, path)
    return manifest


def _check_finite(manifest: Manifest, path: Path) -> None:
    """Refuse a manifest whose sampling numbers (sampler tables, guidance, latent scaling) are not finite: an app would
    sample NaN images from it. Recorded measurements (parity PSNR of identical outputs is inf) are not checked."""
    def numbers(x):
        if isinstance(x, (list, tuple)):
            for v in x:
                yield from numbers(v)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            yield x
        else:
            raise TypeError(type(x).__name__)

    g = manifest.geometry
    fields = [("geometry.scaling_factor", g.scaling_factor), ("geometry.shift_factor", g.shift_factor),
              ("guidance.default_scale", manifest.guidance.default_scale),
              ("default_sampling.guidance", manifest.plan.guidance)]
    for t in manifest.samplers:
        fields += [(f"samplers[{t.name}:{t.steps}].{n}", getattr(t, n))
                   for n in ("init_noise_sigma", "timesteps", "input_scale", "latent_coef", "output_coef", "noise_coef")]
    fields += [(f"components.{n}.gflop", c.gflop) for n, c in manifest.components.items() if c.gflop is not None]
    for name, value in fields:
        try:
            bad = any(not math.isfinite(v) or (name.endswith(".gflop") and v < 0) for v in numbers(value))
        except TypeError:
            bad = True
        if bad:
            raise MobilediffError(f"{path}: {name} holds a number that is not finite (or not a number"
                                  f"{', or is negative' if name.endswith('.gflop') else ''})")


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest`` as ``directory/manifest.json`` atomically; returns the path."""
    from mobilediff.io import atomic_write_json

    path = Path(directory) / MANIFEST
    atomic_write_json(path, manifest.to_dict())
    return path


def verify_file(bundle: Path, entry: FileEntry) -> Path:
    """The path of a manifest file entry, after checking that it and each of its external data files exist and
    match their sha256."""
    for part in (entry, *entry.external_data):
        file = Path(bundle) / part.path
        if not file.exists():
            raise MobilediffError(f"bundle file missing: {file}")
        if sha256_path(file) != part.sha256:
            raise MobilediffError(f"bundle file {file} does not match its sha256 in the manifest (modified or corrupt)")
    return Path(bundle) / entry.path


@dataclass(frozen=True)
class GraphTensor:
    """One input or output as a loaded graph declares it (what a runtime reports, before the first call)."""

    name: str | None  # None where the format keeps no names (an ExecuTorch program's method)
    shape: tuple  # one entry per dimension: an int where fixed, None where dynamic
    dtype: str  # "float32", "int32", ...: numpy's name of the element type


def _names(tensors) -> str:
    return ", ".join(str(t.name) for t in tensors)


def _shape(entry: TensorEntry) -> str:
    return ", ".join(str(d) if d == s else f"{d}={s}" for d, s in zip(entry.shape, entry.static_shape))


def check_graph_io(component: str, path: Path, io: ComponentEntry, inputs, outputs) -> None:
    """Refuse a graph whose declared inputs or outputs disagree with its component's manifest entry, before the
    first call: a graph of another component (its sha256 valid) would otherwise fail inside the runtime.

    ``inputs``, ``outputs``: the graph's own :class:`GraphTensor` lists, in call order. Checked in this order, the first
    mismatch raised: the number and names of inputs, then of outputs (names only where the graph keeps them), then
    for each tensor its dtype, its rank and every fixed dimension against the manifest's ``static_shape`` (a dynamic
    dimension of the graph takes any size).

    Raises MobilediffError, one line naming the file (``path`` as given), the component and the first mismatch."""
    where = str(path)
    what = f"the manifest's {component}"
    for kind, verb, declared, got in (("input", "takes", io.inputs, inputs), ("output", "gives", io.outputs, outputs)):
        named = all(g.name is not None for g in got)
        if len(got) != len(declared) or (named and [g.name for g in got] != [d.name for d in declared]):
            if named:
                raise MobilediffError(f"{where} declares {kind}s ({_names(got)}) but {what} {verb} "
                                      f"({_names(declared)}): a graph of another component?")
            raise MobilediffError(f"{where} has {len(got)} {kind}{'s' * (len(got) != 1)} but {what} {verb} "
                                  f"{len(declared)} ({_names(declared)}): a graph of another component?")
        for i, (g, d) in enumerate(zip(got, declared)):
            label = f"{kind} {d.name}" if named else f"{kind} {i} ({d.name} in the manifest)"
            if g.dtype != d.dtype:
                raise MobilediffError(f"{where}: {label} is {g.dtype} but {what} declares {d.dtype}")
            if len(g.shape) != len(d.static_shape):
                raise MobilediffError(f"{where}: {label} has rank {len(g.shape)} but {what} declares rank "
                                      f"{len(d.static_shape)} ({_shape(d)})")
            if any(n is not None and n != s for n, s in zip(g.shape, d.static_shape)):
                shown = ", ".join("?" if n is None else str(n) for n in g.shape)
                raise MobilediffError(f"{where}: {label} has shape ({shown}) but {what} declares ({_shape(d)})")


def component_file(manifest: Manifest, bundle: Path, component: str, target: str,
                   precision: str | None = None) -> tuple[Path, FileEntry]:
    """Verified path and entry of ``component`` for ``target`` (and precision or quantization tag, if given)."""
    comp = manifest.component(component)
    entry = comp.file(target, precision)
    if entry is None:
        have = sorted({f"{f.target}/{f.tag}" for f in comp.files})
        raise MobilediffError(f"bundle has no {target}{'/' + precision if precision else ''} file for {component} "
                              f"(it has: {', '.join(have) or 'none'})")
    return verify_file(bundle, entry), entry
