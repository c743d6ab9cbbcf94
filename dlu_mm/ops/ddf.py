"""Decoupled dynamic filter (DDF) op and FilterNorm (Zhou et al., "Decoupled Dynamic Filter
Networks", CVPR 2021).

A DDF filter is the product (``'mul'``) or sum (``'add'``) of a spatial filter shared by all
channels and a channel filter shared by all positions:

    Y[n, c, p] = sum_t X[n, c, p*stride + dilation*(t - r)] * S[n, t, p] * Ch[n, c, t]     (mul)
    Y[n, c, p] = sum_t X[n, c, p*stride + dilation*(t - r)] * (S[n, t, p] + Ch[n, c, t])   (add)

with t = ty*k + tx, r = (k-1)/2 per axis and taps outside the image skipped. The output has
floor(H/stride) x floor(W/stride) pixels.

The reference is already a loop of strided slices of the padded input (no unfold), so it is also
the ONNX export form: ``ddf`` hands :func:`~dlu_mm.ops.dispatch.dispatch` no separate lowering.
"""
import torch

from ..utils import (check_4d, check_choice, check_divisible, check_int, check_odd,
                     check_same_device_dtype)
from .dispatch import dispatch
from .precision import upcast

DDF_COMBINES = ('mul', 'add')


def check_ddf_args(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    """Validate :func:`ddf`'s arguments (the compiled kernels repeat them as TORCH_CHECKs).

    Returns ``(k, dilation, stride, combine)`` normalised to Python ints / str.
    """
    k = check_odd('k', k)
    dilation = check_int('dilation', dilation, 1)
    stride = check_int('stride', stride, 1)
    check_choice('combine', combine, DDF_COMBINES)
    check_4d('x', x)
    check_4d('channel_filter', channel_filter)
    check_4d('spatial_filter', spatial_filter)
    check_same_device_dtype('channel_filter', channel_filter, 'x', x)
    check_same_device_dtype('spatial_filter', spatial_filter, 'x', x)
    n, c, h, w = x.shape
    want = (n, c, k, k)
    if tuple(channel_filter.shape) != want:
        raise ValueError(f'channel_filter must have shape (N, C, k, k) = {want} for x of shape '
                         f'{tuple(x.shape)} and k={k}, got {tuple(channel_filter.shape)}')
    want = (n, k * k, h // stride, w // stride)
    if tuple(spatial_filter.shape) != want:
        raise ValueError(f'spatial_filter must have shape (N, k*k, H//stride, W//stride) = {want} '
                         f'for x of shape {tuple(x.shape)}, k={k}, stride={stride}, got '
                         f'{tuple(spatial_filter.shape)}')
    return k, dilation, stride, combine


def ddf_reference(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    """Pure-PyTorch DDF (differentiable; arguments as :func:`ddf`, assumed valid).

    Loops over the k*k taps and accumulates shifted, strided views of the zero-padded input, so
    it never holds more than a couple of output-sized temporaries (an unfold would hold k*k).
    fp16/bf16 inputs accumulate in fp32 and return in their own dtype.
    """
    out_dtype = x.dtype
    x, channel_filter, spatial_filter = upcast(x, channel_filter, spatial_filter)
    n, c, h, w = x.shape
    out_h, out_w = h // stride, w // stride
    pad = dilation * (k - 1) // 2
    x_pad = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # zeros = skipped taps
    out = None
    for ty in range(k):
        # Tap rows ty*dil + stride*p for p < out_h; an empty slice when out_h == 0.
        rows = slice(ty * dilation, ty * dilation + stride * out_h, stride)
        for tx in range(k):
            cols = slice(tx * dilation, tx * dilation + stride * out_w, stride)
            t = ty * k + tx
            tap = x_pad[:, :, rows, cols]  # (N, C, out_h, out_w)
            spatial = spatial_filter[:, t:t + 1]  # (N, 1, out_h, out_w)
            channel = channel_filter[:, :, ty, tx, None, None]  # (N, C, 1, 1)
            weight = spatial * channel if combine == 'mul' else spatial + channel
            # addcmul: one pass per tap instead of a multiply and an add
            out = tap * weight if out is None else out.addcmul(tap, weight)
    return out.to(out_dtype)


def ddf(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    """Decoupled dynamic filtering.

    Args:
        x: (N, C, H, W) input.
        channel_filter: (N, C, k, k) filter per channel, shared over positions.
        spatial_filter: (N, k*k, H//stride, W//stride) filter per output position, shared over
            channels (tap t = ty*k + tx).
        k: odd kernel size. dilation, stride: positive ints.
        combine: 'mul' (product of the two filters) or 'add' (their sum).

    Returns:
        (N, C, H//stride, W//stride) tensor of x's dtype.
    """
    k, dilation, stride, combine = check_ddf_args(x, channel_filter, spatial_filter, k, dilation,
                                                  stride, combine)
    return dispatch('ddf', x.device.type, ddf_reference,
                    (x, channel_filter, spatial_filter, k, dilation, stride, combine))


def ddf_heads(x, channel_filter, spatial_filter, k, head, dilation=1, stride=1, combine='mul'):
    """:func:`ddf` with ``head`` spatial filters: head h filters the contiguous channel block
    [h*C/head, (h+1)*C/head) with its own spatial filter (taps h*k*k .. (h+1)*k*k - 1).

    The heads are folded into the batch, so each block is a plain DDF.

    Args:
        x: (N, C, H, W) input, C divisible by ``head``.
        channel_filter: (N, C, k, k).
        spatial_filter: (N, head*k*k, H//stride, W//stride).
        k, dilation, stride, combine: as :func:`ddf`.
        head: positive int.

    Returns:
        (N, C, H//stride, W//stride) tensor of x's dtype.
    """
    head = check_int('head', head, 1)
    k = check_odd('k', k)
    check_4d('x', x)
    check_4d('channel_filter', channel_filter)
    check_4d('spatial_filter', spatial_filter)
    n, c, h, w = x.shape
    check_divisible('channels of x', c, 'head', head)
    if tuple(channel_filter.shape) != (n, c, k, k):
        raise ValueError(f'channel_filter must have shape (N, C, k, k) = {(n, c, k, k)} for x of '
                         f'shape {tuple(x.shape)} and k={k}, got {tuple(channel_filter.shape)}')
    if tuple(spatial_filter.shape[:2]) != (n, head * k * k):
        raise ValueError(f'spatial_filter must have shape (N, head*k*k, H//stride, W//stride) '
                         f'with N={n}, head*k*k={head * k * k}, got '
                         f'{tuple(spatial_filter.shape)}')
    out_h, out_w = spatial_filter.shape[-2:]
    # (N, C, ...) -> (N*head, C/head, ...) and (N, head*k*k, ...) -> (N*head, k*k, ...); ddf
    # checks the remaining shapes, device and dtype.
    out = ddf(x.reshape(n * head, c // head, h, w),
              channel_filter.reshape(n * head, c // head, k, k),
              spatial_filter.reshape(n * head, k * k, out_h, out_w), k, dilation, stride, combine)
    return out.reshape(n, c, out_h, out_w)  # (N, C, H//stride, W//stride)


def filter_norm(filters, scale, dim, eps=1e-10):
    """DDF's FilterNorm: standardise each filter over its taps, then rescale.

    ``filters`` holds the taps of each filter along ``dim``; every filter has its mean over the
    taps subtracted and is divided by (unbiased std over the taps + eps), then multiplied by
    ``scale`` (a float, or a tensor broadcastable to ``filters``). Statistics are taken in fp32
    for fp16/bf16 filters (eps=1e-10 underflows in half precision); the result keeps the input
    dtype. Needs at least two taps (the unbiased std of one tap is undefined).
    """
    if filters.shape[dim] < 2:
        raise ValueError(f'filter_norm needs at least 2 taps along dim {dim}, got filters of '
                         f'shape {tuple(filters.shape)}')
    dtype = filters.dtype
    work, = upcast(filters)
    centred = work - work.mean(dim=dim, keepdim=True)
    # unbiased std written out: Tensor.std warns on empty batches. A constant filter has
    # variance exactly 0, where sqrt's gradient is infinite (NaN downstream): take the root of
    # positive variances only, so such filters get std 0 and a zero gradient through it.
    var = centred.square().sum(dim=dim, keepdim=True) / (filters.shape[dim] - 1)
    positive = var > 0
    std = torch.where(positive, var, torch.ones_like(var)).sqrt() * positive
    # std + eps where the std is positive, eps where it is 0: the same values, but no add of a
    # near-zero constant, which onnxscript's graph optimiser drops (0/0 in exported graphs)
    normed = centred / torch.where(positive, std + eps, torch.full_like(std, eps))
    return (normed * scale).to(dtype)
