"""Shared cases and independent oracles of the op tests (a helper module, not a test file).

Case builders return (differentiable tensors, trailing non-tensor args) in float64 on CPU for
every compiled op; ``check_native_matches_reference`` runs one case; the loops are plain-Python
oracles of the op definitions, independent of the references.
"""
import math

import torch
import torch.nn.functional as F

from dlu_mm.ops import (ddf_reference, guided_reassemble_reference,
                        local_deformable_attention_reference, reassemble_reference,
                        subpixel_sample_reference)
from dlu_mm.ops import native as compiled


TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


DTYPES = list(TOL)


REFERENCES = {
    'reassemble': reassemble_reference,
    'guided_reassemble': guided_reassemble_reference,
    'ddf': ddf_reference,
    'local_deformable_attention': local_deformable_attention_reference,
    'subpixel_sample': subpixel_sample_reference,
}


def randn(generator, *shape, scale=1.0):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


# Each case builder returns (differentiable tensors, trailing non-tensor args) in float64 on CPU;
# the op is called as op(*tensors, *args).
def reassemble_case(g, n=2, c=4, h=5, w=7, k=3, groups=2, s=2):
    return [randn(g, n, c, h, w), randn(g, n, groups * k * k, s * h, s * w)], [k, groups, s]


def guided_case(g, n=2, c=4, h=5, w=7, k=3, groups=2, s=2):
    kernel_space = randn(g, n, groups * k * k, h, w).view(n, groups, k * k, h, w)
    kernel_space = kernel_space.softmax(2).view(n, groups * k * k, h, w)
    offsets = randn(g, n, 2 * groups, s * h, s * w, scale=1.5)  # some clamped at the border
    return [randn(g, n, c, h, w), kernel_space, offsets], [k, groups, s]


def ddf_case(g, n=2, c=3, h=6, w=7, k=3, dilation=1, stride=1, combine='mul'):
    spatial = randn(g, n, k * k, h // stride, w // stride)
    return [randn(g, n, c, h, w), randn(g, n, c, k, k), spatial], [k, dilation, stride, combine]


def lda_case(g, n=2, d=8, c=6, h=4, w=5, sh=8, sw=10, points=4, heads=2, groups=2, rpb=True):
    tensors = [randn(g, n, d, sh, sw), randn(g, n, d, h, w), randn(g, n, c, h, w),
               randn(g, n, groups * 2 * points, sh, sw, scale=2.0)]
    bias = randn(g, heads, points, d // heads) if rpb else None
    return tensors, [bias, heads, groups]


def subpixel_case(g, n=2, c=4, h=5, w=7, groups=2, s=2):
    # whole pixels in [-3, 3] (some points clamped at the border) plus a fraction in [0.1, 0.9]:
    # no coordinate lands on an integer even in bfloat16, where the position gradient has a kink
    # (and grid_sample's border test depends on its grid normalisation's rounding)
    shape = (n, 2 * groups * s * s, h, w)
    whole = torch.randint(-3, 4, shape, generator=g, dtype=torch.float64)
    positions = whole + 0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
    return [randn(g, n, c, h, w), positions], [groups, s]


BUILDERS = {'reassemble': reassemble_case, 'guided_reassemble': guided_case, 'ddf': ddf_case,
            'local_deformable_attention': lda_case, 'subpixel_sample': subpixel_case}


# (op, builder kwargs): odd / non-square sizes, groups, H or W == 1, strides and dilations.
CASES = [
    ('reassemble', {}),
    ('reassemble', dict(c=3, h=1, w=6, k=5, groups=1, s=3)),
    ('reassemble', dict(c=6, h=4, w=1, k=1, groups=3, s=1)),
    ('guided_reassemble', {}),
    ('guided_reassemble', dict(c=3, h=1, w=6, k=5, groups=1, s=3)),
    ('guided_reassemble', dict(c=6, h=3, w=1, k=3, groups=3, s=2)),
    ('ddf', {}),
    ('ddf', dict(h=7, w=5, k=5, dilation=2, stride=2, combine='add')),
    ('ddf', dict(h=1, w=6, k=3, stride=1, combine='add')),
    ('ddf', dict(h=6, w=7, k=3, dilation=1, stride=3, combine='mul')),
    ('local_deformable_attention', {}),
    ('local_deformable_attention', dict(heads=1, groups=2, points=9, rpb=False)),
    ('local_deformable_attention', dict(d=8, c=8, h=1, w=5, sh=3, sw=9, heads=4, groups=1)),
    ('local_deformable_attention', dict(d=4, c=4, h=3, w=3, sh=1, sw=6, heads=1, groups=4)),
    ('subpixel_sample', {}),
    ('subpixel_sample', dict(c=3, h=1, w=6, groups=1, s=3)),
    ('subpixel_sample', dict(c=6, h=4, w=1, groups=3, s=1)),
    ('subpixel_sample', dict(n=1, c=8, h=6, w=5, groups=4, s=4)),
]


CASE_IDS = [f'{op}-{i}' for i, (op, _) in enumerate(CASES)]


def split_differentiable(op, tensors, args):
    """Differentiable tensors of a case (LDA's rpb sits among the trailing args)."""
    if op == 'local_deformable_attention' and args[0] is not None:
        return tensors + [args[0]]
    return tensors


def run_op(fn, op, tensors, args, grad_out=None):
    """Forward (+ backward with grad_out when given); returns [out, *grads]."""
    tensors = [t.detach().requires_grad_() for t in tensors]
    if op == 'local_deformable_attention' and args[0] is not None:
        args = [args[0].detach().requires_grad_(), *args[1:]]
    out = fn(*tensors, *args)
    if grad_out is None:
        return [out]
    inputs = split_differentiable(op, tensors, args)
    grads = torch.autograd.grad(out, inputs, grad_out, allow_unused=True)
    return [out] + [torch.zeros_like(t) if gr is None else gr for t, gr in zip(inputs, grads)]


def cast_case(op, tensors, args, dtype, device='cpu'):
    tensors = [t.to(device, dtype) for t in tensors]
    if op == 'local_deformable_attention' and args[0] is not None:
        args = [args[0].to(device, dtype), *args[1:]]
    return tensors, args


def assert_all_close(actual, expected, tol):
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, (i, a.shape, e.shape, a.dtype, e.dtype)
        torch.testing.assert_close(a, e, atol=tol, rtol=tol, msg=lambda m: f'output {i}: {m}')


def check_native_matches_reference(op, kwargs, dtype, seed=0):
    """Forward and every gradient of the compiled ``op`` against its reference."""
    g = torch.Generator().manual_seed(seed)
    tensors, args = cast_case(op, *BUILDERS[op](g, **kwargs), dtype)
    native = getattr(compiled, op)
    out = native(*tensors, *args)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dtype)
    actual = run_op(native, op, tensors, args, grad_out)
    expected = run_op(REFERENCES[op], op, tensors, args, grad_out)
    assert_all_close(actual, expected, TOL[dtype])



# ---------------------------------------------------------------------------------------------
# Independent oracles: plain Python loops over every output element
# ---------------------------------------------------------------------------------------------
def ddf_loop(x, channel_filter, spatial_filter, k, dilation, stride, combine):
    n_, c_, h, w = x.shape
    out_h, out_w = h // stride, w // stride
    xs, chs, sps = x.tolist(), channel_filter.tolist(), spatial_filter.tolist()
    r = (k - 1) // 2
    out = torch.zeros(n_, c_, out_h, out_w, dtype=torch.float64)
    for n in range(n_):
        for c in range(c_):
            for i in range(out_h):
                for j in range(out_w):
                    acc = 0.0
                    for ty in range(k):
                        for tx in range(k):
                            y, xx = i * stride + dilation * (ty - r), j * stride + dilation * (tx - r)
                            if not (0 <= y < h and 0 <= xx < w):
                                continue
                            s, ch = sps[n][ty * k + tx][i][j], chs[n][c][ty][tx]
                            acc += xs[n][c][y][xx] * (s * ch if combine == 'mul' else s + ch)
                    out[n, c, i, j] = acc
    return out



def bilinear_zero(feature, y, x):
    """feature: nested list [H][W]; bilinear at (y, x) in pixels, zero outside."""
    h, w = len(feature), len(feature[0])
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * feature[yy][xx]
    return total



def lda_loop(q, key, value, offsets, rpb, num_heads, groups):
    n_, d_, out_h, out_w = q.shape
    c_, h, w = value.shape[1:]
    p_ = offsets.shape[1] // (2 * groups)
    fy = (h - 1) / (out_h - 1) if out_h > 1 else 0.0
    fx = (w - 1) / (out_w - 1) if out_w > 1 else 0.0
    qs, ks, vs, offs = q.tolist(), key.tolist(), value.tolist(), offsets.tolist()
    rpbs = rpb.tolist() if rpb is not None else None
    hd_k, hd_v = d_ // num_heads, c_ // num_heads
    out = torch.zeros(n_, c_, out_h, out_w, dtype=torch.float64)
    for n in range(n_):
        for i in range(out_h):
            for j in range(out_w):
                k_s = [[0.0] * p_ for _ in range(d_)]
                v_s = [[0.0] * p_ for _ in range(c_)]
                for g in range(groups):
                    for p in range(p_):
                        dy = offs[n][g * 2 * p_ + 2 * p][i][j]
                        dx = offs[n][g * 2 * p_ + 2 * p + 1][i][j]
                        y, x = (i + dy) * fy, (j + dx) * fx
                        for d in range(g * d_ // groups, (g + 1) * d_ // groups):
                            k_s[d][p] = bilinear_zero(ks[n][d], y, x)
                        for c in range(g * c_ // groups, (g + 1) * c_ // groups):
                            v_s[c][p] = bilinear_zero(vs[n][c], y, x)
                for hh in range(num_heads):
                    logits = []
                    for p in range(p_):
                        dot = 0.0
                        for d in range(hh * hd_k, (hh + 1) * hd_k):
                            bias = rpbs[hh][p][d - hh * hd_k] if rpbs is not None else 0.0
                            dot += qs[n][d][i][j] * (k_s[d][p] + bias)
                        logits.append(dot / math.sqrt(hd_k))
                    top = max(logits)
                    exps = [math.exp(v - top) for v in logits]
                    attn = [e / sum(exps) for e in exps]
                    for c in range(hh * hd_v, (hh + 1) * hd_v):
                        out[n, c, i, j] = sum(a * v_s[c][p] for p, a in enumerate(attn))
    return out



def loop_reassemble(x, kernels, k, groups, s):
    """Spec section 0 tap by tap: shift x by (ky - r, kx - r), repeat nearest, weight, add."""
    n, c, h, w = x.shape
    r = k // 2
    padded = F.pad(x, (r, r, r, r))
    out = torch.zeros(n, c, h * s, w * s, dtype=x.dtype)
    for ky in range(k):
        for kx in range(k):
            shifted = padded[:, :, ky:ky + h, kx:kx + w]
            shifted = shifted.repeat_interleave(s, 2).repeat_interleave(s, 3)
            tap = kernels[:, ky * k + kx::k * k]  # (N, G, sH, sW): tap of every group
            out += shifted * tap.repeat_interleave(c // groups, 1)
    return out

