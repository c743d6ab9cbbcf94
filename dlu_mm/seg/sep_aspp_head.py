"""DeepLabV3+'s decoder (Chen et al., ECCV 2018) whose 2x step is a learnable upsampler.

mmseg's ``DepthwiseSeparableASPPHead`` resizes the ASPP output (``channels``, stride 8 with a d8
backbone) bilinearly to the low-level ``c1`` feature (stride 4) and concatenates the two. Here that
resize can be a dlu_mm upsampler (``channels`` channels, 2x), its output cropped or resized to the
c1 feature's size.

Guide (FADE, SAPA): the natural guide, ``c1_bottleneck(inputs[0])``, has ``c1_channels`` (48)
channels, not ``channels`` (512). Guided upsamplers therefore get it through ``guide_proj``, a 1x1
ConvModule c1_channels -> channels (with the head's norm / activation), built only for guided
upsamplers; its output serves only as guide, the concatenation keeps the 48-channel c1 feature.
"""
import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads import DepthwiseSeparableASPPHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..upsample_cfg import split_upsample_cfg
from ..upsamplers import build_upsampler, is_guided
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleDepthwiseSeparableASPPHead(DepthwiseSeparableASPPHead):
    """mmseg ``DepthwiseSeparableASPPHead`` with a learnable upsampler for its 2x step.

    Args:
        upsample_cfg (dict | None): ``None`` / ``{}``: exactly the stock head. With ``type``:
            ``upsampler`` (``channels``, 2x) replaces the resize to the c1 feature; guided ones
            also get ``guide_proj`` (1x1 conv c1_channels -> channels) for their guide.
        **kwargs: ``DepthwiseSeparableASPPHead`` arguments (``c1_in_channels`` must be > 0 with
            a type: without the c1 branch there is no step to replace).
    """

    def __init__(self, c1_in_channels, c1_channels, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        if interp:
            raise ValueError("UpsampleDepthwiseSeparableASPPHead: without 'type', upsample_cfg "
                             'must be None or {} (the stock head always resizes bilinearly), '
                             f'got {upsample_cfg!r}')
        if upsampler_cfg is not None and not c1_in_channels:
            raise ValueError('UpsampleDepthwiseSeparableASPPHead: an upsampler type needs the c1 '
                             f'branch (c1_in_channels > 0), got c1_in_channels={c1_in_channels!r}')
        super().__init__(c1_in_channels=c1_in_channels, c1_channels=c1_channels, **kwargs)
        self.upsample_cfg = upsampler_cfg
        self.upsampler = None
        self.guide_proj = None
        if upsampler_cfg is None:
            return
        self.upsampler = build_upsampler(upsampler_cfg, self.channels, STEP_SCALE)
        if is_guided(self.upsampler):
            self.guide_proj = ConvModule(c1_channels, self.channels, 1, conv_cfg=self.conv_cfg,
                                         norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)

    def init_weights(self):
        first_time = not self.is_init
        super().init_weights()
        if first_time and self.upsampler is not None:
            self.upsampler.init_weights()

    def forward(self, inputs):
        if self.upsampler is None:
            return super().forward(inputs)  # exactly the stock head
        x = self._transform_inputs(inputs)
        pooled = resize(self.image_pool(x), size=x.shape[2:], mode='bilinear',
                        align_corners=self.align_corners)
        output = self.bottleneck(torch.cat([pooled] + self.aspp_modules(x), dim=1))
        c1_output = self.c1_bottleneck(inputs[0])  # (N, c1_channels, H/4, W/4)
        target = c1_output if self.guide_proj is None else self.guide_proj(c1_output)
        output = upsample_to(self.upsampler, output, target)  # (N, channels, H/4, W/4)
        output = self.sep_bottleneck(torch.cat([output, c1_output], dim=1))
        return self.cls_seg(output)
