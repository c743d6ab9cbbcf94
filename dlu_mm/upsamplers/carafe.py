"""CARAFE: Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019).

A light encoder predicts, for every output pixel, a softmax-normalised k x k kernel that
reassembles the k x k low-res neighbourhood of its parent pixel (:func:`dlu_mm.ops.reassemble`).
"""
import torch.nn as nn
import torch.nn.functional as F

from ..ops.reassemble import kernel_softmax, reassemble
from ..utils import check_divisible, check_int, check_odd
from .base import BaseUpsampler
from .layers import same_conv, xavier_init_convs


class KernelPredictionUpsampler(BaseUpsampler):
    """What CARAFE and DLU share: their arguments and the 1x1 channel compressor C -> Cm."""

    def __init__(self, channels, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
                 encoder_dilation=1, compressed_channels=64, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg=init_cfg)
        self.up_kernel = check_odd('up_kernel', up_kernel)
        self.up_group = check_int('up_group', up_group, 1)
        check_divisible('channels', self.channels, 'up_group', self.up_group)
        self.encoder_kernel = check_odd('encoder_kernel', encoder_kernel)
        self.encoder_dilation = check_int('encoder_dilation', encoder_dilation, 1)
        self.compressed_channels = check_int('compressed_channels', compressed_channels, 1)
        self.compressor = nn.Conv2d(self.channels, self.compressed_channels, 1)

    def encoder_conv(self, out_channels):
        """The ``encoder_kernel`` x ``encoder_kernel`` conv Cm -> out_channels ('same' size)."""
        return same_conv(self.compressed_channels, out_channels, self.encoder_kernel,
                         self.encoder_dilation)

    def extra_repr(self):
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, up_group={self.up_group}, '
                f'encoder_kernel={self.encoder_kernel}, '
                f'encoder_dilation={self.encoder_dilation}, '
                f'compressed_channels={self.compressed_channels}')


class CARAFE(KernelPredictionUpsampler):
    """CARAFE upsampler.

    compressor (1x1, C -> Cm) -> encoder (encoder_kernel conv, Cm -> G*k*k*s*s) -> pixel shuffle
    -> softmax over each group's k*k taps -> reassemble the k x k window of the parent pixel.
    Params: C*Cm + Cm + Cm*ke^2*G*k^2*s^2 + G*k^2*s^2 (74,148 at C=256, s=2).

    Args:
        channels: input (= output) channels C.
        scale_factor: integer upsampling factor s.
        up_kernel: reassembly window k (odd).
        up_group: kernel groups G; channel c uses group c // (C/G).
        encoder_kernel, encoder_dilation: kernel size (odd) and dilation of the encoder conv.
        compressed_channels: Cm.
    """

    def __init__(self, channels, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
                 encoder_dilation=1, compressed_channels=64, init_cfg=None):
        super().__init__(channels, scale_factor, up_kernel, up_group, encoder_kernel,
                         encoder_dilation, compressed_channels, init_cfg=init_cfg)
        s, k, g = self.scale_factor, self.up_kernel, self.up_group
        # output channel ((g*k + ky)*k + kx)*s*s + (dy*s + dx): pixel_shuffle puts tap (g, ky, kx)
        # of sub-pixel (dy, dx) at channel (g*k + ky)*k + kx of output pixel (s*i + dy, s*j + dx)
        self.encoder = self.encoder_conv(g * k * k * s * s)
        self.reset_parameters()

    def reset_parameters(self):
        """xavier-uniform convs with zero bias, then encoder ~ N(0, 0.001): k x k box averages."""
        xavier_init_convs(self)
        nn.init.normal_(self.encoder.weight, std=0.001)

    def upsample(self, x, guide=None):
        logits = self.encoder(self.compressor(x))  # (N, G*k*k*s*s, H, W)
        logits = F.pixel_shuffle(logits, self.scale_factor)  # (N, G*k*k, sH, sW)
        # under autocast the convs run in low precision; reassemble in x's dtype
        kernels = kernel_softmax(logits, self.up_group).to(x.dtype)
        return reassemble(x, kernels, self.up_kernel, self.up_group, self.scale_factor)
