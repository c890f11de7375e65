"""Export targets in a registry: a module per target implementing :class:`mobilediff.targets.base.Target`.

Adding a target is one module here (``EXT``, ``STATIC_SHAPES``, ``export``, ``quantize``, ``validate``, ``load``)
plus one line in ``TARGETS``, and its recipes in ``mobilediff.quantize.RECIPES``. Modules are imported on first
use, so importing mobilediff never pulls in onnx, executorch or coremltools.
"""
from __future__ import annotations

import importlib

from mobilediff.errors import MobilediffError
from mobilediff.targets.base import REQUIRED, Target

# name -> module implementing it
TARGETS: dict[str, str] = {
    "onnx": "mobilediff.targets.onnx",
    "executorch": "mobilediff.targets.executorch",
    "coreml": "mobilediff.targets.coreml",
}
PRECISIONS = ("fp32", "fp16")


def get_target(name: str) -> Target:
    """The target module registered as ``name``; raises MobilediffError naming the known ones."""
    if name not in TARGETS:
        raise MobilediffError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}, all")
    module = importlib.import_module(TARGETS[name])
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:  # a programming error in a new target, not bad user input
        raise TypeError(f"target module {TARGETS[name]} lacks {', '.join(missing)}")
    return module
