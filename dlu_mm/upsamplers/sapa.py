"""SAPA: Similarity-Aware Point Affiliation (Lu et al., NeurIPS 2022).

A guided, parameter-light upsampler: each high-res guide pixel (query) attends over the k x k
low-res window of its parent (keys); the softmax of the similarities reassembles the raw input.
"""
import torch.nn as nn

from ..ops.compat import softmax
from ..ops.reassemble import local_window_similarity, reassemble
from ..utils import check_choice, check_divisible, check_int, check_odd
from .base import BaseUpsampler
from .layers import ChannelLayerNorm

NORMS = ('ln', 'gn')
GN_GROUPS = 32


class SAPA(BaseUpsampler):
    """SAPA upsampler (guided: ``forward(x, guide)`` with guide (N, C, sH, sW)).

    q = q_proj(norm_guide(guide)) (N, d, sH, sW); key = k_proj(norm_x(x)) (N, d, H, W);
    logits[t, i', j'] = q[:, i', j'] . key[:, window t of the parent] (no 1/sqrt(d) scaling;
    out-of-image taps: logit 0, value 0); Y = reassemble(x, softmax_t(logits), k).
    Params: 2 norms (2C each) + 2 * (C*d + d) = 33,920 at C=256, d=64; 17,472 for the detection
    variant (d=32, GroupNorm with 32 groups).

    Args:
        channels: channels C of x and of the guide.
        scale_factor: integer upsampling factor s.
        up_kernel: window k (odd).
        embedding_dim: d of queries and keys.
        norm: 'ln' (affine LayerNorm over channels) or 'gn' (GroupNorm, 32 groups).
        qkv_bias: biases of the 1x1 projections.
    Init (the paper's release; the design spec is silent): projections trunc-normal std 0.02 with
    zero bias, norms weight 1 / bias 0.
    """
    requires_guide = True

    def __init__(self, channels, scale_factor=2, up_kernel=5, embedding_dim=64, norm='ln',
                 qkv_bias=True, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.up_kernel = check_odd('up_kernel', up_kernel)
        self.embedding_dim = check_int('embedding_dim', embedding_dim, 1)
        self.norm = check_choice('norm', norm, NORMS)
        if not isinstance(qkv_bias, bool):
            raise TypeError(f'qkv_bias must be a bool, got {qkv_bias!r}')
        if norm == 'gn':
            check_divisible('channels', self.channels, 'GroupNorm groups', GN_GROUPS)
        self.norm_guide = self._build_norm()
        self.norm_x = self._build_norm()
        self.q_proj = nn.Conv2d(channels, self.embedding_dim, 1, bias=qkv_bias)
        self.k_proj = nn.Conv2d(channels, self.embedding_dim, 1, bias=qkv_bias)
        self.reset_parameters()

    def _build_norm(self):
        if self.norm == 'ln':
            return ChannelLayerNorm(self.channels)
        return nn.GroupNorm(GN_GROUPS, self.channels)

    def reset_parameters(self):
        for proj in (self.q_proj, self.k_proj):
            nn.init.trunc_normal_(proj.weight, std=0.02)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        for norm in (self.norm_guide, self.norm_x):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def upsample(self, x, guide):
        query = self.q_proj(self.norm_guide(guide))  # (N, d, sH, sW)
        key = self.k_proj(self.norm_x(x))  # (N, d, H, W)
        logits = local_window_similarity(query, key.to(query.dtype), self.up_kernel,
                                         self.scale_factor)  # (N, k*k, sH, sW)
        # under autocast the projections run in low precision; reassemble in x's dtype
        kernels = softmax(logits, 1).to(x.dtype)
        return reassemble(x, kernels, self.up_kernel, 1, self.scale_factor)

    def extra_repr(self):
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'embedding_dim={self.embedding_dim}, norm={self.norm!r}')
