"""The bundles a device benchmark measures: each one's role, precision, targets and sampling plans, learned from its
manifest alone (``Manifest.role`` and ``Manifest.plan``), and the component inputs a benchmark feeds it.

Nothing here opens the model folder a bundle was exported from: an app holding only the bundle knows as much.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mobilediff.bundle import COMPONENTS, Manifest
from mobilediff.errors import MobilediffError

INT8_RECIPES = ("int8-static", "int8-dynamic", "int8", "int8-decoder")  # 8-bit weights and activations, per target


@dataclass(frozen=True)
class Plan:
    """One way of sampling a bundle in a benchmark row."""

    sampler: str
    steps: int
    guidance: float
    guidance_from: str  # "--baseline-guidance" | "--student-guidance" | "manifest" (the bundle's default plan)


@dataclass(frozen=True)
class PlanChoice:
    """What the user asked of the plans (flags of run_device); None: the bundle's own default plan decides."""

    baseline: tuple[str, int] = ("ddim", 50)  # a teacher's sampler and steps
    steps: tuple[int, ...] = (1, 2, 4, 8)  # an LCM student's step counts
    baseline_guidance: float | None = None
    student_guidance: float | None = None


@dataclass
class BundleInfo:
    name: str  # unique label in this run (the folder name, suffixed when two folders share one)
    path: Path
    manifest: Manifest
    precision: str  # fp32 | fp16 | the quantization recipe
    quantization: str | None
    targets: list[str]  # targets with a file for every component
    plans: list[Plan]
    source: dict = field(default_factory=dict)  # see run_device's schema; filled further by an eager reference
    eager_dir: Path | None = None  # the PyTorch pipeline of eager rows (host only, when asked for); else None

    @property
    def role(self) -> str:
        return self.manifest.role.role

    @property
    def method(self) -> str:
        """teacher | lcm | progressive."""
        return "teacher" if self.role == "teacher" else (self.manifest.role.method or "student")

    @property
    def cfg(self) -> bool:
        return self.manifest.guidance.type == "classifier_free"

    @property
    def source_label(self) -> str:
        """Which model the bundle came from, for grouping eager rows: a named model ("default:lcm") when the
        manifest's source path is one, else the folder's name."""
        from mobilediff.loading import NAMED_MODELS

        where = self.eager_dir or (Path(self.manifest.source.model) if self.manifest.source.model else None)
        if where is None:
            return self.manifest.role.name or "unknown"
        for k, v in NAMED_MODELS.items():
            if Path(v).resolve() == where.resolve():
                return k
        return where.name if where.name not in ("model", "") else f"{where.parent.name}/{where.name}"

    def summary(self) -> dict:
        return {"name": self.name, "path": str(self.path), "role": self.role, "method": self.method,
                "precision": self.precision, "quantization": self.quantization, "targets": self.targets,
                "guidance_type": self.manifest.guidance.type, "geometry": self.manifest.geometry.to_dict(),
                "source": self.source, "plans": [vars(p) for p in self.plans],
                "default_plan": self.manifest.plan.to_dict()}


def plans_for(manifest: Manifest, choice: PlanChoice) -> list[Plan]:
    """The rows to run for a bundle: a teacher its baseline; an LCM student each of ``choice.steps`` with LCM; any
    other student its default plan. Guidance: the flag if given, else the bundle's default plan's."""
    role, plan = manifest.role, manifest.plan
    if role.role == "teacher":
        g, origin = ((choice.baseline_guidance, "--baseline-guidance") if choice.baseline_guidance is not None
                     else (plan.guidance, "manifest"))
        return [Plan(choice.baseline[0], choice.baseline[1], float(g), origin)]
    g, origin = ((choice.student_guidance, "--student-guidance") if choice.student_guidance is not None
                 else (plan.guidance, "manifest"))
    if role.method == "lcm" or plan.sampler == "lcm":
        return [Plan("lcm", k, float(g), origin) for k in choice.steps]
    return [Plan(plan.sampler, plan.steps, float(g), origin)]


def inspect_bundle(path: Path, name: str, choice: PlanChoice) -> BundleInfo:
    """Read and check one bundle (manifest, every component file's sha256, the sampler table of every plan).

    Raises MobilediffError naming the first problem, before any measurement."""
    from mobilediff.bundle import read_manifest, verify_file

    m = read_manifest(path)
    for c in COMPONENTS:
        for entry in m.component(c).files:
            verify_file(path, entry)
    targets = sorted(t for t in m.targets() if all(m.component(c).file(t) for c in COMPONENTS))
    if not targets:
        raise MobilediffError(f"bundle {path} has no target with all of {', '.join(COMPONENTS)}")
    quantization = (m.quantization or {}).get("recipe")
    precision = quantization or m.component("unet").files[0].precision
    plans = plans_for(m, choice)
    for p in plans:
        m.sampler_table(p.sampler, p.steps)  # a missing table fails here, before any work
    source = {"model": m.source.model, "path": None, "weights_sha256": m.source.weights_sha256, "checked": False,
              "from": "none", "decoder": (m.source.decoder or {}).get("path")}
    return BundleInfo(name=name, path=Path(path), manifest=m, precision=precision, quantization=quantization,
                      targets=targets, plans=plans, source=source)


def inspect_bundles(paths: list[Path], choice: PlanChoice) -> list[BundleInfo]:
    """:func:`inspect_bundle` of each folder, named after it (``name``, ``name-2``, ... for folders of one name)."""
    names, out = {}, []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(p).resolve().name).lstrip("._-") or "bundle"
        names[base] = names.get(base, 0) + 1
        out.append(inspect_bundle(Path(p), base if names[base] == 1 else f"{base}-{names[base]}", choice))
    return out


def fused_entry(manifest: Manifest):
    """The fused N-step program of a bundle exported with --fused-steps, as a ComponentEntry (None without one)."""
    from mobilediff.bundle import ComponentEntry

    f = manifest.fused
    if not f:
        return None
    return ComponentEntry.from_dict({k: f[k] for k in ("inputs", "outputs", "dims", "files", "source_class", "gflop")
                                     if k in f}, "manifest.fused")


def component_inputs(manifest: Manifest, component: str, seed: int = 0, entry=None) -> list:
    """Inputs of ``component`` (or of ``entry``, e.g. :func:`fused_entry`) at the manifest's static shapes, in the
    ranges the sampler feeds: a real-looking token sequence (BOS, a few tokens, EOS, padding), timestep 500,
    unit-variance latents and noise, the default guidance (scale or embedding). (B, ...) shapes as declared: a CFG
    teacher's UNet gets its batch of 2."""
    import torch

    from mobilediff.bundle import guidance_embedding

    g = torch.Generator().manual_seed(seed)
    tok = manifest.tokenizer
    out = []
    for spec in (entry or manifest.component(component)).inputs:
        shape = list(spec.static_shape)
        if spec.name == "input_ids":
            x = torch.full(shape, int(tok.pad_id), dtype=torch.int32)
            n = min(6, shape[1] - 2)
            x[:, 0] = int(tok.bos_id)
            x[:, 1:1 + n] = torch.randint(400, 20000, (shape[0], n), generator=g, dtype=torch.int32)
            x[:, 1 + n] = int(tok.eos_id)
        elif spec.name == "timestep":
            x = torch.full(shape, 500.0)
        elif spec.name == "guidance_scale":
            x = torch.full(shape, float((manifest.fused or {}).get("default_guidance",
                                                                   manifest.guidance.default_scale)))
        elif spec.name == "timestep_cond":
            emb = guidance_embedding(float(manifest.guidance.default_scale), shape[1])
            x = torch.tensor([emb] * shape[0], dtype=torch.float32)
        elif spec.name == "lora_weights":  # run-time adapter slots: none on (the base model)
            x = torch.zeros(shape)
        elif spec.dtype == "int32":
            x = torch.randint(0, 1000, shape, generator=g, dtype=torch.int32)
        else:  # float32 (an fp16 graph keeps float32 inputs and outputs)
            x = torch.randn(shape, generator=g)
        out.append(x)
    return out


def file_precision(entry) -> str:
    """A file entry's precision as tables show it: the quantization recipe if any, else the precision."""
    return entry.quantization or entry.precision
