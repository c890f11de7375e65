"""The model card: what a pipeline is, read once from the model itself.

Its role (a teacher, or a student and how it was distilled), the sampling plan it is made for, and the hash of the
weights it was loaded from. A student's ``distillation.json`` (written by ``mobilediff distill``) is read here and
nowhere else; without one, a UNet with a guidance-embedding input is an LCM student sampled with LCM at 4 steps,
anything else a teacher sampled with DDIM at 50 steps.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mobilediff.bundle import ModelRole, SamplingPlan
from mobilediff.errors import MobilediffError

RECORD = "distillation.json"
DEFAULT_GUIDANCE = 5.0  # a teacher's default guidance scale when neither the model nor the user names one
LCM_PLAN = ("lcm", 4)  # an LCM student without a record
TEACHER_PLAN = ("ddim", 50)


def distillation_record(model_dir: Path | None) -> dict | None:
    """A distilled student's record (method, sampling plan, teacher, ...), or None for a folder that has none.
    Raises MobilediffError on a corrupt record."""
    if model_dir is None:
        return None
    f = Path(model_dir) / RECORD
    if not f.is_file():
        return None
    try:
        record = json.loads(f.read_text())
        smp = record["sampling"]
        if not (isinstance(record["method"], str) and isinstance(smp["sampler"], str) and int(smp["steps"]) >= 1
                and math.isfinite(float(smp["guidance"])) and float(smp["guidance"]) >= 0):
            raise ValueError("bad method or sampling plan")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise MobilediffError(f"corrupt {f}: {e}") from None
    return record


@dataclass(frozen=True)
class ModelCard:
    role: ModelRole
    plan: SamplingPlan  # the default sampling plan (a user's --guidance already applied)
    record: dict | None  # the student's distillation.json, when it has one


def _source_hash(pipe) -> str | None:
    from mobilediff.io import tree_sha256

    path = getattr(pipe, "name_or_path", None) or getattr(pipe.config, "_name_or_path", None)
    if path and Path(path).is_dir():
        return tree_sha256(Path(path))
    return None


def native_sampler(pipe) -> str:
    """The mobilediff sampler of the pipeline's own scheduler class (DDIM where none matches)."""
    from mobilediff.samplers import SAMPLERS

    own = type(pipe.scheduler).__name__
    return next((name for name, spec in SAMPLERS.items()
                 if spec.scheduler_class == own and not spec.guidance_embedding), TEACHER_PLAN[0])


def model_card(pipe, model_dir: Path | None, name: str, guidance: float | None = None) -> ModelCard:
    """The card of ``pipe``, loaded from ``model_dir`` (None: not from a folder) and named ``name``; ``guidance``,
    when given, overrides the plan's guidance scale."""
    from mobilediff import transformer_family
    from mobilediff.components import guidance_embedding_dim

    record = distillation_record(model_dir)
    sha = _source_hash(pipe)
    if record is not None:
        smp = record["sampling"]
        role = ModelRole(role="student", method=record["method"], name=name, source_sha256=sha,
                         teacher=record.get("teacher"))
        plan = SamplingPlan(sampler=smp["sampler"], steps=int(smp["steps"]), guidance=float(smp["guidance"]))
    elif transformer_family.is_transformer_pipeline(pipe):
        role = ModelRole(role="teacher", name=name, source_sha256=sha)
        steps, scale = transformer_family.default_plan(pipe)
        plan = SamplingPlan(sampler=native_sampler(pipe), steps=steps, guidance=scale)
    elif guidance_embedding_dim(pipe):
        role = ModelRole(role="student", method="lcm", name=name, source_sha256=sha)
        plan = SamplingPlan(sampler=LCM_PLAN[0], steps=LCM_PLAN[1], guidance=DEFAULT_GUIDANCE)
    else:
        role = ModelRole(role="teacher", name=name, source_sha256=sha)
        plan = SamplingPlan(sampler=TEACHER_PLAN[0], steps=TEACHER_PLAN[1], guidance=DEFAULT_GUIDANCE)
    if guidance is not None:
        plan = SamplingPlan(sampler=plan.sampler, steps=plan.steps, guidance=float(guidance))
    return ModelCard(role=role, plan=plan, record=record)
