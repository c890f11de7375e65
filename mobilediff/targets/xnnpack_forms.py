"""Operators rewritten into forms XNNPACK takes whole, applied to an exported program before ExecuTorch lowering.

XNNPACK's partitioner has no group norm, layer norm, nearest upsampling or scaled-dot-product attention; torch's
own decompositions of them also bring in operators it does not take (the safe-softmax mask handling of the SDPA
math path: ``logical_not`` / ``any`` / ``where`` / ``full_like`` / ``eq``). Each such operator leaves the graph on
the portable kernels and splits it into many delegated pieces (the default UNet: 116 subgraphs, 585 nodes outside
XNNPACK). The decompositions here express the same arithmetic with operators XNNPACK does take -- view, permute,
``mean.dim`` over the two innermost axes of a 4-D tensor, sub, mul, add, rsqrt, bmm, softmax over the last axis,
cat -- so a UNet or a VAE decoder lowers as a few delegated subgraphs. Numerically they are the same model
(normalisation with the biased variance as torch computes it, attention with the softmax over keys); the bundle's
parity check measures it, as for any graph.

Attention masks and causal attention (the text encoder) keep working: the mask arithmetic itself then runs outside
XNNPACK, the matrix products inside.

Three forms are for speed rather than delegation, measured per kernel with an ETDump on the SD-1.5-shaped UNet at
512 px (CFG batch 2, 2 threads of an AMD EPYC host):

- Attention scales the queries, not the scores: the scale is one pass over a (tokens x head width) tensor instead of
  one over the (tokens x tokens) score matrix -- 33 ms of 220 for a 4096-token self-attention.
- GroupNorm multiplies its weight into the (batch, groups, channels per group, 1) scale before the scale meets the
  activation: one pass over the activation fewer.
- A convolution whose weight is larger than :data:`CONV_WEIGHT_BUDGET_BYTES` runs as the sum of convolutions over
  groups of its input channels (:func:`split_wide_convs`, applied to the module before export). XNNPACK's
  convolution streams its whole packed weight once per tile of output pixels, so a weight that outgrows the
  last-level cache comes from memory again for every tile: the 3x3 convolutions with 1280-2560 input channels ran
  at 180-220 GFLOP/s against 380-500 for those under 16 MiB, and split most reach 420-500 (1280 -> 1280 channels at
  32x32: 292 -> 121 ms; benchmarks/xnnpack_convs.py, benchmarks/results/xnnpack_convs.md). XNNPACK's fully connected
  operator does not have this problem (a 52 MB weight still runs at 430 GFLOP/s), so linear layers are left alone.
"""
from __future__ import annotations

import copy
import math

import torch

aten = torch.ops.aten

# the largest convolution weight XNNPACK is given whole; wider ones are split over input channels (see above)
CONV_WEIGHT_BUDGET_BYTES = 16 * 2**20


def _moments_4d(x4: torch.Tensor, eps: float):
    """x - mean, the mean and 1 / sqrt(var + eps) over axes 2 and 3 of a 4-D tensor (biased variance, as torch's
    norms)."""
    mean = aten.mean.dim(x4, [2, 3], True)
    centred = aten.sub.Tensor(x4, mean)
    var = aten.mean.dim(aten.mul.Tensor(centred, centred), [2, 3], True)
    return centred, mean, aten.rsqrt.default(aten.add.Tensor(var, eps))


def native_group_norm(x, weight, bias, n, c, hw, groups, eps):
    centred, mean, rstd = _moments_4d(aten.reshape.default(x, [n, groups, c // groups, hw]), eps)
    # the weight joins the (n, groups, c/groups, 1) scale before it meets the activation: one pass over it, not two
    per_channel = [1, groups, c // groups, 1]
    scale = rstd if weight is None else aten.mul.Tensor(rstd, aten.reshape.default(weight, per_channel))
    y = aten.mul.Tensor(centred, scale)
    if bias is not None:
        y = aten.add.Tensor(y, aten.reshape.default(bias, per_channel))
    out = aten.reshape.default(y, list(x.shape))
    return out, aten.reshape.default(mean, [n, groups]), aten.reshape.default(rstd, [n, groups])


def group_norm(x, groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    n, c = x.shape[0], x.shape[1]
    hw = math.prod(x.shape[2:]) if x.dim() > 2 else 1
    return native_group_norm(x, weight, bias, n, c, hw, groups, eps)[0]


def native_layer_norm(x, normalized_shape, weight, bias, eps):
    inner = math.prod(normalized_shape)
    outer = x.numel() // inner if inner else 0
    rows = aten.reshape.default(x, [1, outer, inner, 1])  # mean.dim over axes 2, 3 = over the normalised axes
    centred, mean, rstd = _moments_4d(rows, eps)
    y = aten.reshape.default(aten.mul.Tensor(centred, rstd), list(x.shape))
    if weight is not None:
        y = aten.mul.Tensor(y, weight)
    if bias is not None:
        y = aten.add.Tensor(y, bias)
    stat_shape = list(x.shape[:x.dim() - len(normalized_shape)]) + [1] * len(normalized_shape)
    return y, aten.reshape.default(mean, stat_shape), aten.reshape.default(rstd, stat_shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return native_layer_norm(x, list(normalized_shape), weight, bias, eps)[0]


def _repeat_axis(x4: torch.Tensor, axis: int, k: int) -> torch.Tensor:
    """Each element of ``x4`` (4-D) repeated ``k`` times along ``axis`` (2 or 3), by cat on a trailing axis."""
    n, c, h, w = x4.shape
    if axis == 3:  # (n, c*h, w, 1) x k -> (n, c*h, w, k) -> (n, c, h, w*k)
        col = aten.reshape.default(x4, [n, c * h, w, 1])
        return aten.reshape.default(aten.cat.default(_copies(col, k), 3), [n, c, h, w * k])
    # axis 2: (n, c*h, 1, w) x k -> (n, c*h, k, w) -> (n, c, h*k, w)
    row = aten.reshape.default(x4, [n, c * h, 1, w])
    return aten.reshape.default(aten.cat.default(_copies(row, k), 2), [n, c, h * k, w])


def _copies(x: torch.Tensor, k: int) -> list:
    """``x`` and k - 1 clones of it: XNNPACK's cat counts distinct inputs, so [x, x] would stay outside it."""
    return [x] + [aten.clone.default(x) for _ in range(k - 1)]


def _nearest_factors(x, output_size, scale_factors):
    h, w = x.shape[2], x.shape[3]
    if output_size is not None:
        oh, ow = output_size
    else:
        oh, ow = int(math.floor(h * scale_factors[0])), int(math.floor(w * scale_factors[1]))
    if h == 0 or w == 0 or oh % h or ow % w:
        return None
    return oh // h, ow // w


def upsample_nearest2d_vec(x, output_size, scale_factors):
    factors = _nearest_factors(x, output_size, scale_factors)
    if factors is None:  # a non-integer factor: torch's own decomposition
        from torch._decomp import decomposition_table

        return decomposition_table[aten.upsample_nearest2d.vec](x, output_size, scale_factors)
    y = x
    if factors[1] > 1:
        y = _repeat_axis(y, 3, factors[1])
    if factors[0] > 1:
        y = _repeat_axis(y, 2, factors[0])
    return y if y is not x else aten.clone.default(x)


def upsample_nearest2d(x, output_size, scales_h=None, scales_w=None):
    oh, ow = output_size
    if x.shape[2] and x.shape[3] and oh % x.shape[2] == 0 and ow % x.shape[3] == 0:
        return upsample_nearest2d_vec(x, list(output_size), None)
    from torch._decomp import decomposition_table

    return decomposition_table[aten.upsample_nearest2d.default](x, output_size, scales_h, scales_w)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """softmax(q k^T * scale + mask) v with batched matrix products over (batch x heads)."""
    *lead, lq, d = q.shape
    lk, dv = k.shape[-2], v.shape[-1]
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k = aten.repeat_interleave.self_int(k, rep, -3)
        v = aten.repeat_interleave.self_int(v, rep, -3)
    b = math.prod(lead)
    q3 = aten.reshape.default(q, [b, lq, d])
    kt = aten.permute.default(aten.reshape.default(k, [b, lk, d]), [0, 2, 1])
    v3 = aten.reshape.default(v, [b, lk, dv])
    s = 1.0 / math.sqrt(d) if scale is None else scale
    scores = aten.bmm.default(aten.mul.Tensor(q3, s), kt)  # (q s) k^T: the scale costs a pass over q, not the scores
    if is_causal:
        keep = aten.tril.default(aten.ones.default([lq, lk], dtype=torch.bool, device=q.device))
        attn_mask = keep if attn_mask is None else aten.logical_and.default(attn_mask, keep)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = aten.where.Scalar(attn_mask, 0.0, float("-inf"))
        scores = aten.reshape.default(aten.add.Tensor(aten.reshape.default(scores, [*lead, lq, lk]), attn_mask), [b, lq, lk])
    probs = aten._softmax.default(scores, -1, False)
    return aten.reshape.default(aten.bmm.default(probs, v3), [*lead, lq, dv])


def split_with_sizes(x, split_sizes, dim=0):
    """Pieces of ``x`` as slices (XNNPACK takes slice_copy, not split_with_sizes_copy: GEGLU's chunk)."""
    out, start = [], 0
    for size in split_sizes:
        out.append(aten.slice.Tensor(x, dim, start, start + size))
        start += size
    return out


def split(x, split_size, dim=0):
    n = x.shape[dim]
    sizes = [min(split_size, n - i) for i in range(0, n, split_size)] if split_size else [n]
    return split_with_sizes(x, sizes, dim)


def chunk(x, chunks, dim=0):
    n = x.shape[dim]
    return split(x, -(-n // chunks) if chunks else n, dim)


class InputSplitConv2d(torch.nn.Module):
    """``conv`` as the sum over groups of its input channels of a convolution with that group's slice of the weight
    (its own parameter); the bias joins the first. The same arithmetic up to the order of the sums."""

    def __init__(self, conv: torch.nn.Conv2d, parts: int):
        super().__init__()
        cin = conv.in_channels
        width = -(-cin // parts)
        self.bounds = [(a, min(a + width, cin)) for a in range(0, cin, width)]
        weight = conv.weight.detach()
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(weight[:, a:b].contiguous(), requires_grad=False) for a, b in self.bounds)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x):
        out = None
        for i, ((a, b), w) in enumerate(zip(self.bounds, self.weights)):
            y = torch.nn.functional.conv2d(x[:, a:b], w, self.bias if i == 0 else None, self.stride, self.padding,
                                           self.dilation)
            out = y if out is None else out + y
        return out


def split_parts(conv: torch.nn.Module, budget: float) -> int:
    """How many input-channel groups ``conv`` is split into (1: left whole)."""
    if type(conv) is not torch.nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros" or conv.in_channels < 2:
        return 1
    nbytes = conv.weight.numel() * conv.weight.element_size()
    return min(conv.in_channels, -(-nbytes // budget)) if nbytes > budget else 1


def split_wide_convs(module: torch.nn.Module, budget: float | None = None):
    """``module`` with every plain ``Conv2d`` whose weight exceeds ``budget`` bytes (default
    :data:`CONV_WEIGHT_BUDGET_BYTES`; ``float("inf")`` splits none) replaced by an :class:`InputSplitConv2d`, and how
    many were replaced. ``module`` itself is not changed: the modules on the path to a replaced convolution are
    shallow copies with their own child table, the rest is shared."""
    budget = CONV_WEIGHT_BUDGET_BYTES if budget is None else budget
    plan = {name: parts for name, m in module.named_modules() if (parts := split_parts(m, budget)) > 1}
    if not plan:
        return module, 0
    if "" in plan:  # the module is itself a wide convolution
        return InputSplitConv2d(module, plan[""]), 1
    copies: dict[str, torch.nn.Module] = {}

    def own(path: str) -> torch.nn.Module:
        """The copy of the module at ``path`` (made, with its parents' copies, on first use)."""
        if path not in copies:
            parent_path, _, leaf = path.rpartition(".")
            parent = own(parent_path) if path else None
            original = parent._modules[leaf] if path else module
            clone = copy.copy(original)
            clone._modules = dict(original._modules)
            if parent is not None:
                parent._modules[leaf] = clone
            copies[path] = clone
        return copies[path]

    for name, parts in plan.items():
        parent_path, _, leaf = name.rpartition(".")
        parent = own(parent_path)
        parent._modules[leaf] = InputSplitConv2d(parent._modules[leaf], parts)
    return copies[""], len(plan)


def decompositions() -> dict:
    """The decomposition table for ``ExportedProgram.run_decompositions``: only the operators above, so that the
    rest (linear among them) reaches ExecuTorch's lowering as it would without this table."""
    table = {}
    table[aten.group_norm.default] = group_norm
    table[aten.native_group_norm.default] = native_group_norm
    table[aten.layer_norm.default] = layer_norm
    table[aten.native_layer_norm.default] = native_layer_norm
    table[aten.upsample_nearest2d.vec] = upsample_nearest2d_vec
    table[aten.upsample_nearest2d.default] = upsample_nearest2d
    table[aten.scaled_dot_product_attention.default] = scaled_dot_product_attention
    table[aten.split_with_sizes.default] = split_with_sizes
    table[aten.split.Tensor] = split
    table[aten.chunk.default] = chunk
    return table
