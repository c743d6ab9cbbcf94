"""LDA-AQU: Adaptive Query-guided Upsampling via Local Deformable Attention (Du et al., ACM MM
2024, arXiv 2411.19585).

Bilinearly upsampled queries attend, per output pixel, over k_u x k_u learned (deformed) points
of the low-res keys and values; the offsets come from the queries themselves.
"""
import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch.utils.checkpoint import checkpoint

from ..ops import is_tracing, local_deformable_attention
from ..utils import check_divisible, check_int, check_odd
from .base import BaseUpsampler
from .layers import ChannelLayerNorm, xavier_init_convs


class LDAAQU(BaseUpsampler):
    """LDA-AQU upsampler.

    With D = C / reduction_factor, G groups, P = k_u*k_u points:
      Xn = LayerNorm_C(x); Q = conv1x1(Xn) C -> D; K = conv1x1(Xn) C -> D (no biases); V = x
      Q_up = bilinear(Q, (sH, sW), align_corners=True)                  # (N, D, sH, sW)
      per group g, one offset net shared by all groups on Q_up's channels [g*D/G, (g+1)*D/G):
        dw 3x3 conv (no bias) -> LayerNorm(D/G) -> GELU -> k_e x k_e conv -> 2P (bias)
      offsets = tanh(net) * range_factor + base grid (ky - r, kx - r), output pixels, (dy, dx)
      Y = local_deformable_attention(Q_up, K, V, offsets, rpb, num_heads, G)  # (N, C, sH, sW)
    Params: 39,410 at C=256 with the defaults.

    Args:
        channels: input (= output) channels C.
        scale_factor: integer upsampling factor s.
        reduction_factor: C / D (C must be divisible by it).
        num_heads: attention heads (D and C divisible by it).
        k_e: offset-net conv size (odd). k_u: points per axis (odd).
        groups: offset groups G (D and C divisible by it).
        range_factor: max |offset - base| in output pixels (tanh scaling), >= 0.
        rpb: learnable (num_heads, P, D/num_heads) bias added to the sampled keys.
    Init: xavier-uniform convs, LayerNorms (1, 0), last offset conv weight and bias 0 (the points
    start on the regular k_u x k_u grid), rpb trunc-normal std 0.02.
    """

    def __init__(self, channels, scale_factor=2, reduction_factor=4, num_heads=1, k_e=3, k_u=3,
                 groups=2, range_factor=11, rpb=True, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.reduction_factor = check_int('reduction_factor', reduction_factor, 1)
        check_divisible('channels', self.channels, 'reduction_factor', self.reduction_factor)
        self.embed_channels = d = self.channels // self.reduction_factor
        self.num_heads = check_int('num_heads', num_heads, 1)
        self.groups = check_int('groups', groups, 1)
        for name, value in (('channels', self.channels), ('channels/reduction_factor', d)):
            check_divisible(name, value, 'num_heads', self.num_heads)
            check_divisible(name, value, 'groups', self.groups)
        self.k_e = check_odd('k_e', k_e)
        self.k_u = check_odd('k_u', k_u)
        if (isinstance(range_factor, bool) or not isinstance(range_factor, numbers.Real)
                or range_factor < 0):
            raise ValueError(f'range_factor must be a real number >= 0, got {range_factor!r}')
        self.range_factor = float(range_factor)
        if not isinstance(rpb, bool):
            raise TypeError(f'rpb must be a bool, got {rpb!r}')

        group_channels, num_points = d // self.groups, self.k_u ** 2
        self.norm = ChannelLayerNorm(self.channels)
        self.q_proj = nn.Conv2d(self.channels, d, 1, bias=False)
        self.k_proj = nn.Conv2d(self.channels, d, 1, bias=False)
        self.offset_net = nn.Sequential(
            nn.Conv2d(group_channels, group_channels, 3, padding=1, groups=group_channels,
                      bias=False),
            ChannelLayerNorm(group_channels),
            nn.GELU(),
            nn.Conv2d(group_channels, 2 * num_points, self.k_e, padding=self.k_e // 2))
        self.rpb = (nn.Parameter(torch.empty(self.num_heads, num_points, d // self.num_heads))
                    if rpb else None)
        # (2P,) base grid: channel 2n = ky - r, 2n + 1 = kx - r for point n = ky*k_u + kx
        r = (self.k_u - 1) // 2
        ky, kx = torch.meshgrid(torch.arange(self.k_u), torch.arange(self.k_u), indexing='ij')
        base = torch.stack((ky, kx), dim=-1).reshape(-1) - r
        self.register_buffer('base_offsets', base.float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        xavier_init_convs(self)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        last = self.offset_net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        if self.rpb is not None:
            nn.init.trunc_normal_(self.rpb, std=0.02)

    def offsets(self, q_up):
        """(N, D, sH, sW) queries -> (N, G*2P, sH, sW) absolute offsets in output pixels.

        When training, the offset net runs under activation checkpointing: its four
        output-resolution activations (about 3.5x the queries' size) are recomputed in backward
        rather than held from forward to backward (they dominated the module's peak memory;
        the recompute costs one offset-net forward, a few % of the module's step).
        """
        if torch.is_grad_enabled() and q_up.requires_grad and not is_tracing():
            return checkpoint(self._offsets, q_up, use_reentrant=False)
        return self._offsets(q_up)

    def _offsets(self, q_up):
        n, d, out_h, out_w = q_up.shape
        # the shared offset net sees each group's channel slice as its own sample
        net = self.offset_net(q_up.reshape(n * self.groups, d // self.groups, out_h, out_w))
        base = self.base_offsets.to(net.dtype).view(1, -1, 1, 1)
        offsets = net.tanh() * self.range_factor + base  # (N*G, 2P, sH, sW)
        return offsets.reshape(n, self.groups * offsets.shape[1], out_h, out_w)

    def upsample(self, x, guide=None):
        n, c, h, w = x.shape
        s = self.scale_factor
        normed = self.norm(x)
        query = self.q_proj(normed)  # (N, D, H, W)
        key = self.k_proj(normed)  # (N, D, H, W)
        q_up = F.interpolate(query, size=(s * h, s * w), mode='bilinear',
                             align_corners=True)  # (N, D, sH, sW)
        offsets = self.offsets(q_up)  # (N, G*2P, sH, sW)
        # under autocast the convs run in low precision; attend in x's dtype
        rpb = None if self.rpb is None else self.rpb.to(x.dtype)
        return local_deformable_attention(q_up.to(x.dtype), key.to(x.dtype), x,
                                          offsets.to(x.dtype), rpb, self.num_heads, self.groups)

    def extra_repr(self):
        return (f'{super().extra_repr()}, reduction_factor={self.reduction_factor}, '
                f'num_heads={self.num_heads}, k_e={self.k_e}, k_u={self.k_u}, '
                f'groups={self.groups}, range_factor={self.range_factor}, '
                f'rpb={self.rpb is not None}')
