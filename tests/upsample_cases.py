"""Shared cases for the tests of necks / heads that take an ``upsample_cfg``: the upsampler
configs to sweep (small where the default would be slow) and hooks that record what each
upsampler receives."""
import torch

LEARNABLE = ('CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA')
GUIDED = ('FADE', 'SAPA')


def upsampler_cfg(name):
    """A small config of the upsampler ``name`` (works at any channel count divisible by 8)."""
    cfg = dict(type=name)
    if name == 'SAPA':
        cfg.update(embedding_dim=8)
    elif name in ('CARAFE', 'DLU', 'FADE'):
        cfg.update(compressed_channels=8)
    return cfg


def record_calls(upsamplers):
    """Forward pre-hooks on ``upsamplers``; returns {index: (x, guide)} filled on forward."""
    seen = {}
    for index, upsampler in enumerate(upsamplers):
        upsampler.register_forward_pre_hook(
            lambda module, args, index=index: seen.__setitem__(index, tuple(args)))
    return seen


def backward_and_check(outputs, modules):
    """Sum the outputs, backprop, and check every parameter of ``modules`` got a finite grad."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    sum(o.float().sum() for o in outputs if torch.is_tensor(o)).backward()
    for module in modules:
        for name, p in module.named_parameters():
            assert p.grad is not None, f'{type(module).__name__}.{name} got no gradient'
            assert torch.isfinite(p.grad).all(), f'{type(module).__name__}.{name}'


def assert_init_ends_with_dlu_init(module, upsamplers):
    """Fill every parameter with 1, run ``module.init_weights()`` (a global Kaiming / Xavier
    pass, then each upsampler's own init): the DLU ``upsamplers`` end with their zero-initialised
    guidance offsets."""
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(1.0)
    module.init_weights()
    for up in upsamplers:
        assert torch.count_nonzero(up.guidance_offsets.weight) == 0


def randn_levels(channels, sizes, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=gen) for c, (h, w) in zip(channels, sizes)]


def tensor_forward_backward(model, scope, size=(128, 128), batch=2):
    """One training step's forward + backward on random images (dlu_mm.swap.forward_backward),
    asserting that something required grad."""
    from dlu_mm.swap import forward_backward
    try:
        return forward_backward(model, scope, size, batch)
    except RuntimeError as error:
        raise AssertionError(str(error)) from error
