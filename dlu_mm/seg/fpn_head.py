"""Semantic FPN's head (Kirillov et al., CVPR 2019) whose 2x steps are learnable upsamplers.

mmseg's ``FPNHead`` brings every FPN level to 1/4 with a branch of [3x3 conv, bilinear 2x] blocks
(``scale_heads[i]``: log2(stride_i / stride_0) blocks, 0 + 1 + 2 + 3 = 6 steps for 4 levels), then
sums the branches. Here the parameter-free ``Upsample`` at each odd index of a branch is replaced
by a dlu_mm upsampler (``channels`` channels, 2x), so every stock key keeps its name and the
upsamplers' keys sit where the ``Upsample`` modules were (``scale_heads.3.1.*`` ...).

Guide (FADE, SAPA): a branch step that lands on level l is guided by level l's own first conv,
``scale_heads[l][0](x[l])`` (``channels`` channels at exactly that size; computed anyway for
branch l), so no projection is needed. Each step's output is cropped or resized to level l's
size (odd sizes work).
"""
from mmseg.models.decode_heads import FPNHead
from mmseg.models.utils import Upsample
from mmseg.registry import MODELS

from ..upsample_cfg import init_upsamplers, split_upsample_cfg
from ..upsamplers import build_upsampler
from ..upsamplers.steps import crop_or_resize, upsample_to

STEP_SCALE = 2


@MODELS.register_module()
class UpsampleFPNHead(FPNHead):
    """mmseg ``FPNHead`` with a learnable upsampler in each 2x step of its branches.

    Args:
        upsample_cfg (dict | None): ``None`` / ``{}``: exactly ``FPNHead``. With ``type``: every
            ``Upsample`` of ``scale_heads`` becomes that upsampler (``channels``, 2x).
        **kwargs: ``FPNHead`` / ``BaseDecodeHead`` arguments.
    """

    def __init__(self, upsample_cfg=None, **kwargs):
        upsampler_cfg, interp = split_upsample_cfg(upsample_cfg, type(self).__name__)
        if interp:
            raise ValueError(f"UpsampleFPNHead: without 'type', upsample_cfg must be None or {{}} "
                             f'(FPNHead always upsamples bilinearly), got {upsample_cfg!r}')
        super().__init__(**kwargs)
        self.upsample_cfg = upsampler_cfg
        if upsampler_cfg is None:
            return
        for branch in self.scale_heads:
            for index, module in enumerate(branch):
                if isinstance(module, Upsample):
                    branch[index] = build_upsampler(upsampler_cfg, self.channels, STEP_SCALE)

    def upsamplers(self):
        """The learnable upsamplers, branch by branch (empty without an upsampler type)."""
        if self.upsample_cfg is None:
            return []
        return [module for branch in self.scale_heads for module in list(branch)[1::2]]

    def init_weights(self):
        first_time = not self.is_init
        super().init_weights()
        if first_time:
            init_upsamplers(self.upsamplers())

    def forward(self, inputs):
        if self.upsample_cfg is None:
            return super().forward(inputs)  # exactly FPNHead
        x = self._transform_inputs(inputs)
        firsts = [branch[0](level) for branch, level in zip(self.scale_heads, x)]
        output = None
        for i, branch in enumerate(self.scale_heads):
            y = firsts[i]
            blocks = list(branch)
            for step, index in enumerate(range(1, len(blocks), 2)):
                # lands on level i - step - 1, whose first conv is the guide and the size
                y = upsample_to(blocks[index], y, firsts[i - step - 1])
                if index + 1 < len(blocks):
                    y = blocks[index + 1](y)
            output = y if output is None else output + crop_or_resize(y, output.shape[2:])
        return self.cls_seg(output)
