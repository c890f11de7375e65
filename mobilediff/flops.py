"""FLOPs of one call of a module, counted on the real PyTorch module by ``torch.utils.flop_counter.FlopCounterMode``:
2 per multiply-add of the convolutions, matmuls and attention; activations, normalisations, upsampling and adds are
not counted (they are memory-bound and a small share of the time of these models). The one counter behind the
manifest's ``gflop`` per component, the scaling study and the decoder reports."""
from __future__ import annotations


def count_gflop(module, inputs: tuple) -> float:
    """GFLOP of one call ``module(*inputs)`` (no gradients)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() / 1e9
