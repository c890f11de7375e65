"""ExecuTorch target: torch.export -> to_edge_transform_and_lower(XNNPACK) -> .pte, run back with executorch.runtime.

Shapes are static (named dimensions fixed at the declaration's values): XNNPACK plans memory for them.
How much of the graph XNNPACK takes is reported from executorch's own delegation info; the rest runs on
the portable CPU kernels.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mobilediff.errors import MobilediffError
from mobilediff.parity import compare

EXT = "pte"
STATIC_SHAPES = True  # named dimensions fixed at the declaration's values


def lower(module, inputs, precision: str = "fp32", conv_budget: float | None = None):
    """Export and lower ``module`` for XNNPACK; returns (executorch program manager, delegation facts).
    ``conv_budget``: the weight bytes above which a convolution is split (xnnpack_forms.split_wide_convs; None: its
    default)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from mobilediff.targets.provenance import shared_provenance
    from mobilediff.targets.xnnpack_forms import decompositions, split_wide_convs

    module, split_convs = split_wide_convs(module, conv_budget)  # convolutions too wide for XNNPACK's weight streaming
    if precision == "fp16":
        from mobilediff.components import Fp16IO

        module = Fp16IO(module)

    with torch.no_grad(), shared_provenance():
        # norms, attention, nearest upsampling and splits in forms XNNPACK takes whole (few delegated subgraphs)
        ep = torch.export.export(module, inputs, strict=False).run_decompositions(decompositions())
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        program = edge.to_executorch()
    info = get_delegation_info(edge.exported_program().graph_module)
    non_delegated: dict[str, int] = {}
    for op, breakdown in info.delegation_by_operator.items():
        if breakdown.non_delegated > 0:
            non_delegated[op] = int(breakdown.non_delegated)
    facts = {"backend": "XNNPACK", "delegated_nodes": info.num_delegated_nodes,
             "non_delegated_nodes": info.num_non_delegated_nodes, "delegated_subgraphs": info.num_delegated_subgraphs,
             "non_delegated_ops": dict(sorted(non_delegated.items(), key=lambda kv: -kv[1])),
             "split_convolutions": split_convs}
    return program, facts


def export(spec, path: Path, precision: str) -> dict:
    from mobilediff.io import atomic_write_bytes

    program, facts = lower(spec.module, spec.example_inputs(), precision)
    atomic_write_bytes(Path(path), program.buffer)
    return facts


def prepare_runtime(threads: int | None = None) -> None:
    """Start executorch's runtime and size the XNNPACK thread pool, which is process-wide (executorch's Python
    runtime sizes it to the cores by default; resizing it is an API executorch marks experimental)."""
    from executorch.runtime import Runtime

    from mobilediff.quiet import quiet_stderr

    with quiet_stderr():  # the runtime's CPU-info probe and "Resetting threadpool to N threads." go to fd 2
        Runtime.get()
        if threads is not None:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)


def runtime_threads(threads: int | None = None) -> dict:
    try:
        from executorch.extension.pybindings import portable_lib

        return {"executorch threadpool": portable_lib._threadpool_get_thread_count()}
    except (ImportError, AttributeError):
        return {"executorch threadpool": "unknown"}


# How a program file reaches the runtime (``settings={"load": ...}``): "file" hands executorch.runtime the path (its
# loader maps the file: weights are paged in from it, not copied); "buffer" reads the file into Python bytes first
# (held by the Program while it lives: a second copy of the weights). benchmarks/memory.py measures both.
LOAD_FORMS = ("file", "buffer")


def load_method(path: Path, load: str = "file"):
    """The ``forward`` method of the program at ``path``, loaded in the ``load`` form (:data:`LOAD_FORMS`). The
    method keeps its program (and the program its buffer) alive: executorch.runtime's Program holds the bytes a
    buffer-loaded method reads, and freeing them under a live method crashes the process."""
    from executorch.runtime import Runtime

    from mobilediff.quiet import quiet_stderr

    if load not in LOAD_FORMS:
        raise MobilediffError(f"unknown ExecuTorch load form {load!r}; choose one of: {', '.join(LOAD_FORMS)}")
    try:
        # the runtime's CPU-info probe writes straight to file descriptor 2 on first load ("Failed to open midr
        # file ..."): nothing a user can act on; a failed load still raises with its message
        with quiet_stderr():
            data = str(path) if load == "file" else Path(path).read_bytes()
            program = Runtime.get().load_program(data)
            method = program.load_method("forward")
            method.program = program
            return method
    except RuntimeError as e:  # executorch.runtime reports a truncated or foreign program file as a RuntimeError
        raise MobilediffError(f"cannot load ExecuTorch program {path}: {str(e).splitlines()[0][:200]}") from None


def run(method, inputs) -> list[torch.Tensor]:
    return [o.float() for o in method.execute(list(inputs))]


def validate(spec, path: Path, precision: str, inputs, reference, quantization: str | None = None) -> dict:
    method = load_method(path)
    got = run(method, inputs)
    record = compare(spec.name, [s.name for s in spec.outputs], got, reference, precision, "executorch", quantization)
    record["runtime"] = "executorch.runtime (XNNPACK + portable kernels)"
    return record


# executorch's ScalarType codes (runtime/core/portable_type/scalar_type.h) as numpy names
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64",
                 11: "bool", 15: "bfloat16"}


def graph_io(method) -> tuple[list, list]:
    """The inputs and outputs a loaded method (executorch.runtime ``Method``) declares, from its ``MethodMeta``, as
    :class:`mobilediff.bundle.GraphTensor` lists in call order. A program keeps no tensor names (``name`` is None)
    and every dimension is fixed."""
    from mobilediff.bundle import GraphTensor

    meta = method.metadata

    def tensor(info):
        code = info.dtype()
        return GraphTensor(None, tuple(int(n) for n in info.sizes()), _SCALAR_TYPES.get(code, f"scalar type {code}"))

    return ([tensor(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
            [tensor(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())])


class Runner:
    """A loaded program as the bundle runner calls it: tensors in the declared input order -> declared outputs."""

    def __init__(self, path: Path, io, threads: int | None = None, component: str = "component",
                 settings: dict | None = None):
        from mobilediff.bundle import check_graph_io

        settings = dict(settings or {})
        load = settings.pop("load", "file")
        if settings:
            raise MobilediffError(f"unknown ExecuTorch load setting(s) {', '.join(map(repr, settings))}: only 'load' "
                                  f"({', '.join(LOAD_FORMS)})")
        self.method = load_method(path, load)
        check_graph_io(component, path, io, *graph_io(self.method))
        self.static_batch = io.dims.get("batch")  # shapes are static: the runner pads a smaller batch

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        return run(self.method, [a.contiguous() for a in args])


def load(path: Path, io, threads: int | None = None, component: str = "component",
         settings: dict | None = None) -> Runner:
    """Open a verified bundle program; ``io`` is the manifest entry of ``component``. ``threads`` is not settable per
    program in executorch.runtime (its thread pool is process-wide); ``settings``: ``{"load": form}`` (see
    :data:`LOAD_FORMS`; default "file"). Raises MobilediffError when the program's inputs or outputs (count, dtype,
    sizes) disagree with the entry (:func:`mobilediff.bundle.check_graph_io`)."""
    return Runner(path, io, threads, component, settings)


def _shared_refs(annotation):
    """The nodes whose quantization parameters ``annotation`` (a PT2E QuantizationAnnotation) shares."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    for spec in [*annotation.input_qspec_map.values(), annotation.output_qspec]:
        if isinstance(spec, SharedQuantizationSpec):
            ref = spec.edge_or_node
            yield from (ref if isinstance(ref, tuple) else (ref,))


def _KeepFloat(inner, kept):
    """``inner`` (a PT2E quantizer) with every annotation on a node that ``kept(node)`` removed afterwards.

    XNNPACKQuantizer's filter function is not enough: after annotating the patterns it propagates annotations
    through cat, slice and friends regardless of the filter, so float-kept modules still lose precision. Worst
    of all is the UNet's sinusoidal timestep projection (``time_proj``): timesteps up to 999 times frequencies,
    quantized to int8 before sin/cos, make the time embedding noise (the broken int8 student of
    benchmarks/results/quantization.md, 19.8 dB)."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFloat(Quantizer):
        def annotate(self, model):
            model = inner.annotate(model)
            for node in model.graph.nodes:
                if kept(node):
                    node.meta.pop("quantization_annotation", None)
            # an annotation that shares quantization parameters with a node left unannotated has nothing to share:
            # drop it too (repeat until none is left), else prepare_pt2e fails on the missing observer
            changed = True
            while changed:
                changed = False
                for node in model.graph.nodes:
                    ann = node.meta.get("quantization_annotation")
                    if ann is not None and any("quantization_annotation" not in n.meta for n in _shared_refs(ann)):
                        del node.meta["quantization_annotation"]
                        changed = True
            return model

        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def validate(self, model):
            return inner.validate(model)

    return KeepFloat()


def quantize(spec, path: Path, recipe, precision: str, calibration) -> dict:
    """Export ``spec`` to ``path`` quantized with ``recipe`` (torchao PT2E / quantize_, then XNNPACK lowering);
    returns the export facts, with ``quantization`` facts."""
    from mobilediff.io import atomic_write_bytes

    module, qfacts = _quantized_module(spec, recipe, calibration)
    program, facts = lower(module, spec.example_inputs(), "fp32")
    atomic_write_bytes(Path(path), program.buffer)
    return {**facts, "quantization": qfacts}


def _quantized_module(spec, recipe, calibration):
    """The component as a quantized torch module ready for torch.export + XNNPACK lowering."""
    import copy

    from mobilediff.quantize import kept_modules, static_rows

    inputs = spec.example_inputs()
    keep = kept_modules(recipe, spec)
    from mobilediff.quantize import DYNAMIC_INT8, STATIC_INT8

    if recipe.kind == STATIC_INT8:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        def kept(node) -> bool:
            stack = node.meta.get("nn_module_stack", {}).values()
            return any(fqn == k or fqn.startswith(k + ".") for fqn, _ in stack for k in keep)

        quantizer = _KeepFloat(XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)),
                               kept)
        with torch.no_grad():
            graph = torch.export.export(spec.module, inputs, strict=False).module()
            prepared = prepare_pt2e(graph, quantizer)
            rows = static_rows(spec, calibration.batches(spec.name))
            for row in rows:
                prepared(*row)
            return convert_pt2e(prepared), {"calibration_batches": len(rows)}
    if recipe.kind == DYNAMIC_INT8:  # int8 dynamic activations, grouped intN Linear weights (XNNPACK 8daNw)
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerGroup

        module = copy.deepcopy(spec.module)
        group, bits = recipe.options["group_size"], recipe.options["weight_bits"]

        def eligible(m, fqn):
            return (isinstance(m, torch.nn.Linear) and m.in_features % group == 0
                    and not any(fqn == k or fqn.startswith(k + ".") for k in keep))

        quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=getattr(torch, f"int{bits}"),
                                                                weight_granularity=PerGroup(group)), filter_fn=eligible)
        n = sum(1 for fqn, m in spec.module.named_modules() if eligible(m, fqn))
        return module, {f"linear_layers_{bits}bit": n}
    raise MobilediffError(f"executorch has no quantizer for {recipe.kind} recipes ({recipe.name})")
