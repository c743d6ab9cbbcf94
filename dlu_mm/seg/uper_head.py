"""UPerNet decode head whose upsampling steps can be learnable feature upsamplers.

UPerNet (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018) runs a
PPM on the last stage, an FPN top-down path (3 bilinear 2x steps for 4 levels) and then resizes
every level to the finest one (x2, x4, x8) and fuses them. CARAFE, SAPA, FADE and LDA-AQU report
ADE20K gains by replacing those bilinear resizes with their operators.

``UpsampleUPerHead`` is mmseg's ``UPerHead`` plus:
- ``upsample_cfg`` with a ``type`` (any dlu_mm upsampler): each top-down step becomes
  ``lateral[i-1] += fit(up_i(lateral[i], guide=lateral[i-1]), lateral[i-1])``; guided upsamplers
  (FADE, SAPA) get the finer lateral as guide, resized to exactly 2x when sizes are odd, and the
  2x output is cropped (or resized, if smaller) to the finer lateral's size.
- ``fusion_upsample=True`` also replaces the fusion resizes to the finest level by chains of 2x
  upsamplers (one module per chain step: 1 + 2 + 3 for 4 levels); step j -> j-1 of a chain is
  guided by the FPN output of level j-1.
Without a ``type`` it is exactly ``UPerHead``: no extra parameters, same state_dict keys, same
outputs, and the ``upsample_cfg`` entries are interpolate arguments (default bilinear with the
head's ``align_corners``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.decode_heads import UPerHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..upsamplers import build_upsampler, is_guided
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2  # every UPerNet level is 2x the next coarser one


@MODELS.register_module()
class UpsampleUPerHead(UPerHead):
    """UPerHead with optional learnable upsamplers in the top-down path and the fusion.

    Args:
        upsample_cfg (dict | None): with ``type``: an upsampler config for
            ``dlu_mm.upsamplers.build_upsampler`` (``channels`` = the head's ``channels`` and
            ``scale_factor`` = 2 are filled in); without ``type``: interpolate arguments
            (``mode``, ``align_corners``) of every resize, as in ``UPerHead``.
        fusion_upsample (bool): also replace the fusion resizes to the finest level by chains of
            2x upsamplers. Needs ``upsample_cfg`` with a ``type``.
        **kwargs: ``UPerHead`` / ``BaseDecodeHead`` arguments.
    """

    def __init__(self, upsample_cfg=None, fusion_upsample=False, **kwargs):
        super().__init__(**kwargs)
        if upsample_cfg is None:
            upsample_cfg = {}
        if not isinstance(upsample_cfg, dict):
            raise TypeError(f'upsample_cfg must be a dict or None, got {upsample_cfg!r} '
                            f'({type(upsample_cfg).__name__})')
        if not isinstance(fusion_upsample, bool):
            raise TypeError(f'fusion_upsample must be a bool, got {fusion_upsample!r}')
        upsample_cfg = dict(upsample_cfg)
        self.upsample_cfg = upsample_cfg
        self.fusion_upsample = fusion_upsample
        num_steps = len(self.in_channels) - 1
        if 'type' not in upsample_cfg:
            if fusion_upsample:
                raise ValueError('fusion_upsample=True needs a learnable upsampler: give '
                                 "upsample_cfg a 'type' (e.g. dict(type='CARAFE')), got "
                                 f'upsample_cfg={upsample_cfg!r}')
            # plain UPerHead: no new modules, so the state_dict is UPerHead's
            self.interp_cfg = self._interp_cfg(upsample_cfg)
            self.top_down_upsamplers = None
            self.fusion_upsamplers = None
            return
        self.interp_cfg = self._interp_cfg({})  # the fusion resizes unless fusion_upsample
        # top_down_upsamplers[i - 1] takes level i to level i - 1
        self.top_down_upsamplers = nn.ModuleList(
            self._build_upsampler() for _ in range(num_steps))
        # fusion_upsamplers[i - 1][t] is step t of the chain taking level i to level 0
        self.fusion_upsamplers = nn.ModuleList(
            nn.ModuleList(self._build_upsampler() for _ in range(level))
            for level in range(1, num_steps + 1)) if fusion_upsample else None

    def _interp_cfg(self, kwargs):
        # UPerHead's resizes: bilinear with the head's align_corners; align_corners only goes to
        # modes that accept it, so dict(mode='nearest') works as in mmdet's FPN upsample_cfg
        interp = dict(kwargs)
        interp.setdefault('mode', 'bilinear')
        if interp['mode'] in ('linear', 'bilinear', 'bicubic', 'trilinear'):
            interp.setdefault('align_corners', self.align_corners)
        return interp

    def _build_upsampler(self):
        # build_upsampler rejects an unknown type (listing the known ones) and a cfg whose
        # channels / scale_factor contradict the head's
        return build_upsampler(self.upsample_cfg, self.channels, STEP_SCALE)

    def upsamplers(self):
        """Every learnable upsampler module of the head (empty without an upsampler type)."""
        found = []
        if self.top_down_upsamplers is not None:
            found += list(self.top_down_upsamplers)
        if self.fusion_upsamplers is not None:
            for chain in self.fusion_upsamplers:
                found += list(chain)
        return found

    def init_weights(self):
        # UPerHead's own init first (ConvModules' kaiming, conv_seg normal); then each operator's
        # init, which must survive it (e.g. DLU's zero offsets, CARAFE's box-average kernels).
        # mmengine initialises a module once (is_init); follow that for the upsamplers too.
        first_time = not self.is_init
        super().init_weights()
        if first_time:
            for upsampler in self.upsamplers():
                upsampler.init_weights()

    def _step(self, x, target, upsampler):
        """Bring ``x`` to ``target``'s (H, W): one 2x upsampler step, or a plain resize."""
        if upsampler is None:
            return resize(x, size=target.shape[2:], **self.interp_cfg)
        return upsample_to(upsampler, x, target)  # (N, C, sh, sw) -> target's

    def _forward_feature(self, inputs):
        """Same as ``UPerHead._forward_feature`` with the resizes routed through ``_step``."""
        inputs = self._transform_inputs(inputs)
        laterals = [
            lateral_conv(inputs[i]) for i, lateral_conv in enumerate(self.lateral_convs)
        ]
        laterals.append(self.psp_forward(inputs))

        num_levels = len(laterals)
        # top-down path, coarse to fine; lateral[i - 1] is still the raw lateral when used as guide
        for i in range(num_levels - 1, 0, -1):
            upsampler = None if self.top_down_upsamplers is None else \
                self.top_down_upsamplers[i - 1]
            laterals[i - 1] = laterals[i - 1] + self._step(laterals[i], laterals[i - 1],
                                                           upsampler)

        fpn_outs = [self.fpn_convs[i](laterals[i]) for i in range(num_levels - 1)]
        fpn_outs.append(laterals[-1])  # the PSP feature

        # fusion: every level to the finest one; coarse first so that guides (finer fpn_outs)
        # are still the un-resized FPN outputs
        for i in range(num_levels - 1, 0, -1):
            if self.fusion_upsamplers is None:
                fpn_outs[i] = resize(fpn_outs[i], size=fpn_outs[0].shape[2:], **self.interp_cfg)
                continue
            chain = self.fusion_upsamplers[i - 1]
            out = fpn_outs[i]
            for t, level in enumerate(range(i, 0, -1)):
                out = self._step(out, fpn_outs[level - 1], chain[t])
            fpn_outs[i] = out
        feats = self.fpn_bottleneck(torch.cat(fpn_outs, dim=1))
        return feats
