"""The operator forms XNNPACK takes whole (mobilediff.targets.xnnpack_forms): each one computes what torch computes,
a module lowers as few delegated subgraphs with nothing on portable compute kernels, and convolutions too wide for
XNNPACK's weight streaming are split over input channels without touching the caller's module."""
import math

import pytest
import torch

from mobilediff.targets import xnnpack_forms as forms

F = torch.nn.functional


def _close(a, b, tol=1e-5):
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("shape, groups", [((2, 8, 5, 3), 4), ((1, 6, 7), 3), ((3, 4, 2, 2, 2), 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_form_equals_torch(shape, groups, affine):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 1.5
    w, b = (torch.randn(shape[1]), torch.randn(shape[1])) if affine else (None, None)
    _close(forms.group_norm(x, groups, w, b, 1e-5), F.group_norm(x, groups, w, b, 1e-5))
    out, mean, rstd = forms.native_group_norm(x, w, b, shape[0], shape[1], math.prod(shape[2:]), groups, 1e-5)
    ref = torch.ops.aten.native_group_norm(x, w, b, shape[0], shape[1], math.prod(shape[2:]), groups, 1e-5)
    for got, want in zip((out, mean, rstd), ref):
        _close(got, want)


def test_layer_norm_form_equals_torch():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 9, 12), torch.randn(12), torch.randn(12)
    _close(forms.layer_norm(x, [12], w, b, 1e-6), F.layer_norm(x, [12], w, b, 1e-6))


@pytest.mark.parametrize("mask", [None, "bool", "float", "causal"])
def test_attention_form_equals_torch(mask):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 4)
    kwargs = {}
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(7, 5) > 0.3
        kwargs["attn_mask"][:, 0] = True  # every query sees a key
    elif mask == "float":
        kwargs["attn_mask"] = torch.randn(2, 1, 7, 5)
    elif mask == "causal":
        k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
        kwargs["is_causal"] = True
    _close(forms.scaled_dot_product_attention(q, k, v, **kwargs), F.scaled_dot_product_attention(q, k, v, **kwargs))
    _close(forms.scaled_dot_product_attention(q, k, v, scale=0.3, **kwargs),
           F.scaled_dot_product_attention(q, k, v, scale=0.3, **kwargs))


@pytest.mark.parametrize("factor", [2, 3])
def test_nearest_upsampling_form_equals_torch(factor):
    x = torch.randn(1, 3, 4, 5)
    _close(forms.upsample_nearest2d_vec(x, None, [float(factor)] * 2), F.interpolate(x, scale_factor=factor))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Conv2d(24, 8, 3, padding=1), torch.nn.SiLU())
        self.small = torch.nn.Conv2d(8, 8, 1)
        self.strided = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=False)
        self.grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)

    def forward(self, x):
        return self.strided(self.grouped(self.small(self.inner(x))))


def test_wide_convolutions_are_split_over_input_channels_without_touching_the_module():
    torch.manual_seed(0)
    net = Net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    children = dict(net.inner._modules)
    x = torch.randn(2, 24, 9, 9)
    # budget: the 24 -> 8 3x3 weight (6912 bytes) splits in 6 groups of 4 channels, the 8 -> 6 strided one (1728
    # bytes) in 2; the 1x1 one fits and the grouped one is never split
    split, n = forms.split_wide_convs(net, budget=1200)
    assert n == 2
    assert isinstance(split.inner[0], forms.InputSplitConv2d) and len(split.inner[0].weights) == 6
    assert isinstance(split.strided, forms.InputSplitConv2d) and len(split.strided.weights) == 2
    assert split.small is net.small and split.grouped is net.grouped  # shared, not copied
    assert type(net.inner[0]) is torch.nn.Conv2d and type(net.strided) is torch.nn.Conv2d  # the caller's module
    assert dict(net.inner._modules) == children
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        _close(split(x), net(x))
    assert forms.split_wide_convs(net)[1] == 0 and forms.split_wide_convs(net)[0] is net  # default budget: all fit
    bare, n = forms.split_wide_convs(net.inner[0], budget=1200)  # a convolution on its own
    assert n == 1 and isinstance(bare, forms.InputSplitConv2d)
    with torch.no_grad():
        _close(bare(x), net.inner[0](x))


def test_lowered_module_with_every_form_is_delegated_and_matches_torch(monkeypatch):
    """GroupNorm, SiLU, attention, nearest upsampling, GEGLU's chunk and a split convolution: one XNNPACK subgraph,
    no compute operator left outside it, outputs equal to eager."""
    pytest.importorskip("executorch")
    from diffusers.models.attention import BasicTransformerBlock
    from executorch.runtime import Runtime

    from mobilediff.targets.executorch import lower

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.GroupNorm(4, 16)
            self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)
            self.attn = BasicTransformerBlock(16, 2, 8, activation_fn="geglu")

        def forward(self, x):
            h = self.conv(F.silu(self.norm(x)))
            n, c, hh, ww = h.shape
            t = self.attn(h.permute(0, 2, 3, 1).reshape(n, hh * ww, c))
            h = t.reshape(n, hh, ww, c).permute(0, 3, 1, 2)
            return F.interpolate(h, scale_factor=2.0, mode="nearest")

    torch.manual_seed(0)
    block, x = Block().eval(), torch.randn(2, 16, 6, 6)
    monkeypatch.setattr(forms, "CONV_WEIGHT_BUDGET_BYTES", 4096)  # the 16 -> 16 3x3 conv (9216 bytes) in 3 parts
    program, facts = lower(block, (x,))
    assert facts["split_convolutions"] == 1
    assert facts["delegated_subgraphs"] == 1
    assert set(facts["non_delegated_ops"]) <= {"getitem", "alloc"}, facts["non_delegated_ops"]
    method = Runtime.get().load_program(program.buffer).load_method("forward")
    with torch.no_grad():
        _close(method.execute([x])[0], block(x), 1e-4)
