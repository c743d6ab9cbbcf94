"""Building blocks shared by several upsamplers (and by :mod:`dlu_mm.pretrain`).

- :func:`same_conv`, :func:`xavier_init_convs`: CARAFE-style encoders and their init (CARAFE,
  DLU, FADE, LDA-AQU, the builder's baselines).
- :class:`ChannelLayerNorm`: LayerNorm over channels of a (N, C, H, W) map (SAPA, LDA-AQU).
- :class:`DDFSpatialBranch`, :class:`DDFChannelBranch`: the FilterNorm-ed filter branches of
  a decoupled dynamic filter (Zhou et al., "Decoupled Dynamic Filter Networks", CVPR 2021),
  used by DDF-Up and by ``DDFConv``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.ddf import filter_norm


def same_conv(in_channels, out_channels, kernel_size, dilation=1, bias=True):
    """Conv2d that keeps the spatial size (odd kernel, any dilation)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                     dilation=dilation, bias=bias)


def xavier_init_convs(module):
    """xavier-uniform weights and zero biases on every Conv2d / ConvTranspose2d of ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of every pixel of a (N, C, H, W) tensor."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DDFSpatialBranch(nn.Module):
    """Spatial filters: 1x1 conv (C -> head*k*k, bias, stride) -> FilterNorm(gain / k).

    One k*k filter per output position and head; the stride puts the filters on the output grid
    of a strided DDF. Output (N, head*k*k, ceil(H/stride), ceil(W/stride)).
    The owner initialises the conv.
    """

    def __init__(self, in_channels, kernel_size, head=1, stride=1, gain=1.0):
        super().__init__()
        self.kernel_size = kernel_size
        self.head = head
        self.gain = gain
        self.conv = nn.Conv2d(in_channels, head * kernel_size ** 2, 1, stride=stride)

    def forward(self, x):
        logits = self.conv(x)  # (N, head*k*k, H', W')
        n, _, h, w = logits.shape
        taps = self.kernel_size ** 2
        normed = filter_norm(logits.view(n, self.head, taps, h, w), self.gain / self.kernel_size,
                             dim=2)
        return normed.view(n, self.head * taps, h, w)


class DDFChannelBranch(nn.Module):
    """Channel filters: global avg pool -> 1x1 conv C -> hidden -> ReLU -> 1x1 conv -> C*k*k
    -> FilterNorm with a learnable per-(channel, tap) scale (init randn * gain / k).

    ``hidden`` is the squeeze width; the owner derives it from its se_ratio (DDF: floor(se*C)).
    Output (N, C, k, k): one k x k filter per sample and channel, shared over positions.
    The owner initialises the convs; :meth:`reset_scale` re-draws the scale.
    """

    def __init__(self, channels, kernel_size, hidden, gain=1.0):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.gain = gain
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels * kernel_size ** 2, 1)
        self.scale = nn.Parameter(torch.empty(channels, kernel_size ** 2))
        self.reset_scale()

    def reset_scale(self):
        with torch.no_grad():
            self.scale.normal_().mul_(self.gain / self.kernel_size)

    def forward(self, x):
        n, k = x.shape[0], self.kernel_size
        pooled = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        logits = self.expand(self.act(self.squeeze(pooled))).view(n, self.channels, k * k)
        return filter_norm(logits, self.scale, dim=2).view(n, self.channels, k, k)


def init_ddf_module(module):
    """DDF's init (its release): kaiming-normal (fan_out, relu) weights and zero biases on every
    Conv2d of ``module``, then a fresh FilterNorm scale for every :class:`DDFChannelBranch`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, DDFChannelBranch):
            m.reset_scale()
