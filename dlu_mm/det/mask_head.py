"""UpsampleFCNMaskHead: Mask R-CNN's FCN mask head with any dlu_mm upsampler as its 2x step.

CARAFE (Wang et al., ICCV 2019) replaced the mask head's 2x deconvolution (14x14 -> 28x28 RoI
masks) by CARAFE; this head lets any unguided dlu_mm upsampler take that place.
"""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS

from ..upsamplers import UPSAMPLERS, build_upsampler, is_guided

# the types mmdet's FCNMaskHead builds itself (mmcv layers; 'deconv' is followed by a ReLU)
MMDET_MASK_UPSAMPLE_TYPES = (None, 'deconv', 'nearest', 'bilinear', 'carafe')


@MODELS.register_module()
class UpsampleFCNMaskHead(FCNMaskHead):
    """``FCNMaskHead`` whose upsampler may be any dlu_mm upsampler.

    ``upsample_cfg=dict(type=T, scale_factor=2, **kwargs)``: for mmdet's own types (None,
    'deconv', 'nearest', 'bilinear', 'carafe') this is exactly ``FCNMaskHead``; any other ``T``
    is built with ``dlu_mm.upsamplers.build_upsampler(cfg, channels, scale_factor)`` and applied
    without an activation after it (as CARAFE's Mask R-CNN). Guided upsamplers (FADE, SAPA) are
    refused: the mask head has no finer feature map to guide them.
    """

    def __init__(self, upsample_cfg=dict(type='deconv', scale_factor=2), **kwargs):
        if not isinstance(upsample_cfg, dict) or 'type' not in upsample_cfg:
            raise ValueError(f'upsample_cfg must be a dict with a "type" key, got {upsample_cfg!r}')
        upsampler_type = upsample_cfg['type']
        if upsampler_type in MMDET_MASK_UPSAMPLE_TYPES:
            super().__init__(upsample_cfg=upsample_cfg, **kwargs)
            self.dlu_upsampler = False
            return
        upsampler_cfg = dict(upsample_cfg)
        scale_factor = upsampler_cfg.pop('scale_factor', 2)
        if is_guided(upsampler_cfg):  # unknown types raise the ValueError listing the types here
            unguided = [t for t in UPSAMPLERS if not is_guided(t)]
            raise ValueError(
                f'upsample_cfg type {upsampler_type!r} is a guided upsampler: it needs a finer '
                f'guide feature map, which the mask head does not have. Use an unguided one '
                f'({", ".join(unguided)}) or one of mmdet\'s {MMDET_MASK_UPSAMPLE_TYPES[1:]}')
        # the parent builds convs and logits with no upsampler (its logits then take the
        # upsampler's input channels, which every dlu_mm upsampler preserves)
        super().__init__(upsample_cfg=dict(type=None), **kwargs)
        self.upsample_cfg = dict(upsample_cfg)
        self.upsample_method = upsampler_type
        self.scale_factor = scale_factor
        channels = self.conv_out_channels if self.num_convs > 0 else self.in_channels
        self.upsample = build_upsampler(upsampler_cfg, channels, scale_factor)
        self.dlu_upsampler = True

    def init_weights(self):
        first_time = not self._is_init
        super().init_weights()
        if first_time and self.dlu_upsampler:
            self.upsample.init_weights()  # the operator's own init
