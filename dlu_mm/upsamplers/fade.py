"""FADE: Fusing the Assets of Decoder and Encoder (Lu et al., ECCV 2022 / IJCV 2024).

A guided CARAFE: reassembly kernels are predicted jointly from the high-res guide (encoder
feature) and the low-res input (decoder feature) by one shared conv, and a gate mixes the guide
back into the reassembled output.
"""
import torch
import torch.nn as nn

from ..ops.reassemble import kernel_softmax, reassemble
from ..utils import check_int, check_odd
from .base import BaseUpsampler
from .layers import same_conv, xavier_init_convs


def repeat_nearest(x, scale_factor):
    """Exact nearest upsampling by an integer factor: (N, C, H, W) -> (N, C, sH, sW)."""
    n, c, h, w = x.shape
    s = scale_factor
    return x[:, :, :, None, :, None].expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


class FADE(BaseUpsampler):
    """FADE upsampler (guided: ``forward(x, guide)`` with guide (N, C, sH, sW)).

    logits = enc(guide_compressor(guide)) + nearest_up(enc(compressor(x))) with ONE shared
    ``encoder_kernel`` conv ``enc`` (Cm -> k*k, its bias enters twice); softmax over k*k;
    R = reassemble(x, k); with the gate g = sigmoid(nearest_up(gate(x))):
    Y = g * guide + (1 - g) * R, else Y = R.
    Params: 2*C*Cm + Cm + Cm*ke^2*k^2 + k^2 (+ C + 1 gate) = 47,514 at C=256 (47,257 no gate).

    Args:
        channels: channels C of x and of the guide.
        scale_factor: integer upsampling factor s.
        up_kernel: reassembly window k (odd).
        encoder_kernel: kernel size of the shared conv (odd).
        compressed_channels: Cm.
        gate: use the gated fusion with the guide.
    """
    requires_guide = True

    def __init__(self, channels, scale_factor=2, up_kernel=5, encoder_kernel=3,
                 compressed_channels=64, gate=True, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.up_kernel = check_odd('up_kernel', up_kernel)
        self.encoder_kernel = check_odd('encoder_kernel', encoder_kernel)
        self.compressed_channels = check_int('compressed_channels', compressed_channels, 1)
        if not isinstance(gate, bool):
            raise TypeError(f'gate must be a bool, got {gate!r}')
        cm, k = self.compressed_channels, self.up_kernel
        self.guide_compressor = nn.Conv2d(channels, cm, 1)
        # no bias: the shared encoder's bias already enters the low-res logits
        self.compressor = nn.Conv2d(channels, cm, 1, bias=False)
        self.encoder = same_conv(cm, k * k, self.encoder_kernel)
        self.gate = nn.Conv2d(channels, 1, 1) if gate else None
        self.reset_parameters()

    def reset_parameters(self):
        """xavier-uniform convs, zero biases."""
        xavier_init_convs(self)

    def upsample(self, x, guide):
        s = self.scale_factor
        logits = self.encoder(self.guide_compressor(guide))  # (N, k*k, sH, sW)
        logits = logits + repeat_nearest(self.encoder(self.compressor(x)), s)
        kernels = kernel_softmax(logits).to(x.dtype)  # convs may run in low precision (autocast)
        out = reassemble(x, kernels, self.up_kernel, 1, s)  # (N, C, sH, sW)
        if self.gate is None:
            return out
        gate = torch.sigmoid(repeat_nearest(self.gate(x), s)).to(x.dtype)  # (N, 1, sH, sW)
        return torch.lerp(out, guide, gate)  # gate * guide + (1 - gate) * out

    def extra_repr(self):
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'encoder_kernel={self.encoder_kernel}, '
                f'compressed_channels={self.compressed_channels}, gate={self.gate is not None}')
