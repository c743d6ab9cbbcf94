"""Point-sampling upsampling: DySample's sampling step as one op (Liu et al., ICCV 2023).

Output pixel (i*s + dy, j*s + dx) of channel group g samples the group's channels of x
bilinearly (border padding) at a point given relative to its parent low-res pixel (i, j)::

    Y[n, c, i*s + dy, j*s + dx] = bilinear_border(X[n, c],
                                                  row = i + P[n, (G + g)*s*s + dy*s + dx, i, j],
                                                  col = j + P[n, g*s*s + dy*s + dx, i, j])

with g = c // (C/G), coordinates in input pixels (pixel centres at integers, as grid_sample's
align_corners=False) and P the (N, 2*G*s*s, H, W) positions: the G*s*s column positions, then the
G*s*s row ones, each ordered (g, dy, dx), i.e. DySample's offset map plus its sub-pixel initial
positions (dx - (s-1)/2)/s, before the pixel shuffle. With P equal to those initial positions the
op is bilinear upsampling (align_corners=False).

The compiled kernels read each output pixel's two positions from the low-res map and sample in
one pass: no pixel-shuffled positions, no grid and no layout copies. Their gradients are
grid_sample's: at an integer coordinate the right-sided difference, and none for a coordinate on
or beyond the first / last row or column (clamped).

The reference (pixel-shuffled positions by Reshape/Transpose, one GridSample, bilinear, border) is
already the ONNX export form: ``subpixel_sample`` hands the dispatcher no separate lowering.
"""
import torch
import torch.nn.functional as F

from ..utils import check_4d, check_same_device_dtype
from .dispatch import dispatch
from .precision import upcast
from .reassemble import check_grouped_upsampling_args

__all__ = ['subpixel_sample', 'subpixel_sample_reference', 'check_subpixel_sample_args']


def check_subpixel_sample_args(x, positions, groups, scale_factor):
    """Validate :func:`subpixel_sample`'s arguments; returns ``(groups, scale_factor)``."""
    groups, scale_factor = check_grouped_upsampling_args(x, groups, scale_factor)
    check_4d('positions', positions)
    check_same_device_dtype('positions', positions, 'x', x)
    n, _, h, w = x.shape
    want = (n, 2 * groups * scale_factor ** 2, h, w)
    if tuple(positions.shape) != want:
        raise ValueError(f'positions must have shape (N, 2*groups*scale_factor**2, H, W) = {want} '
                         f'for x of shape {tuple(x.shape)}, groups={groups} and '
                         f'scale_factor={scale_factor}, got {tuple(positions.shape)}')
    return groups, scale_factor


def subpixel_sample_reference(x, positions, groups, scale_factor):
    """Pure-PyTorch :func:`subpixel_sample` (differentiable; arguments assumed valid).

    Pixel-shuffles the positions, adds the parent centres and samples with grid_sample (bilinear,
    border, align_corners=False) on (N*G, C/G, H, W) views; the input is read channels-last on
    the CPU, where grid_sample's kernels (forward and the input-gradient scatter) then move each
    bilinear corner as one run of channels. fp16/bf16 inputs are sampled in fp32.
    """
    out_dtype = x.dtype
    x, positions = upcast(x, positions)  # fp32 sampling for fp16/bf16 (grid_sample on CPU: fp32)
    n, c, h, w = x.shape
    s, g = scale_factor, groups
    # the pixel shuffle (N, 2*G*s*s, H, W) -> (N, 2, G, sH, sW) written out: F.pixel_shuffle's
    # backward fails on an empty batch
    shuffled = positions.view(n, 2, g, s, s, h, w).permute(0, 1, 2, 5, 3, 6, 4)
    shuffled = shuffled.reshape(n, 2, g, s * h, s * w)
    # parent centre (i + 0.5, j + 0.5) + position, normalised over the W (H) pixel-wide extent
    # (align_corners=False): finite for 1-pixel maps
    cols = torch.arange(w, device=x.device, dtype=x.dtype).repeat_interleave(s) + 0.5
    rows = torch.arange(h, device=x.device, dtype=x.dtype).repeat_interleave(s) + 0.5
    grid_x = (shuffled[:, 0] + cols) / w * 2.0 - 1.0  # (N, G, sH, sW)
    grid_y = (shuffled[:, 1] + rows[:, None]) / h * 2.0 - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1).view(n * g, s * h, s * w, 2)
    features = x.reshape(n * g, c // g, h, w)
    if x.device.type == 'cpu':
        features = features.contiguous(memory_format=torch.channels_last)
    out = F.grid_sample(features, grid, mode='bilinear', padding_mode='border',
                        align_corners=False)
    return out.reshape(n, c, s * h, s * w).contiguous().to(out_dtype)


def subpixel_sample(x, positions, groups=1, scale_factor=2):
    """Upsample ``x`` by ``scale_factor`` by sampling it at per-sub-pixel points.

    Args:
        x: (N, C, H, W) input, C divisible by ``groups``.
        positions: (N, 2*groups*s*s, H, W) sampling points relative to each low-res pixel, in
            input pixels: channels [0, G*s*s) the columns, [G*s*s, 2*G*s*s) the rows, each
            ordered (group, dy, dx); x's dtype and device.
        groups: channel groups G, each with its own points.
        scale_factor: integer s >= 1.

    Returns:
        (N, C, s*H, s*W) tensor of x's dtype.
    """
    groups, scale_factor = check_subpixel_sample_args(x, positions, groups, scale_factor)
    return dispatch('subpixel_sample', x.device.type, subpixel_sample_reference,
                    (x, positions, groups, scale_factor))
