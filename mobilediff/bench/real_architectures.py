"""Real denoiser architectures with random weights as a benchmark: an SD-1.5-shaped and a BK-SDM-Tiny-shaped UNet
built from their checkpoints' configurations, exported with the project's own path, and timed per runtime against
PyTorch eager, each step in its own memory-limited process. ``benchmarks/real_architectures.py`` runs
:func:`main`, the command over :func:`measure`; its module docstring holds the result schema."""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mobilediff.bench.envelope import Parser, command_line, count, finite, fmt
from mobilediff.errors import MobilediffError
from mobilediff.targets import HOST_RUNTIMES
from mobilediff.targets import TARGETS as EXPORT_TARGETS

SCHEMA = "mobilediff.real_architectures/1"
TEXT_TOKENS = 77  # CLIP context length of SD-1.x and BK-SDM
TEXT_DIM = 768  # CLIP ViT-L/14 hidden size = the UNets' cross_attention_dim
RUNTIMES = HOST_RUNTIMES  # targets with a host runtime (coreml predicts on macOS only)
TARGETS = tuple(EXPORT_TARGETS)
SCALES = {"full": 1, "tiny": 10}  # channel-width divisor
GIB = 1 << 30
# what a step's error says when it hit --max-memory-gib (torch's allocator, numpy/Python, mmap of a library or file)
OUT_OF_MEMORY = ("can't allocate memory", "Cannot allocate memory", "MemoryError", "failed to map segment",
                 "out of memory", "bad_alloc")


@dataclass(frozen=True)
class Architecture:
    title: str  # name in tables
    source: str  # where the configuration comes from
    # the denoiser's keyword arguments (the checkpoint's unet/config.json or transformer/config.json)
    unet_config: dict
    kind: str = "unet"  # "unet": UNet2DConditionModel; "pixart": PixArtTransformer2DModel
    text: tuple[int, int] = (TEXT_TOKENS, TEXT_DIM)  # the text encoder's context: tokens x width

    def config(self, scale: str) -> dict:
        """The denoiser's configuration at ``scale``: "full", or "tiny" (every channel width / 10; same blocks)."""
        div, c = SCALES[scale], self.unet_config
        if self.kind == "pixart":
            head = c["attention_head_dim"] // div
            return {**c, "attention_head_dim": head, "cross_attention_dim": head * c["num_attention_heads"],
                    "caption_channels": c["caption_channels"] // div}
        return {**c, "block_out_channels": tuple(ch // div for ch in c["block_out_channels"])}

    def text_context(self, scale: str) -> tuple[int, int]:
        return (self.text[0], self.config(scale)["caption_channels"]) if self.kind == "pixart" else self.text

    def build(self, scale: str):
        """The denoiser with random weights (on the current default device: ``torch.device("meta")`` allocates none)."""
        from diffusers import PixArtTransformer2DModel, UNet2DConditionModel

        cls = PixArtTransformer2DModel if self.kind == "pixart" else UNet2DConditionModel
        return cls(**self.config(scale))

    def pixel_multiple(self) -> int:
        """What an image side must be a multiple of: the VAE's factor 8 times the UNet's downsamplings, or times the
        transformer's patch size."""
        if self.kind == "pixart":
            return 8 * self.unet_config["patch_size"]
        return 8 * 2 ** (len(self.unet_config["down_block_types"]) - 1)


# Every architectural field of the checkpoint's unet/config.json, diffusers' defaults included: the table is the record.
_SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=TEXT_DIM, attention_head_dim=8,
    use_linear_projection=False, upcast_attention=False)
ARCHITECTURES = {
    "sd15": Architecture("SD-1.5 UNet", "runwayml/stable-diffusion-v1-5 unet/config.json", _SD15),
    "bk-sdm-tiny": Architecture(
        "BK-SDM-Tiny UNet", "Nota-NetsPresso/BK-SDM src/unet_config/bk_tiny/config.json (student of nota-ai/bk-sdm-tiny)",
        {**_SD15, "down_block_types": ("CrossAttnDownBlock2D",) * 3, "mid_block_type": None,
         "up_block_types": ("CrossAttnUpBlock2D",) * 3, "block_out_channels": (320, 640, 1280), "layers_per_block": 1}),
    # PixArt-alpha XL/2 at 512 px: diffusers' PixArtTransformer2DModel defaults are PixArt-XL-2's transformer/config.json
    # (28 blocks of width 1152 = 16 heads x 72, cross-attention to 120 T5-XXL tokens of width 4096, 2x2 patches,
    # learned variance), with sample_size 64 as PixArt-alpha/PixArt-XL-2-512x512 (no resolution conditions)
    "pixart-alpha": Architecture(
        "PixArt-alpha XL/2 transformer", "PixArt-alpha/PixArt-XL-2-512x512 transformer/config.json "
        "(diffusers' PixArtTransformer2DModel defaults, sample_size 64)",
        dict(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
             cross_attention_dim=1152, attention_bias=True, sample_size=64, patch_size=2,
             activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096, use_additional_conditions=False),
        kind="pixart", text=(120, 4096)),
}

# the UNets: what the whole-pipeline memory benchmark (a CLIP text encoder and SD's VAE around it) and the convolution
# profile take
UNET_ARCHITECTURES = {name: a for name, a in ARCHITECTURES.items() if a.kind == "unet"}


@dataclass(frozen=True)
class RealArchConfig:
    out: Path  # folder for real_architectures.json and .md (rewritten after every step)
    arch: tuple[str, ...] = tuple(ARCHITECTURES)  # architectures to measure
    targets: tuple[str, ...] = RUNTIMES  # export targets (coreml converts on Linux but has no latency here)
    resolution: tuple[int, ...] = (256,)  # square image sizes in pixels
    runs: int = 10  # timed runs per runtime after warm-up (>= 10 to be reportable)
    warmup: int = 3  # untimed runs before timing
    batch: int | None = None  # UNet batch (None: the declared CFG batch, 2 for a classifier-free-guidance model)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # PyTorch, onnxruntime and XNNPACK threads
    scale: str = "full"  # full: the real widths; tiny: every channel width / 10
    seed: int = 0  # seed of the random weights and of the example inputs
    work: Path | None = None  # folder for the exported files (None: a new temporary folder)
    keep: bool = False  # keep the exported files
    max_memory_gib: float | None = None  # memory limit of each step's process (None: available now - reserve_gib)
    reserve_gib: float = 3.0  # memory left to the rest of the machine by the default limit
    cell_timeout: float = 5400.0  # seconds before one step is stopped
    peers: tuple[str, ...] = ()  # other CPU engines timed in the same run (PEERS)
    peer_steps: int = 3  # the peer's long generate (per step = (t(peer_steps) - t(1)) / (peer_steps - 1))
    peer_runs: int = 3  # timed generates of each length (each a whole image: seconds to minutes at 512 px)

    def check(self) -> None:
        """Raise MobilediffError on bad settings, before any work."""
        from mobilediff.bench.stats import check_count

        check_count("--runs", self.runs, 1)
        check_count("--warmup", self.warmup, 0)
        check_count("--threads", self.threads, 1)
        if self.batch is not None:
            check_count("--batch", self.batch, 1)
        for arch in self.arch:
            if arch not in ARCHITECTURES:
                raise MobilediffError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {arch}")
            multiple = ARCHITECTURES[arch].pixel_multiple()
            for res in self.resolution:
                if res <= 0 or res % multiple:
                    raise MobilediffError(f"--resolution must be a positive multiple of {multiple} for {arch}, got {res}")
        check_count("--peer-steps", self.peer_steps, 2)
        check_count("--peer-runs", self.peer_runs, 1)
        for peer in self.peers:
            if peer not in PEERS:
                raise MobilediffError(f"--peer must be one of {', '.join(PEERS)}, got {peer}")
        if self.peers and self.scale != "full":
            raise MobilediffError("--peer needs --scale full: stable-diffusion.cpp builds its networks from the real "
                                  "SD-1.x widths and cannot load a narrowed UNet")
        if self.max_memory_gib is not None and self.max_memory_gib <= 0:
            raise MobilediffError(f"--max-memory-gib must be > 0, got {self.max_memory_gib}")


# ---------------------------------------------------------------------------------------------- in the cells


def sd15_scheduler():
    """SD-1.5's DDIM scheduler (runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, prediction_type="epsilon")


def build_spec(arch: str, scale: str, resolution: int, batch: int | None, seed: int):
    """The denoiser's ComponentSpec exactly as ``mobilediff export`` declares it, with seeded random weights.

    ``declare`` reads a whole pipeline; its text encoder (one CLIP layer of width 768, 77 positions) and VAE
    (4 latent channels, 3 downsamplings) are stand-ins that only fix the text context and latent geometry.
    Raises MobilediffError if ``resolution`` does not suit the UNet.
    """
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from mobilediff.components import declare, latent_geometry
    from mobilediff.loading import DEFAULT_MODEL_DIR

    if ARCHITECTURES[arch].kind == "pixart":
        return _pixart_spec(arch, scale, resolution, batch, seed)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**ARCHITECTURES[arch].config(scale)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    tokenizer.model_max_length = TEXT_TOKENS
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64,
                                                num_hidden_layers=1, num_attention_heads=1,
                                                max_position_embeddings=TEXT_TOKENS))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)
    scheduler = sd15_scheduler()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    geometry = latent_geometry(pipe, resolution, resolution)
    return declare(pipe, geometry, cfg_batch=batch)["unet"]


def _pixart_spec(arch: str, scale: str, resolution: int, batch: int | None, seed: int):
    """:func:`build_spec` of a PixArt transformer: its pipeline's T5 encoder is a one-layer stand-in of the real width
    (4096 features per token) over a small unigram vocabulary, padded to the real 120 tokens; the VAE a stand-in of
    factor 8."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline
    from transformers import T5Config, T5EncoderModel

    from mobilediff.components import declare, latent_geometry
    from mobilediff.transformer_family import tiny_tokenizer

    a = ARCHITECTURES[arch]
    tokens, width = a.text_context(scale)
    torch.manual_seed(seed)
    transformer = a.build(scale).eval()
    tokenizer = tiny_tokenizer(max_length=tokens)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=16, num_layers=1,
                                           num_heads=1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    geometry = latent_geometry(pipe, resolution, resolution)
    return declare(pipe, geometry, cfg_batch=batch)["unet"]


def _denoiser(module):
    """The network inside a declared denoiser module (its ``unet`` or ``transformer``)."""
    return getattr(module, "unet", None) or module.transformer


def _io_spec(io: dict):
    """A ComponentSpec without a module, from ``ComponentSpec.to_dict()``: enough to make its example inputs."""
    from mobilediff.components import ComponentSpec, TensorSpec

    def tensors(rows):
        return tuple(TensorSpec(r["name"], tuple(r["shape"]), r["dtype"], r["description"]) for r in rows)

    return ComponentSpec("unet", None, tensors(io["inputs"]), tensors(io["outputs"]), dict(io["dims"]))


def _prepare(job: dict) -> None:
    """First thing in every cell process: the memory limit, thread count and quiet libraries."""
    import logging
    import resource
    import warnings

    if job["max_memory_bytes"]:
        # RLIMIT_DATA counts heap and private anonymous mappings (tensors), not mapped libraries or files:
        # an allocation over it fails with an error here instead of waking the kernel's OOM killer
        resource.setrlimit(resource.RLIMIT_DATA, (job["max_memory_bytes"], job["max_memory_bytes"]))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from mobilediff.quiet import quiet_libraries

    quiet_libraries()  # also diffusers' and transformers' progress bars (a saved pipeline's "Writing model shards")
    import torch

    torch.set_num_threads(job["threads"])


def _write(result: str, obj: dict) -> None:
    from mobilediff.io import atomic_write_json

    atomic_write_json(Path(result), obj)


def cell_eager(job: dict, result: str) -> None:
    """PyTorch eager latency of one UNet step (no_grad) at the declared inputs."""
    _prepare(job)
    import torch

    from mobilediff.bench.stats import time_callable

    spec = build_spec(job["arch"], job["scale"], job["resolution"], job["batch"], job["seed"])
    inputs = spec.example_inputs(job["seed"])
    with torch.no_grad():
        t0 = time.perf_counter()
        spec.module(*inputs)
        first = (time.perf_counter() - t0) * 1e3
        samples = time_callable(lambda: spec.module(*inputs), job["warmup"], job["runs"])
    unet = _denoiser(spec.module)
    _write(result, {"params": sum(p.numel() for p in unet.parameters()),
                    "weight_bytes": sum(p.numel() * p.element_size() for p in unet.parameters()),
                    "io": spec.to_dict(), "first_call_ms": first, "samples_ms": samples,
                    "runtime_threads": torch.get_num_threads()})


def cell_export(job: dict, result: str) -> None:
    """Export and parity-check the UNet with the project's own path (mobilediff.exporter.export_component)."""
    _prepare(job)
    from mobilediff.exporter import export_component

    spec = build_spec(job["arch"], job["scale"], job["resolution"], job["batch"], job["seed"])
    entry = export_component(spec, job["target"], "fp32", Path(job["dir"]), seed=job["seed"])
    _write(result, {"entry": entry, "io": spec.to_dict()})


def cell_profile(job: dict, result: str) -> None:
    """One UNet step lowered for XNNPACK with its convolutions split above ``job["budget"]`` bytes of weight (None:
    none split), profiled per XNNPACK kernel with an ETDump (benchmarks/xnnpack_convs.py)."""
    _prepare(job)
    import gc

    from mobilediff.bench.host import import_runtime
    from mobilediff.bench.op_profile import profile_executorch
    from mobilediff.targets.executorch import lower

    import_runtime("executorch", job["threads"])
    spec = build_spec(job["arch"], job["scale"], job["resolution"], job["batch"], job["seed"])
    inputs = spec.example_inputs(job["seed"])
    program, facts = lower(spec.module, inputs, conv_budget=float("inf") if job["budget"] is None else job["budget"])
    path = Path(job["dir"]) / "unet.pte"
    path.write_bytes(program.buffer)
    del program, spec
    gc.collect()
    try:
        prof = profile_executorch(path, list(inputs), job["runs"], job["warmup"])
    finally:
        path.unlink(missing_ok=True)
    _write(result, {"facts": facts, **prof})


def cell_run(job: dict, result: str) -> None:
    """Cold load of an exported file in its runtime, then its latency; the PyTorch model is never built here."""
    _prepare(job)
    spec = _io_spec(job["io"])
    inputs = spec.example_inputs(job["seed"])
    path = Path(job["path"])
    from mobilediff.bundle import ComponentEntry
    from mobilediff.targets import get_runtime

    target = get_runtime(job["target"])
    target.prepare_runtime(job["threads"])
    threads = next(iter(target.runtime_threads(job["threads"]).values()))  # what the runtime runs with
    entry = ComponentEntry.from_dict({**job["io"], "files": []}, "unet")
    t0 = time.perf_counter()
    runner = target.load(path, entry, job["threads"], "unet")  # also checks the graph's I/O against the entry
    load = time.perf_counter() - t0

    def call():
        return runner(*inputs)

    from mobilediff.bench.stats import time_callable

    t0 = time.perf_counter()
    call()
    first = (time.perf_counter() - t0) * 1e3
    samples = time_callable(call, job["warmup"], job["runs"])
    _write(result, {"load_seconds": load, "first_call_ms": first, "samples_ms": samples, "runtime_threads": threads})


# ---------------------------------------------------------------------------------------------- the peer
PEERS = ("sdcpp",)
PEER_NAMES = {"sdcpp": "stable-diffusion.cpp"}
PEER_PROMPT = "a red circle in the center on a white background"
# SD-1.x's VAE (runwayml/stable-diffusion-v1-5 vae/config.json) and text encoder (CLIP ViT-L/14's text tower,
# text_encoder/config.json): the pipeline around the UNet that a single-checkpoint engine loads whole
SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
CLIP_L = dict(vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=TEXT_TOKENS, hidden_act="quick_gelu",
              projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def peer_pipeline_dir(arch: str, scale: str, seed: int, folder: Path) -> Path:
    """A whole diffusers-layout pipeline folder around the architecture's UNet, for an engine that loads a
    checkpoint, not a graph: the UNet with exactly the seeded weights :func:`build_spec` gives ours, SD-1.x's VAE
    and CLIP ViT-L/14 text encoder (seeded random weights too), the embedded CLIP BPE tokenizer at 77 tokens and
    SD-1.5's DDIM scheduler; safetensors only."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from mobilediff.loading import DEFAULT_MODEL_DIR, save_pipeline

    torch.manual_seed(seed)  # first, as in build_spec: the same UNet weights
    unet = UNet2DConditionModel(**ARCHITECTURES[arch].config(scale)).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**SD_VAE).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(DEFAULT_MODEL_DIR / "tokenizer"))
    tokenizer.model_max_length = TEXT_TOKENS
    scheduler = sd15_scheduler()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    # mobilediff's writer: the text encoder's keys keep their text_model. prefix (the layout other loaders read) and
    # the tokenizer is stored as the CLIP BPE files
    save_pipeline(pipe, folder, tokenizer_dir=DEFAULT_MODEL_DIR / "tokenizer")
    return folder


def cell_peer(job: dict, result: str) -> None:
    """One peer engine on the same UNet weights: whole generates of 1 and ``peer_steps`` steps (euler; CFG at
    scale 7 when our UNet row runs the CFG batch of 2, so both compute two UNet rows a step), ``peer_runs``
    timed each after one untimed; a step's time is the difference divided by the extra steps (text encoder,
    VAE decoder and loading cancel out)."""
    _prepare(job)
    try:
        from stable_diffusion_cpp import StableDiffusion
    except ImportError:
        raise MobilediffError("stable-diffusion-cpp-python is not installed (pip install -e '.[peer]': a source "
                              "build of stable-diffusion.cpp, several minutes)") from None
    from importlib.metadata import version

    folder = peer_pipeline_dir(job["arch"], job["scale"], job["seed"], Path(job["dir"]))
    t0 = time.perf_counter()
    sd = StableDiffusion(model_path=str(folder), n_threads=job["threads"], wtype="f32", verbose=False)
    load = time.perf_counter() - t0
    cfg = 7.0 if job["cfg_batch"] == 2 else 1.0

    def generate(steps: int) -> float:
        t = time.perf_counter()
        images = sd.generate_image(prompt=PEER_PROMPT, width=job["resolution"], height=job["resolution"],
                                   sample_steps=steps, cfg_scale=cfg, sample_method="euler", seed=job["seed"])
        if not images:
            raise MobilediffError("stable-diffusion.cpp returned no image")
        return (time.perf_counter() - t) * 1e3

    generate(1)  # untimed: first-call allocations
    short, long_ = [], []
    for _ in range(job["peer_runs"]):  # interleaved, so drift in the machine's speed hits both alike
        short.append(generate(1))
        long_.append(generate(job["peer_steps"]))
    per_step = [(b - a) / (job["peer_steps"] - 1) for a, b in zip(short, long_)]
    _write(result, {"load_seconds": load, "generate_1_ms": short, f"generate_{job['peer_steps']}_ms": long_,
                    "per_step_ms": per_step, "cfg_scale": cfg, "threads": job["threads"],
                    "package": f"stable-diffusion-cpp-python {version('stable-diffusion-cpp-python')}",
                    "weights": "f32", "sampler": "euler"})


def _peer_row(peer: str, job: dict, folder: Path, eager_median: float | None, args, io: dict | None) -> dict:
    """The peer's per-step time on the same architecture, resolution and weights as ours (cell_peer)."""
    arch, res = job["arch"], job["resolution"]
    batch = io["dims"]["batch"] if io else (args.batch or 2)
    row = {"arch": arch, "resolution": res, "runtime": PEER_NAMES[peer], "peer": True, "latency_only": True,
           "status": "ok", "reason": None, "batch": batch}
    if io is not None:
        row["input_shapes"] = {i["name"]: i["static_shape"] for i in io["inputs"]}
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        out, mem, err = run_cell(cell_peer, {**job, "dir": str(folder), "cfg_batch": batch,
                                             "peer_steps": args.peer_steps, "peer_runs": args.peer_runs},
                                 folder.parent, f"{arch}_{res}_{peer}", args.cell_timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if out is None:
        _say(f"  {PEER_NAMES[peer]} not run: {err}")
        return {**row, "status": "not run" if "not installed" in (err or "") else "failed", "reason": err}
    lat = _latency(out.pop("per_step_ms"))
    row.update(load_seconds=out.pop("load_seconds"), latency=lat, peer_run=out, peak_rss_mib=mem,
               runtime_threads=out["threads"], cell_seconds=round(time.time() - t0, 1),
               speedup_vs_eager=(eager_median / lat["median_ms"]) if eager_median and lat["median_ms"] > 0 else None)
    _say(f"  {PEER_NAMES[peer]}: {lat['median_ms']:.1f} ms a step (median of {lat['n']})")
    return row


# ---------------------------------------------------------------------------------------------- the driver


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def run_cell(fn, job: dict, work: Path, label: str, timeout_s: float) -> tuple[dict | None, float | None, str | None]:
    """Run ``fn(job, result_file)`` in a fresh process; return (its result, its peak RSS in MiB, error or None)."""
    from mobilediff.bench.stats import peak_rss_of_call

    result = work / f".{label}.json"
    result.unlink(missing_ok=True)
    try:
        mem = peak_rss_of_call(fn, job, str(result), timeout_s=timeout_s)
        return json.loads(result.read_text()), round(mem["peak_mib"], 1), None
    except MobilediffError as e:
        msg = _one_line(e)
        if any(m in msg for m in OUT_OF_MEMORY):
            limit = job["max_memory_bytes"]
            msg = (f"out of memory under the {limit / GIB:.2f} GiB limit (--max-memory-gib): " if limit else
                   "out of memory: ") + msg
        return None, None, msg
    finally:
        result.unlink(missing_ok=True)


def _latency(samples: list[float]) -> dict:
    from mobilediff.bench.stats import summarize

    return {**summarize(samples), "samples_ms": [round(x, 3) for x in samples]}


def _fmt(x, spec: str = ".1f") -> str:
    return fmt(x, spec, none="-")


def write_results(out: Path, result: dict) -> None:
    """real_architectures.json and .md, both rewritten atomically (called after every cell)."""
    from mobilediff.io import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "real_architectures.json", result)
    s = result["settings"]
    m = result["machine"]
    batches = sorted({r["batch"] for r in result["rows"] if r.get("batch")}) or [s["batch"] or "declared"]
    batch = (f"batch {'/'.join(map(str, batches))} "
             + ("(the declared classifier-free-guidance batch: unconditional + conditional rows)" if s["batch"] is None
                else "(--batch)"))
    md = ["# Real denoiser architectures with random weights: export and latency (latency-only)", "",
          f"Generated by `{result['command']}` on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), "
          f"{s['threads']} threads, load average {m.get('load_average_at_start', ['?'])[0]} at the start, "
          f"{result['created']}{'' if result.get('complete') else ' (incomplete: still running or interrupted)'}.",
          "",
          "**Random weights** (seeded): the denoisers have the real architectures (configurations below) but no trained "
          "weights, so these are **latency-only** numbers - speed, file size, export cost and numerical parity of "
          "the exported graph against PyTorch eager - and say nothing about image quality. "
          f"One denoiser step, fp32, {batch}, "
          f"text context {TEXT_TOKENS} x {TEXT_DIM} (a UNet's; a transformer's below); latency over {s['runs']} runs after {s['warmup']} warm-up runs. "
          "Load = creating the session / program from the file, which had just been written (OS page cache warm). "
          "Speedup = PyTorch eager median / runtime median; a median marked noisy had a slow tail (p90 > 1.25 x median), "
          "one marked n=... had fewer than 10 runs (not reportable). Parity: fp32 floor "
          f"{result['parity_floor_db']:.0f} dB PSNR. Core ML predicts only on macOS: on Linux its export is checked "
          "structurally and has no latency.", "",
          "| architecture | params | resolution (UNet sample) | runtime | export (s) | size (MB) | max abs error | PSNR (dB) "
          "| load (s) | median (ms) | p90 (ms) | trimmed mean (ms) | speedup vs eager | peak RSS (MiB) | status |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        arch = result["architectures"].get(r["arch"], {})
        params = arch.get("params")
        lat = r.get("latency") or {}
        exp = r.get("export") or {}
        par = r.get("parity") or {}
        latent = r.get("input_shapes", {}).get("sample")
        res = f"{r['resolution']} ({'x'.join(map(str, latent))})" if latent else str(r["resolution"])
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason')}"
        flags = [f for f, on in (("noisy", lat.get("too_noisy")), (f"n={lat.get('n')}", lat.get("reportable") is False))
                 if on]
        noisy = f" ({', '.join(flags)})" if flags else ""
        md.append(
            f"| {arch.get('title', r['arch'])} | {_fmt(params / 1e6 if params else None, '.1f')} M | {res} | {r['runtime']} "
            f"| {_fmt(exp.get('seconds'))} | {_fmt(exp['total_bytes'] / 1e6 if exp.get('total_bytes') else None)} "
            f"| {_fmt(par.get('max_abs_error'), '.2e')} | {_fmt(par.get('psnr_db'))} | {_fmt(r.get('load_seconds'), '.2f')} "
            f"| {_fmt(lat.get('median_ms'))}{noisy} | {_fmt(lat.get('p90_ms'))} | {_fmt(lat.get('trimmed_mean_ms'))} "
            f"| {_fmt(r.get('speedup_vs_eager'), '.2f')} | {_fmt(r.get('peak_rss_mib'), '.0f')} | {status} |")
    md += ["", "Peak RSS: of the process that built and timed the eager model, or that loaded and timed the exported "
           "file (the export process's own peak is in the JSON, `export.peak_rss_mib`)."]
    for r in result["rows"]:
        if r.get("peer") and r["status"] == "ok":
            run = r["peer_run"]
            md += ["", f"{r['runtime']} ({run['package']}, {run['weights']} weights, {run['sampler']}, CFG scale "
                   f"{run['cfg_scale']:g}, {run['threads']} threads) on the same seeded UNet inside a whole SD-1.x "
                   f"pipeline at {r['resolution']} px: a step is (t({s['peer_steps']}-step generate) - t(1-step "
                   f"generate)) / {s['peer_steps'] - 1}, {r['latency']['n']} pairs; load {r['load_seconds']:.1f} s."]
    md += ["", "## Architectures", ""]
    for name, a in result["architectures"].items():
        cfg = a["unet_config"]
        if a.get("kind") == "pixart":
            tokens, width = a["text_context"]
            md.append(f"- `{name}`: {a['title']}, {a['params']:,} parameters ({a['weight_bytes'] / 1e9:.2f} GB fp32) at "
                      f"scale `{s['scale']}`; source: {a['source']}; {cfg['num_layers']} blocks of width "
                      f"{cfg['num_attention_heads'] * cfg['attention_head_dim']} ({cfg['num_attention_heads']} heads), "
                      f"patch {cfg['patch_size']}, cross-attention to {tokens} caption tokens of width {width} (a T5 "
                      f"stand-in of one layer feeds it: the encoder itself is not measured), caption mask as input.")
            continue
        md.append(f"- `{name}`: {a['title']}, {a['params']:,} parameters ({a['weight_bytes'] / 1e9:.2f} GB fp32) at scale "
                  f"`{s['scale']}`; source: {a['source']}; blocks {' + '.join(cfg['down_block_types'])} / mid "
                  f"{cfg['mid_block_type']} / {' + '.join(cfg['up_block_types'])}, channels "
                  f"{'/'.join(map(str, cfg['block_out_channels']))}, layers per block {cfg['layers_per_block']}.")
    atomic_write_bytes(out / "real_architectures.md", ("\n".join(md) + "\n").encode())


def measure(args: RealArchConfig, command: str = "") -> dict:
    """Run the benchmark; return the result (also written to ``args.out`` after every step). See
    benchmarks/real_architectures.py for the schema."""
    from mobilediff.bench.envelope import library_versions, machine_info
    from mobilediff.parity import MIN_PSNR_DB

    args.check()
    t_start = time.time()
    if args.max_memory_gib is not None:
        limit = int(args.max_memory_gib * GIB)
    else:
        avail = _mem_available_bytes()
        limit = int(avail - args.reserve_gib * GIB) if avail else None
    owns_work = args.work is None
    work = Path(tempfile.mkdtemp(prefix="real_architectures.")) if owns_work else args.work
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    machine["torch_threads"] = args.threads  # what every step runs with (set in its process)
    machine["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]  # > 0.5: something else was running
    result = {
        "schema": SCHEMA, "latency_only": True,
        "note": "random weights (seeded): latency, size, export and parity only; no image quality",
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "complete": False,
        "machine": machine, "versions": library_versions(), "parity_floor_db": MIN_PSNR_DB["fp32"],
        "settings": {"archs": list(args.arch), "targets": list(args.targets), "resolutions": list(args.resolution), "scale": args.scale,
                     "batch": args.batch, "precision": "fp32", "runs": args.runs, "warmup": args.warmup,
                     "threads": args.threads, "seed": args.seed,
                     "max_memory_gib": round(limit / GIB, 2) if limit else None, "cell_timeout_s": args.cell_timeout,
                     "text_context": [TEXT_TOKENS, TEXT_DIM], "peers": list(args.peers),
                     "peer_steps": args.peer_steps, "peer_runs": args.peer_runs},
        "architectures": {}, "rows": [], "wall_seconds": None,
    }
    base = {"scale": args.scale, "batch": args.batch, "seed": args.seed, "threads": args.threads, "runs": args.runs,
            "warmup": args.warmup, "max_memory_bytes": limit}
    # the peer engine (stable-diffusion.cpp) runs the UNets only
    cells = sum(len(args.resolution) * (1 + len(args.targets) + len(_peers(args, a))) for a in args.arch)
    done = 0

    def record(row: dict) -> None:
        nonlocal done
        done += 1
        result["rows"].append(row)
        result["wall_seconds"] = round(time.time() - t_start, 1)
        write_results(args.out, result)

    try:
        for res in args.resolution:
            for arch in args.arch:
                tag = f"{arch} {res}px"
                job = {**base, "arch": arch, "resolution": res}
                _say(f"[{done + 1}/{cells}] {tag} pytorch eager: building the UNet and timing {args.runs} runs")
                t0 = time.time()
                eager, mem, err = run_cell(cell_eager, job, work, f"{arch}_{res}_eager", args.cell_timeout)
                row = {"arch": arch, "resolution": res, "runtime": "pytorch", "latency_only": True,
                       "status": "ok" if eager else "failed", "reason": err, "peak_rss_mib": mem,
                       "cell_seconds": round(time.time() - t0, 1)}
                io = None
                if eager:
                    io = eager["io"]
                    result["architectures"].setdefault(arch, {
                        "title": ARCHITECTURES[arch].title, "source": ARCHITECTURES[arch].source,
                        "unet_config": ARCHITECTURES[arch].config(args.scale), "kind": ARCHITECTURES[arch].kind,
                        "text_context": list(ARCHITECTURES[arch].text_context(args.scale)), "params": eager["params"],
                        "weight_bytes": eager["weight_bytes"]})
                    row.update(input_shapes={i["name"]: i["static_shape"] for i in io["inputs"]},
                               batch=io["dims"]["batch"], first_call_ms=eager["first_call_ms"],
                               runtime_threads=eager["runtime_threads"],
                               latency=_latency(eager["samples_ms"]))
                    _say(f"  eager median {row['latency']['median_ms']:.1f} ms ({eager['params']:,} parameters)")
                else:
                    _say(f"  failed: {err}")
                record(row)
                eager_median = row["latency"]["median_ms"] if eager else None
                for target in args.targets:
                    _say(f"[{done + 1}/{cells}] {tag} {target}: export + parity")
                    row = _target_row(target, job, work / f"{arch}_{res}", eager_median, args, io)
                    record(row)
                for peer in _peers(args, arch):
                    _say(f"[{done + 1}/{cells}] {tag} {PEER_NAMES[peer]}: the same weights, "
                         f"{args.peer_runs} x (1-step and {args.peer_steps}-step generates)")
                    record(_peer_row(peer, job, work / f"{arch}_{res}_{peer}", eager_median, args, io))
                if "coreml" not in args.targets:  # said in the table, not left to be guessed
                    where = "on Linux" if platform.system() == "Linux" else "by default"
                    result["rows"].append({
                        "arch": arch, "resolution": res, "runtime": "coreml", "latency_only": True, "status": "not run",
                        "reason": f"not run {where}: Core ML cannot predict here; --targets coreml converts and checks "
                                  f"the program's structure"})
                    write_results(args.out, result)
    finally:
        result["complete"] = done == cells
        result["wall_seconds"] = round(time.time() - t_start, 1)
        write_results(args.out, result)
        if owns_work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # each exported file is already gone once measured
    _say(f"wrote {args.out / 'real_architectures.json'} and .md in {result['wall_seconds'] / 60:.1f} min")
    return result


def _peers(args: RealArchConfig, arch: str) -> tuple[str, ...]:
    """The peers that run ``arch``: stable-diffusion.cpp builds SD-1.x UNets, no transformer."""
    return args.peers if ARCHITECTURES[arch].kind == "unet" else ()


def _target_row(target: str, job: dict, folder: Path, eager_median: float | None, args, io: dict | None) -> dict:
    """Export, parity, cold load and latency of one (architecture, resolution, target)."""
    arch, res = job["arch"], job["resolution"]
    row = {"arch": arch, "resolution": res, "runtime": target, "latency_only": True, "status": "ok", "reason": None}
    if io is not None:
        row.update(input_shapes={i["name"]: i["static_shape"] for i in io["inputs"]}, batch=io["dims"]["batch"])
    free = shutil.disk_usage(folder.parent).free
    need = 1.5 * _weight_bytes_estimate(arch, args.scale)  # one fp32 copy of the weights, and room to write it
    if free < need:
        return {**row, "status": "skipped", "reason": f"{free / GIB:.1f} GiB free in {folder.parent}, "
                                                       f"~{need / GIB:.1f} GiB needed"}
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    out, mem, err = run_cell(cell_export, {**job, "target": target, "dir": str(folder)}, folder.parent,
                             f"{arch}_{res}_{target}_export", args.cell_timeout)
    if out is None:
        _say(f"  export failed: {err}")
        shutil.rmtree(folder, ignore_errors=True)
        return {**row, "status": "failed", "reason": f"export: {err}", "export": {"cell_seconds": round(time.time() - t0, 1)}}
    entry = out["entry"]
    files = [{"path": entry["path"], "bytes": entry["size_bytes"]}] + \
        [{"path": e["path"], "bytes": e["size_bytes"]} for e in entry.get("external_data", [])]
    facts = {k: v for k, v in entry["export"].items() if k != "op_counts"}
    p = entry["parity"]
    row.update(input_shapes={i["name"]: i["static_shape"] for i in out["io"]["inputs"]}, batch=out["io"]["dims"]["batch"],
               export={"seconds": entry["export_seconds"], "files": files, "total_bytes": sum(f["bytes"] for f in files),
                       "facts": facts, "peak_rss_mib": mem, "cell_seconds": round(time.time() - t0, 1)},
               parity={k: p.get(k) for k in ("max_abs_error", "psnr_db", "min_psnr_db", "checked")})
    _say(f"  exported in {entry['export_seconds']:.1f} s, {row['export']['total_bytes'] / 1e6:.1f} MB, "
         f"parity {_fmt(p.get('psnr_db'))} dB ({p['checked']})")
    try:
        if target not in RUNTIMES:
            row.update(status="not run", reason="no host runtime: Core ML predicts only on macOS (structure checked)")
            return row
        _say(f"  {target}: cold load + {args.warmup} warm-up + {args.runs} timed runs")
        t0 = time.time()
        run, mem, err = run_cell(cell_run, {**job, "target": target, "path": str(folder / entry["path"]),
                                            "io": out["io"]}, folder.parent, f"{arch}_{res}_{target}_run",
                                 args.cell_timeout)
        if run is None:
            _say(f"  run failed: {err}")
            row.update(status="failed", reason=f"load/run: {err}")
            return row
        lat = _latency(run["samples_ms"])
        row.update(load_seconds=run["load_seconds"], first_call_ms=run["first_call_ms"], latency=lat,
                   runtime_threads=run["runtime_threads"], peak_rss_mib=mem, cell_seconds=round(time.time() - t0, 1),
                   speedup_vs_eager=(eager_median / lat["median_ms"]) if eager_median and lat["median_ms"] else None)
        _say(f"  load {run['load_seconds']:.2f} s, median {lat['median_ms']:.1f} ms"
             + (f", {row['speedup_vs_eager']:.2f}x eager" if row["speedup_vs_eager"] else ""))
        return row
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _weight_bytes_estimate(arch: str, scale: str) -> int:
    """fp32 bytes of the UNet's parameters, counted on the meta device (nothing allocated)."""
    import torch

    with torch.device("meta"):
        net = ARCHITECTURES[arch].build(scale)
    return sum(p.numel() * 4 for p in net.parameters())


def main(argv: list[str] | None = None, doc: str = "", results: Path | None = None) -> dict:
    """The command line of ``benchmarks/real_architectures.py``: ``argv`` (None: ``sys.argv[1:]``) parsed, measured,
    written to ``--out`` step by step; returns the result. ``doc``: the script's docstring (its ``--help``);
    ``results``: the default ``--out`` (None: ``--out`` is required)."""
    ap = Parser(doc)
    ap.add_argument("--arch", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES),
                    help="architectures to measure (default: all)")
    ap.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(RUNTIMES),
                    help="export targets (default: onnx executorch; coreml converts on Linux but has no latency here)")
    ap.add_argument("--resolution", nargs="+", type=count(1), default=[256],
                    help="image sizes in pixels, square (default 256; 512 where memory and time allow)")
    ap.add_argument("--runs", type=count(1), default=10, help="timed runs per runtime after warm-up (>= 10 to be reportable)")
    ap.add_argument("--warmup", type=count(0), default=3, help="untimed runs before timing")
    ap.add_argument("--batch", type=count(1), default=None,
                    help="UNet batch (default: the declared CFG batch, 2 for a classifier-free-guidance model)")
    ap.add_argument("--threads", type=count(1), default=os.cpu_count() or 1,
                    help="CPU threads for PyTorch, onnxruntime and XNNPACK (default: all cores)")
    ap.add_argument("--scale", choices=list(SCALES), default="full",
                    help="full: the real widths; tiny: every channel width / 10 (a smoke test in seconds)")
    ap.add_argument("--seed", type=count(0, 2**63 - 1), default=0, help="seed of the random weights and of the example inputs")
    ap.add_out(results, "folder for real_architectures.json and .md")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the exported files (default: a new temporary folder); each file is deleted once "
                         "measured, and the folder at the end, unless --keep")
    ap.add_argument("--keep", action="store_true", help="keep the exported files")
    ap.add_argument("--max-memory-gib", type=finite(0, open_min=True), default=None,
                    help="memory limit of each step's process (default: available memory now minus --reserve-gib)")
    ap.add_argument("--reserve-gib", type=finite(0), default=3.0,
                    help="memory left to the rest of the machine by the default --max-memory-gib")
    ap.add_argument("--cell-timeout", type=finite(0, open_min=True), default=5400.0, help="seconds before one step is stopped")
    ap.add_argument("--peer", nargs="+", choices=list(PEERS), default=[],
                    help="also time another CPU engine on the same UNet weights in this run: sdcpp = "
                         "stable-diffusion.cpp (pip install -e '.[peer]', a source build; not in CI)")
    ap.add_argument("--peer-steps", type=count(2), default=3,
                    help="the peer's long generate; a step = (t(N steps) - t(1 step)) / (N - 1) (default 3)")
    ap.add_argument("--peer-runs", type=count(1), default=3, help="timed generates of each length (default 3)")
    a = ap.parse_args(argv)
    cfg = RealArchConfig(out=a.out, arch=tuple(a.arch), targets=tuple(a.targets), resolution=tuple(a.resolution),
                         runs=a.runs, warmup=a.warmup, batch=a.batch, threads=a.threads, scale=a.scale, seed=a.seed,
                         work=a.work, keep=a.keep, max_memory_gib=a.max_memory_gib, reserve_gib=a.reserve_gib,
                         cell_timeout=a.cell_timeout, peers=tuple(a.peer), peer_steps=a.peer_steps,
                         peer_runs=a.peer_runs)
    return measure(cfg, command_line("real_architectures", argv))
