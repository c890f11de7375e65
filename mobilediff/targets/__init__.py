"""Export targets, in a registry. Heavy imports (onnx, executorch, coremltools) live inside the functions.

A target module provides:

    EXT: str                                   file extension of one component ("onnx", "pte", "mlpackage")
    export(spec, path, precision) -> dict      write ``spec.module`` (a ComponentSpec) to ``path``; return facts
                                               worth recording in the manifest (e.g. delegated node counts);
                                               ``facts["external_data"]``, if present, names the files beside
                                               ``path`` that belong to it (ONNX weights over 1.5 GiB), which the
                                               bundle records and checks by sha256 like ``path`` itself
    validate(spec, path, precision, inputs, reference) -> dict
                                               load ``path`` back and check it against PyTorch: ``inputs`` is a
                                               tuple of example tensors, ``reference`` the PyTorch outputs (tuple).
                                               Returns the parity record (see mobilediff.parity.compare); raises
                                               MobilediffError if the check fails.

``precision`` is "fp32" or "fp16". I/O names, shapes and dtypes come only from the ComponentSpec.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from mobilediff.errors import MobilediffError

TARGETS = ("onnx", "executorch", "coreml")
PRECISIONS = ("fp32", "fp16")


def get_target(name: str) -> ModuleType:
    if name not in TARGETS:
        raise MobilediffError(f"unknown target {name!r}; choose one of: {', '.join(TARGETS)}, all")
    return importlib.import_module(f"mobilediff.targets.{name}")
