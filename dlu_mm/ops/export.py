"""ONNX lowerings of the dlu_mm ops: standard ONNX operators only, written for inference cost.

During ``torch.onnx.export`` (TorchScript and dynamo exporters alike)
:func:`dlu_mm.ops.dispatch.dispatch` runs these instead of the compiled kernels or the training
references, whatever the backend: a graph with a ``dlu_mm::`` node cannot run anywhere else,
and the references are written for autograd (an unfold of k*k copies, gathers that keep the
offset gradient one-sided) rather than for a runtime.

What each lowering does instead (output (N, C, sH, sW), taps T = k*k):

* ``reassemble``: one Gather of the k x k low-res windows (channels last: contiguous
  C-vectors, T/s^2 outputs' worth) and one batched MatMul per low-res pixel,
  (s*s, T) @ (T, C/G), then DepthToSpace. The s*s sub-pixels share their parent's window, so
  nothing is gathered at output resolution; the per-tap slice/mul/add form measured 2.5x slower
  with 3x the peak memory in onnxruntime.
* ``guided_reassemble``: the kernels are sampled from the kernel space with one GridSample
  (bilinear, border), then reassembled as above. GridSample needs opset >= 16 (TensorRT >= 8.5).
* ``ddf``: a loop over the taps of strided slices of the padded input (the reference is already
  of that form: no unfold).
* ``subpixel_sample`` (DySample): its reference is already the export form (the positions
  pixel-shuffled by Reshape/Transpose, one GridSample, bilinear, border), so it has no entry
  here and exports through it.
* ``local_deformable_attention``: keys are sampled at all P points in one GridSample (D = C/4
  channels), the values one point at a time and accumulated with the attention weights, so the
  (N, C, P, sH, sW) sampled values never exist.

All sizes come from the tensors (``x.shape`` is traced), so the graphs keep N, H and W dynamic.
"""
import torch
import torch.nn.functional as F

__all__ = ['is_onnx_exporting', 'lowering', 'reassemble_onnx', 'guided_reassemble_onnx',
           'ddf_onnx', 'local_deformable_attention_onnx', 'local_window_similarity_onnx']

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def is_onnx_exporting():
    """True while ``torch.onnx.export`` traces a model (either exporter)."""
    return torch.onnx.is_in_onnx_export()


def _upcast(*tensors):
    """fp16/bf16 -> fp32 (the kernels accumulate in fp32 too); other dtypes unchanged."""
    return [t.float() if t.dtype in _LOW_PRECISION else t for t in tensors]


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
    Gather of contiguous C-vectors), then pixel-shuffled. Measured with onnxruntime 1.20 on 2
    threads (C=256, 50x76 -> x2): 2.5x faster and a third of the peak memory of k*k
    slice/mul/add passes over the upsampled input.
    """
    out_dtype = x.dtype
    x, kernels = _upcast(x, kernels)
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
    """DLU's kernel sampling as one GridSample (bilinear, border = clamping to the image)."""
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
    """``guided_reassemble``: GridSample of the kernel space, then :func:`reassemble_onnx`."""
    out_dtype = x.dtype
    x, kernel_space, offsets = _upcast(x, kernel_space, offsets)
    kernels = sample_kernel_space_onnx(kernel_space, offsets, groups, scale_factor)
    return reassemble_onnx(x, kernels, k, groups, scale_factor).to(out_dtype)


def local_window_similarity_onnx(query, key, k, scale_factor=2):
    """SAPA / FADE's window similarity (N, k*k, sH, sW) as k*k sliced dot products."""
    out_dtype = query.dtype
    query, key = _upcast(query, key)
    taps = [(query * tap).sum(dim=1, keepdim=True)
            for _, tap in _upsampled_taps(key, k, scale_factor)]
    return torch.cat(taps, dim=1).to(out_dtype)


def ddf_onnx(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    """``ddf``: its reference is already a loop of strided slices (no unfold)."""
    from .ddf import ddf_reference
    return ddf_reference(x, channel_filter, spatial_filter, k, dilation, stride, combine)


def local_deformable_attention_onnx(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    """LDA-AQU's attention without the (N, C, P, sH, sW) sampled values (see module docstring)."""
    from .local_attention import _normalised_grid, _sample
    out_dtype = q.dtype
    q, key, value, offsets = _upcast(q, key, value, offsets)
    rpb = None if rpb is None else _upcast(rpb)[0]
    n, d, out_h, out_w = q.shape
    c, h, w = value.shape[1], value.shape[2], value.shape[3]
    num_points = offsets.shape[1] // (2 * groups)
    grid = _normalised_grid(offsets, groups, num_points)  # (N*G, P*sH, sW, 2)
    sampled_key = _sample(key, grid, groups, num_points, out_h, out_w)  # (N, D, P, sH, sW)
    head_dim = d // num_heads
    q = q.reshape(n, num_heads, head_dim, 1, out_h, out_w)
    sampled_key = sampled_key.reshape(n, num_heads, head_dim, num_points, out_h, out_w)
    logits = (q * sampled_key).sum(dim=2)  # (N, nh, P, sH, sW)
    if rpb is not None:  # q . rpb as a MatMul (N, nh, P, sH*sW) rather than an Einsum
        bias = torch.matmul(rpb, q.reshape(n, num_heads, head_dim, out_h * out_w))
        logits = logits + bias.reshape(n, num_heads, num_points, out_h, out_w)
    attention = (logits * head_dim ** -0.5).softmax(dim=2)
    grids = grid.reshape(n * groups, num_points, out_h, out_w, 2)
    values = value.reshape(n * groups, c // groups, h, w)
    out = None
    for point in range(num_points):
        sampled = F.grid_sample(values, grids[:, point], mode='bilinear', padding_mode='zeros',
                                align_corners=True)  # (N*G, C/G, sH, sW)
        term = (sampled.reshape(n, num_heads, c // num_heads, out_h, out_w)
                * attention[:, :, None, point])
        out = term if out is None else out + term
    return out.reshape(n, c, out_h, out_w).to(out_dtype)


_LOWERINGS = {
    'reassemble': reassemble_onnx,
    'guided_reassemble': guided_reassemble_onnx,
    'ddf': ddf_onnx,
    'local_deformable_attention': local_deformable_attention_onnx,
    'local_window_similarity': local_window_similarity_onnx,  # SAPA / FADE (not a native op)
}


def lowering(op, reference):
    """The export form of ``op``; an op without one exports through its reference."""
    return _LOWERINGS.get(op, reference)
