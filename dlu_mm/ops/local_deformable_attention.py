"""Local deformable attention: LDA-AQU's sampling + attention step (Du et al., "LDA-AQU:
Adaptive Query-guided Upsampling via Local Deformable Attention", ACM MM 2024).

Every output pixel (i', j') attends over P points per channel group. Point n of group g sits at
(i' + dy, j' + dx) in output pixels (offsets are absolute: the base grid is already added), is
mapped to the input with the align_corners=True rule y = (i' + dy) * (H-1)/(sH-1) (factor 0 for
a 1-pixel output axis) and bilinearly samples that group's key and value channels with zero
padding. Per head h:

    A[h, n] = softmax_n( sum_{d in h} q[d] * (K_s[d, n] + rpb[h, n, d]) / sqrt(D/num_heads) )
    out[c] = sum_n A[head(c), n] * V_s[c, n]

Points outside the image stay in the softmax with key 0 (+ rpb) and value 0.

This file holds the op's argument checks (the compiled kernels repeat them as TORCH_CHECKs), its
reference (test oracle, fallback), its ONNX lowering and the public, dispatching op.
"""
import torch
import torch.nn.functional as F

from ..utils import check_4d, check_divisible, check_int, check_same_device_dtype
from .dispatch import dispatch
from .precision import upcast

__all__ = ['local_deformable_attention', 'local_deformable_attention_reference',
           'local_deformable_attention_onnx', 'check_local_deformable_attention_args']


def check_local_deformable_attention_args(q, key, value, offsets, rpb=None, num_heads=1,
                                          groups=2):
    """Validate :func:`local_deformable_attention`'s arguments (the compiled kernels repeat them as TORCH_CHECKs).

    Returns ``(num_heads, groups, num_points)``.
    """
    num_heads = check_int('num_heads', num_heads, 1)
    groups = check_int('groups', groups, 1)
    for name, tensor in (('q', q), ('key', key), ('value', value), ('offsets', offsets)):
        check_4d(name, tensor)
    for name, tensor in (('key', key), ('value', value), ('offsets', offsets)):
        check_same_device_dtype(name, tensor, 'q', q)
    n, d, out_h, out_w = q.shape
    c = value.shape[1]
    if key.shape[1] != d:
        raise ValueError(f'key must have as many channels as q ({d}), got shape '
                         f'{tuple(key.shape)}')
    if key.shape[0] != n or value.shape[0] != n or offsets.shape[0] != n:
        raise ValueError(f'q, key, value and offsets must share the batch size, got shapes '
                         f'{tuple(q.shape)}, {tuple(key.shape)}, {tuple(value.shape)}, '
                         f'{tuple(offsets.shape)}')
    if key.shape[2:] != value.shape[2:]:
        raise ValueError(f'key and value must have the same spatial size, got '
                         f'{tuple(key.shape[2:])} and {tuple(value.shape[2:])}')
    if offsets.shape[2:] != q.shape[2:]:
        raise ValueError(f'offsets must have the spatial size of q {tuple(q.shape[2:])}, got '
                         f'{tuple(offsets.shape[2:])}')
    check_divisible('key/q channels D', d, 'groups', groups)
    check_divisible('value channels C', c, 'groups', groups)
    check_divisible('key/q channels D', d, 'num_heads', num_heads)
    check_divisible('value channels C', c, 'num_heads', num_heads)
    if offsets.shape[1] == 0 or offsets.shape[1] % (2 * groups) != 0:
        raise ValueError(f'offsets must have groups*2*P channels (groups={groups}, P >= 1 '
                         f'points), got shape {tuple(offsets.shape)}')
    num_points = offsets.shape[1] // (2 * groups)
    if rpb is not None:
        if not isinstance(rpb, torch.Tensor):
            raise TypeError(f'rpb must be a torch.Tensor or None, got {type(rpb).__name__}')
        check_same_device_dtype('rpb', rpb, 'q', q)
        want = (num_heads, num_points, d // num_heads)
        if tuple(rpb.shape) != want:
            raise ValueError(f'rpb must have shape (num_heads, P, D/num_heads) = {want}, got '
                             f'{tuple(rpb.shape)}')
    return num_heads, groups, num_points


def _normalised_grid(offsets, groups, num_points):
    """Absolute output-pixel offsets -> grid_sample(align_corners=True) grid.

    (N, G*2P, sH, sW) -> (N*G, P*sH, sW, 2) holding (x, y) in [-1, 1] for the input map.
    """
    n, _, out_h, out_w = offsets.shape
    offsets = offsets.reshape(n, groups, num_points, 2, out_h, out_w)
    rows = torch.arange(out_h, device=offsets.device, dtype=offsets.dtype).view(out_h, 1)
    cols = torch.arange(out_w, device=offsets.device, dtype=offsets.dtype)

    def normalise(pos, out_size):
        # Output pixel pos -> input pixel pos*(in-1)/(out-1) -> [-1, 1] over the input's
        # (in-1) span; the (in-1) factors cancel. A 1-pixel output axis maps everything to
        # input pixel 0 (factor 0), which is -1 whatever the input size. For a 1-pixel input
        # axis grid_sample ignores the value (it scales by in-1 = 0), so this stays finite.
        if out_size == 1:
            return torch.full_like(pos, -1.0)
        return pos * (2.0 / (out_size - 1)) - 1.0

    grid_y = normalise(rows + offsets[:, :, :, 0], out_h)  # (N, G, P, sH, sW)
    grid_x = normalise(cols + offsets[:, :, :, 1], out_w)
    grid = torch.stack((grid_x, grid_y), dim=-1)  # (N, G, P, sH, sW, 2)
    return grid.view(n * groups, num_points * out_h, out_w, 2)


def _sample(feature, grid, groups, num_points, out_h, out_w):
    """Bilinear zero-padded sampling of each group's channels at its points.

    (N, C, H, W) -> (N, C, P, sH, sW).
    """
    n, c, h, w = feature.shape
    sampled = F.grid_sample(feature.reshape(n * groups, c // groups, h, w), grid,
                            mode='bilinear', padding_mode='zeros', align_corners=True)
    return sampled.view(n, c, num_points, out_h, out_w)


def local_deformable_attention_reference(q, key, value, offsets, rpb=None, num_heads=1,
                                         groups=2):
    """Pure-PyTorch local deformable attention (arguments as the public op, assumed valid).

    Materialises the sampled keys (N, D, P, sH, sW) and values (N, C, P, sH, sW): P times the
    output, the memory the fused kernel avoids. fp16/bf16 inputs are computed in fp32 and
    returned in their own dtype.
    """
    out_dtype = q.dtype
    q, key, value, offsets, rpb = upcast(q, key, value, offsets, rpb)
    n, d, out_h, out_w = q.shape
    c = value.shape[1]
    num_points = offsets.shape[1] // (2 * groups)
    grid = _normalised_grid(offsets, groups, num_points)
    sampled_key = _sample(key, grid, groups, num_points, out_h, out_w)  # (N, D, P, sH, sW)
    sampled_value = _sample(value, grid, groups, num_points, out_h, out_w)  # (N, C, P, sH, sW)

    head_dim = d // num_heads
    q = q.reshape(n, num_heads, head_dim, out_h, out_w)
    sampled_key = sampled_key.view(n, num_heads, head_dim, num_points, out_h, out_w)
    # Broadcast-multiply-sum and the per-point loop below keep the (large) sampled tensors in
    # place: einsum would permute copies of them into matmul layout (2-3x slower on CPU).
    logits = (q[:, :, :, None] * sampled_key).sum(dim=2)  # (N, nh, P, sH, sW)
    if rpb is not None:
        # q . rpb: the bias is the same at every pixel, so contract it without broadcasting.
        logits = logits + torch.einsum('nhdyx,hpd->nhpyx', q, rpb)
    attention = (logits * head_dim ** -0.5).softmax(dim=2)
    sampled_value = sampled_value.view(n, num_heads, c // num_heads, num_points, out_h, out_w)
    out = None
    for point in range(num_points):
        weight = attention[:, :, None, point]  # (N, nh, 1, sH, sW)
        term = sampled_value[:, :, :, point]  # (N, nh, C/nh, sH, sW)
        out = weight * term if out is None else out.addcmul(weight, term)
    return out.reshape(n, c, out_h, out_w).to(out_dtype)


def local_deformable_attention_onnx(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    """The ONNX export form: without the (N, C, P, sH, sW) sampled values of the reference.

    The keys are sampled at all P points in one GridSample (D = C/reduction channels), the values
    one point at a time (one GridSample each) and accumulated with the attention weights; the
    q . rpb term is a MatMul (N, nh, P, sH*sW) rather than an Einsum.
    """
    out_dtype = q.dtype
    q, key, value, offsets, rpb = upcast(q, key, value, offsets, rpb)
    n, d, out_h, out_w = q.shape
    c, h, w = value.shape[1], value.shape[2], value.shape[3]
    num_points = offsets.shape[1] // (2 * groups)
    grid = _normalised_grid(offsets, groups, num_points)  # (N*G, P*sH, sW, 2)
    sampled_key = _sample(key, grid, groups, num_points, out_h, out_w)  # (N, D, P, sH, sW)
    head_dim = d // num_heads
    q = q.reshape(n, num_heads, head_dim, 1, out_h, out_w)
    sampled_key = sampled_key.reshape(n, num_heads, head_dim, num_points, out_h, out_w)
    logits = (q * sampled_key).sum(dim=2)  # (N, nh, P, sH, sW)
    if rpb is not None:
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


def local_deformable_attention(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    """LDA-AQU's deformable local attention.

    Args:
        q: (N, D, sH, sW) queries at output resolution.
        key: (N, D, H, W) keys; value: (N, C, H, W) values.
        offsets: (N, groups*2*P, sH, sW) absolute point displacements in output pixels; channel
            g*2P + 2n is dy and g*2P + 2n + 1 is dx of point n of group g.
        rpb: optional (num_heads, P, D/num_heads) bias added to the sampled keys.
        num_heads: heads over contiguous channel blocks of q/key (D/nh) and value (C/nh).
        groups: offset groups over contiguous channel blocks of key (D/G) and value (C/G).

    Returns:
        (N, C, sH, sW) tensor of q's dtype.
    """
    num_heads, groups, _ = check_local_deformable_attention_args(q, key, value, offsets, rpb,
                                                                 num_heads, groups)
    return dispatch('local_deformable_attention', q.device.type,
                    local_deformable_attention_reference,
                    (q, key, value, offsets, rpb, num_heads, groups),
                    lowering=local_deformable_attention_onnx)
