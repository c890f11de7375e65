"""The one interface every export target implements (a module per target, registered in mobilediff.targets)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: importing the registry (and the CLI) never loads torch
    import torch


class Runner(Protocol):
    """A loaded graph: called with tensors in the component's declared input order, returns its declared outputs.
    ``static_batch`` is the batch a static-shape graph was exported at (None: dynamic)."""

    static_batch: int | None

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]: ...


class Target(Protocol):
    """What a target module provides. Heavy imports (onnx, executorch, coremltools) stay inside the functions.

    ``spec`` is a :class:`mobilediff.components.ComponentSpec` (the one declaration of a component's I/O);
    ``precision`` is "fp32" or "fp16", the compute precision; ``recipe`` a :class:`mobilediff.quantize.Recipe`;
    ``quantization`` its name when a graph was quantized, else None.
    """

    EXT: str  # file extension of one component ("onnx", "pte", "mlpackage")
    STATIC_SHAPES: bool  # True: named dimensions are fixed at the declaration's values (calibration rows regrouped)

    def export(self, spec, path: Path, precision: str) -> dict:
        """Write ``spec.module`` to ``path``; return facts for the manifest (delegation counts, opset, ...).
        ``facts["external_data"]`` names files beside ``path`` that belong to it, recorded and checked like it."""

    def quantize(self, spec, path: Path, recipe, precision: str, calibration) -> dict:
        """Export ``spec`` to ``path`` quantized with ``recipe`` (``calibration``: recorded sampler inputs, for
        calibrated recipes); return the export facts with a ``quantization`` entry."""

    def validate(self, spec, path: Path, precision: str, inputs, reference, quantization: str | None = None) -> dict:
        """Load ``path`` back and check it against PyTorch (``reference`` = outputs for ``inputs``); return the
        parity record (mobilediff.parity.compare); raise MobilediffError if it fails."""

    def load(self, path: Path, io, threads: int | None = None, component: str = "component",
             settings: dict | None = None) -> Runner:
        """Open a verified bundle file for generation; ``io`` is the manifest entry of ``component``; ``settings``:
        the runtime's own load settings (None: its defaults; an unknown one raises MobilediffError). Before it
        returns, the graph's own inputs and outputs are checked against ``io``
        (:func:`mobilediff.bundle.check_graph_io`)."""


    def prepare_runtime(self, threads: int | None = None) -> None:
        """Host runtimes: import and initialise the runtime's libraries (quietly) and set its thread count, before
        anything is loaded or timed."""

    def runtime_threads(self, threads: int | None = None) -> dict:
        """Host runtimes: {what: thread count it runs with} after :meth:`prepare_runtime` (for result files)."""


REQUIRED: tuple[str, ...] = ("EXT", "STATIC_SHAPES", "export", "quantize", "validate", "load")
REQUIRED_HOST_RUNTIME: tuple[str, ...] = ("prepare_runtime", "runtime_threads")

