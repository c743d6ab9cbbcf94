"""PAFPN-family necks (PAFPN, YOLOX's and RTMDet's) whose top-down 2x steps use dlu_mm upsamplers.

PANet (Liu et al., CVPR 2018) adds a bottom-up path to FPN; YOLOX (Ge et al., 2021) and RTMDet
(Lyu et al., 2022) build theirs from CSP blocks and concatenate (not add) the upsampled coarse
map with the finer backbone level. All three upsample by nearest interpolation in mmdet.

Each class here is the stock mmdet neck plus ``upsample_cfg``:
- without ``type``: exactly the stock neck (its ``forward``, its parameters and state_dict keys);
- with ``type``: one upsampler per top-down step, stored in ``upsamplers`` (step 0 is the
  coarsest), its output cropped / resized to the finer level (odd sizes work).

Channels per step and guides (FADE, SAPA), from necks.md:
- ``UpsampleYOLOXPAFPN`` / ``UpsampleCSPNeXtPAFPN``: step t takes ``reduce_layers[t]``'s output
  (``in_channels[idx - 1]`` channels, idx = L-1-t) to ``inputs[idx - 1]``'s size; the guide is
  ``inputs[idx - 1]``, the map it is concatenated with, which has the same channel count.
- ``UpsamplePAFPN``: step i-1 takes ``laterals[i]`` (``out_channels``) to ``laterals[i - 1]``,
  the guide.
No guide here needs a projection: every natural guide has the upsampled map's channels.
"""
import torch
import torch.nn as nn
from mmdet.models.necks import PAFPN, CSPNeXtPAFPN, YOLOXPAFPN
from mmdet.registry import MODELS

from ..upsample_cfg import (InitStepUpsamplers, append_fpn_extra_levels, build_step_upsamplers,
                           check_fixed_interpolation, split_upsample_cfg,
                           top_down_sum)
from ..upsamplers import build_upsampler
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2


class _CSPPAFPNUpsamplers(InitStepUpsamplers):
    """Shared by the YOLOX and RTMDet necks, whose ``__init__`` arguments and ``forward`` are
    the same."""

    def __init__(self, in_channels, out_channels, upsample_cfg=dict(scale_factor=2,
                                                                    mode='nearest'), **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        super().__init__(in_channels, out_channels,
                         upsample_cfg=interp or dict(scale_factor=2, mode='nearest'), **kwargs)
        self._build_upsamplers(upsampler_cfg)

    def _build_upsamplers(self, upsampler_cfg):
        if upsampler_cfg is None:
            self.upsamplers = None
            return
        # step t (coarse to fine) brings reduce_layers[t]'s output, in_channels[idx - 1] channels
        self.upsamplers = nn.ModuleList(
            build_upsampler(upsampler_cfg, self.in_channels[idx - 1], STEP_SCALE)
            for idx in range(len(self.in_channels) - 1, 0, -1))

    def forward(self, inputs):
        if self.upsamplers is None:
            return super().forward(inputs)  # exactly the stock neck
        num_levels = len(self.in_channels)
        if len(inputs) != num_levels:
            raise ValueError(f'{type(self).__name__} expects {num_levels} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        inner_outs = [inputs[-1]]
        for step, idx in enumerate(range(num_levels - 1, 0, -1)):
            coarse = self.reduce_layers[step](inner_outs[0])  # (N, in_channels[idx-1], h, w)
            inner_outs[0] = coarse
            fine = inputs[idx - 1]  # the guide and the concat partner, same channels
            upsampled = upsample_to(self.upsamplers[step], coarse, fine)  # fine's (H, W)
            inner_outs.insert(0, self.top_down_blocks[step](torch.cat([upsampled, fine], 1)))
        outs = [inner_outs[0]]
        for idx in range(num_levels - 1):
            down = self.downsamples[idx](outs[-1])  # stride-2 conv: ceil(H / 2), as the backbone
            outs.append(self.bottom_up_blocks[idx](torch.cat([down, inner_outs[idx + 1]], 1)))
        return tuple(conv(out) for conv, out in zip(self.out_convs, outs))


@MODELS.register_module()
class UpsampleYOLOXPAFPN(_CSPPAFPNUpsamplers, YOLOXPAFPN):
    """mmdet ``YOLOXPAFPN`` with a learnable upsampler in each top-down step.

    Args (beyond ``YOLOXPAFPN``'s):
        upsample_cfg: without ``type``: ``nn.Upsample`` kwargs, as in ``YOLOXPAFPN``. With
            ``type``: one upsampler per step, built with that step's channels
            (``in_channels[idx - 1]``) and ``scale_factor=2``; guided ones get
            ``inputs[idx - 1]`` (the finer backbone level) as guide.
    """


@MODELS.register_module()
class UpsampleCSPNeXtPAFPN(_CSPPAFPNUpsamplers, CSPNeXtPAFPN):
    """mmdet ``CSPNeXtPAFPN`` (RTMDet) with a learnable upsampler in each top-down step.

    Args (beyond ``CSPNeXtPAFPN``'s): ``upsample_cfg`` as in :class:`UpsampleYOLOXPAFPN`.
    """


@MODELS.register_module()
class UpsamplePAFPN(InitStepUpsamplers, PAFPN):
    """mmdet ``PAFPN`` with a learnable upsampler in each top-down step.

    Args (beyond ``PAFPN``'s):
        upsample_cfg: ``None`` or without ``type``: exactly ``PAFPN``, which interpolates
            nearest to the finer lateral's size whatever is given (it takes no ``upsample_cfg``;
            only ``None``, ``{}`` and ``dict(mode='nearest')`` are accepted, so a config cannot
            believe it changed the mode). With ``type``: one upsampler per step with
            ``out_channels`` channels and ``scale_factor=2``; guided ones get the finer lateral.
    """

    def __init__(self, in_channels, out_channels, num_outs, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        check_fixed_interpolation(type(self).__name__, interp, upsample_cfg, 'nearest')
        super().__init__(in_channels, out_channels, num_outs, **kwargs)
        self.upsamplers = build_step_upsamplers(upsampler_cfg, out_channels,
                                                len(self.lateral_convs) - 1, STEP_SCALE)

    def forward(self, inputs):
        if self.upsamplers is None:
            return super().forward(inputs)  # exactly mmdet PAFPN
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'UpsamplePAFPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        num_levels = len(laterals)
        top_down_sum(self.upsamplers, laterals)
        inter_outs = [self.fpn_convs[i](laterals[i]) for i in range(num_levels)]
        for i in range(num_levels - 1):  # PANet's bottom-up path
            inter_outs[i + 1] = inter_outs[i + 1] + self.downsample_convs[i](inter_outs[i])
        outs = [inter_outs[0]] + [self.pafpn_convs[i - 1](inter_outs[i])
                                  for i in range(1, num_levels)]
        # the levels beyond the backbone's are FPN's (max-pool or add_extra_convs)
        append_fpn_extra_levels(self, inputs, laterals, outs)
        return tuple(outs)
