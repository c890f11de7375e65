"""Shared pieces of the benchmark scripts: the machine a result was measured on, library versions,
and a file hash that ties a result to the exact model it measured."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path


def machine_info() -> dict:
    """CPU model, core count, memory and threads: every result file says where it ran."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
            "torch_threads": torch.get_num_threads(), "accelerator": "none (CPU only)"}


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "accelerate", "numpy", "onnx", "onnxruntime", "executorch",
                 "coremltools", "torchao"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def tree_sha256(folder: Path, pattern: str = "**/*.safetensors") -> str:
    """sha256 over the (relative path, bytes) of every weights file of a model folder."""
    h = hashlib.sha256()
    folder = Path(folder)
    for f in sorted(folder.glob(pattern)):
        if not f.is_file():
            continue
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_main(main) -> None:
    """A benchmark script's entry point: ``main()``, with a MobilediffError turned into one ``error:`` line on
    stderr and exit code 2 (as the CLI does)."""
    import sys

    from mobilediff.errors import MobilediffError

    try:
        main()
    except MobilediffError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
