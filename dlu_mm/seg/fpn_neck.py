"""mmseg's FPN neck with a learnable upsampler in each top-down 2x step.

Semantic FPN, Twins and PoolFormer configs put mmseg's own ``FPN`` neck (registered in mmseg's
MODELS only, so mmdet's ``UpsampleFPN`` is not visible there) in front of ``FPNHead``: those
models upsample in the neck and in the head. ``UpsampleFPN`` here is that neck plus
``upsample_cfg`` with a ``type``: one upsampler per top-down step (``out_channels``, 2x), the
guided ones (FADE, SAPA) guided by the finer lateral (``out_channels`` too), each output cropped
or resized to the finer lateral's size. Without ``type`` it is exactly mmseg's ``FPN``.
"""
from mmseg.models.necks import FPN
from mmseg.registry import MODELS

from ..upsample_cfg import (InitStepUpsamplers, append_fpn_extra_levels, build_step_upsamplers,
                           split_upsample_cfg, top_down_sum)

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleFPN(InitStepUpsamplers, FPN):
    """mmseg ``FPN`` (registered in mmseg's MODELS as ``UpsampleFPN``) with learnable upsamplers.

    Args (beyond mmseg ``FPN``'s):
        upsample_cfg: without ``type``: interpolate kwargs exactly as in FPN. With ``type``:
            ``upsamplers[i - 1]`` takes lateral i to lateral i - 1 (guide: lateral i - 1).
    """

    def __init__(self, in_channels, out_channels, num_outs, upsample_cfg=dict(mode='nearest'),
                 **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        super().__init__(in_channels, out_channels, num_outs,
                         upsample_cfg=dict(mode='nearest') if interp is None else interp,
                         **kwargs)
        self.upsamplers = build_step_upsamplers(upsampler_cfg, out_channels,
                                                len(self.lateral_convs) - 1, STEP_SCALE)

    def forward(self, inputs):
        if self.upsamplers is None:
            return super().forward(inputs)  # exactly mmseg FPN
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'UpsampleFPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        top_down_sum(self.upsamplers, laterals)
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        return tuple(append_fpn_extra_levels(self, inputs, laterals, outs))
