"""DLU: Dynamic Lightweight Upsampling (Fu et al., ICPR 2024; arXiv 2410.22139).

Instead of CARAFE's k*k*s*s kernel values per low-res pixel, DLU predicts one softmax kernel per
low-res pixel (a *kernel space*) plus, for each of the s*s children, a guidance offset at which
its kernel is sampled bilinearly from that space; the sampled kernel reassembles the k x k window
of the parent (:func:`dlu_mm.ops.guided_reassemble`: its compiled forward samples the kernels
inside the reassembly, never as one (N, G*k*k, sH, sW) tensor; the backward holds the gradient
of that size, and on the CPU the sampled kernels too).
"""
import torch.nn as nn
import torch.nn.functional as F

from ..ops.reassemble import guided_reassemble, kernel_softmax
from .carafe import KernelPredictionUpsampler
from .layers import xavier_init_convs


class DLU(KernelPredictionUpsampler):
    """Dynamic Lightweight Upsampling.

    compressor (1x1, C -> Cm); kernel_space_encoder (ke conv, Cm -> G*k*k) + softmax over k*k ->
    kernel space S (N, G*k*k, H, W); guidance_offsets (ke conv, Cm -> 2*G*s*s, zero init) + pixel
    shuffle -> per output pixel and group a (dx, dy) offset in low-res pixels; the kernel of
    output pixel (i', j') is S sampled at (i'//s + dy, j'//s + dx) (border clamp).
    At init (offsets 0) DLU equals CARAFE whose s*s children share their parent's kernel.
    Params: C*Cm + Cm + Cm*ke^2*G*k^2 + G*k^2 + Cm*ke^2*2*G*s^2 + 2*G*s^2 (35,489 at C=256, s=2).

    Args: as :class:`~dlu_mm.upsamplers.CARAFE` (``encoder_kernel`` / ``encoder_dilation`` apply
    to both the kernel-space and the offset conv).
    """

    def __init__(self, channels, scale_factor=2, up_kernel=5, up_group=1, encoder_kernel=3,
                 encoder_dilation=1, compressed_channels=64, init_cfg=None):
        super().__init__(channels, scale_factor, up_kernel, up_group, encoder_kernel,
                         encoder_dilation, compressed_channels, init_cfg=init_cfg)
        s, k, g = self.scale_factor, self.up_kernel, self.up_group
        self.kernel_space_encoder = self.encoder_conv(g * k * k)
        # channel (2g + c)*s*s + dy*s + dx, c = 0 for x, 1 for y: pixel_shuffle yields channel
        # 2g + c at output pixel (s*i + dy, s*j + dx), the layout guided_reassemble expects
        self.guidance_offsets = self.encoder_conv(2 * g * s * s)
        self.reset_parameters()

    def reset_parameters(self):
        """xavier-uniform convs (zero bias); kernel space ~ N(0, 0.001); offsets exactly zero."""
        xavier_init_convs(self)
        nn.init.normal_(self.kernel_space_encoder.weight, std=0.001)
        nn.init.zeros_(self.guidance_offsets.weight)
        nn.init.zeros_(self.guidance_offsets.bias)

    def upsample(self, x, guide=None):
        compressed = self.compressor(x)  # (N, Cm, H, W)
        kernel_space = kernel_softmax(self.kernel_space_encoder(compressed), self.up_group)
        offsets = F.pixel_shuffle(self.guidance_offsets(compressed),
                                  self.scale_factor)  # (N, 2G, sH, sW)
        # under autocast the convs run in low precision; the op works in x's dtype
        return guided_reassemble(x, kernel_space.to(x.dtype), offsets.to(x.dtype), self.up_kernel,
                                 self.up_group, self.scale_factor)
