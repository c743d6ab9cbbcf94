"""DDF as a convolution replacement (Zhou et al., "Decoupled Dynamic Filter Networks", CVPR 2021).

``DDFConv`` stands in for a k x k convolution that keeps the channel count (the 3x3 conv of a
ResNet bottleneck): a spatial filter per output position (shared by the channels of a head) and
a channel filter per sample (shared by all positions), both predicted from the input and
FilterNorm-ed, combined by product or sum and applied with :func:`dlu_mm.ops.ddf`.
Needs torch and mmengine only (no mmcv / mmpretrain): the filter branches live in
:mod:`dlu_mm.upsamplers.layers`, shared with DDF-Up.
"""
import torch.nn as nn
import torch.nn.functional as F

from ..ops.ddf import DDF_COMBINES, ddf_heads
from ..upsamplers.layers import DDFChannelBranch, DDFSpatialBranch, init_ddf_module
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
        self.channel_branch = DDFChannelBranch(self.in_channels, self.kernel_size,
                                               _check_se_ratio(se_ratio, self.in_channels), gain)
        self.init_weights()

    @property
    def out_channels(self):
        return self.in_channels

    def init_weights(self):
        init_ddf_module(self)

    def forward(self, x):
        check_4d('x', x, self.in_channels)
        h, w = x.shape[-2:]
        k, s, head = self.kernel_size, self.stride, self.head
        # under autocast the branch convs run in low precision; filter in x's dtype
        spatial = self.spatial_branch(x).to(x.dtype)  # (N, head*k*k, ceil(H/s), ceil(W/s))
        channel = self.channel_branch(x).to(x.dtype)  # (N, C, k, k)
        out_h, out_w = spatial.shape[-2:]
        # The op's output is floor(H/s): pad to s*ceil(H/s) with zeros (= skipped taps) so it
        # equals the conv grid above on odd sizes too.
        if (out_h * s, out_w * s) != (h, w):
            x = F.pad(x, (0, out_w * s - w, 0, out_h * s - h))
        # head h filters channels [h*C/head, (h+1)*C/head) with its own spatial filter
        return ddf_heads(x, channel, spatial, k, head, self.dilation, s, self.kernel_combine)

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, dilation={self.dilation}, head={self.head}, '
                f'se_ratio={self.se_ratio}, nonlinearity={self.nonlinearity!r}, '
                f'kernel_combine={self.kernel_combine!r}')
