"""Content-aware reassembly: the CARAFE op and DLU's guided (kernel-sampling) variant.

``reassemble`` (CARAFE, Wang et al., ICCV 2019): every output pixel (i', j') is a weighted sum of
the k x k low-res window around its parent (i'//s, j'//s), with its own predicted kernel::

    Y[n, c, i', j'] = sum_{ky,kx} K[n, g*k*k + ky*k + kx, i', j']
                                  * X[n, c, i'//s + ky - r, j'//s + kx - r]

channel c uses kernel group g = c // (C/G); taps outside the image contribute zero and the weights
are not renormalised at borders.

``guided_reassemble`` (DLU, Fu et al., ICPR 2024): the kernel of (i', j') for group g is first
sampled bilinearly from a low-res *kernel space* at (i'//s + dy, j'//s + dx) with border clamping,
then used exactly as above.

This file holds both ops' argument checks (``check_*_args``; the compiled kernels repeat them as
TORCH_CHECKs), their pure-PyTorch references (test oracle, fallback), their ONNX lowerings
(``*_onnx``, standard operators only) and the public, dispatching ops; and SAPA / FADE's
``local_window_similarity``, the adjoint gather, with its reference and lowering.
"""

import torch
import torch.nn.functional as F

from ..utils import check_4d, check_divisible, check_int, check_odd, check_same_device_dtype
from .compat import autocast_disabled, softmax
from .dispatch import dispatch, is_onnx_exporting, onnx_lowerings_enabled
from .precision import compute_dtype, upcast

__all__ = ['reassemble', 'reassemble_reference', 'guided_reassemble',
           'guided_reassemble_reference', 'check_reassemble_args',
           'check_guided_reassemble_args', 'kernel_softmax', 'sample_kernel_space',
           'local_window_similarity', 'check_grouped_upsampling_args', 'reassemble_onnx',
           'guided_reassemble_onnx', 'sample_kernel_space_onnx', 'local_window_similarity_onnx']


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _check_scale(scale_factor):
    return check_int('scale_factor', scale_factor, 1)


def _check_per_pixel(name, tensor, channels, x, scale_factor):
    """``tensor`` must be (N, channels, s*H, s*W) on x's device with x's dtype."""
    check_4d(name, tensor)
    if tensor.shape[1] != channels:
        raise ValueError(f'{name} must have {channels} channels, got shape {tuple(tensor.shape)}')
    check_same_device_dtype(name, tensor, 'x', x)
    want = (x.shape[0], channels, x.shape[2] * scale_factor, x.shape[3] * scale_factor)
    if tuple(tensor.shape) != want:
        raise ValueError(f'{name} must have shape {want} (batch of x, scale_factor={scale_factor} '
                         f'x the spatial size {tuple(x.shape[2:])} of x), got '
                         f'{tuple(tensor.shape)}')


def check_grouped_upsampling_args(x, groups, scale_factor):
    """x a floating (N, C, H, W) tensor, ``groups`` dividing C, ``scale_factor`` >= 1 (shared
    with subpixel_sample); returns ``(groups, scale_factor)`` as ints."""
    check_4d('x', x)
    if not x.is_floating_point():
        raise TypeError(f'x must be a floating-point tensor, got dtype {x.dtype}')
    groups = check_int('groups', groups, 1)
    check_divisible('channels of x', x.shape[1], 'groups', groups)
    return groups, _check_scale(scale_factor)


def _check_common(x, k, groups, scale_factor):
    groups, scale_factor = check_grouped_upsampling_args(x, groups, scale_factor)
    return check_odd('k', k), groups, scale_factor


def check_reassemble_args(x, kernels, k, groups=1, scale_factor=2):
    """Validate ``reassemble``'s arguments; returns ``(k, groups, scale_factor)`` as ints."""
    k, groups, scale_factor = _check_common(x, k, groups, scale_factor)
    _check_per_pixel('kernels', kernels, groups * k * k, x, scale_factor)
    return k, groups, scale_factor


def check_guided_reassemble_args(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    """Validate ``guided_reassemble``'s arguments; returns ``(k, groups, scale_factor)``."""
    k, groups, scale_factor = _check_common(x, k, groups, scale_factor)
    _check_per_pixel('kernel_space', kernel_space, groups * k * k, x, 1)
    _check_per_pixel('offsets', offsets, 2 * groups, x, scale_factor)
    return k, groups, scale_factor


def kernel_softmax(logits, groups=1):
    """Normalise (N, G*k*k, H, W) kernel logits with a softmax over each group's k*k taps.

    The result keeps the logits' dtype (no silent fp16 -> fp32 promotion outside autocast).
    """
    n, c, h, w = logits.shape
    return softmax(logits.reshape(n, groups, c // groups, h, w), 2).reshape(n, c, h, w)


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------
def _low_res_windows(x, k):
    """(N, C, H, W) -> zero-padded k x k windows as a strided VIEW (N, C, H, W, k, k).

    Unfolding at low resolution and broadcasting over the s x s children keeps the reference at
    k*k/s^2 copies of the output instead of k*k (nothing is copied here; einsum copies once).
    """
    r = (k - 1) // 2
    return F.pad(x, (r, r, r, r)).unfold(2, k, 1).unfold(3, k, 1)


def reassemble_reference(x, kernels, k, groups=1, scale_factor=2):
    """Pure-PyTorch ``reassemble`` (differentiable to any order); arguments are not re-checked."""
    n, c, h, w = x.shape
    s, g = scale_factor, groups
    dtype = compute_dtype(x.dtype)
    windows = _low_res_windows(x.to(dtype), k).reshape(n, g, c // g, h, w, k, k)
    kernels = kernels.to(dtype).reshape(n, g, k, k, h, s, w, s)
    # a, b: tap row/col; y, v: sub-pixel row/col of the s x s children of low-res pixel (h, w)
    with autocast_disabled(x.device.type):
        out = torch.einsum('ngchwab,ngabhywv->ngchywv', windows, kernels)
    # out: (N, G, C/G, H, s, W, s)
    return out.reshape(n, c, h * s, w * s).to(x.dtype)


def _clamp_to_image(coord, last):
    """clamp(coord, 0, last) with gradient 1 on the closed range [0, last], 0 outside it.

    That is what the compiled kernels do, and where DLU's zero-offset init puts the last row and
    column. Tensor.clamp's own gradient at the ends differs between torch versions (1 up to 2.13,
    0 from 2.14), so it is not used for the gradient.
    """
    inside = (coord >= 0) & (coord <= last)
    return torch.where(inside, coord, coord.detach().clamp(0, last))


def sample_kernel_space(kernel_space, offsets, groups, scale_factor):
    """Bilinearly sample per-output-pixel kernels from a low-res kernel space.

    kernel_space (N, G*k*k, H, W); offsets (N, 2G, sH, sW), channel 2g = x, 2g + 1 = y, in
    low-res pixels. Returns (N, G*k*k, sH, sW): group g's kernel of output pixel (i', j') is
    kernel_space bilinearly sampled at (i'//s + dy, j'//s + dx), coordinates clamped to
    [0, H-1] x [0, W-1] (grid_sample(align_corners=True, padding_mode='border') values).

    Pixel-unit maths keeps 1-pixel maps finite. The lower corner is floor(coord) limited to
    size-2, so at integer coordinates (every coordinate at DLU's zero-offset init) the gradient
    w.r.t. the offset is the one-sided in-image difference S[i+1] - S[i] (S[i] - S[i-1] at the
    last row/col), never a difference with the outside as grid_sample's is.
    """
    n, gkk, h, w = kernel_space.shape
    s, g = scale_factor, groups
    kk = gkk // g
    # coordinates in fp32 at least: fp16 cannot hold i + 0.3 for i in the hundreds
    dtype = compute_dtype(offsets.dtype)
    offsets = offsets.to(dtype).reshape(n, g, 2, h * s, w * s)
    rows = torch.arange(h * s, device=offsets.device, dtype=dtype).div_(s).floor_()
    cols = torch.arange(w * s, device=offsets.device, dtype=dtype).div_(s).floor_()
    y = _clamp_to_image(rows[:, None] + offsets[:, :, 1], h - 1)  # (N, G, sH, sW)
    x = _clamp_to_image(cols[None, :] + offsets[:, :, 0], w - 1)
    y0 = y.detach().floor().clamp_(max=max(h - 2, 0))
    x0 = x.detach().floor().clamp_(max=max(w - 2, 0))
    wy, wx = y - y0, x - x0  # in [0, 1]; 0 on 1-pixel axes
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp_(max=h - 1), (x0 + 1).clamp_(max=w - 1)

    flat = kernel_space.to(dtype).reshape(n, g, kk, h * w)

    pixels = h * s * w * s  # explicit sizes: reshape(-1) is ambiguous for N == 0

    def corner(yi, xi):  # kernel_space at integer pixels (yi, xi) -> (N, G, k*k, sH*sW)
        index = (yi * w + xi).reshape(n, g, 1, pixels).expand(n, g, kk, pixels)
        return flat.gather(3, index)

    wy, wx = wy.reshape(n, g, 1, pixels), wx.reshape(n, g, 1, pixels)
    top = corner(y0, x0) * (1 - wx) + corner(y0, x1) * wx
    bottom = corner(y1, x0) * (1 - wx) + corner(y1, x1) * wx
    sampled = top * (1 - wy) + bottom * wy  # (N, G, k*k, sH*sW)
    return sampled.reshape(n, gkk, h * s, w * s).to(kernel_space.dtype)


def guided_reassemble_reference(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    """Pure-PyTorch ``guided_reassemble``: materialises the sampled kernels, then reassembles."""
    kernels = sample_kernel_space(kernel_space, offsets, groups, scale_factor)
    return reassemble_reference(x, kernels, k, groups, scale_factor)


def local_window_similarity(query, key, k, scale_factor=2):
    """Dot product of each high-res query with the k x k low-res window of its parent.

    query (N, D, sH, sW), key (N, D, H, W) -> (N, k*k, sH, sW) with
    ``out[n, ky*k + kx, i', j'] = sum_d query[n, d, i', j'] * key[n, d, i'//s + ky - r,
    j'//s + kx - r]``
    and 0 for taps outside the image (SAPA's similarity; the adjoint gather of ``reassemble``).
    """
    n, d, h, w = key.shape
    s = scale_factor
    if tuple(query.shape) != (n, d, h * s, w * s):
        raise ValueError(f'query must have shape {(n, d, h * s, w * s)} (key {tuple(key.shape)} '
                         f'at scale_factor={s}), got {tuple(query.shape)}')
    if is_onnx_exporting() and onnx_lowerings_enabled():  # no unfold in the graph
        return local_window_similarity_onnx(query, key, k, s)
    dtype = compute_dtype(query.dtype)
    windows = _low_res_windows(key.to(dtype), k)  # (N, D, H, W, k, k) view
    grouped = query.to(dtype).reshape(n, d, h, s, w, s)
    with autocast_disabled(key.device.type):
        out = torch.einsum('ndhwab,ndhywv->nabhywv', windows, grouped)  # (N, k, k, H, s, W, s)
    return out.reshape(n, k * k, h * s, w * s).to(query.dtype)


# ---------------------------------------------------------------------------------------------
# ONNX lowerings: standard operators, written for inference cost (the references are written for
# autograd: an unfold of k*k copies, gathers that keep the offset gradient one-sided). All sizes
# come from the tensors (``x.shape`` is traced), so the graphs keep N, H and W dynamic.
# ---------------------------------------------------------------------------------------------
def _upsampled_taps(x, k, scale_factor):
    """Yield (tap index, (N, C, sH, sW) slice) for the k*k taps of the s-times upsampled x.

    Tap (ky, kx) of output pixel (i', j') reads x[i'//s + ky - r, j'//s + kx - r] (zero
    outside): row i' + s*ky of the nearest-upsampled, r-padded input. Slice ends are negative
    constants so no size is baked into the graph.
    """
    r, s = (k - 1) // 2, scale_factor
    padded = F.pad(x, (r, r, r, r))
    up = padded if s == 1 else F.interpolate(padded, scale_factor=s, mode='nearest')
    for ky in range(k):
        rows = slice(s * ky, (s * (ky - 2 * r)) or None)
        for kx in range(k):
            cols = slice(s * kx, (s * (kx - 2 * r)) or None)
            yield ky * k + kx, up[:, :, rows, cols]


def reassemble_onnx(x, kernels, k, groups=1, scale_factor=2):
    """``reassemble`` as one Gather of the k*k windows and one batched MatMul per low-res pixel.

    Per low-res pixel p and group: out (s*s, C/G) = K_p (s*s, k*k) @ windows_p (k*k, C/G), where
    windows_p are the k x k neighbours of p gathered from the channels-last padded input (one
    Gather of contiguous C-vectors), then DepthToSpace. The s*s sub-pixels share their parent's
    window, so nothing is gathered at output resolution. Measured with onnxruntime 1.20 on 2
    threads (C=256, 50x76 -> x2): 2.5x faster and a third of the peak memory of k*k
    slice/mul/add passes over the upsampled input.
    """
    out_dtype = x.dtype
    x, kernels = upcast(x, kernels)
    n, c, h, w = x.shape
    s, g, kk, r = scale_factor, groups, k * k, (k - 1) // 2
    # (N, G*kk, sH, sW) -> (N, H, W, G, s*s, kk): the small tensor takes the transpose
    kernels = kernels.reshape(n, g, kk, h, s, w, s).permute(0, 3, 5, 1, 4, 6, 2)
    kernels = kernels.reshape(n, h, w, g, s * s, kk)
    padded = F.pad(x, (r, r, r, r))
    padded_w = padded.shape[3]
    flat = padded.flatten(2).transpose(1, 2)  # (N, (H+2r)*(W+2r), C)
    rows = torch.arange(h, device=x.device)[:, None, None, None]
    cols = torch.arange(w, device=x.device)[None, :, None, None]
    taps_y = torch.arange(k, device=x.device)[None, None, :, None]
    taps_x = torch.arange(k, device=x.device)[None, None, None, :]
    index = ((rows + taps_y) * padded_w + cols + taps_x).reshape(-1)  # (H*W*k*k, )
    windows = flat.index_select(1, index).reshape(n, h, w, kk, g, c // g)
    windows = windows.transpose(3, 4) if g > 1 else windows.reshape(n, h, w, 1, kk, c)
    out = torch.matmul(kernels, windows)  # (N, H, W, G, s*s, C/G)
    out = out.reshape(n, h * w, g, s * s, c // g).permute(0, 2, 4, 3, 1)  # (N, G, C/G, s*s, HW)
    return F.pixel_shuffle(out.reshape(n, c * s * s, h, w), s).to(out_dtype)


def sample_kernel_space_onnx(kernel_space, offsets, groups, scale_factor):
    """DLU's kernel sampling as one GridSample (bilinear, border = clamping to the image);
    GridSample needs opset >= 16 (TensorRT >= 8.5)."""
    n, gkk, h, w = kernel_space.shape
    s, g = scale_factor, groups
    out_h, out_w = offsets.shape[2], offsets.shape[3]
    offsets = offsets.reshape(n * g, 2, out_h, out_w)
    # parent pixel i'//s + offset, normalised for align_corners=False: (2*pos + 1) / size - 1
    # (finite for 1-pixel maps; border padding clamps to [0, size-1] like the kernels)
    rows = torch.arange(out_h, device=offsets.device, dtype=offsets.dtype)
    cols = torch.arange(out_w, device=offsets.device, dtype=offsets.dtype)
    rows = torch.div(rows, s, rounding_mode='floor')[:, None]
    cols = torch.div(cols, s, rounding_mode='floor')
    grid_x = (2 * (cols + offsets[:, 0]) + 1) / w - 1  # (N*G, sH, sW)
    grid_y = (2 * (rows + offsets[:, 1]) + 1) / h - 1
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (N*G, sH, sW, 2)
    sampled = F.grid_sample(kernel_space.reshape(n * g, gkk // g, h, w), grid, mode='bilinear',
                            padding_mode='border', align_corners=False)
    return sampled.reshape(n, gkk, out_h, out_w)


def guided_reassemble_onnx(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    """``guided_reassemble``: one GridSample of the kernel space, then :func:`reassemble_onnx`."""
    out_dtype = x.dtype
    x, kernel_space, offsets = upcast(x, kernel_space, offsets)
    kernels = sample_kernel_space_onnx(kernel_space, offsets, groups, scale_factor)
    return reassemble_onnx(x, kernels, k, groups, scale_factor).to(out_dtype)


def local_window_similarity_onnx(query, key, k, scale_factor=2):
    """SAPA / FADE's window similarity (N, k*k, sH, sW) as k*k sliced dot products."""
    out_dtype = query.dtype
    query, key = upcast(query, key)
    taps = [(query * tap).sum(dim=1, keepdim=True)
            for _, tap in _upsampled_taps(key, k, scale_factor)]
    return torch.cat(taps, dim=1).to(out_dtype)


# ---------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------
def reassemble(x, kernels, k, groups=1, scale_factor=2):
    """CARAFE reassembly: x (N, C, H, W), kernels (N, G*k*k, sH, sW) -> (N, C, sH, sW).

    Kernels are used as given (normalise them first, e.g. softmax over each group's k*k taps).
    """
    k, groups, scale_factor = check_reassemble_args(x, kernels, k, groups, scale_factor)
    return dispatch('reassemble', x.device.type, reassemble_reference,
                    (x, kernels, k, groups, scale_factor), lowering=reassemble_onnx)


def guided_reassemble(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    """DLU reassembly with kernels sampled from a low-res kernel space (see module docstring).

    x (N, C, H, W); kernel_space (N, G*k*k, H, W), already normalised; offsets (N, 2G, sH, sW),
    channel 2g = x (column) and 2g + 1 = y (row) offset of group g in low-res pixels.
    Returns (N, C, sH, sW); differentiable w.r.t. x, kernel_space and offsets.
    """
    k, groups, scale_factor = check_guided_reassemble_args(x, kernel_space, offsets, k, groups,
                                                           scale_factor)
    return dispatch('guided_reassemble', x.device.type, guided_reassemble_reference,
                    (x, kernel_space, offsets, k, groups, scale_factor),
                    lowering=guided_reassemble_onnx)
