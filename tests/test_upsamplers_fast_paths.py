"""The upsamplers' fast forms against their reference forms (same parameters, same maps).

DDF-Up evaluates its s*s spatial branches as one dense conv composed from the branch parameters
(``DDFUp.spatial_filters``); ``DDFUp.branch_filters`` runs them branch by branch. Under an
analysis dispatch mode (FLOP counting) the module takes the branch-wise form.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dlu_mm.upsamplers.ddf_up import DDFUp


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.conv_weights = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket == torch.ops.aten.convolution:
            self.conv_weights.append(tuple(args[1].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('kwargs', [dict(), dict(head=2, dw_kernel_size=5, scale_factor=3),
                                    dict(joint_channels=3, kernel_combine='add')])
def test_ddfup_composed_spatial_filters_match_branches(kwargs):
    m = randomise(DDFUp(4, **kwargs).double())
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    guide = torch.randn(2, 3, 5, 6, dtype=torch.float64) if m.requires_guide else None
    fast = m.spatial_filters(x, guide)
    reference = torch.stack([spatial for _, spatial in m.branch_filters(x, guide)], 1)
    torch.testing.assert_close(fast, reference)
    # and the gradients w.r.t. every parameter and x agree
    xr = x.clone().requires_grad_()
    g_out = torch.randn_like(fast)
    fast_grads = torch.autograd.grad((m.spatial_filters(xr, guide) * g_out).sum(),
                                     [xr, *m.parameters()], allow_unused=True)
    ref = torch.stack([s for _, s in m.branch_filters(xr, guide)], 1)
    ref_grads = torch.autograd.grad((ref * g_out).sum(), [xr, *m.parameters()],
                                    allow_unused=True)
    for a, b in zip(fast_grads, ref_grads):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b)


def test_ddfup_branchwise_under_dispatch_mode():
    m = DDFUp(8)
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        plain = m(x)
        with Recorder() as rec:
            recorded = m(x)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)
    # depthwise 3x3 and 1x1 convs per branch, no composed (4*9, 8, 3, 3) conv
    assert (4 * 9, 8, 3, 3) not in rec.conv_weights
    assert rec.conv_weights.count((8, 1, 3, 3)) == 4


@pytest.mark.parametrize('scale', [2, 3])
def test_ddfup_training_interleave_matches_pixel_shuffle(scale):
    from dlu_mm.upsamplers.ddf_up import _Interleave
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(scale * scale)]
    out = _Interleave.apply(scale, *maps)
    ref = torch.nn.functional.pixel_shuffle(torch.stack(maps, 2).view(2, 3 * scale ** 2, 4, 5),
                                            scale)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    g_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, maps, g_out), torch.autograd.grad(ref, maps, g_out)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    m = randomise(DDFUp(4, scale, head=2).double())
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        shuffled = m(x)  # stack + pixel_shuffle form
    torch.testing.assert_close(m(x.requires_grad_()), shuffled, rtol=0, atol=0)
