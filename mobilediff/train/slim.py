"""Block removal: a slimmer UNet made from its teacher's by dropping whole blocks, keeping every remaining weight
(BK-SDM, Kim et al. 2023; SnapFusion's architecture evolution removes blocks the same way).

What can be removed (``--remove``, comma-separated):

- ``mid`` -- the middle block (resnet + transformer + resnet at the lowest resolution); BK-SDM-Base removes it.
- ``attention-K`` -- the transformers of resolution level K (0 = the highest resolution), in the down block and the
  up block of that level; their resnets and resamplers stay. The highest level's attention is the costliest
  (its token count is the latent's pixel count), SnapFusion drops it first.

Every kept parameter keeps its name, so the student is the teacher's UNet minus the removed blocks, loaded from the
teacher's weights; :func:`slim_unet` refuses a removal that leaves nothing to remove or that the teacher lacks.
"""
from __future__ import annotations

import re

from mobilediff.errors import MobilediffError

_DOWN_PLAIN = {"CrossAttnDownBlock2D": "DownBlock2D"}
_UP_PLAIN = {"CrossAttnUpBlock2D": "UpBlock2D"}


def parse_removal(spec: str) -> list[str]:
    """``"mid,attention-0"`` -> ``["mid", "attention-0"]``; refuses an empty or unknown item."""
    items = [s.strip() for s in str(spec).split(",")]
    if not items or any(not s for s in items):
        raise MobilediffError(f"--remove: expected a comma-separated list of blocks (mid, attention-K), got {spec!r}")
    for s in items:
        if s != "mid" and not re.fullmatch(r"attention-\d+", s):
            raise MobilediffError(f"--remove: unknown block {s!r}; choose mid or attention-K (K = resolution level, "
                                  f"0 = highest)")
    if len(set(items)) != len(items):
        raise MobilediffError(f"--remove: {spec!r} names a block twice")
    return items


def slim_config(teacher_config: dict, removal: list[str]) -> dict:
    """The student's UNet config: the teacher's with the removed blocks replaced by their attention-free kinds or
    dropped (``mid_block_type`` None)."""
    cfg = dict(teacher_config)
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    levels = len(down)
    for item in removal:
        if item == "mid":
            if cfg.get("mid_block_type") is None:
                raise MobilediffError("--remove mid: the teacher's UNet has no middle block")
            cfg["mid_block_type"] = None
            continue
        k = int(item.split("-")[1])
        if k >= levels:
            raise MobilediffError(f"--remove {item}: the teacher's UNet has resolution levels 0..{levels - 1}")
        j = levels - 1 - k  # the up block of level k
        if down[k] not in _DOWN_PLAIN or up[j] not in _UP_PLAIN:
            raise MobilediffError(f"--remove {item}: level {k} has no attention to remove "
                                  f"({down[k]} / {up[j]})")
        down[k], up[j] = _DOWN_PLAIN[down[k]], _UP_PLAIN[up[j]]
    cfg["down_block_types"], cfg["up_block_types"] = down, up
    return cfg


def slim_unet(teacher_unet, removal: list[str]):
    """A new UNet: the teacher's minus ``removal``, every kept weight copied (names unchanged)."""
    from diffusers import UNet2DConditionModel

    cfg = slim_config(dict(teacher_unet.config), removal)
    student = UNet2DConditionModel.from_config(cfg)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if missing:
        raise MobilediffError(f"could not map the teacher's UNet onto the slimmed student: missing {missing[:3]}")
    kept = set(student.state_dict())
    removed = [k for k in unexpected if k not in kept]
    allowed = _removed_prefixes(cfg, removal)
    stray = [k for k in removed if not k.startswith(allowed)]
    if stray:
        raise MobilediffError(f"block removal dropped weights outside the removed blocks: {stray[:3]}")
    return student.to(next(teacher_unet.parameters()).dtype)


def _removed_prefixes(cfg: dict, removal: list[str]) -> tuple[str, ...]:
    levels = len(cfg["down_block_types"])
    out = []
    for item in removal:
        if item == "mid":
            out.append("mid_block.")
        else:
            k = int(item.split("-")[1])
            out += [f"down_blocks.{k}.attentions.", f"up_blocks.{levels - 1 - k}.attentions."]
    return tuple(out)


def stage_outputs(unet) -> list:
    """The modules whose outputs feature distillation compares: every down block and every up block (the stages
    BK-SDM matches), in order."""
    return [*unet.down_blocks, *unet.up_blocks]
