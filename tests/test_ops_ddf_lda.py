"""ddf and local_deformable_attention: references against direct per-pixel loops, gradcheck,
argument validation, dtypes and edge shapes."""
import statistics

import pytest
import torch

from dlu_mm.ops import (ddf, ddf_reference, local_deformable_attention,
                        local_deformable_attention_reference)
from dlu_mm.ops.ddf import ddf_heads, filter_norm
from op_cases import ddf_loop, lda_loop

pytestmark = pytest.mark.filterwarnings('ignore:dlu_mm. no compiled')


def ddf_inputs(n=2, c=3, h=5, w=7, k=3, stride=1, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    ch = torch.randn(n, c, k, k, generator=g, dtype=dtype)
    sp = torch.randn(n, k * k, h // stride, w // stride, generator=g, dtype=dtype)
    return x, ch, sp


def lda_inputs(n=1, d=4, c=6, h=3, w=4, out_h=6, out_w=8, points=4, groups=2, heads=2,
               rpb=True, spread=3.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, out_h, out_w, generator=g, dtype=dtype)
    key = torch.randn(n, d, h, w, generator=g, dtype=dtype)
    value = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    # displacements of up to +-spread output pixels: many points fall outside the image
    offsets = (torch.rand(n, groups * 2 * points, out_h, out_w, generator=g, dtype=dtype) * 2
               - 1) * spread
    bias = (torch.randn(heads, points, d // heads, generator=g, dtype=dtype) if rpb else None)
    return q, key, value, offsets, bias


# ---------------------------------------------------------------------------------------------
# ddf
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('combine', ['mul', 'add'])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('dilation', [1, 2])
def test_ddf_reference_matches_loop(combine, stride, dilation):
    x, ch, sp = ddf_inputs(h=5, w=7, stride=stride)
    want = ddf_loop(x, ch, sp, 3, dilation, stride, combine)
    got = ddf_reference(x, ch, sp, 3, dilation, stride, combine)
    assert got.shape == want.shape == (2, 3, 5 // stride, 7 // stride)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_ddf_reference_k5_odd_sizes_and_public_op():
    x, ch, sp = ddf_inputs(n=1, c=2, h=7, w=4, k=5, stride=3, seed=3)
    want = ddf_loop(x, ch, sp, 5, 1, 3, 'add')
    torch.testing.assert_close(ddf_reference(x, ch, sp, 5, 1, 3, 'add'), want)
    torch.testing.assert_close(ddf(x, ch, sp, 5, 1, 3, 'add'), want)


def test_ddf_non_contiguous_inputs():
    x, ch, sp = ddf_inputs(h=6, w=5, seed=1)
    want = ddf(x, ch, sp, 3)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)
    sp_nc = sp.transpose(2, 3).contiguous().transpose(2, 3)
    ch_nc = ch.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_nc.is_contiguous()
    torch.testing.assert_close(ddf(x_nc, ch_nc, sp_nc, 3), want)


def test_ddf_gradcheck():
    x, ch, sp = ddf_inputs(n=1, c=2, h=4, w=5, stride=2, seed=2)
    for combine in ('mul', 'add'):
        args = [t.clone().requires_grad_() for t in (x, ch, sp)]
        assert torch.autograd.gradcheck(
            lambda a, b, c: ddf_reference(a, b, c, 3, 2, 2, combine), args)


@pytest.mark.parametrize('shape', [(0, 3, 5, 7), (2, 3, 1, 6), (2, 3, 5, 1), (1, 2, 1, 1)])
def test_ddf_edge_shapes(shape):
    n, c, h, w = shape
    x, ch, sp = ddf_inputs(n, c, h, w, seed=4)
    out = ddf(x, ch, sp, 3)
    assert out.shape == shape
    if n:
        torch.testing.assert_close(out, ddf_loop(x, ch, sp, 3, 1, 1, 'mul'))


def test_ddf_stride_larger_than_input_gives_empty_output():
    x, ch, _ = ddf_inputs(1, 2, 1, 3)
    out = ddf(x, ch, torch.zeros(1, 9, 0, 1, dtype=x.dtype), 3, stride=2)
    assert out.shape == (1, 2, 0, 1)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_ddf_low_precision(dtype):
    x, ch, sp = ddf_inputs(dtype=torch.float32, seed=5)
    out = ddf(x.to(dtype), ch.to(dtype), sp.to(dtype), 3)
    assert out.dtype == dtype
    want = ddf_reference(*(t.to(dtype).float() for t in (x, ch, sp)), 3)
    torch.testing.assert_close(out.float(), want, rtol=5e-2, atol=5e-2)


def test_ddf_errors():
    x, ch, sp = ddf_inputs()
    with pytest.raises(ValueError, match='k must be an odd'):
        ddf(x, ch, sp, 2)
    with pytest.raises(ValueError, match='combine'):
        ddf(x, ch, sp, 3, combine='sum')
    with pytest.raises(ValueError, match='x must be 4-D'):
        ddf(x[0], ch, sp, 3)
    with pytest.raises(ValueError, match='channel_filter must have shape'):
        ddf(x, ch[:, :2], sp, 3)
    with pytest.raises(ValueError, match='spatial_filter must have shape'):
        ddf(x, ch, sp, 3, stride=2)
    with pytest.raises(TypeError, match='dtype'):
        ddf(x, ch.float(), sp, 3)
    with pytest.raises(TypeError, match='stride must be an integer'):
        ddf(x, ch, sp, 3, stride=1.0)
    with pytest.raises(ValueError, match='dilation'):
        ddf(x, ch, sp, 3, dilation=0)


@pytest.mark.parametrize('head,stride,combine', [(1, 1, 'mul'), (2, 1, 'add'), (3, 2, 'mul')])
def test_ddf_heads_is_ddf_per_head_block(head, stride, combine):
    g = torch.Generator().manual_seed(7)
    n, c, h, w, k = 2, 6, 5, 4, 3
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    ch = torch.randn(n, c, k, k, generator=g, dtype=torch.float64)
    sp = torch.randn(n, head * k * k, h // stride, w // stride, generator=g, dtype=torch.float64)
    got = ddf_heads(x, ch, sp, k, head, 2, stride, combine)
    assert got.shape == (n, c, h // stride, w // stride)
    block = c // head
    for hh in range(head):
        want = ddf_loop(x[:, hh * block:(hh + 1) * block], ch[:, hh * block:(hh + 1) * block],
                        sp[:, hh * k * k:(hh + 1) * k * k], k, 2, stride, combine)
        torch.testing.assert_close(got[:, hh * block:(hh + 1) * block], want)
    with pytest.raises(ValueError, match='divisible by head'):
        ddf_heads(x, ch, sp, k, 4)
    with pytest.raises(ValueError, match='spatial_filter must have shape'):
        ddf_heads(x, ch, sp[:, :k * k - 1], k, head)
    with pytest.raises(ValueError, match='channel_filter must have shape'):
        ddf_heads(x, ch[:, :2], sp, k, head)


def test_filter_norm_matches_hand_statistics():
    g = torch.Generator().manual_seed(0)
    filters = torch.randn(2, 3, 9, dtype=torch.float64, generator=g)
    scale = torch.randn(3, 9, dtype=torch.float64, generator=g)
    got = filter_norm(filters, scale, dim=2)
    for n in range(2):
        for c in range(3):
            taps = filters[n, c].tolist()
            mean, std = statistics.mean(taps), statistics.stdev(taps)  # stdev: unbiased
            want = [(t - mean) / (std + 1e-10) * s for t, s in zip(taps, scale[c].tolist())]
            torch.testing.assert_close(got[n, c], torch.tensor(want, dtype=torch.float64))
    # bf16 keeps its dtype (statistics in fp32: 1e-10 would underflow in half precision)
    assert filter_norm(filters.bfloat16(), 0.5, dim=2).dtype == torch.bfloat16
    with pytest.raises(ValueError, match='at least 2 taps'):
        filter_norm(filters[..., :1], 1.0, dim=2)


def test_filter_norm_constant_filter_has_finite_gradient():
    # a constant filter (e.g. a DDF channel branch whose ReLUs are all off) has variance 0:
    # the value is 0 and the gradient must stay finite (sqrt'(0) is infinite)
    filters = torch.cat([torch.full((1, 1, 9), 0.5), torch.randn(1, 1, 9)], 1).requires_grad_()
    out = filter_norm(filters, 1.0, dim=2)
    assert torch.equal(out[0, 0], torch.zeros(9))
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(filters.grad).all()


# ---------------------------------------------------------------------------------------------
# local_deformable_attention
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('heads,groups,rpb', [(1, 1, False), (1, 2, True), (2, 1, True),
                                              (2, 2, False), (2, 2, True)])
def test_lda_reference_matches_loop(heads, groups, rpb):
    args = lda_inputs(groups=groups, heads=heads, rpb=rpb, seed=heads * 10 + groups)
    want = lda_loop(*args, heads, groups)
    got = local_deformable_attention_reference(*args, heads, groups)
    assert got.shape == (1, 6, 6, 8)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_lda_points_outside_stay_in_softmax():
    # every point far outside: sampled keys and values are 0, logits q . rpb only, output 0;
    # and with a single point inside, the outside ones still take their softmax share
    q, key, value, offsets, bias = lda_inputs(groups=1, heads=1, points=2, seed=7)
    offsets = torch.full_like(offsets, 100.0)
    out = local_deformable_attention_reference(q, key, value, offsets, bias, 1, 1)
    assert torch.equal(out, torch.zeros_like(out))
    offsets[:, :2] = 0.0  # point 0 at the pixel itself
    want = lda_loop(q, key, value, offsets, bias, 1, 1)
    torch.testing.assert_close(local_deformable_attention_reference(
        q, key, value, offsets, bias, 1, 1), want)
    assert (want.abs() < value.abs().max()).all()


@pytest.mark.parametrize('size', [(1, 4, 2, 8), (3, 1, 6, 1), (1, 1, 1, 1), (3, 4, 1, 5)])
def test_lda_one_pixel_axes(size):
    h, w, out_h, out_w = size
    args = lda_inputs(h=h, w=w, out_h=out_h, out_w=out_w, seed=11)
    got = local_deformable_attention(*args, 2, 2)
    assert got.shape == (1, 6, out_h, out_w) and torch.isfinite(got).all()
    torch.testing.assert_close(got, lda_loop(*args, 2, 2))


def test_lda_empty_batch_and_non_contiguous():
    q, key, value, offsets, bias = lda_inputs(n=2, seed=12)
    out = local_deformable_attention(q[:0], key[:0], value[:0], offsets[:0], bias, 2, 2)
    assert out.shape == (0, 6, 6, 8)
    want = local_deformable_attention(q, key, value, offsets, bias, 2, 2)
    nc = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in (q, key, value, offsets)]
    torch.testing.assert_close(local_deformable_attention(*nc, bias, 2, 2), want)


def test_lda_gradcheck():
    args = lda_inputs(d=4, c=4, h=3, w=3, out_h=5, out_w=4, points=3, spread=2.0, seed=13)
    args = [t.clone().requires_grad_() for t in args]
    assert torch.autograd.gradcheck(
        lambda *a: local_deformable_attention_reference(*a, 2, 2), args)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_lda_low_precision(dtype):
    args = lda_inputs(dtype=torch.float32, seed=14)
    out = local_deformable_attention(*(t.to(dtype) for t in args), 2, 2)
    assert out.dtype == dtype
    want = local_deformable_attention_reference(*(t.to(dtype).float() for t in args), 2, 2)
    torch.testing.assert_close(out.float(), want, rtol=5e-2, atol=5e-2)


def test_lda_errors():
    q, key, value, offsets, bias = lda_inputs(d=4, c=6, groups=2, heads=2)
    op = local_deformable_attention
    with pytest.raises(ValueError, match='divisible by groups=4'):
        op(q, key, value, offsets[:, :16], None, 1, 4)  # D=4 ok, C=6 % 4 != 0
    with pytest.raises(ValueError, match='divisible by num_heads=4'):
        op(q, key, value, offsets, None, 4, 2)
    with pytest.raises(ValueError, match='offsets must have groups'):
        op(q, key, value, offsets[:, :7], bias, 2, 2)
    with pytest.raises(ValueError, match='rpb must have shape'):
        op(q, key, value, offsets, bias[:, :2], 2, 2)
    with pytest.raises(ValueError, match='key must have as many channels'):
        op(q, key[:, :2], value, offsets, bias, 2, 2)
    with pytest.raises(ValueError, match='same spatial size'):
        op(q, key, value[..., :2], offsets, bias, 2, 2)
    with pytest.raises(ValueError, match='spatial size of q'):
        op(q, key, value, offsets[..., :3], bias, 2, 2)
    with pytest.raises(ValueError, match='q must be 4-D'):
        op(q[0], key, value, offsets, bias, 2, 2)
    with pytest.raises(TypeError, match='dtype'):
        op(q, key.float(), value, offsets, bias, 2, 2)
    with pytest.raises(TypeError, match='groups must be an integer'):
        op(q, key, value, offsets, bias, 2, 2.0)
