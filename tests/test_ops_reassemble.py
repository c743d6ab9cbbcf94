"""reassemble / guided_reassemble: public ops and references against independent computations."""
import pytest
import torch
import torch.nn.functional as F

from dlu_mm.ops import (guided_reassemble, guided_reassemble_reference, reassemble,
                        reassemble_reference)
from dlu_mm.ops.reassemble import (kernel_softmax, local_window_similarity,
                                   sample_kernel_space)
from op_cases import loop_reassemble

pytestmark = pytest.mark.filterwarnings('ignore:dlu_mm. no compiled')

# (N, C, H, W, k, groups, s): odd / non-square sizes, 1-pixel rows and columns, empty batch
CASES = [
    (2, 4, 5, 7, 3, 1, 2),
    (1, 6, 4, 3, 5, 2, 2),
    (2, 4, 1, 6, 3, 2, 3),
    (1, 2, 5, 1, 5, 1, 2),
    (1, 3, 2, 2, 1, 3, 1),
    (0, 4, 3, 3, 3, 2, 2),
]


def grid_sample_kernels(kernel_space, offsets, groups, s):
    """Kernels sampled with F.grid_sample(align_corners=True, border), base = parent pixel."""
    n, gkk, h, w = kernel_space.shape
    kk = gkk // groups
    rows = (torch.arange(h * s) // s).to(offsets.dtype)
    cols = (torch.arange(w * s) // s).to(offsets.dtype)
    sampled = []
    for g in range(groups):
        y = rows[:, None] + offsets[:, 2 * g + 1]
        x = cols[None, :] + offsets[:, 2 * g]
        # normalised coordinates; a 1-pixel axis is all border, any value samples it
        gy = y * 2 / (h - 1) - 1 if h > 1 else torch.zeros_like(y)
        gx = x * 2 / (w - 1) - 1 if w > 1 else torch.zeros_like(x)
        sampled.append(F.grid_sample(kernel_space[:, g * kk:(g + 1) * kk],
                                     torch.stack([gx, gy], -1), align_corners=True,
                                     padding_mode='border'))
    return torch.cat(sampled, 1)


def random_inputs(n, c, h, w, k, groups, s, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    kernels = torch.randn(n, groups * k * k, h * s, w * s, generator=gen, dtype=dtype)
    kernel_space = torch.randn(n, groups * k * k, h, w, generator=gen, dtype=dtype)
    # offsets up to +-2.5 px reach the border clamp; non-integer almost surely
    offsets = torch.rand(n, 2 * groups, h * s, w * s, generator=gen, dtype=dtype) * 5 - 2.5
    return x, kernels, kernel_space, offsets


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('fn', [reassemble, reassemble_reference])
def test_reassemble_matches_loop(case, fn):
    n, c, h, w, k, groups, s = case
    x, kernels, _, _ = random_inputs(*case)
    out = fn(x, kernels, k, groups, s)
    assert out.shape == (n, c, h * s, w * s)
    torch.testing.assert_close(out, loop_reassemble(x, kernels, k, groups, s))


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('fn', [guided_reassemble, guided_reassemble_reference])
def test_guided_reassemble_matches_grid_sample(case, fn):
    n, c, h, w, k, groups, s = case
    x, _, kernel_space, offsets = random_inputs(*case)
    want = loop_reassemble(x, grid_sample_kernels(kernel_space, offsets, groups, s), k, groups, s)
    torch.testing.assert_close(fn(x, kernel_space, offsets, k, groups, s), want)


def test_one_hot_centre_kernel_is_nearest():
    x, _, _, _ = random_inputs(2, 4, 3, 5, 3, 2, 3)
    kernels = torch.zeros(2, 2 * 9, 9, 15, dtype=x.dtype)
    kernels[:, 4] = kernels[:, 9 + 4] = 1
    want = x.repeat_interleave(3, 2).repeat_interleave(3, 3)
    assert torch.equal(reassemble(x, kernels, 3, 2, 3), want)


def test_fp32_and_non_contiguous_inputs():
    x, kernels, kernel_space, offsets = random_inputs(2, 4, 5, 6, 3, 2, 2, dtype=torch.float32)
    want = loop_reassemble(x, kernels, 3, 2, 2)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, transposed strides
    kernels_nc = torch.stack([kernels, kernels], -1)[..., 0]  # non-contiguous view
    assert not x_nc.is_contiguous() and not kernels_nc.is_contiguous()
    torch.testing.assert_close(reassemble(x_nc, kernels_nc, 3, 2, 2), want)
    want = guided_reassemble(x, kernel_space, offsets, 3, 2, 2)
    ks_nc = kernel_space.to(memory_format=torch.channels_last)
    off_nc = torch.stack([offsets, offsets], -1)[..., 1]
    torch.testing.assert_close(guided_reassemble(x_nc, ks_nc, off_nc, 3, 2, 2), want)


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_low_precision(dtype, tol):
    x, kernels, kernel_space, offsets = random_inputs(2, 4, 5, 6, 3, 2, 2, dtype=torch.float32)
    kernels, kernel_space = kernels.softmax(1), kernel_space.softmax(1)
    for fn, args in ((reassemble, (x, kernels)),
                     (guided_reassemble, (x, kernel_space, offsets))):
        want = fn(*args, 3, 2, 2)
        out = fn(*(a.to(dtype) for a in args), 3, 2, 2)
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), want, atol=tol, rtol=tol)


def test_references_ignore_autocast():
    """Autocast must not push the references' einsum to bf16 (the compiled kernels ignore it)."""
    x, kernels, kernel_space, offsets = random_inputs(1, 4, 5, 6, 3, 2, 2, dtype=torch.float32)
    query = torch.randn(1, 3, 10, 12)
    calls = ((reassemble_reference, (x, kernels, 3, 2, 2)),
             (guided_reassemble_reference, (x, kernel_space, offsets, 3, 2, 2)),
             (local_window_similarity, (query, x[:, :3], 3, 2)))
    for fn, args in calls:
        want = fn(*args)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = fn(*args)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)


def test_empty_batch_backward():
    x, kernels, kernel_space, offsets = random_inputs(0, 4, 3, 3, 3, 2, 2)
    for t in (x, kernels, kernel_space, offsets):
        t.requires_grad_(True)
    (reassemble(x, kernels, 3, 2, 2).sum()
     + guided_reassemble(x, kernel_space, offsets, 3, 2, 2).sum()).backward()
    assert x.grad.shape == x.shape and offsets.grad.shape == offsets.shape


@pytest.mark.parametrize('fn', [reassemble_reference, reassemble])
def test_reassemble_gradcheck(fn):
    x, kernels, _, _ = random_inputs(1, 4, 3, 2, 3, 2, 2)
    x.requires_grad_(True)
    kernels.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, 3, 2, 2), (x, kernels))


@pytest.mark.parametrize('fn', [guided_reassemble_reference, guided_reassemble])
@pytest.mark.parametrize('shape', [(3, 2), (1, 3)])
def test_guided_reassemble_gradcheck(fn, shape):
    h, w = shape
    x, _, kernel_space, offsets = random_inputs(1, 4, h, w, 3, 2, 2)
    offsets = offsets * 0.4 + 0.3  # inside the clamp range mostly, away from integers
    inputs = tuple(t.requires_grad_(True) for t in (x, kernel_space, offsets))
    assert torch.autograd.gradcheck(lambda a, b, c: fn(a, b, c, 3, 2, 2), inputs)


def test_offset_gradient_at_integer_coordinates_is_in_image_difference():
    """At zero offsets (DLU's init) d kernel / d dy = S[i+1] - S[i], S[H-1] - S[H-2] on the last
    row, 0 on a 1-pixel axis: never a difference with the outside."""
    gen = torch.Generator().manual_seed(1)
    for h, w in ((3, 4), (1, 2)):
        space = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64)
        offsets = torch.zeros(1, 2, h, w, dtype=torch.float64, requires_grad=True)
        sampled = sample_kernel_space(space, offsets, 1, 1)
        upstream = torch.randn(sampled.shape, generator=gen, dtype=torch.float64)
        (grad,) = torch.autograd.grad((sampled * upstream).sum(), offsets)
        for axis, channel in ((2, 1), (3, 0)):  # rows <-> y offset, columns <-> x offset
            size = space.shape[axis]
            if size == 1:
                diff = torch.zeros_like(space)
            else:
                forward = space.diff(dim=axis)
                diff = torch.cat([forward, forward.narrow(axis, size - 2, 1)], axis)
            torch.testing.assert_close(grad[:, channel], (diff * upstream).sum(1))
        # the public op (native when built) follows the same convention
        x = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64)
        space3 = torch.randn(1, 9, h, w, generator=gen, dtype=torch.float64).softmax(1)
        grads = []
        for fn in (guided_reassemble, guided_reassemble_reference):
            offsets = torch.zeros(1, 2, 2 * h, 2 * w, dtype=torch.float64, requires_grad=True)
            grads.append(torch.autograd.grad(fn(x, space3, offsets, 3, 1, 2).square().sum(),
                                             offsets)[0])
        torch.testing.assert_close(grads[0], grads[1])


def test_local_window_similarity_matches_loop():
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(2, 3, 6, 3, generator=gen, dtype=torch.float64)
    key = torch.randn(2, 3, 2, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    out = local_window_similarity(query, key, 5, 3)
    want = torch.zeros(2, 25, 6, 3, dtype=torch.float64)
    for i in range(6):
        for j in range(3):
            for t in range(25):
                y, x = i // 3 + t // 5 - 2, j // 3 + t % 5 - 2
                if 0 <= y < 2 and 0 <= x < 1:
                    want[:, t, i, j] = (query[:, :, i, j] * key[:, :, y, x]).sum(1)
    torch.testing.assert_close(out, want)
    assert torch.autograd.gradcheck(lambda q, k: local_window_similarity(q, k, 3, 3),
                                    (query.requires_grad_(True), key))
    with pytest.raises(ValueError, match='query must have shape'):
        local_window_similarity(query[..., :2], key, 5, 3)


def test_kernel_softmax_groups_and_dtype():
    logits = torch.randn(2, 2 * 9, 3, 4, dtype=torch.float16)
    out = kernel_softmax(logits, 2)
    assert out.dtype == torch.float16
    sums = out.float().reshape(2, 2, 9, 3, 4).sum(2)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-3, rtol=0)


def test_errors():
    x, kernels, kernel_space, offsets = random_inputs(1, 4, 3, 3, 3, 2, 2)
    with pytest.raises(ValueError, match='k must be an odd'):
        reassemble(x, torch.zeros(1, 2 * 16, 6, 6, dtype=x.dtype), 4, 2, 2)
    with pytest.raises(ValueError, match='divisible by groups=3'):
        reassemble(x, torch.zeros(1, 27, 6, 6, dtype=x.dtype), 3, 3, 2)
    with pytest.raises(ValueError, match='4-D'):
        reassemble(x[0], kernels, 3, 2, 2)
    with pytest.raises(ValueError, match='kernels must have 18 channels'):
        reassemble(x, kernels[:, :9], 3, 2, 2)
    with pytest.raises(ValueError, match=r'kernels must have shape \(1, 18, 6, 6\)'):
        reassemble(x, kernels[..., :5], 3, 2, 2)
    with pytest.raises(ValueError, match='kernels must have shape'):
        reassemble(x, torch.cat([kernels, kernels]), 3, 2, 2)
    with pytest.raises(TypeError, match='same dtype'):
        reassemble(x, kernels.float(), 3, 2, 2)
    with pytest.raises(ValueError, match='same device'):
        reassemble(x, kernels.to('meta'), 3, 2, 2)
    with pytest.raises(TypeError, match='scale_factor must be an integer'):
        reassemble(x, kernels, 3, 2, 2.0)
    with pytest.raises(TypeError, match='floating-point'):
        reassemble(x.long(), kernels.long(), 3, 2, 2)
    with pytest.raises(ValueError, match='offsets must have 4 channels'):
        guided_reassemble(x, kernel_space, offsets[:, :2], 3, 2, 2)
    with pytest.raises(ValueError, match='kernel_space must have shape'):
        guided_reassemble(x, kernels, offsets, 3, 2, 2)
    with pytest.raises(TypeError, match='offsets has dtype'):
        guided_reassemble(x, kernel_space, offsets.float(), 3, 2, 2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_matches_cpu():
    x, kernels, kernel_space, offsets = random_inputs(2, 8, 5, 7, 5, 2, 2, dtype=torch.float32)
    for fn, args in ((reassemble, (x, kernels)), (reassemble_reference, (x, kernels)),
                     (guided_reassemble, (x, kernel_space, offsets)),
                     (guided_reassemble_reference, (x, kernel_space, offsets))):
        out = fn(*(a.cuda() for a in args), 5, 2, 2)
        assert out.device.type == 'cuda'
        torch.testing.assert_close(out.cpu(), fn(*args, 5, 2, 2), atol=1e-4, rtol=1e-4)


def test_kernel_space_offset_gradient_is_one_sided_in_image_difference():
    """At zero offsets every coordinate is an integer, the last row / column included: the
    offset gradient is S[i+1] - S[i], and S[i] - S[i-1] on the last row / column (whatever
    torch's clamp does at the ends of its range)."""
    h, w, s = 3, 4, 2
    space = torch.randn(1, 1, h, w, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(5))
    offsets = torch.zeros(1, 2, s * h, s * w, dtype=torch.float64, requires_grad=True)
    sample_kernel_space(space, offsets, 1, s).sum().backward()
    plane = space[0, 0]
    d_row = torch.cat([plane[1:] - plane[:-1], plane[-1:] - plane[-2:-1]], 0)  # (h, w)
    d_col = torch.cat([plane[:, 1:] - plane[:, :-1], plane[:, -1:] - plane[:, -2:-1]], 1)
    up = lambda t: t.repeat_interleave(s, 0).repeat_interleave(s, 1)  # noqa: E731
    torch.testing.assert_close(offsets.grad[0, 1], up(d_row), rtol=0, atol=1e-12)
    torch.testing.assert_close(offsets.grad[0, 0], up(d_col), rtol=0, atol=1e-12)
