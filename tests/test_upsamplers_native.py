"""Every learnable upsampler runs forward + backward on the compiled kernels of the running torch.

The other upsampler tests allow the reference fallback (they test semantics); this one fails on
any fallback: no "no compiled kernel" warning, and every op call reaches a compiled kernel. It is
the check that the compiled ops load and register on each supported torch (2.1 to 2.14).
"""
import warnings

import pytest
import torch

from dlu_mm.ops import dispatch
from dlu_mm.upsamplers import build_upsampler, is_guided

C = 16
# upsampler -> the compiled ops its forward calls
OPS = {
    'CARAFE': {'reassemble'},
    'DLU': {'guided_reassemble'},
    'DDFUp': {'ddf'},
    'LDAAQU': {'local_deformable_attention'},
    'FADE': {'reassemble'},
    'SAPA': {'reassemble'},
    'DySample': {'subpixel_sample'},
}


@pytest.mark.parametrize('name', list(OPS))
def test_forward_backward_on_compiled_kernels(name):
    torch.manual_seed(0)
    module = build_upsampler(dict(type=name), C, 2)
    x = torch.randn(2, C, 5, 7, requires_grad=True)
    guide = None
    if is_guided(module):
        g = module.guide_scale_factor
        guide = torch.randn(2, module.guide_channels, g * 5, g * 7, requires_grad=True)
    calls = []

    def hook(op, device_type, reference, args):
        assert dispatch.native_available(op, device_type), \
            dispatch.why_native_unavailable(op, device_type)
        calls.append(op)
        return dispatch.run(op, device_type, reference, args)

    previous = dispatch.set_dispatch_hook(hook)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # a fallback warning fails the test
            with dispatch.use_backend('auto'):
                y = module(x, guide)
                y.square().sum().backward()
    finally:
        dispatch.set_dispatch_hook(previous)
    assert y.shape == (2, C, 10, 14)
    assert set(calls) == OPS[name]
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for param in module.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
