"""UpsampleYOLOV3Neck: YOLOv3's neck (Redmon & Farhadi, 2018) whose 2x steps use dlu_mm upsamplers.

mmdet's ``YOLOV3Neck`` runs ``detect1`` on the coarsest level, then for each finer level: a 1x1
``conv{i}`` (``out_channels[i-1]`` -> ``out_channels[i]``), nearest 2x (hard-coded, no
``upsample_cfg``), concatenation with the backbone level and ``detect{i+1}``.

Here, with ``upsample_cfg=dict(type=...)``, step i (coarse to fine) is ``upsamplers[i]``, built
with ``out_channels[i+1]`` channels, and its output is cropped / resized to the backbone level's
size, so odd input sizes work (the stock neck's concatenation fails on them). The natural guide,
the backbone level it is concatenated with, has ``in_channels`` channels (Darknet-53: 512 and 256
against 256 and 128): guided upsamplers (FADE, SAPA) get it through ``guide_projs[i]``, a 1x1
ConvModule (the neck's conv / norm / act) to ``out_channels[i+1]``; unguided ones have no
``guide_projs``. Without ``type`` this is exactly the stock neck (same forward, state_dict keys).
"""
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.models.necks import YOLOV3Neck
from mmdet.registry import MODELS

from ..upsample_cfg import (InitStepUpsamplers, check_fixed_interpolation, split_upsample_cfg)
from ..upsamplers import build_upsampler, is_guided
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleYOLOV3Neck(InitStepUpsamplers, YOLOV3Neck):
    """mmdet ``YOLOV3Neck`` plus ``upsample_cfg`` (None: stock nearest 2x; with ``type``: one
    upsampler per step, ``num_scales - 1`` of them, coarsest step first)."""

    def __init__(self, num_scales, in_channels, out_channels, conv_cfg=None,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 act_cfg=dict(type='LeakyReLU', negative_slope=0.1), upsample_cfg=None,
                 init_cfg=None):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        check_fixed_interpolation(type(self).__name__, interp, upsample_cfg, 'nearest')
        super().__init__(num_scales, in_channels, out_channels, conv_cfg=conv_cfg,
                         norm_cfg=norm_cfg, act_cfg=act_cfg, init_cfg=init_cfg)
        self.upsamplers = self.guide_projs = None
        if upsampler_cfg is None:
            return
        steps = range(1, num_scales)  # backbone level num_scales-1-i joins at step i-1
        self.upsamplers = nn.ModuleList(
            build_upsampler(upsampler_cfg, out_channels[i], STEP_SCALE) for i in steps)
        if is_guided(upsampler_cfg):
            self.guide_projs = nn.ModuleList(
                ConvModule(in_channels[i], out_channels[i], 1, conv_cfg=conv_cfg,
                           norm_cfg=norm_cfg, act_cfg=act_cfg) for i in steps)

    def forward(self, feats):
        if self.upsamplers is None:
            return super().forward(feats)  # exactly the stock neck
        if len(feats) != self.num_scales:
            raise ValueError(f'{type(self).__name__} expects {self.num_scales} input levels '
                             f'(num_scales), got {len(feats)}')
        out = self.detect1(feats[-1])
        outs = [out]
        for step, x in enumerate(reversed(feats[:-1])):  # x: the next finer backbone level
            coarse = getattr(self, f'conv{step + 1}')(out)  # (N, out_channels[step+1], h, w)
            target = x if self.guide_projs is None else self.guide_projs[step](x)
            up = upsample_to(self.upsamplers[step], coarse, target)  # x's (H, W)
            out = getattr(self, f'detect{step + 2}')(torch.cat((up, x), 1))
            outs.append(out)
        return tuple(outs)
