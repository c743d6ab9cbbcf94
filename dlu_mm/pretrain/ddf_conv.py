"""DDF as a convolution replacement (Zhou et al., "Decoupled Dynamic Filter Networks", CVPR 2021).

``DDFConv`` stands in for a k x k convolution that keeps the channel count (the 3x3 conv of a
ResNet bottleneck): a spatial filter per output position (shared by the channels of a head) and
a channel filter per sample (shared by all positions), both predicted from the input and
FilterNorm-ed, combined by product or sum and applied with :func:`dlu_mm.ops.ddf`.
Needs torch only (no mmcv / mmpretrain).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.ddf import DDF_COMBINES, ddf, filter_norm
from ..utils import check_4d, check_choice, check_divisible, check_int, check_odd


def _check_se_ratio(se_ratio, channels):
    """Hidden width floor(se_ratio * channels) of the channel branch (must be >= 1)."""
    if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)):
        raise TypeError(f'se_ratio must be a number, got {se_ratio!r}')
    hidden = int(se_ratio * channels)
    if hidden < 1:
        raise ValueError(f'se_ratio * channels must be >= 1 (hidden channels of the channel '
                         f'branch), got se_ratio={se_ratio}, channels={channels}')
    return hidden


class DDFSpatialBranch(nn.Module):
    """Spatial filters: 1x1 conv (C -> head*k*k, bias, stride) -> FilterNorm(gain / k).

    One k*k filter per output position and head; the stride puts the filters on the output grid
    of a strided DDF. Output (N, head*k*k, ceil(H/stride), ceil(W/stride)).
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
    """Channel filters: global avg pool -> 1x1 conv C -> floor(se_ratio*C) -> ReLU -> 1x1 conv
    -> C*k*k -> FilterNorm with a learnable per-(channel, tap) scale (init randn * gain / k).

    Output (N, C, k, k): one k x k filter per sample and channel, shared over positions.
    """

    def __init__(self, channels, kernel_size, se_ratio=0.2, gain=1.0):
        super().__init__()
        hidden = _check_se_ratio(se_ratio, channels)
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


class DDFConv(nn.Module):
    """Decoupled dynamic filter as a drop-in for a C -> C k x k convolution (stride 1 or 2).

    With S = DDFSpatialBranch(x) (N, head*k*k, H', W') and Ch = DDFChannelBranch(x) (N, C, k, k),
    head h filtering channels [h*C/head, (h+1)*C/head):

        Y[c, p] = sum_t X[c, p*stride + dilation*(t - r)] * S[h(c), t, p] * Ch[c, t]   ('mul')
        Y[c, p] = sum_t X[c, p*stride + dilation*(t - r)] * (S[h(c), t, p] + Ch[c, t]) ('add')

    Output (N, C, H', W') with H' = ceil(H / stride): the grid of
    ``nn.Conv2d(C, C, k, stride, padding=dilation*(k-1)//2, dilation)``, tap for tap (output p
    centred on input p*stride, out-of-image taps contribute nothing), so the strided block still
    lines up with the 1x1-stride shortcut of a ResNet block on odd sizes.

    Params: C*k^2 + k^2 (spatial, head=1) + C*m + m + m*C*k^2 + C*k^2 (channel, m =
    floor(se_ratio*C)) + C*k^2 (FilterNorm scale).

    Args:
        in_channels: C (= output channels).
        kernel_size: k (odd, >= 3: FilterNorm needs >= 2 taps).
        stride: output stride (1 or 2 in ResNets; any positive int).
        dilation: tap spacing.
        head: spatial-filter heads; C must be divisible by it.
        se_ratio: channel-branch squeeze ratio.
        nonlinearity: sets FilterNorm's gain (``torch.nn.init.calculate_gain``); 'relu' because
            a ReLU follows the filter in a bottleneck (the DDF release's default for its
            backbones; DDF-Up uses 'linear').
        kernel_combine: 'mul' or 'add'.
    Init: kaiming-normal (fan_out, relu) convs with zero bias, as the backbone's own convs.
    """

    def __init__(self, in_channels, kernel_size=3, stride=1, dilation=1, head=1, se_ratio=0.2,
                 nonlinearity='relu', kernel_combine='mul'):
        super().__init__()
        self.in_channels = check_int('in_channels', in_channels, 1)
        self.kernel_size = check_odd('kernel_size', kernel_size, 3)
        self.stride = check_int('stride', stride, 1)
        self.dilation = check_int('dilation', dilation, 1)
        self.head = check_int('head', head, 1)
        check_divisible('in_channels', self.in_channels, 'head', self.head)
        self.se_ratio = se_ratio
        self.nonlinearity = nonlinearity
        gain = nn.init.calculate_gain(nonlinearity)  # ValueError for unknown names
        self.kernel_combine = check_choice('kernel_combine', kernel_combine, DDF_COMBINES)
        self.spatial_branch = DDFSpatialBranch(self.in_channels, self.kernel_size, self.head,
                                               self.stride, gain)
        self.channel_branch = DDFChannelBranch(self.in_channels, self.kernel_size, se_ratio, gain)
        self.init_weights()

    @property
    def out_channels(self):
        return self.in_channels

    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(m.bias)
        self.channel_branch.reset_scale()

    def forward(self, x):
        check_4d('x', x, self.in_channels)
        n, c, h, w = x.shape
        k, s, head = self.kernel_size, self.stride, self.head
        # under autocast the branch convs run in low precision; filter in x's dtype
        spatial = self.spatial_branch(x).to(x.dtype)  # (N, head*k*k, ceil(H/s), ceil(W/s))
        channel = self.channel_branch(x).to(x.dtype)  # (N, C, k, k)
        out_h, out_w = spatial.shape[-2:]
        # The op's output is floor(H/s): pad to s*ceil(H/s) with zeros (= skipped taps) so it
        # equals the conv grid above on odd sizes too.
        if (out_h * s, out_w * s) != (h, w):
            x = F.pad(x, (0, out_w * s - w, 0, out_h * s - h))
        # Heads filter disjoint channel blocks with their own spatial filter: fold them into
        # the batch so each block is a plain DDF.
        out = ddf(x.reshape(n * head, c // head, out_h * s, out_w * s),
                  channel.reshape(n * head, c // head, k, k),
                  spatial.reshape(n * head, k * k, out_h, out_w), k, self.dilation, s,
                  self.kernel_combine)
        return out.reshape(n, c, out_h, out_w)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, dilation={self.dilation}, head={self.head}, '
                f'se_ratio={self.se_ratio}, nonlinearity={self.nonlinearity!r}, '
                f'kernel_combine={self.kernel_combine!r}')
