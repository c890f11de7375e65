"""Where a record was made: the machine (CPU, cores, memory, threads, accelerator, load) and the library versions.

The ground floor of every provenance record: benchmark results (:mod:`mobilediff.bench.envelope`), training records
(:func:`mobilediff.train.loop.provenance`) and bundle manifests (:mod:`mobilediff.exporter`) all take these two.
"""
from __future__ import annotations

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
    try:  # what else was running: the 1/5/15-minute load averages when the record is made (this run included)
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    accelerator = "none (CPU only)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
            "torch_threads": torch.get_num_threads(), "accelerator": accelerator, "load_average": load}


def library_versions() -> dict:
    """Versions of Python and of every library a measurement can depend on (those installed)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "accelerate", "numpy", "onnx", "onnxruntime", "executorch",
                 "coremltools", "torchao"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
