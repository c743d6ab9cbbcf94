"""Seeded random tensors and weights shared by the operator tests."""
import torch


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomise_(module, std, seed=0):
    """Random parameters everywhere (inits make kernels near-uniform and offsets zero; this makes
    every path, offsets included, live)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module
