"""Generate from a bundle alone: the Python reference of what the demo apps do.

Reads only the bundle: manifest, tokenizer files, sampler table, component files (each checked against its
sha256). No diffusers scheduler and no PyTorch module runs here; PyTorch only holds the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mobilediff.bundle import component_file, read_manifest, sampler_entry
from mobilediff.errors import MobilediffError

RUNTIMES = ("onnx", "executorch")


class _OnnxComponent:
    def __init__(self, path: Path, entry: dict, io: dict):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [s["name"] for s in io["inputs"]]
        self.outputs = [s["name"] for s in io["outputs"]]
        self.static_batch = None  # dynamic "batch"

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        feed = {n: np.ascontiguousarray(a.numpy()) for n, a in zip(self.inputs, args)}
        return [torch.from_numpy(o) for o in self.sess.run(self.outputs, feed)]


class _ExecutorchComponent:
    def __init__(self, path: Path, entry: dict, io: dict):
        from mobilediff.targets.executorch import load_method

        self.method = load_method(path)
        self.static_batch = io["dims"].get("batch")

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        from mobilediff.targets.executorch import run

        return run(self.method, [a.contiguous() for a in args])


_CLASSES = {"onnx": _OnnxComponent, "executorch": _ExecutorchComponent}


class BundleRunner:
    """Loads a bundle's three components for one host runtime and samples with its tables."""

    def __init__(self, bundle: Path, runtime: str, precision: str | None = None):
        if runtime not in RUNTIMES:
            raise MobilediffError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        self.runtime = runtime
        self.parts = {}
        for name in ("text_encoder", "unet", "vae_decoder"):
            path, entry = component_file(self.manifest, self.bundle, name, runtime, precision)
            self.parts[name] = _CLASSES[runtime](path, entry, self.manifest["components"][name])
        self.tokenizer = self._tokenizer()
        self.geometry = self.manifest["geometry"]
        self.guidance = self.manifest["guidance"]
        self._uncond: torch.Tensor | None = None

    def _tokenizer(self):
        from transformers import CLIPTokenizer

        tok = self.manifest["tokenizer"]
        for f in tok["files"]:
            if not (self.bundle / f).is_file():
                raise MobilediffError(f"bundle tokenizer file missing: {self.bundle / f}")
        t = CLIPTokenizer.from_pretrained(str(self.bundle / "tokenizer"))
        t.model_max_length = tok["max_length"]
        return t

    def encode(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer([prompt], padding="max_length", max_length=self.manifest["tokenizer"]["max_length"],
                             truncation=True, return_tensors="pt").input_ids.to(torch.int32)
        return self.parts["text_encoder"](ids)[0]

    def _unet(self, x: torch.Tensor, t: float, text: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        unet = self.parts["unet"]
        b = x.shape[0]
        ts = torch.full((b,), float(t), dtype=torch.float32)
        args = [x, ts, text] + ([cond] if cond is not None else [])
        need = unet.static_batch
        if need is not None and need != b:  # a static-batch graph: pad with copies of the last row, then drop
            pad = need - b
            if pad < 0:
                raise MobilediffError(f"UNet batch {b} exceeds the exported static batch {need}")
            args = [torch.cat([a, a[-1:].expand(pad, *a.shape[1:])]) for a in args]
            return unet(*args)[0][:b]
        return unet(*args)[0]

    @torch.no_grad()
    def generate(self, prompt: str, seed: int, steps: int, sampler: str, guidance: float | None = None) -> torch.Tensor:
        """One image (1, 3, H, W) in [-1, 1]; the noise comes from torch.Generator().manual_seed(seed) as in
        :func:`mobilediff.sampling.generate`, so the two agree image for image."""
        table = sampler_entry(self.manifest, sampler, steps)
        g = self.guidance
        scale = g["default_scale"] if guidance is None else guidance
        geo = self.geometry
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn((1, geo["latent_channels"], geo["latent_height"], geo["latent_width"]), generator=gen)
        text = self.encode(prompt)
        cond = None
        if g["type"] == "embedding":
            from mobilediff.bundle import guidance_embedding

            cond = torch.tensor([guidance_embedding(scale, g["embedding_dim"])], dtype=torch.float32)
            do_cfg = False
        else:
            do_cfg = scale > 1.0
            if do_cfg and self.parts["unet"].static_batch == 1:
                raise MobilediffError(f"this bundle's denoiser was exported without a classifier-free-guidance batch "
                                      f"(guidance {g['default_scale']:g}): generate with guidance 1, or export "
                                      f"again with --guidance > 1")
            if do_cfg:
                if self._uncond is None:
                    self._uncond = self.encode("")
                text = torch.cat([self._uncond, text])

        def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
            if do_cfg:
                out = self._unet(torch.cat([x, x]), t, text, None)
                uncond, c = out.chunk(2)
                return uncond + scale * (c - uncond)
            return self._unet(x, t, text, cond)

        latents = run_table_dict(table, denoise, noise, lambda: torch.randn(noise.shape, generator=gen))
        z = latents / geo["scaling_factor"] + geo.get("shift_factor", 0.0)
        return self.parts["vae_decoder"](z)[0].clamp(-1, 1)


def run_table_dict(table: dict, denoise: Callable, noise: torch.Tensor, fresh_noise: Callable) -> torch.Tensor:
    from mobilediff.sampler_table import SamplerTable, run_table

    fields = {k: table[k] for k in SamplerTable.__dataclass_fields__}
    return run_table(SamplerTable(**fields), denoise, noise, fresh_noise)
