"""DDF-Up: upsampling with decoupled dynamic filters (Zhou et al., "Decoupled Dynamic Filter
Networks", CVPR 2021).

Each of the s*s sub-pixel positions has its own (spatial, channel) filter-branch pair; branch i
filters the low-res input with :func:`dlu_mm.ops.ddf` and supplies sub-pixel (i // s, i % s) of
every output block (pixel shuffle).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import in_dispatch_mode, is_tracing
from ..ops.ddf import DDF_COMBINES, ddf_heads, filter_norm
from ..utils import check_choice, check_divisible, check_int, check_odd
from .base import BaseUpsampler
from .layers import DDFChannelBranch, DDFSpatialBranch, init_ddf_module


class _Interleave(torch.autograd.Function):
    """s*s maps (N, C, H, W) -> (N, C, sH, sW), map i at sub-pixel (i // s, i % s): the pixel
    shuffle of their stack, written in one pass (stack + pixel_shuffle copy twice)."""

    @staticmethod
    def forward(ctx, s, *maps):
        n, c, h, w = maps[0].shape
        ctx.s = s
        out = maps[0].new_empty(n, c, h, s, w, s)
        for i, m in enumerate(maps):
            out[:, :, :, i // s, :, i % s] = m
        return out.view(n, c, h * s, w * s)

    @staticmethod
    def backward(ctx, grad):
        s = ctx.s
        n, c, sh, sw = grad.shape
        blocks = grad.reshape(n, c, sh // s, s, sw // s, s)
        return (None, *(blocks[:, :, :, i // s, :, i % s] for i in range(s * s)))


class DDFUp(BaseUpsampler):
    """DDF-Up upsampler.

    For each sub-pixel i in 0..s*s-1:
      spatial filter  S_i  = FilterNorm(1x1 conv C -> head*k*k (depthwise dw_k x dw_k conv (x)))
                             (joint mode: FilterNorm(1x1 conv joint_channels -> head*k*k (guide)))
      channel filter Ch_i  = FilterNorm(1x1 conv -> C*k*k (ReLU (1x1 conv C -> floor(se*C)
                             (global avg pool (x)))))
      Y_i = ddf(x, Ch_i, S_i, k, dilation, combine)        # (N, C, H, W), head h filters
                                                            # channels [h*C/head, (h+1)*C/head)
    Y = pixel_shuffle(channel c*s*s + i <- Y_i[c])         # (N, C, sH, sW)
    FilterNorm standardises every filter over its k*k taps and rescales by gain/k (spatial) or by
    a learnable per-(channel, tap) scale initialised randn*gain/k (channel).
    Params: 560,368 at C=256, s=2, k=3 (550,128 in joint mode with joint_channels=256).

    Args:
        channels: input (= output) channels C.
        scale_factor: integer upsampling factor s.
        kernel_size: DDF window k (odd, >= 3: FilterNorm needs >= 2 taps).
        dilation: DDF dilation.
        head: spatial-filter heads; C must be divisible by it.
        se_ratio: channel-branch squeeze ratio (hidden channels max(floor(se_ratio*C), 1)).
        nonlinearity: sets FilterNorm's gain (``torch.nn.init.calculate_gain``).
        dw_kernel_size: depthwise conv size of the spatial branch (odd; clamped to >= 3).
        joint_channels: > 0 turns on joint (guided) mode: ``forward(x, guide)`` with guide
            (N, joint_channels, H, W) at x's resolution drives the spatial filters.
        kernel_combine: 'mul' or 'add' (how spatial and channel filters combine).
    Init (the spec is silent; DDF's release): kaiming-normal (fan_out, relu) convs, zero biases.
    """

    def __init__(self, channels, scale_factor=2, kernel_size=3, dilation=1, head=1,
                 se_ratio=0.2, nonlinearity='linear', dw_kernel_size=3, joint_channels=-1,
                 kernel_combine='mul', init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.kernel_size = check_odd('kernel_size', kernel_size, 3)
        self.dilation = check_int('dilation', dilation, 1)
        self.head = check_int('head', head, 1)
        check_divisible('channels', self.channels, 'head', self.head)
        if isinstance(se_ratio, bool) or not isinstance(se_ratio, (int, float)) or se_ratio <= 0:
            raise ValueError(f'se_ratio must be a number > 0, got {se_ratio!r}')
        # floor(se_ratio * C) as in DDF, at least 1 so that small test models still build
        hidden = max(int(se_ratio * self.channels), 1)
        self.se_ratio = se_ratio
        self.nonlinearity = nonlinearity
        self.gain = nn.init.calculate_gain(nonlinearity)  # ValueError for unknown names
        # DDF clamps the depthwise kernel to >= 3; 'same' padding needs it odd.
        self.dw_kernel_size = max(check_odd('dw_kernel_size', dw_kernel_size), 3)
        self.joint_channels = check_int('joint_channels', joint_channels)
        if self.joint_channels == 0 or self.joint_channels < -1:
            raise ValueError(f'joint_channels must be -1 (no guide) or >= 1 (guide channels), '
                             f'got {joint_channels}')
        self.requires_guide = self.joint_channels > 0
        self.kernel_combine = check_choice('kernel_combine', kernel_combine, DDF_COMBINES)

        c, k = self.channels, self.kernel_size
        num_branches = self.scale_factor ** 2
        if self.requires_guide:
            self.spatial_branches = nn.ModuleList(
                DDFSpatialBranch(self.joint_channels, k, self.head, 1, self.gain)
                for _ in range(num_branches))
        else:
            self.spatial_branches = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(c, c, self.dw_kernel_size, padding=self.dw_kernel_size // 2,
                              groups=c),
                    DDFSpatialBranch(c, k, self.head, 1, self.gain))
                for _ in range(num_branches))
        # each channel branch holds its FilterNorm scale (one per channel and tap)
        self.channel_branches = nn.ModuleList(
            DDFChannelBranch(c, k, hidden, self.gain) for _ in range(num_branches))
        self.reset_parameters()

    @property
    def guide_channels(self):
        return self.joint_channels

    @classmethod
    def cfg_requires_guide(cls, joint_channels=-1, **kwargs):
        return isinstance(joint_channels, int) and joint_channels > 0

    @property
    def guide_scale_factor(self):
        # joint mode: the guide has x's own resolution
        return 1 if self.requires_guide else self.scale_factor

    def reset_parameters(self):
        """kaiming-normal convs with zero bias; channel FilterNorm scale ~ randn * gain / k."""
        init_ddf_module(self)

    def branch_filters(self, x, guide=None):
        """Per sub-pixel branch i, the FilterNorm-ed (channel (N, C, k, k), spatial
        (N, head*k*k, H, W)) filters, in x's dtype (branch by branch: the reference form)."""
        spatial_input = guide if self.requires_guide else x
        # under autocast the convs run in low precision; filter in x's dtype
        return [(channel_branch(x).to(x.dtype), spatial_branch(spatial_input).to(x.dtype))
                for spatial_branch, channel_branch in zip(self.spatial_branches,
                                                          self.channel_branches)]

    def spatial_filters(self, x, guide=None):
        """The s*s branches' FilterNorm-ed spatial filters at once, (N, s*s, head*k*k, H, W).

        Every branch is linear up to its FilterNorm (depthwise dw_k x dw_k conv, then a 1x1
        conv): so all s*s of them are ONE dense conv C -> s*s*head*k*k whose weights are composed
        from the branch parameters at forward time (W_i[o, c] * dw_i[c]; bias
        W_i @ dw_bias_i + bias_i). Same maps as :meth:`branch_filters` up to rounding order, one
        pass over x instead of 2*s*s, and no (N, C, H, W) depthwise output per branch kept for
        backward. Joint mode: the 1x1 convs on the guide, concatenated.
        """
        n, _, h, w = x.shape
        if in_dispatch_mode():
            # under an analysis mode (FLOP counting): the branch-wise form the spec prices, not
            # the composed dense conv (more FLOPs, fewer passes)
            spatial_input = guide if self.requires_guide else x
            return torch.stack([branch(spatial_input) for branch in self.spatial_branches],
                               1).to(x.dtype)
        taps = self.kernel_size ** 2
        convs = [branch[-1].conv if isinstance(branch, nn.Sequential) else branch.conv
                 for branch in self.spatial_branches]
        weight = torch.cat([conv.weight for conv in convs])  # (B*head*k*k, Cin, 1, 1)
        bias = torch.cat([conv.bias for conv in convs])
        if self.requires_guide:
            logits = F.conv2d(guide, weight, bias)
        else:
            depthwise = [branch[0] for branch in self.spatial_branches]
            # (B, head*k*k, C, 1, 1) * (B, 1, C, dw_k, dw_k) -> (B*head*k*k, C, dw_k, dw_k)
            per_branch = weight.view(len(convs), -1, self.channels, 1, 1)
            dw_weight = torch.stack([dw.weight for dw in depthwise])  # (B, C, 1, dw_k, dw_k)
            composed = (per_branch * dw_weight.transpose(1, 2)).flatten(0, 1)
            dw_bias = torch.stack([dw.bias for dw in depthwise])  # (B, C)
            bias = bias + torch.bmm(per_branch.flatten(2), dw_bias.unsqueeze(-1)).flatten()
            logits = F.conv2d(x, composed, bias, padding=self.dw_kernel_size // 2)
        # FilterNorm of every (branch, head) filter over its k*k taps, all branches in one go
        filters = self.scale_factor ** 2 * self.head
        normed = filter_norm(logits.view(n, filters, taps, h, w), self.gain / self.kernel_size,
                             dim=2)
        return normed.view(n, self.scale_factor ** 2, self.head * taps, h, w).to(x.dtype)

    def upsample(self, x, guide=None):
        n, c, h, w = x.shape
        s = self.scale_factor
        spatial = self.spatial_filters(x, guide)  # (N, s*s, head*k*k, H, W)
        outputs = [ddf_heads(x, channel_branch(x).to(x.dtype), spatial[:, i], self.kernel_size,
                             self.head, self.dilation, 1, self.kernel_combine)
                   for i, channel_branch in enumerate(self.channel_branches)]  # (N, C, H, W)
        if torch.is_grad_enabled() and not is_tracing():
            # branch i straight into its sub-pixel (i // s, i % s) of the output: one pass
            # forward, and backward hands each branch its strided slice of the gradient
            return _Interleave.apply(s, *outputs)  # (N, C, sH, sW)
        out = torch.stack(outputs, dim=2)  # (N, C, s*s, H, W): channel c*s*s + i <- branch i
        del outputs  # the branch outputs are not needed for backward: free them before shuffling
        return F.pixel_shuffle(out.view(n, c * s * s, h, w), s)  # (N, C, sH, sW)

    def extra_repr(self):
        return (f'{super().extra_repr()}, kernel_size={self.kernel_size}, '
                f'dilation={self.dilation}, head={self.head}, se_ratio={self.se_ratio}, '
                f'nonlinearity={self.nonlinearity!r}, dw_kernel_size={self.dw_kernel_size}, '
                f'joint_channels={self.joint_channels}, '
                f'kernel_combine={self.kernel_combine!r}')
