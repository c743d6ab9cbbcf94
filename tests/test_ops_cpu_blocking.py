"""The CPU kernels' blocking (ops/csrc/ddf/ddf_cpu.cpp, local_deformable_attention_cpu.cpp,
subpixel_sample_cpu.cpp) against the pure-PyTorch references, forward and backward, at sizes
that cross every block boundary.

The ddf CPU kernel works on output rows with contiguous column ranges per tap and on blocks of
8 channels; the local_deformable_attention kernel on blocks of 16 output pixels, (head, group)
channel segments, channel-last corner runs and scatter pieces of <= 64 channels; the subpixel_sample
backward sweeps a whole group per task or, with fewer (n, group) pairs than about twice the
threads, splits the group's channels into pieces in a second pass, with the same sums. The small
cases of test_ops_native.py fit inside one block; these have remainders and segments of every
kind.
"""
import pytest
import torch

from dlu_mm.ops import native as compiled
from op_cases import BUILDERS, cast_case, check_native_matches_reference, run_op

CASES = [
    ('ddf', dict(n=1, c=19, h=9, w=37, k=3)),                       # channel block remainder
    ('ddf', dict(n=2, c=10, h=11, w=23, k=5, dilation=2, combine='add')),
    ('ddf', dict(n=1, c=9, h=12, w=29, k=3, dilation=2, stride=2)),  # strided column maps
    ('ddf', dict(n=1, c=3, h=7, w=5, k=7, dilation=3, stride=3)),   # taps wider than the map
    # heads span groups (segments per group), pixel blocks 16 + 16 + 8, scatter pieces 64 + 16
    ('local_deformable_attention', dict(n=2, d=16, c=160, h=6, w=9, sh=11, sw=40, points=9,
                                        heads=1, groups=2)),
    # groups span heads, no rpb
    ('local_deformable_attention', dict(n=1, d=24, c=72, h=5, w=7, sh=9, sw=21, points=4,
                                        heads=3, groups=1, rpb=False)),
    # heads and groups interleaved (segments cut by both), 1-pixel-high input
    ('local_deformable_attention', dict(n=1, d=12, c=12, h=1, w=6, sh=3, sw=17, points=5,
                                        heads=2, groups=3)),
    ('subpixel_sample', dict(n=1, c=10, h=7, w=13, groups=2, s=3)),  # 5-channel groups
    ('subpixel_sample', dict(n=3, c=12, h=5, w=4, groups=4, s=2)),
]
IDS = [f'{op}-{"-".join(f"{k}{v}" for k, v in kw.items())}' for op, kw in CASES]


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize('op,kwargs', CASES, ids=IDS)
def test_blocked_cpu_kernels_match_reference(op, kwargs, dtype):
    check_native_matches_reference(op, kwargs, dtype, seed=3)


@pytest.mark.parametrize('op,kwargs', CASES[:1] + CASES[4:5], ids=IDS[:1] + IDS[4:5])
def test_blocked_cpu_backward_is_deterministic(op, kwargs):
    g = torch.Generator().manual_seed(4)
    tensors, args = cast_case(op, *BUILDERS[op](g, **kwargs), torch.float32)
    native = getattr(compiled, op)
    grad_out = torch.randn(native(*tensors, *args).shape, generator=g)
    first = run_op(native, op, tensors, args, grad_out)
    second = run_op(native, op, tensors, args, grad_out)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize('threads', [1, 3, 8])
def test_subpixel_backward_split_matches_whole_group_sweep(threads):
    """The backward's two task layouts (whole group per task, or channel pieces in a second
    pass; chosen by the thread count) sum in the same order: bitwise equal results."""
    g = torch.Generator().manual_seed(5)
    tensors, args = cast_case('subpixel_sample',
                          *BUILDERS['subpixel_sample'](g, n=1, c=20, h=6, w=9, groups=2, s=2),
                          torch.float32)
    native = compiled.subpixel_sample
    grad_out = torch.randn(native(*tensors, *args).shape, generator=g)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # 2 (n, g) tasks >= 2 * 1 thread: whole groups
        whole = run_op(native, 'subpixel_sample', tensors, args, grad_out)
        torch.set_num_threads(threads)
        other = run_op(native, 'subpixel_sample', tensors, args, grad_out)
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(whole, other):
        assert torch.equal(a, b)
