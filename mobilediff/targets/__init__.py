"""Export targets in a registry: a module per target implementing :class:`mobilediff.targets.base.Target`.

Adding a target is one module here (``EXT``, ``STATIC_SHAPES``, ``export``, ``quantize``, ``validate``, ``load``;
with a host runtime also ``prepare_runtime`` and ``runtime_threads``) plus one line in ``TARGETS`` saying what it
can do, and its recipes in ``mobilediff.quantize.RECIPES``. Every runtime tuple and CLI choice derives from
``TARGETS``. Modules are imported on first use, so importing mobilediff never pulls in onnx, executorch or
coremltools.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from mobilediff.errors import MobilediffError
from mobilediff.targets.base import REQUIRED, REQUIRED_HOST_RUNTIME, Target


@dataclass(frozen=True)
class Registration:
    module: str  # the module implementing the target
    host_runtime: bool  # its files run on this machine (generate --bundle, goldens, fixtures, host benchmarks)
    fused: bool  # it can hold the --fused-steps program (text encoder + N steps + decoder in one graph)


TARGETS: dict[str, Registration] = {
    "onnx": Registration("mobilediff.targets.onnx", host_runtime=True, fused=True),
    "executorch": Registration("mobilediff.targets.executorch", host_runtime=True, fused=True),
    "coreml": Registration("mobilediff.targets.coreml", host_runtime=False, fused=False),  # predicts on macOS only
}
HOST_RUNTIMES: tuple[str, ...] = tuple(n for n, r in TARGETS.items() if r.host_runtime)
FUSED_TARGETS: tuple[str, ...] = tuple(n for n, r in TARGETS.items() if r.fused)
PRECISIONS = ("fp32", "fp16")


def get_target(name: str) -> Target:
    """The target module registered as ``name``; raises MobilediffError naming the known ones."""
    if name not in TARGETS:
        raise MobilediffError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}, all")
    reg = TARGETS[name]
    module = importlib.import_module(reg.module)
    missing = [a for a in REQUIRED + (REQUIRED_HOST_RUNTIME if reg.host_runtime else ()) if not hasattr(module, a)]
    if missing:  # a programming error in a new target, not bad user input
        raise TypeError(f"target module {reg.module} lacks {', '.join(missing)}")
    return module


def get_runtime(name: str) -> Target:
    """The target module of host runtime ``name`` (one whose files run on this machine); raises MobilediffError
    naming the host runtimes for any other name."""
    if name not in HOST_RUNTIMES:
        why = " (its files do not run on this machine)" if name in TARGETS else ""
        raise MobilediffError(f"unknown runtime {name!r}{why}; choose one of: {', '.join(HOST_RUNTIMES)}")
    return get_target(name)


# Runtime settings of the low-memory mode (generate --bundle --low-memory, with the engine's resident=False): ONNX
# Runtime without its CPU arena (which keeps every block it grew to: a 512 px SD-1.5 UNet's attention and the VAE's
# 512 px activations) and memory pattern, weights allocated outside any arena; ExecuTorch as it is.
# benchmarks/memory.py measures it (its "lean" settings).
LOW_MEMORY = {"onnx": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False,
                       "session.use_device_allocator_for_initializers": "1"},
              "executorch": {}}
