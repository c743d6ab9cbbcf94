"""SegFormer's all-MLP head whose resizes to 1/4 are chains of learnable 2x upsamplers.

SegFormer (Xie et al., NeurIPS 2021) projects the 4 MiT levels to ``channels`` and resizes the
1/8, 1/16 and 1/32 maps bilinearly to 1/4 in one shot (x2, x4, x8) before fusing them. FADE (Lu et
al., ECCV 2022) and SAPA (NeurIPS 2022) evaluate their upsamplers on ADE20K by replacing those
resizes with chained 2x steps: level i reaches 1/4 through i steps, 1 + 2 + 3 = 6 upsamplers for 4
levels, step j -> j-1 guided by the projected level j-1 (``convs[j-1](inputs[j-1])``, ``channels``
channels, so guides need no projection).

Each step's output is cropped or resized to the guide level's size, so the head works on test
images whose MiT levels are not exact 2x (512x683 gives 128x171, 64x86, 32x43, 16x22).
"""
import torch
import torch.nn as nn
from mmseg.models.decode_heads import SegformerHead
from mmseg.registry import MODELS

from ..upsample_cfg import init_upsamplers, split_upsample_cfg
from ..upsamplers import build_upsampler
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleSegformerHead(SegformerHead):
    """mmseg ``SegformerHead`` with chains of 2x upsamplers to the 1/4 level.

    Args:
        upsample_cfg (dict | None): ``None`` / ``{}``: exactly ``SegformerHead`` (resizes with
            ``interpolate_mode``). With ``type``: ``upsamplers[i - 1][t]`` is step t of level i's
            chain (``channels`` channels, 2x), bringing it from level i - t to level i - t - 1;
            guided upsamplers get the projected level i - t - 1 as guide.
        **kwargs: ``SegformerHead`` / ``BaseDecodeHead`` arguments.
    """

    def __init__(self, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        if interp:
            raise ValueError(f"UpsampleSegformerHead: without 'type', upsample_cfg must be None "
                             f"or {{}} (the resize mode is SegformerHead's interpolate_mode), "
                             f'got {upsample_cfg!r}')
        super().__init__(**kwargs)
        self.upsample_cfg = upsampler_cfg
        self.upsamplers = None if upsampler_cfg is None else nn.ModuleList(
            nn.ModuleList(build_upsampler(upsampler_cfg, self.channels, STEP_SCALE)
                          for _ in range(level))
            for level in range(1, len(self.in_channels)))

    def init_weights(self):
        first_time = not self.is_init
        super().init_weights()
        if first_time and self.upsamplers is not None:
            for chain in self.upsamplers:
                init_upsamplers(chain)

    def forward(self, inputs):
        if self.upsamplers is None:
            return super().forward(inputs)  # exactly SegformerHead
        inputs = self._transform_inputs(inputs)
        projected = [conv(x) for conv, x in zip(self.convs, inputs)]  # (N, channels, h_i, w_i)
        outs = [projected[0]]
        for level in range(1, len(projected)):
            out = projected[level]
            for t, chain_step in enumerate(self.upsamplers[level - 1]):
                out = upsample_to(chain_step, out, projected[level - t - 1])
            outs.append(out)  # level 0's (H, W)
        out = self.fusion_conv(torch.cat(outs, dim=1))
        return self.cls_seg(out)

