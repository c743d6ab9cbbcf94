"""Common contract of every dlu_mm upsampler.

``Upsampler(channels, scale_factor=2, **kwargs)``; ``forward(x, guide=None) -> (N, C, s*H, s*W)``.
Guided upsamplers (``requires_guide = True``) need ``guide`` of shape
(N, guide_channels, g*H, g*W), g = ``guide_scale_factor`` (s unless overridden, e.g. 1 for DDF-Up's
joint mode), with x's device and dtype; the others ignore it. ``init_weights()`` restores the operator's own
initialisation (necks run a global xavier pass first, then call it again).

Torch alone is enough. Where mmengine is installed, ``BaseUpsampler`` derives from mmengine's
``BaseModule`` (``init_cfg``, its ``init_weights`` traversal and init-info bookkeeping, exactly as
in an OpenMMLab model); without it, from :class:`TorchBaseModule`, an ``nn.Module`` that accepts
only ``init_cfg=None`` (other values need mmengine's initialisers); ``init_weights()`` then runs
the operator's own init alone.
State-dict keys are the same either way: neither base adds parameters or buffers.
"""
import importlib.util

import torch.nn as nn

from ..utils import check_4d, check_int, check_same_device_dtype, check_spatial_scale


#: whether mmengine is installed: upsamplers then are mmengine BaseModules and registered in its
#: root MODELS registry (a broken mmengine install raises on import instead of being hidden)
MMENGINE_AVAILABLE = importlib.util.find_spec('mmengine') is not None


class TorchBaseModule(nn.Module):
    """The part of mmengine's ``BaseModule`` that upsamplers use, for environments without it.

    ``init_cfg`` describes mmengine initialisers (``Pretrained``, ``Xavier``...): only ``None`` is
    accepted here, so a config written for mmengine fails loudly instead of being ignored.
    (``BaseUpsampler.init_weights`` reaches mmengine's traversal only for a non-empty
    ``init_cfg``, so nothing else of ``BaseModule`` is needed.)
    """

    def __init__(self, init_cfg=None):
        if init_cfg is not None:
            raise ValueError(f'init_cfg={init_cfg!r} needs mmengine (its initialisers apply it), '
                             'which is not installed; without mmengine only init_cfg=None is '
                             'allowed (the operator\'s own init runs in the constructor)')
        super().__init__()
        self.init_cfg = None


if MMENGINE_AVAILABLE:
    from mmengine.model import BaseModule
else:
    BaseModule = TorchBaseModule


class BaseUpsampler(BaseModule):
    requires_guide = False

    @classmethod
    def cfg_requires_guide(cls, **kwargs):
        """Whether a module built with these constructor kwargs needs a guide (for configs)."""
        return cls.requires_guide

    def __init__(self, channels, scale_factor=2, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.channels = check_int('channels', channels, 1)
        self.scale_factor = check_int('scale_factor', scale_factor, 1)

    @property
    def guide_channels(self):
        """Channels a guide must have (guided upsamplers only)."""
        return self.channels

    @property
    def guide_scale_factor(self):
        """How many times x's spatial size the guide must be (guided upsamplers only)."""
        return self.scale_factor

    def forward(self, x, guide=None):
        check_4d('x', x, self.channels)
        if self.requires_guide:
            gs = self.guide_scale_factor
            if guide is None:
                size = 'H, W' if gs == 1 else f'{gs}*H, {gs}*W'
                raise ValueError(f'{type(self).__name__} is a guided upsampler: forward(x, guide) '
                                 f'needs guide of shape (N, {self.guide_channels}, {size}), '
                                 f'got None')
            check_4d('guide', guide, self.guide_channels)
            check_same_device_dtype('guide', guide, 'x', x)
            if guide.shape[0] != x.shape[0]:
                raise ValueError(f'guide batch size {guide.shape[0]} != x batch size '
                                 f'{x.shape[0]}')
            check_spatial_scale('guide', guide, 'x', x, gs)
        return self.upsample(x, guide)

    def upsample(self, x, guide):
        """(N, C, H, W) -> (N, C, sH, sW); arguments are already validated."""
        raise NotImplementedError

    def init_weights(self):
        """Restore the operator's own init (:meth:`reset_parameters`), then apply ``init_cfg``.

        Necks call this again after their global xavier pass; once an ``init_cfg`` (e.g.
        ``Pretrained``) has been applied, later calls keep those weights.
        """
        if self.init_cfg and self._is_init:
            return
        self.reset_parameters()
        if self.init_cfg:
            super().init_weights()

    def reset_parameters(self):
        """The operator's own initialisation (the paper's), in place."""
        raise NotImplementedError

    def extra_repr(self):
        return f'channels={self.channels}, scale_factor={self.scale_factor}'
