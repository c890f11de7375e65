"""shared_provenance: ExecuTorch lowering with fx provenance records shared instead of deep-copied gives the same
program bytes, keeps the provenance chain, and puts torch back as it was on exit (also after an error)."""
import pytest
import torch

from mobilediff.targets.provenance import shared_provenance


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.out = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = torch.nn.functional.silu(self.norm(self.conv(x)))
        return self.out(torch.nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))


def _stock_lower(module, inputs):
    """The same lowering as mobilediff.targets.executorch.lower, without shared_provenance."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from mobilediff.targets.xnnpack_forms import decompositions

    with torch.no_grad():
        ep = torch.export.export(module, inputs, strict=False).run_decompositions(decompositions())
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        return edge, edge.to_executorch().buffer


def test_lowered_program_is_byte_identical_and_keeps_its_provenance():
    from torch.fx.traceback import NodeSource

    from mobilediff.targets.executorch import lower

    torch.manual_seed(0)
    module, inputs = Block().eval(), (torch.randn(1, 4, 8, 8),)
    edge, stock = _stock_lower(module, inputs)
    original = NodeSource.__init__
    program, facts = lower(module, inputs)
    assert NodeSource.__init__ is original  # restored on exit
    assert program.buffer == stock and facts["delegated_subgraphs"] >= 1
    with shared_provenance():
        ep = torch.export.export(module, inputs, strict=False).run_decompositions({})
    chains = [n.meta["from_node"] for n in ep.graph.nodes if n.meta.get("from_node")]
    assert chains and all(isinstance(s, NodeSource) for c in chains for s in c)  # the chain is kept, not dropped


def test_torch_is_restored_after_an_error_and_nesting():
    from torch.fx.traceback import NodeSource

    original = NodeSource.__init__
    with pytest.raises(RuntimeError):
        with shared_provenance():
            with shared_provenance():
                assert NodeSource.__init__ is not original
            assert NodeSource.__init__ is not original  # the outer block still shares
            raise RuntimeError("boom")
    assert NodeSource.__init__ is original
