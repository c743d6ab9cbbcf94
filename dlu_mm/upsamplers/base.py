"""Common contract of every dlu_mm upsampler.

``Upsampler(channels, scale_factor=2, **kwargs)``; ``forward(x, guide=None) -> (N, C, s*H, s*W)``.
Guided upsamplers (``requires_guide = True``) need ``guide`` of shape (N, guide_channels, s*H, s*W)
with x's device and dtype; the others ignore it. ``init_weights()`` restores the operator's own
initialisation (necks run a global xavier pass first, then call it again).
"""
from mmengine.model import BaseModule

from ..utils import check_4d, check_int, check_same_device_dtype, check_spatial_scale


class BaseUpsampler(BaseModule):
    requires_guide = False

    def __init__(self, channels, scale_factor=2, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.channels = check_int('channels', channels, 1)
        self.scale_factor = check_int('scale_factor', scale_factor, 1)

    @property
    def guide_channels(self):
        """Channels a guide must have (guided upsamplers only)."""
        return self.channels

    def forward(self, x, guide=None):
        check_4d('x', x, self.channels)
        if self.requires_guide:
            if guide is None:
                raise ValueError(f'{type(self).__name__} is a guided upsampler: forward(x, guide) '
                                 f'needs guide of shape (N, {self.guide_channels}, '
                                 f'{self.scale_factor}*H, {self.scale_factor}*W), got None')
            check_4d('guide', guide, self.guide_channels)
            check_same_device_dtype('guide', guide, 'x', x)
            if guide.shape[0] != x.shape[0]:
                raise ValueError(f'guide batch size {guide.shape[0]} != x batch size '
                                 f'{x.shape[0]}')
            check_spatial_scale('guide', guide, 'x', x, self.scale_factor)
        return self.upsample(x, guide)

    def upsample(self, x, guide):
        """(N, C, H, W) -> (N, C, sH, sW); arguments are already validated."""
        raise NotImplementedError

    def init_weights(self):
        raise NotImplementedError

    def extra_repr(self):
        return f'channels={self.channels}, scale_factor={self.scale_factor}'
