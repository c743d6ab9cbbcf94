"""Every upsampler compiles with ``torch.compile(fullgraph=True)``: one graph, no break, in
training and in eval mode, forward and backward equal to eager (compiled kernels underneath).

The 'aot_eager' backend runs dynamo's capture and AOTAutograd (fake kernels, autograd of the
compiled ops) without code generation, so the test is quick on the CPU; one upsampler is also
run through inductor, the default backend.
"""
import pytest
import torch

from dlu_mm.ops import native_available
from dlu_mm.upsamplers import build_upsampler, is_guided

NAMES = ['CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA']
C = 16

if not native_available('reassemble', 'cpu'):
    pytest.skip('the compiled ops are not built', allow_module_level=True)


def _inputs(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, C, 5, 7, generator=g, dtype=torch.float64)
    if not is_guided(module):
        return x, None
    s = module.guide_scale_factor
    return x, torch.randn(2, module.guide_channels, 5 * s, 7 * s, generator=g,
                          dtype=torch.float64)


def _run(module, x, guide):
    """Output and the gradients of x, the guide and every parameter."""
    module.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    guide = None if guide is None else guide.detach().requires_grad_()
    y = module(x, guide)
    weight = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)  # a gradient that is not all ones
    (y * weight).sum().backward()
    grads = [x.grad] + ([] if guide is None else [guide.grad])
    grads += [p.grad if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]
    return y.detach(), grads


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('name', NAMES)
def test_fullgraph_matches_eager(name, mode, backend='aot_eager'):
    torch.manual_seed(0)
    # float64: eager and compiled differ only by summation order, far below the tolerance
    module = build_upsampler(dict(type=name), C, 2).double().train(mode == 'train')
    x, guide = _inputs(module)
    expected, expected_grads = _run(module, x, guide)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    actual, actual_grads = _run(compiled, x, guide)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    assert len(actual_grads) == len(expected_grads)
    for i, (a, e) in enumerate(zip(actual_grads, expected_grads)):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9, msg=lambda m: f'grad {i}: {m}')


def test_inductor_dlu():
    """The default backend (inductor code generation around the compiled ops)."""
    test_fullgraph_matches_eager('DLU', 'train', backend='inductor')
