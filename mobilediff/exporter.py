"""`mobilediff export`: a pipeline -> a validated bundle for Core ML, ONNX and/or ExecuTorch.

An ONNX bundle is also a diffusers-style folder that optimum's ONNX Runtime pipelines load as is: each component's
float graph at ``<component>/model.onnx`` with the source model's ``config.json`` beside it, ``model_index.json``,
``scheduler/`` and ``tokenizer/`` (quantized graphs and other targets keep flat ``<component>_<target>_<tag>`` names).

Everything is written into a temporary folder beside ``--out`` that replaces it only when every component
has been exported *and* checked against PyTorch; ``manifest.json`` is the last file written. An
interrupted or failed export leaves no bundle and no manifest behind.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from mobilediff import export_cache
from mobilediff.attention import DEFAULT_BUDGET_MIB, chunked_attention
from mobilediff.bundle import (FORMAT, TRANSFORMER_FORMAT_VERSION, IMAGE_MODES, ComponentEntry, Geometry, Guidance, ImageModes,
                               Manifest, SamplerEntry, SamplingPlan, Source, Tokenizer, file_name, guidance_embedding, sha256_path, size_bytes,
                               write_manifest)
from mobilediff import transformer_family
from mobilediff.components import (ComponentSpec, check_supported, declare, encoder_posterior, guidance_embedding_dim,
                                   latent_geometry)
from mobilediff.decoder import decoder_source
from mobilediff.errors import MobilediffError
from mobilediff.flops import count_gflop
from mobilediff.io import atomic_dir
from mobilediff.targets import FUSED_TARGETS, PRECISIONS, TARGETS, get_target

# optimum's layout of a diffusion pipeline: the bundle component -> the pipeline module whose config it carries
PIPELINE_FOLDERS = {"text_encoder": "text_encoder", "unet": "unet", "vae_decoder": "vae"}
PIPELINE_GRAPH = "model.onnx"
ORT_OPERATORS_CONFIG = "ort_required_operators.config"  # the bundle's ORT graphs' operators, for a reduced build
# step counts tabulated per sampler; students with a guidance embedding (LCM) get the LCM sampler
TABLE_STEPS = (1, 2, 4, 8, 16, 25, 50)


def parse_targets(target: str) -> list[str]:
    """"all", one target name, or several separated by commas ("onnx,executorch")."""
    if target == "all":
        return list(TARGETS)
    names = [t.strip() for t in target.split(",")]
    for name in names:
        get_target(name)  # raises on an unknown name
    return list(dict.fromkeys(names))


def guidance_record(pipe, default_scale: float) -> dict:
    dim = guidance_embedding_dim(pipe)
    if dim:
        return {"type": "embedding", "input": "timestep_cond", "embedding_dim": dim, "default_scale": default_scale,
                "formula": "w = (scale - 1) * 1000; f_k = exp(-k * ln(10000) / (dim/2 - 1)), k < dim/2; "
                           "embedding = [sin(w f_0..), cos(w f_0..)] (zero-padded to dim)",
                "default_embedding": guidance_embedding(default_scale, dim)}
    return {"type": "classifier_free", "default_scale": default_scale, "unconditional_prompt": "",
            "formula": "out = out_uncond + scale * (out_cond - out_uncond); UNet batch rows [uncond, cond]"}


def sampler_tables(pipe, plan: SamplingPlan | None = None, image_modes: bool = False) -> list[dict]:
    """Every sampler the model can use at every tabulated step count, and the plan's own if not among them; with
    ``image_modes`` each with its image-to-image rows (:func:`mobilediff.sampler_table.image_tables`)."""
    from mobilediff.sampler_table import image_tables, sampler_table
    from mobilediff.samplers import make_scheduler, samplers_for

    from mobilediff.samplers import is_flow

    names = samplers_for(bool(guidance_embedding_dim(pipe)), flow=is_flow(pipe.scheduler.config))
    out = []
    for name in names:
        steps_list = sorted(set(TABLE_STEPS) | ({plan.steps} if plan is not None and plan.sampler == name else set()))
        for steps in steps_list:
            scheduler = make_scheduler(name, pipe.scheduler.config)
            table = sampler_table(scheduler, steps)
            extra = image_tables(scheduler, steps, table) if image_modes else {}
            out.append({"name": name, **table.to_dict(), **extra})
    return out


BPE_FILES = ("vocab.json", "merges.txt")  # what the apps' CLIP tokenizers read


def _bpe_files_from_tokenizer_json(folder: Path) -> None:
    """Write vocab.json and merges.txt from a tokenizer.json (a tokenizer saved by the tokenizers library alone
    has only that file): the same BPE vocabulary and merges, in the files the apps read."""
    import json

    f = folder / "tokenizer.json"
    if all((folder / name).is_file() for name in BPE_FILES) or not f.is_file():
        return
    model = json.loads(f.read_text(encoding="utf-8")).get("model") or {}
    if model.get("type") != "BPE":
        raise MobilediffError(f"tokenizer {f} is not a BPE tokenizer: mobilediff bundles carry CLIP BPE files")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _unigram_tokenizer_record(pipe, bundle: Path) -> dict:
    """A T5 tokenizer (SentencePiece unigram) as the bundle carries it: its ``tokenizer.json`` (written by the
    tokenizers library from the pipeline's tokenizer), read with the manifest's rules (mobilediff.transformer_family)
    and checked to give the pipeline's own ids and mask."""
    from mobilediff.engine import UnigramTokenizer
    from mobilediff.goldens import TOKENIZER_PROMPTS

    tok = pipe.tokenizer
    if not getattr(tok, "is_fast", False):
        raise MobilediffError(f"the pipeline's tokenizer ({type(tok).__name__}) has no tokenizers-library form "
                              f"(tokenizer.json) for the bundle to carry")
    dst = bundle / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(dst / "tokenizer.json"))
    files = ["tokenizer/tokenizer.json"]
    length = transformer_family.text_length(pipe)
    record = {"class": type(tok).__name__, "kind": transformer_family.TOKENIZER_KIND, "files": files,
              "file_sha256": {f: sha256_path(bundle / f) for f in files}, "max_length": length,
              "bos_id": None, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id, "lowercase": True,
              "note": "SentencePiece unigram (tokenizer.json); the prompt lower-cased and stripped, its ids without "
                      "specials, then eos_id, padded with pad_id to max_length; attention_mask 1 over ids and EOS"}
    ours = UnigramTokenizer(bundle, Tokenizer.from_dict(record, "tokenizer", strict=True))
    for prompt in TOKENIZER_PROMPTS:
        want = transformer_family.tokenizer_ids(tok, prompt, length)
        got = ours.ids_and_mask(prompt)
        if (got[0][0].tolist(), got[1][0].tolist()) != want:
            raise MobilediffError(f"the bundle's tokenizer.json tokenizes {prompt!r} differently from the pipeline's "
                                  f"tokenizer")
    return record


def _tokenizer_record(pipe, bundle: Path) -> dict:
    transformer = transformer_family.is_transformer_pipeline(pipe)
    if transformer and not transformer_family.is_clip(pipe):
        return _unigram_tokenizer_record(pipe, bundle)
    src = Path(pipe.tokenizer.name_or_path)
    dst = bundle / "tokenizer"
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        pipe.tokenizer.save_pretrained(str(dst))
    _bpe_files_from_tokenizer_json(dst)
    missing = [name for name in BPE_FILES if not (dst / name).is_file()]
    if missing:
        raise MobilediffError(f"the tokenizer has no {' or '.join(missing)} (CLIP BPE files the bundle must carry)")
    files = sorted(str(p.relative_to(bundle)) for p in dst.rglob("*") if p.is_file())
    tok = pipe.tokenizer
    record = {"class": type(tok).__name__, "files": files,
              "file_sha256": {f: sha256_path(bundle / f) for f in files}, "max_length": tok.model_max_length,
              "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id,
              "lowercase": True, "note": "CLIP BPE (vocab.json + merges.txt); pad to max_length with pad_id"}
    if transformer:  # format 2: the kind named; the caption's mask is 1 over BOS, the ids and EOS
        record.update(kind="clip-bpe", max_length=transformer_family.text_length(pipe),
                      note=record["note"] + "; attention_mask 1 over BOS, ids and EOS, 0 over the padding")
    _check_bundle_tokenizer(tok, bundle, record, masked=transformer)
    return record


def _check_bundle_tokenizer(tok, bundle: Path, record: dict, masked: bool = False) -> None:
    """The bundle's tokenizer as every reader builds it (vocab.json + merges.txt, the manifest's ids: see
    engine.BundleTokenizer) must give the pipeline's own token ids: a tokenizer.json that disagrees with the two
    files would have the apps feed the text encoder other ids than the model was made with."""
    from mobilediff.bundle import Tokenizer
    from mobilediff.goldens import TOKENIZER_PROMPTS
    from mobilediff.engine import BundleTokenizer

    ours = BundleTokenizer(bundle, Tokenizer(**{k: record[k] for k in ("max_length", "bos_id", "eos_id", "pad_id")},
                                             files=tuple(record["files"])))
    for prompt in TOKENIZER_PROMPTS:
        enc = tok([prompt], padding="max_length", max_length=record["max_length"], truncation=True)
        want = enc.input_ids[0]
        if masked and ours.ids_and_mask(prompt)[1][0].tolist() != [int(m) for m in enc.attention_mask[0]]:
            raise MobilediffError(f"the bundle's caption mask of {prompt!r} differs from the pipeline tokenizer's "
                                  f"attention_mask")
        if ours.ids(prompt)[0].tolist() != [int(i) for i in want]:
            raise MobilediffError(f"the tokenizer's vocab.json and merges.txt tokenize {prompt!r} differently from the "
                                  f"pipeline's tokenizer (its tokenizer.json?): the bundle's readers use the two files; "
                                  f"make them agree")


def component_path(component: str, target: str, tag: str, ext: str, quantized: bool) -> str:
    """Where a component's graph lives in the bundle: the float ONNX graph at ``<component>/model.onnx`` (the
    folder layout optimum's ONNX Runtime pipelines load), every other file at ``<component>_<target>_<tag>.<ext>``."""
    if target == "onnx" and not quantized and component in PIPELINE_FOLDERS:
        return f"{component}/{PIPELINE_GRAPH}"
    return file_name(component, target, tag, ext)


def _pipeline_files(pipe, plan: SamplingPlan, bundle: Path, components: dict[str, ComponentEntry]) -> None:
    """The files besides the graphs that make an ONNX bundle a folder optimum's ONNX Runtime diffusion pipelines
    load: each ``<component>/model.onnx`` gets its source module's ``config.json``; when every component has one,
    ``model_index.json`` (the source pipeline's, scheduler entry set to the default plan's sampler) and
    ``scheduler/scheduler_config.json`` (the default plan's sampler) are written too."""
    import json

    from mobilediff.samplers import make_scheduler

    graphs = {name for name, comp in components.items()
              if any(f.path == f"{name}/{PIPELINE_GRAPH}" for f in comp.files)}
    if transformer_family.is_transformer_pipeline(pipe):
        return  # optimum's layout of these pipelines is another (its transformer folder, its own inputs)
    for name in graphs:
        module = getattr(pipe, PIPELINE_FOLDERS[name])
        if hasattr(module, "save_config"):  # diffusers (UNet, VAE)
            module.save_config(str(bundle / name))
        else:  # transformers (the text encoder)
            module.config.save_pretrained(str(bundle / name))
    if graphs != set(PIPELINE_FOLDERS):
        return
    scheduler = make_scheduler(plan.sampler, pipe.scheduler.config)
    scheduler.save_pretrained(str(bundle / "scheduler"))
    index = json.loads(pipe.to_json_string())
    index.pop("_name_or_path", None)
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    (bundle / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def export_component(spec: ComponentSpec, target: str, precision: str, bundle: Path, seed: int = 0,
                     recipe=None, calibration=None, attention_budget_mib: float | None = DEFAULT_BUDGET_MIB) -> dict:
    """Export one component to ``bundle`` and check it; returns its manifest file entry. With a quantization
    ``recipe`` that covers this component, the graph is quantized and checked against the float component at
    the quantized floor (mobilediff.parity). Attention whose fp32 scores exceed ``attention_budget_mib`` is
    exported in query chunks (:mod:`mobilediff.attention`; None or 0: never), recorded in the entry's
    ``export.attention``."""
    mod = get_target(target)
    quantized = recipe is not None and spec.name in recipe.components
    quantization = recipe.name if quantized else None
    rel = component_path(spec.name, target, quantization or precision, mod.EXT, quantized)
    path = bundle / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    # a graph made and checked before from the same weights, code and settings (MOBILEDIFF_EXPORT_CACHE)
    key = export_cache.component_key(spec, target, precision, rel, recipe if quantized else None, calibration,
                                     attention_budget_mib, seed) if export_cache.cache_root() is not None else None
    cached = export_cache.restore(key, bundle) if key is not None else None
    if cached is not None:
        facts, parity, seconds = cached["facts"], cached["parity"], cached["seconds"]
    else:
        t0 = time.time()
        with chunked_attention(attention_budget_mib, spec.dims.get("batch", 1)) as chunks:
            facts = mod.quantize(spec, path, recipe, precision, calibration) if quantized \
                else mod.export(spec, path, precision)
        seconds = time.time() - t0
        if chunks is not None and chunks.calls:
            facts = {**facts, "attention": chunks.to_dict()}
        inputs, reference = _parity_inputs(spec, mod, recipe if quantized else None, calibration, seed)
        parity = mod.validate(spec, path, precision, inputs, reference, quantization)
        if key is not None:
            export_cache.store(key, bundle, [rel] + [(path.parent / name).relative_to(bundle).as_posix()
                                                     for name in facts.get("external_data", [])],
                               facts, parity, seconds)
    # files the graph reads from beside it (ONNX weights over 1.5 GiB): recorded and checked like the graph itself
    external = [{"path": (path.parent / name).relative_to(bundle).as_posix(), "sha256": sha256_path(path.parent / name),
                 "size_bytes": size_bytes(path.parent / name)} for name in facts.get("external_data", [])]
    return {"target": target, "precision": precision, "quantization": quantization,
            "path": path.relative_to(bundle).as_posix(),
            "sha256": sha256_path(path), "size_bytes": size_bytes(path), "external_data": external,
            "export_seconds": round(seconds, 2), "export": facts, "parity": parity}


def _parity_inputs(spec: ComponentSpec, mod, recipe, calibration, seed: int) -> tuple[tuple, tuple]:
    """The inputs an exported graph is checked on, and PyTorch's outputs for them: seeded random tensors, or for a
    calibrated quantization ``recipe`` a recorded real input (random tensors miss the calibrated ranges)."""
    inputs = spec.example_inputs(seed)
    if recipe is not None and recipe.calibrated:
        from mobilediff.quantize import static_rows

        rows = calibration.batches(spec.name)
        inputs = static_rows(spec, rows)[0] if mod.STATIC_SHAPES else rows[0]
    with torch.no_grad():
        reference = tuple(spec.module(*inputs))
    return inputs, reference


def export_ort_form(spec: ComponentSpec, onnx_entry: dict, bundle: Path, seed: int = 0, recipe=None,
                    calibration=None) -> dict | str:
    """The ORT-format form of an exported ONNX graph (ONNX Runtime's mobile format), written beside it and checked
    against PyTorch at the ONNX graph's floor; returns its manifest file entry (target ``ort``), or the one-line
    reason it has none (a graph over the format's 2 GiB limit)."""
    from mobilediff.targets import onnx as onnx_target

    onnx_path = bundle / onnx_entry["path"]
    refusal = onnx_target.ort_format_refusal(onnx_path, onnx_entry["precision"])
    if refusal:
        return refusal
    t0 = time.time()
    facts = onnx_target.to_ort(onnx_path)
    seconds = time.time() - t0
    quantization = onnx_entry["quantization"]
    inputs, reference = _parity_inputs(spec, onnx_target, recipe if quantization else None, calibration, seed)
    path = onnx_target.ort_path(onnx_path)
    parity = onnx_target.validate_ort(spec, path, onnx_entry["precision"], inputs, reference, quantization)
    return {"target": "ort", "precision": onnx_entry["precision"], "quantization": quantization,
            "path": path.relative_to(bundle).as_posix(), "sha256": sha256_path(path), "size_bytes": size_bytes(path),
            "external_data": [], "export_seconds": round(seconds, 2), "export": facts, "parity": parity}


def ort_required_operators(components: dict[str, "ComponentEntry"]) -> str | None:
    """The bundle's required-operators config for ONNX Runtime's reduced build: the operators of all its ORT-format
    graphs (None when it has none)."""
    from mobilediff.targets import onnx as onnx_target

    ops = [f.export["required_operators"] for c in components.values() for f in c.files if f.target == "ort"]
    if not ops:
        return None
    return onnx_target.required_operators_config(
        ops, "The operators of this bundle's ORT-format graphs: the --include_ops_by_config input of an ONNX "
             "Runtime reduced build (tools/ci_build/build.py)")


@dataclass(frozen=True)
class ExportConfig:
    """What an export is asked for, checked once when constructed (before any model is loaded): unknown targets,
    precisions, recipes and samplers, impossible step counts and non-finite scales are refused in one line.

    ``model_dir``: the pipeline folder the model was loaded from (its card: role and plan); ``guidance`` overrides
    the plan's guidance scale. ``calibration_prompts``: how many shapes-domain prompts, or the user's own (a static
    int8 recipe only); ``calibration_sampling``: the sampler, steps and guidance of the calibration trajectories
    (default: a student's own plan, else DDIM 8 steps at the plan's guidance; the quantization benchmark names
    its own plan for a model without a distillation record). ``decoder``: the tiny decoder folder
    whose AutoencoderTiny replaced the pipeline's VAE (:func:`mobilediff.decoder.with_decoder`), recorded in the
    manifest's ``source.decoder``."""

    targets: tuple[str, ...]
    out: Path
    height: int | None = None
    width: int | None = None
    precision: str = "fp32"
    fused_steps: int | None = None
    fused_sampler: str | None = None
    guidance: float | None = None
    force: bool = False
    source: str = ""
    quantize: Any = None  # a recipe name, or a Recipe (a variant of a named one, for one target)
    calibration_prompts: int | tuple[str, ...] = 32
    calibration_rows: int = 64
    calibration_sampling: dict | None = None
    model_dir: Path | None = None
    decoder: Path | None = None
    ort_format: bool = True  # --target onnx also writes each graph in ORT format (ONNX Runtime's mobile format)
    attention_budget_mib: float = DEFAULT_BUDGET_MIB  # attention in query chunks above it (mobilediff.attention)
    decoder_tile: int | None = None  # VAE decoder run per tile of this many latent pixels (mobilediff.tiling)
    decoder_overlap: int = 8  # latent pixels shared by neighbouring tiles
    image_modes: bool = False  # also the VAE encoder and the tables' image-to-image / inpainting rows
    adapters: tuple = ()  # LoRA adapters fused into the pipeline before export (mobilediff.lora records)
    runtime_adapters: tuple = ()  # mobilediff.lora.Adapter: held as run-time adapters (mobilediff.runtime_lora)
    lora_rank: int | None = None  # rank slots of the run-time adapters (default: the sum of their ranks)

    @classmethod
    def of(cls, target: str, out: Path, **options) -> "ExportConfig":
        """``target``: "all", one target name, or several separated by commas."""
        prompts = options.get("calibration_prompts", 32)
        if isinstance(prompts, list):
            options["calibration_prompts"] = tuple(prompts)
        return cls(targets=tuple(parse_targets(target)), out=Path(out), **options)

    def __post_init__(self):
        import math

        from mobilediff.samplers import SAMPLERS

        if not self.targets:
            raise MobilediffError("no export target given")
        for t in self.targets:
            get_target(t)
        if self.precision not in PRECISIONS:
            raise MobilediffError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        for name, v in (("--height", self.height), ("--width", self.width)):
            if v is not None and v < 1:
                raise MobilediffError(f"{name} must be >= 1, got {v}")
        if self.fused_steps is not None and not 1 <= self.fused_steps <= 16:
            raise MobilediffError(f"--fused-steps must be between 1 and 16, got {self.fused_steps}")
        if self.fused_sampler is not None and self.fused_sampler not in SAMPLERS:
            raise MobilediffError(f"unknown sampler {self.fused_sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise MobilediffError(f"--guidance must be a finite number >= 0, got {self.guidance}")
        if not (math.isfinite(self.attention_budget_mib) and self.attention_budget_mib >= 0):
            raise MobilediffError(f"--attention-budget must be a finite number of MiB >= 0 (0: whole attention), "
                                  f"got {self.attention_budget_mib}")
        if self.decoder_tile is not None:
            from mobilediff.tiling import check_tiling

            check_tiling(self.decoder_tile, self.decoder_overlap)
        if self.lora_rank is not None and not self.runtime_adapters:
            raise MobilediffError("--lora-rank sizes the run-time adapters' slots: give them with --runtime-lora")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise MobilediffError(f"--lora-rank must be >= 1, got {self.lora_rank}")
        if self.runtime_adapters and self.fused_steps is not None:
            raise MobilediffError("--runtime-lora and --fused-steps do not combine: the fused program has no "
                                  "adapter input (merge the adapter with --lora instead)")
        if self.calibration_rows < 1:
            raise MobilediffError(f"calibration rows must be >= 1, got {self.calibration_rows}")
        recipes = self.recipes  # an unknown recipe, or one for another target, is refused here
        if isinstance(self.calibration_prompts, tuple) and not any(r.calibrated for r in recipes.values()):
            raise MobilediffError("--calibration-prompts calibrates a static int8 recipe: pass --quantize with one "
                                  "(onnx int8-static, executorch int8 / int8-decoder)")

    @property
    def recipes(self) -> dict:
        """target -> Recipe of every target the export quantizes."""
        if self.quantize is None:
            return {}
        from mobilediff.quantize import Recipe, get_recipe

        if isinstance(self.quantize, Recipe):  # a variant of a named recipe (benchmarks/quantization.py's ablations)
            if list(self.targets) != [self.quantize.target]:
                raise MobilediffError(f"recipe {self.quantize.name!r} is for {self.quantize.target}, "
                                      f"not {','.join(self.targets)}")
            return {self.quantize.target: self.quantize}
        return {t: get_recipe(t, self.quantize) for t in self.targets}  # an unknown recipe lists the valid ones

    @property
    def recipe_name(self) -> str | None:
        return self.quantize if isinstance(self.quantize, str) or self.quantize is None else self.quantize.name


def export_bundle(model, target: str, out: Path, height: int | None = None, width: int | None = None,
                  precision: str = "fp32", fused_steps: int | None = None, fused_sampler: str | None = None,
                  guidance: float | None = None, force: bool = False, progress: Callable[[str], None] | None = None,
                  source: str = "", quantize=None, calibration_prompts: int | list[str] = 32,
                  calibration_rows: int = 64, model_dir: Path | None = None, decoder: Path | None = None,
                  ort_format: bool = True, image_modes: bool = False, runtime_adapters: tuple = (),
                  lora_rank: int | None = None) -> Path:
    """Export ``model`` (a loaded pipeline) and return the bundle path: :func:`run_export` with the
    :class:`ExportConfig` of these options."""
    cfg = ExportConfig.of(target, out, height=height, width=width, precision=precision, fused_steps=fused_steps,
                          fused_sampler=fused_sampler, guidance=guidance, force=force, source=source,
                          quantize=quantize, calibration_prompts=calibration_prompts, calibration_rows=calibration_rows,
                          model_dir=model_dir, decoder=decoder, ort_format=ort_format, image_modes=image_modes,
                          runtime_adapters=tuple(runtime_adapters), lora_rank=lora_rank)
    return run_export(model, cfg, progress)


def run_export(pipe, cfg: ExportConfig, progress: Callable[[str], None] | None = None) -> Path:
    """Export ``pipe`` as ``cfg`` asks, in straight stages: plan (the model's card, geometry, component
    declarations, sampler tables: everything read from the model before anything runs it) -> calibrate (static
    int8 recipes: the pipeline samples, and is left as it was) -> files (every graph exported and checked against
    PyTorch) -> the typed manifest -> write. Returns the bundle path."""
    from mobilediff.machine import library_versions
    from mobilediff.card import model_card

    say = progress or (lambda msg: None)
    check_supported(pipe)
    # plan
    card = model_card(pipe, cfg.model_dir, cfg.source, cfg.guidance)
    recipes = cfg.recipes
    geometry = Geometry.from_dict(latent_geometry(pipe, cfg.height, cfg.width), "geometry", strict=True)
    # guidance <= 1: no classifier-free-guidance batch (a student with guidance distilled in samples with one row)
    from mobilediff.components import inpainting_unet

    transformer = transformer_family.is_transformer_pipeline(pipe)
    if transformer:
        unbuilt = [flag for flag, on in (("--fused-steps", cfg.fused_steps is not None),
                                         ("--image-modes", cfg.image_modes), ("--runtime-lora", cfg.runtime_adapters),
                                         ("--decoder", cfg.decoder is not None),
                                         ("a static int8 recipe", any(r.calibrated for r in recipes.values())))
                   if on]
        if unbuilt:
            raise MobilediffError(f"{unbuilt[0]} is not built for {type(pipe).__name__} bundles yet")
    inpainting = not transformer and inpainting_unet(pipe.unet)  # an inpainting UNet: inpainting only, the encoder always
    if inpainting and cfg.fused_steps is not None:
        raise MobilediffError("--fused-steps is not built for an inpainting UNet (the fused program has no image "
                              "inputs)")
    if inpainting and any(r.calibrated for r in recipes.values()):
        raise MobilediffError("a static int8 recipe calibrates on text-to-image trajectories, which an inpainting UNet "
                              "cannot sample: use a weight-only or dynamic recipe")
    image_modes = cfg.image_modes or inpainting
    specs = declare(pipe, geometry.to_dict(), cfg_batch=1 if card.plan.guidance <= 1.0 else None,
                    encoder=image_modes)
    tiling = _tile_decoder(specs, geometry.to_dict(), cfg, say) if cfg.decoder_tile else None
    tables = tuple(SamplerEntry.from_dict(t, f"samplers[{i}]", strict=True)
                   for i, t in enumerate(sampler_tables(pipe, card.plan, image_modes)))
    guidance = Guidance.from_dict(guidance_record(pipe, card.plan.guidance), "guidance", strict=True)
    runtime = RuntimeAdapters.plan(pipe, specs, cfg, say) if cfg.runtime_adapters else None
    # OUT is claimed before the work, not after it: a second writer of OUT fails now (mobilediff.io)
    with atomic_dir(cfg.out, force=cfg.force) as tmp, \
            (runtime.slotted(pipe, specs) if runtime else contextlib.nullcontext()):
        calibration = _calibrate(pipe, cfg, card, recipes, say)
        if runtime is not None and calibration is not None:
            calibration = runtime.calibration(calibration)
        components = {}
        for name, spec in specs.items():
            files = []
            for tgt in cfg.targets:
                r = recipes.get(tgt)
                say(f"{name} -> {tgt} ({r.name if r and name in r.components else cfg.precision})")
                files.append(export_component(spec, tgt, cfg.precision, tmp, recipe=r, calibration=calibration,
                                              attention_budget_mib=cfg.attention_budget_mib))
                if name == "vae_decoder" and tiling is not None:
                    files[-1]["export"]["tiling"] = tiling
                if runtime is not None:
                    runtime.check(spec, files[-1], tmp, say)
                if tgt == "onnx" and cfg.ort_format:
                    say(f"{name} -> ort (ONNX Runtime's mobile format)")
                    ort = export_ort_form(spec, files[-1], tmp, recipe=r, calibration=calibration)
                    if isinstance(ort, str):
                        say(ort)
                        files[-1]["export"]["ort_format"] = ort
                    else:
                        files.append(ort)
                        if runtime is not None:
                            runtime.check(spec, files[-1], tmp, say)
            components[name] = ComponentEntry.from_dict(
                {**spec.to_dict(), "files": files, "gflop": round(count_gflop(spec.module, spec.example_inputs()), 6)},
                f"components.{name}", strict=True)
        _pipeline_files(pipe, card.plan, tmp, components)
        config = ort_required_operators(components)
        if config:
            (tmp / ORT_OPERATORS_CONFIG).write_text(config)
        fused = None
        if cfg.fused_steps is not None:
            fused = export_fused(pipe, geometry.to_dict(), [t for t in cfg.targets if t in FUSED_TARGETS],
                                 cfg.precision, cfg.fused_steps, cfg.fused_sampler, card.plan.guidance, tmp, say,
                                 cfg.attention_budget_mib)
        manifest = Manifest(
            format=FORMAT, format_version=TRANSFORMER_FORMAT_VERSION if transformer else 1,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source=Source(model=cfg.source, pipeline_class=type(pipe).__name__, weights_sha256=card.role.source_sha256,
                          decoder=decoder_source(cfg.decoder) if cfg.decoder is not None else None,
                          adapters=list(cfg.adapters) or None),
            model=card.role, default_sampling=card.plan, versions=library_versions(), geometry=geometry,
            prediction_type=pipe.scheduler.config.prediction_type,
            tokenizer=Tokenizer.from_dict(_tokenizer_record(pipe, tmp), "tokenizer", strict=True),
            components=components, samplers=tables, guidance=guidance,
            quantization=None if not recipes else {
                "recipe": cfg.recipe_name, "per_target": {t: r.to_dict() for t, r in recipes.items()},
                "calibration": calibration.summary() if calibration is not None else None},
            fused=fused, image=ImageModes(modes=["inpaint"] if inpainting else list(IMAGE_MODES),
                                          encoder_posterior=encoder_posterior(pipe.vae),
                                          denoiser="inpainting" if inpainting else "standard")
            if image_modes else None, adapters=runtime.record(tmp) if runtime is not None else None)
        # last, through the one writer: a bundle without a manifest is not a bundle
        write_manifest(tmp, manifest)
    return cfg.out


def parity_psnr(got: torch.Tensor, ref: torch.Tensor) -> float:
    from mobilediff.parity import psnr

    return psnr(got, ref)


def _run_file(spec, entry: dict, bundle: Path, inputs) -> list:
    """The outputs of an exported file (its manifest entry) on ``inputs``, on its host runtime."""
    path = bundle / entry["path"]
    if entry["target"] in ("onnx", "ort"):
        from mobilediff.targets import onnx as onnx_target

        return onnx_target.run(onnx_target.load_session(path), spec, inputs)
    from mobilediff.targets import executorch as et

    return et.run(et.load_method(path), inputs)


class RuntimeAdapters:
    """The run-time adapters of an export (mobilediff.runtime_lora): read and slotted before the files are
    written, each checked on every exported graph against the model with it merged, written to ``adapters/``."""

    def __init__(self, weights, slots, references):
        self.weights, self.slots, self.references = weights, slots, references

    @classmethod
    def plan(cls, pipe, specs: dict, cfg: "ExportConfig", say) -> "RuntimeAdapters":
        from mobilediff import runtime_lora as rl

        weights = rl.read_adapters(pipe, list(cfg.runtime_adapters))
        slots = rl.plan_slots(pipe, weights, cfg.lora_rank)
        references = {}  # adapter -> component -> (inputs, PyTorch outputs of the merged model)
        geometry = latent_geometry(pipe, cfg.height, cfg.width)
        for adapter, w in zip(cfg.runtime_adapters, weights):
            say(f"run-time adapter {w.name}: rank {w.rank}, {len(w.layers)} layers; merging it for the parity checks")
            merged = rl.merged_pipeline(pipe, adapter)
            mspecs = declare(merged, geometry, cfg_batch=specs["unet"].dims["batch"])
            references[w.name] = {}
            for name in slots:
                inputs = specs[name].example_inputs(0)
                with torch.no_grad():
                    references[w.name][name] = (inputs, tuple(mspecs[name].module(*inputs)))
            del merged, mspecs
        return cls(weights, slots, references)

    def slotted(self, pipe, specs: dict):
        from mobilediff.runtime_lora import slotted

        return slotted(pipe, specs, self.slots)

    def vector(self, component: str, w) -> torch.Tensor:
        from mobilediff.runtime_lora import pack

        layers = {m: pair for (c, m), pair in w.layers.items() if c == component}
        return pack(self.slots[component], [(layers, w.default_scale)])

    def calibration(self, calibration):
        """``calibration`` whose rows of a slotted component end with a ``lora_weights``: every row with all zeros (the
        base model) and again with each adapter that adapts the component at its scale, so that an int8 graph's activation ranges
        hold what the adapters make of them too (calibrated on the base model alone, the ranges clip the
        activations an adapter moves and its effect shrinks: benchmarks/results/runtime_adapters.md)."""
        slots, vector, weights = self.slots, self.vector, self.weights

        class _WithSlots:
            def __getattr__(self, name):
                return getattr(calibration, name)

            def batches(self, component):
                rows = calibration.batches(component)
                if component not in slots:
                    return rows
                vectors = [torch.zeros(slots[component].size)] + [
                    vector(component, w) for w in weights if any(c == component for c, _ in w.layers)]
                # every row once per vector, a vector's rows together (a static batch regroups neighbouring rows)
                return [tuple(r) + (v,) for v in vectors for r in rows]

        return _WithSlots()

    def check(self, spec, entry: dict, bundle: Path, say) -> None:
        """Run the graph of ``entry`` with each adapter packed at its scale against the merged model; the record
        goes to ``entry["parity"]["adapters"]`` (raises below the graph's floor)."""
        from mobilediff.targets import get_target

        if spec.name not in self.slots:
            return
        mod = get_target(entry["target"]) if entry["target"] != "ort" else None
        rows = {}
        for w in self.weights:
            if not any(c == spec.name for c, _ in w.layers):  # zeros in this component's slots: the base graph
                continue
            inputs, reference = self.references[w.name][spec.name]
            inputs = tuple(inputs) + (self.vector(spec.name, w),)
            if mod is None:
                from mobilediff.targets import onnx as onnx_target

                record = onnx_target.validate_ort(spec, bundle / entry["path"], entry["precision"], inputs, reference,
                                                  entry["quantization"])
            else:
                record = mod.validate(spec, bundle / entry["path"], entry["precision"], inputs, reference,
                                      entry["quantization"])
            if "psnr_db" not in record:  # Core ML away from macOS: checked structurally, no numbers
                rows[w.name] = {"scale": w.default_scale, "checked": record.get("checked", "structurally")}
                continue
            # the same graph with the adapter off, against the same merged model: how far the adapter moves it
            off = tuple(inputs[:-1]) + (torch.zeros_like(inputs[-1]),)
            got_off = _run_file(spec, entry, bundle, off)

            rows[w.name] = {"scale": w.default_scale, "psnr_db": round(record["psnr_db"], 2),
                            "max_abs_error": record["max_abs_error"],
                            "adapter_off_psnr_db": round(min(parity_psnr(torch.as_tensor(g).float(), r.float())
                                                             for g, r in zip(got_off, reference)), 2)}
            say(f"  {spec.name} {entry['target']} + {w.name}:{w.default_scale:g} vs merged: {record['psnr_db']:.1f} dB")
        entry["parity"]["adapters"] = {"against": "the PyTorch model with the adapter merged (--lora), same inputs",
                                       **rows}

    def record(self, bundle: Path) -> dict:
        from mobilediff.bundle import sha256_path, size_bytes
        from mobilediff.runtime_lora import ADAPTER_DIR, write_adapter

        files = []
        for w in self.weights:
            rel = f"{ADAPTER_DIR}/{w.name}.safetensors"
            write_adapter(w, bundle / rel)
            files.append({"name": w.name, "path": rel, "sha256": sha256_path(bundle / rel),
                          "size_bytes": size_bytes(bundle / rel), "rank": w.rank, "default_scale": w.default_scale,
                          "components": sorted({c for c, _ in w.layers}), "layers": len(w.layers),
                          "source": {"file": w.file, "sha256": w.sha256}})
        return {"input": "lora_weights",
                "slots": {name: s.to_dict() for name, s in self.slots.items()}, "files": files}


def export_fused(pipe, geometry: dict, targets: list[str], precision: str, steps: int, sampler: str | None,
                 guidance: float, bundle: Path, say: Callable[[str], None],
                 attention_budget_mib: float | None = DEFAULT_BUDGET_MIB) -> dict:
    """The --fused-steps program (mobilediff.fused: text encoder + ``steps`` unrolled denoiser steps + decoder) on
    each fused target, checked against PyTorch like every component; returns the manifest's ``fused`` record."""
    from mobilediff.fused import fused_has_cfg, fused_spec
    from mobilediff.sampler_table import sampler_table
    from mobilediff.samplers import make_scheduler

    sampler = sampler or ("lcm" if pipe.unet.config.time_cond_proj_dim else "ddim")
    table = {"name": sampler, **sampler_table(make_scheduler(sampler, pipe.scheduler.config), steps).to_dict()}
    if not targets:
        raise MobilediffError(f"--fused-steps needs one of these targets: {', '.join(FUSED_TARGETS)}")
    cfg = fused_has_cfg(pipe, guidance)
    spec = fused_spec(pipe, table, geometry, f"fused{steps}", cfg)
    files = []
    for tgt in targets:
        say(f"{spec.name} -> {tgt} ({precision})")
        files.append(export_component(spec, tgt, precision, bundle, attention_budget_mib=attention_budget_mib))
    return {"name": spec.name, "steps": steps, "sampler": sampler, "default_guidance": guidance,
            "cfg_batch": 2 if cfg else 1, "table": table, **spec.to_dict(), "files": files,
            "gflop": round(count_gflop(spec.module, spec.example_inputs()), 6)}


def _tile_decoder(specs: dict, geometry: dict, cfg: ExportConfig, say) -> dict | None:
    """Replace the VAE decoder's spec by its tiled form (mobilediff.tiling); returns the tiling's record with the
    PSNR of the tiled decode against the whole one on the component's example latent (None: one tile covers the
    latent, nothing tiled)."""
    from mobilediff.metrics import psnr
    from mobilediff.tiling import tiled_spec

    whole = specs["vae_decoder"]
    tiled = tiled_spec(whole, geometry, cfg.decoder_tile, cfg.decoder_overlap)
    if tiled is None:
        say(f"decoder tile {cfg.decoder_tile} covers the {geometry['latent_height']}x{geometry['latent_width']} "
            f"latent: decoded whole")
        return None
    x = whole.example_inputs(0)
    with torch.no_grad():
        a, b = whole.module(*x)[0], tiled.module(*x)[0]
    record = {**tiled.module.record(), "psnr_db_vs_whole": round(float(psnr(b.clamp(-1, 1), a.clamp(-1, 1)).min()), 2),
              "psnr_input": "the component's seeded example latent (standard normal)"}
    say(f"vae_decoder tiled: {record['tiles'][0]}x{record['tiles'][1]} tiles of {record['tile_latent']} latent "
        f"pixels, {record['compute_ratio']:.2f}x the decoding, {record['psnr_db_vs_whole']:.1f} dB against the whole")
    specs["vae_decoder"] = tiled
    return record


def _calibrate(pipe, cfg: ExportConfig, card, recipes: dict, say):
    """The recorded sampler inputs a static int8 recipe is calibrated on (None when no recipe needs them)."""
    if not any(r.calibrated for r in recipes.values()):
        return None
    from mobilediff.calibration import calibration_prompts as prompts_for, record_calibration

    own = card.record["sampling"] if card.record is not None else {}
    smp = {"sampler": "ddim", "steps": 8, "guidance": card.plan.guidance, **(cfg.calibration_sampling or own)}
    # the user's prompts (export --calibration-prompts FILE), or that many of the shapes domain's
    prompts = list(cfg.calibration_prompts) if isinstance(cfg.calibration_prompts, tuple) \
        else prompts_for(cfg.calibration_prompts)
    say(f"calibration: {len(prompts)} prompts, {smp['sampler']} {smp['steps']} steps, guidance "
        f"{smp['guidance']}, at most {cfg.calibration_rows} rows per component")
    return record_calibration(pipe, prompts, smp["steps"], smp["sampler"], smp["guidance"],
                              max_rows=cfg.calibration_rows)
