"""`mobilediff goldens`: the vectors the apps' engines are tested against, recorded from a bundle.

For one bundle and host runtime this writes ``goldens.json`` (an index) and ``goldens.safetensors`` (every tensor):
token ids of a fixed list of prompts (punctuation, casing, long, empty, non-ASCII), the initial noise of several
seeds, and for one prompt and seed per sampling plan every component call's inputs and outputs in call order, each
fresh-noise draw, the latent after every step, the decoder output and the final uint8 image. That is enough for an
app's sampler loop to be replayed without a runtime, and for its tokenizer and noise to be checked bit for bit.
The format is documented in docs/bundle.md ("Goldens"); the Kotlin and Swift tests read the same files.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mobilediff.bundle import MANIFEST, read_manifest, sha256_path
from mobilediff.errors import MobilediffError
from mobilediff.io import atomic_dir, atomic_write_json, save_tensors

FORMAT = "mobilediff.goldens"
FORMAT_VERSION = 1
TOKENIZER_PROMPTS = (
    "a large red circle in the center on a white background",
    "A SMALL Blue Triangle, at the TOP-left; and a big yellow square!!",
    "",
    "   spaces   and\ttabs\nand newlines   ",
    "café naïve — déjà vu 😀 ünïcödé",
    "don't can't it's 3.14 100% #tag @user a/b",
    "a very long prompt " * 12,
)
NOISE_SEEDS = (0, 1, 42, 1234567890123)
PLAN_PROMPT = "a small blue triangle at the top left and a big yellow square at the bottom right on a black background"


def golden_plans(manifest) -> list[tuple[str, str, int, float]]:
    """(name, sampler, steps, guidance) of the plans recorded: the bundle's default plan and short runs of every
    other sampler it tabulates (a multistep solver and an input-scaling one, where the bundle has them)."""
    plan = manifest.plan
    plans = [("default", plan.sampler, plan.steps, plan.guidance)]
    have = {(t.name, t.steps) for t in manifest.samplers}
    for name in sorted({t.name for t in manifest.samplers}):
        if (name, 4) in have and (name, 4) != (plan.sampler, plan.steps):
            plans.append((f"{name}-4", name, 4, plan.guidance))
    return plans


class _Recorder:
    """Wraps a runner component: records every call's inputs and outputs under the component's I/O names."""

    def __init__(self, inner, name: str, io, calls: list):
        self.inner, self.name, self.io, self.calls = inner, name, io, calls
        self.static_batch = getattr(inner, "static_batch", None)

    def __call__(self, *args):
        outs = self.inner(*args)
        self.calls.append((self.name, {s.name: a.clone() for s, a in zip(self.io.inputs, args)},
                           {s.name: o.clone() for s, o in zip(self.io.outputs, outs)}))
        return outs


def write_goldens(bundle: Path, out: Path, runtime: str = "onnx", seed: int = 0, force: bool = False,
                  progress=None) -> Path:
    """Record the goldens of ``bundle`` on ``runtime`` into the folder ``out`` (written atomically); returns it.
    ``seed`` is the noise seed of the recorded plans. Raises MobilediffError on a bad bundle, an existing ``out``
    (without ``force``) or one another process is writing, before recording; on one that appeared meanwhile or
    cannot be written, after (:func:`mobilediff.io.atomic_dir`)."""
    from mobilediff.engine import BundleRunner

    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    if manifest.tokenizer.unigram_kind:
        raise MobilediffError(f"{bundle} is a format-{manifest.format_version} bundle (a {manifest.tokenizer.kind} "
                              f"tokenizer): goldens are the apps' test vectors, and the apps run CLIP bundles only")
    if out.exists() and not force:
        raise MobilediffError(f"output directory {out} already exists (pass --force to replace it)")
    runner = BundleRunner(bundle, runtime)
    # OUT is claimed before the recording, not after it: a second writer of OUT fails now (mobilediff.io)
    with atomic_dir(out, force=force) as tmp:
        tensors, index = _record(bundle, manifest, runner, runtime, seed, progress or (lambda msg: None))
        save_tensors(tensors, tmp / "goldens.safetensors")
        atomic_write_json(tmp / "goldens.json", index)
    return out


def _record(bundle: Path, manifest, runner, runtime: str, seed: int, say) -> tuple[dict[str, torch.Tensor], dict]:
    """(every recorded tensor by key, the goldens.json index) of ``bundle`` run by ``runner``."""
    from mobilediff.data import to_uint8

    tensors: dict[str, torch.Tensor] = {}
    tok = runner.tokenizer
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "bundle_manifest_sha256": sha256_path(bundle / MANIFEST),
             "runtime": runtime, "tokenizer": [], "noise": [], "plans": []}
    for prompt in TOKENIZER_PROMPTS:
        index["tokenizer"].append({"prompt": prompt, "ids": tok.ids(prompt)[0].tolist()})
    shape = list(manifest.geometry.latent_shape)
    for s in NOISE_SEEDS:
        key = f"noise/seed{s}"
        tensors[key] = torch.randn(shape, generator=torch.Generator().manual_seed(s))
        index["noise"].append({"seed": s, "shape": shape, "tensor": key})
    for p, (name, sampler, steps, guidance) in enumerate(golden_plans(manifest)):
        say(f"plan {name}: {sampler} {steps} steps, guidance {guidance:g}")
        runner._uncond = None  # every plan records its own unconditional-prompt encoding
        calls: list = []
        original = dict(runner.parts)
        runner.parts = {c: _Recorder(part, c, manifest.component(c), calls) for c, part in original.items()}
        traced: dict[str, list] = {"noise": [], "fresh_noise": [], "latent": []}
        try:
            image = runner.generate(PLAN_PROMPT, seed, steps, sampler, guidance,
                                    trace=lambda kind, t: traced[kind].append(t.clone()))
        finally:
            runner.parts = original
        entry = {"name": name, "sampler": sampler, "steps": steps, "guidance": guidance, "prompt": PLAN_PROMPT,
                 "seed": seed, "calls": [], "fresh_noise": [], "latents": []}
        for c, (component, ins, outs) in enumerate(calls):
            rec = {"component": component, "inputs": {}, "outputs": {}}
            for kind, values in (("inputs", ins), ("outputs", outs)):
                for tname, value in values.items():
                    key = f"plan{p}/call{c}/{kind}/{tname}"
                    tensors[key] = value
                    rec[kind][tname] = key
            entry["calls"].append(rec)
        for kind, field in (("fresh_noise", "fresh_noise"), ("latent", "latents")):
            for i, t in enumerate(traced[kind]):
                key = f"plan{p}/{kind}{i}"
                tensors[key] = t
                entry[field].append(key)
        tensors[f"plan{p}/decoded"] = image
        tensors[f"plan{p}/image"] = torch.from_numpy(to_uint8(image)[0])
        entry["decoded"], entry["image"] = f"plan{p}/decoded", f"plan{p}/image"
        index["plans"].append(entry)
    return tensors, index
