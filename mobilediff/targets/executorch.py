"""ExecuTorch target: torch.export -> to_edge_transform_and_lower(XNNPACK) -> .pte, run back with executorch.runtime.

Shapes are static (named dimensions fixed at the declaration's values): XNNPACK plans memory for them.
How much of the graph XNNPACK takes is reported from executorch's own delegation info; the rest runs on
the portable CPU kernels.
"""
from __future__ import annotations

from pathlib import Path

import torch

from mobilediff.parity import compare

EXT = "pte"


def lower(module, inputs, precision: str = "fp32"):
    """Export and lower ``module`` for XNNPACK; returns (executorch program manager, delegation facts)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    if precision == "fp16":
        from mobilediff.components import Fp16IO

        module = Fp16IO(module)
    with torch.no_grad():
        ep = torch.export.export(module, inputs, strict=False)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    info = get_delegation_info(edge.exported_program().graph_module)
    non_delegated: dict[str, int] = {}
    for op, breakdown in info.delegation_by_operator.items():
        if breakdown.non_delegated > 0:
            non_delegated[op] = int(breakdown.non_delegated)
    facts = {"backend": "XNNPACK", "delegated_nodes": info.num_delegated_nodes,
             "non_delegated_nodes": info.num_non_delegated_nodes, "delegated_subgraphs": info.num_delegated_subgraphs,
             "non_delegated_ops": dict(sorted(non_delegated.items(), key=lambda kv: -kv[1]))}
    return edge.to_executorch(), facts


def export(spec, path: Path, precision: str) -> dict:
    from mobilediff.io import atomic_write_bytes

    program, facts = lower(spec.module, spec.example_inputs(), precision)
    atomic_write_bytes(Path(path), program.buffer)
    return facts


def load_method(path: Path):
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path)).load_method("forward")


def run(method, inputs) -> list[torch.Tensor]:
    return [o.float() for o in method.execute(list(inputs))]


def validate(spec, path: Path, precision: str, inputs, reference) -> dict:
    method = load_method(path)
    got = run(method, inputs)
    record = compare(spec.name, [s.name for s in spec.outputs], got, reference, precision, "executorch")
    record["runtime"] = "executorch.runtime (XNNPACK + portable kernels)"
    return record
