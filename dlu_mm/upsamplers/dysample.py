"""DySample: Learning to Upsample by Learning to Sample (Liu et al., ICCV 2023).

A 1x1 conv predicts, for every output pixel and channel group, a small offset from the point
bilinear upsampling would sample; the input is then point-sampled there (one
:func:`dlu_mm.ops.subpixel_sample` call: compiled kernels, grid_sample reference).
"""
import torch
import torch.nn as nn

from ..ops import subpixel_sample
from ..utils import check_choice, check_divisible, check_int
from .base import BaseUpsampler

STYLES = ('lp',)  # only 'lp' (linear projection, then pixel shuffle) is specified


def subpixel_init_positions(scale_factor, groups, device=None, dtype=None):
    """(2*G*s*s, 1, 1) sub-pixel positions relative to the parent's centre, in low-res pixels.

    Channel c*G*s*s + g*s*s + dy*s + dx (c = 0: x, c = 1: y) holds (dx - (s-1)/2)/s for x and
    (dy - (s-1)/2)/s for y: where bilinear upsampling (align_corners=False) samples child
    (dy, dx) of a low-res pixel.
    """
    s = scale_factor
    steps = (torch.arange(s, device=device, dtype=dtype) - (s - 1) / 2) / s
    dy, dx = torch.meshgrid(steps, steps, indexing='ij')  # (s, s) each
    positions = torch.stack((dx, dy))[:, None].expand(2, groups, s, s)
    return positions.reshape(2 * groups * s * s, 1, 1)


class DySample(BaseUpsampler):
    """DySample upsampler, 'lp' style.

    offsets = conv1x1(x) C -> 2*G*s*s  * 0.25                          (DySample)
            = conv1x1(x) * 0.5 * sigmoid(scope conv1x1(x), no bias)   (DySample+, dyscope=True)
      channels [0, G*s*s) are x, [G*s*s, 2*G*s*s) are y, each g*s*s + dy*s + dx, low-res pixels
    positions = offsets + sub-pixel init positions                    # (N, 2*G*s*s, H, W)
    Y[group g] = grid_sample(X[group g], centre of the parent (i+0.5, j+0.5)
                             + pixel_shuffle(positions), bilinear, align_corners=False, border)
               = dlu_mm.ops.subpixel_sample(X, positions, G, s)  (one compiled pass)
    With zero offsets this is exactly bilinear upsampling (align_corners=False).
    Params: 8,224 at C=256, s=2, G=4 (DySample+: 16,416).

    Args:
        channels: input (= output) channels C (divisible by groups).
        scale_factor: integer upsampling factor s.
        groups: channel groups G, each with its own sampling points.
        style: 'lp' only.
        dyscope: DySample+'s dynamic offset scope.
    Init: offset conv normal(std=0.001), bias 0; scope conv 0 (scope 0.5*sigmoid(0) = 0.25).
    """

    def __init__(self, channels, scale_factor=2, groups=4, style='lp', dyscope=False,
                 init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.groups = check_int('groups', groups, 1)
        check_divisible('channels', self.channels, 'groups', self.groups)
        self.style = check_choice('style', style, STYLES)
        if not isinstance(dyscope, bool):
            raise TypeError(f'dyscope must be a bool, got {dyscope!r}')
        self.dyscope = dyscope
        offset_channels = 2 * self.groups * self.scale_factor ** 2
        self.offset = nn.Conv2d(self.channels, offset_channels, 1)
        self.scope = nn.Conv2d(self.channels, offset_channels, 1, bias=False) if dyscope else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)

    def upsample(self, x, guide=None):
        s, g = self.scale_factor, self.groups
        if self.scope is None:
            offsets = self.offset(x) * 0.25
        else:
            offsets = self.offset(x) * self.scope(x).sigmoid() * 0.5
        # under autocast the convs run in low precision; sample in x's dtype
        positions = offsets.to(x.dtype) + subpixel_init_positions(s, g, x.device, x.dtype)
        return subpixel_sample(x, positions, g, s)

    def extra_repr(self):
        return (f'{super().extra_repr()}, groups={self.groups}, style={self.style!r}, '
                f'dyscope={self.dyscope}')
