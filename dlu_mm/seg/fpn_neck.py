"""mmseg's FPN neck with a learnable upsampler in each top-down 2x step.

Semantic FPN, Twins and PoolFormer configs put mmseg's own ``FPN`` neck (registered in mmseg's
MODELS only, so mmdet's ``UpsampleFPN`` is not visible there) in front of ``FPNHead``: those
models upsample in the neck and in the head. ``UpsampleFPN`` here is that neck plus
``upsample_cfg`` with a ``type``: one upsampler per top-down step (``out_channels``, 2x), the
guided ones (FADE, SAPA) guided by the finer lateral (``out_channels`` too), each output cropped
or resized to the finer lateral's size. Without ``type`` it is exactly mmseg's ``FPN``.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.necks import FPN
from mmseg.registry import MODELS

from ..upsample_cfg import init_upsamplers, split_upsample_cfg
from ..upsamplers import build_upsampler
from ..upsamplers.steps import upsample_to

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleFPN(FPN):
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
        self.upsamplers = None if upsampler_cfg is None else nn.ModuleList(
            build_upsampler(upsampler_cfg, out_channels, STEP_SCALE)
            for _ in range(len(self.lateral_convs) - 1))

    def init_weights(self):
        first_time = not self._is_init
        super().init_weights()  # Xavier over every Conv2d, the upsamplers' included
        if first_time:
            init_upsamplers(self.upsamplers)

    def forward(self, inputs):
        if self.upsamplers is None:
            return super().forward(inputs)  # exactly mmseg FPN
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'UpsampleFPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        num_levels = len(laterals)
        for i in range(num_levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + upsample_to(self.upsamplers[i - 1], laterals[i],
                                                            laterals[i - 1])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_levels)]
        if self.num_outs > num_levels and not self.add_extra_convs:
            outs += [F.max_pool2d(outs[-1], 1, stride=2) for _ in range(self.num_outs - num_levels)]
        elif self.num_outs > num_levels:
            source = {'on_input': inputs[self.backbone_end_level - 1], 'on_lateral': laterals[-1],
                      'on_output': outs[-1]}[self.add_extra_convs]
            outs.append(self.fpn_convs[num_levels](source))
            for i in range(num_levels + 1, self.num_outs):
                previous = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                outs.append(self.fpn_convs[i](previous))
        return tuple(outs)
