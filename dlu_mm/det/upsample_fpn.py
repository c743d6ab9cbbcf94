"""UpsampleFPN: mmdet's FPN whose top-down 2x steps use any dlu_mm upsampler.

FPN (Lin et al., CVPR 2017) merges each coarse level into the next finer one by upsampling it
2x and adding the finer lateral. CARAFE (Wang et al., ICCV 2019) replaced that interpolation by a
learnable upsampler, and DLU, LDA-AQU, DySample, FADE and SAPA followed. This neck covers both
neck families those papers used (never compare numbers across them):

- ``carafe_style=False`` (standard FPN): P2-P5 with 3 upsamplers, P6 by max-pool (or mmdet's
  ``add_extra_convs``). Faster R-CNN R50: 41.5M params plus the upsamplers.
- ``carafe_style=True`` (mmdet's ``FPN_CARAFE`` layout): P6's lateral is a 3x3 stride-2 conv on
  C5 that joins the top-down path, so 4 upsamplers and a 3x3 output conv per level (46.8M).

Without a ``type`` in ``upsample_cfg`` (and ``carafe_style=False``) the module IS mmdet's FPN:
same parameters and state_dict keys, and ``forward`` is FPN's own.
"""
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.necks import FPN
from mmdet.registry import MODELS

from ..upsample_cfg import InitStepUpsamplers, append_fpn_extra_levels, build_step_upsamplers
from ..upsamplers import is_guided
from ..upsamplers.steps import crop_or_resize, upsample_to


@MODELS.register_module()
class UpsampleFPN(InitStepUpsamplers, FPN):
    """mmdet ``FPN`` with a learnable upsampler in every top-down step.

    Args (beyond mmdet ``FPN``'s, which keep their meaning):
        upsample_cfg: without ``type``: ``F.interpolate`` kwargs exactly as in FPN. With ``type``
            (any ``dlu_mm.upsamplers.UPSAMPLERS`` name, e.g. ``dict(type='DLU')``): one upsampler
            per top-down step, built with ``channels=out_channels, scale_factor=2``.
            Top-down step: ``lateral[i-1] += crop_or_resize(up(lateral[i]), lateral[i-1] size)``;
            guided upsamplers (FADE, SAPA) get ``lateral[i-1]`` as the guide (resized to exactly
            2x ``lateral[i]`` when the sizes are odd).
        carafe_style: build the CARAFE-style neck: the ``num_outs - used levels`` extra levels get
            a lateral 3x3 stride-2 conv (the first on the last used backbone level, the next on
            the previous extra lateral) that takes part in the top-down path, and every level gets
            a 3x3 output conv. Needs ``add_extra_convs=False``.
        init_cfg: the global pass (xavier-uniform on every Conv2d, upsamplers included), after
            which each upsampler's own ``init_weights()`` restores its operator init.
    """

    def __init__(self, in_channels, out_channels, num_outs, start_level=0, end_level=-1,
                 add_extra_convs=False, relu_before_extra_convs=False, no_norm_on_lateral=False,
                 conv_cfg=None, norm_cfg=None, act_cfg=None, upsample_cfg=dict(mode='nearest'),
                 carafe_style=False,
                 init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')):
        if not isinstance(upsample_cfg, dict):
            raise TypeError(f'upsample_cfg must be a dict (interpolate kwargs, or type=<upsampler>'
                            f' plus its kwargs), got {type(upsample_cfg).__name__}')
        if not isinstance(carafe_style, bool):
            raise TypeError(f'carafe_style must be a bool, got {carafe_style!r}')
        if carafe_style and add_extra_convs:
            raise ValueError(f'carafe_style=True builds its own extra levels (3x3 stride-2 '
                             f'laterals); add_extra_convs must be False, got {add_extra_convs!r}')
        upsampler_cfg = dict(upsample_cfg) if 'type' in upsample_cfg else None
        if upsampler_cfg is not None:
            is_guided(upsampler_cfg)  # unknown type -> ValueError listing the types
        super().__init__(
            in_channels=in_channels, out_channels=out_channels, num_outs=num_outs,
            start_level=start_level, end_level=end_level, add_extra_convs=add_extra_convs,
            relu_before_extra_convs=relu_before_extra_convs,
            no_norm_on_lateral=no_norm_on_lateral, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            upsample_cfg=dict(mode='nearest') if upsampler_cfg else upsample_cfg,
            init_cfg=init_cfg)
        # FPN only stores upsample_cfg (F.interpolate kwargs); a typed one builds upsamplers
        self.upsample_cfg = dict(upsample_cfg)
        self.carafe_style = carafe_style
        self.num_backbone_levels = self.backbone_end_level - self.start_level
        if carafe_style:
            for i in range(num_outs - self.num_backbone_levels):
                lateral_in = in_channels[self.backbone_end_level - 1] if i == 0 else out_channels
                self.lateral_convs.append(ConvModule(
                    lateral_in, out_channels, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))
                self.fpn_convs.append(ConvModule(
                    out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))
        self.upsamplers = build_step_upsamplers(upsampler_cfg, out_channels,
                                                len(self.lateral_convs) - 1)

    def _upsample_step(self, step, coarse, fine):
        """The coarse level upsampled to the finer lateral's size."""
        if self.upsamplers is None:  # carafe_style with FPN's interpolation
            if 'scale_factor' in self.upsample_cfg:
                upsampled = F.interpolate(coarse, **self.upsample_cfg)
            else:
                return F.interpolate(coarse, size=fine.shape[2:], **self.upsample_cfg)
            return crop_or_resize(upsampled, fine.shape[-2:])
        return upsample_to(self.upsamplers[step], coarse, fine)

    def forward(self, inputs):
        if self.upsamplers is None and not self.carafe_style:
            return super().forward(inputs)  # exactly mmdet FPN
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'UpsampleFPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        laterals = [self.lateral_convs[i](inputs[i + self.start_level])
                    for i in range(self.num_backbone_levels)]
        for lateral_conv in self.lateral_convs[self.num_backbone_levels:]:
            # CARAFE-style extra levels: 3x3 stride-2 on the last used backbone level, then chained
            source = (inputs[self.backbone_end_level - 1]
                      if len(laterals) == self.num_backbone_levels else laterals[-1])
            laterals.append(lateral_conv(source))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._upsample_step(i - 1, laterals[i],
                                                                    laterals[i - 1])
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        if not self.carafe_style:
            append_fpn_extra_levels(self, inputs, laterals, outs)
        return tuple(outs)
