"""DDF-ResNet (Zhou et al., "Decoupled Dynamic Filter Networks", CVPR 2021).

mmpretrain's ResNet with the 3x3 conv of every bottleneck replaced by a :class:`DDFConv` (stem,
1x1 convs and shortcuts unchanged). The paper's ImageNet result: ddf_mul ResNet-50 79.1 top-1
with 16.8M params vs ResNet-50 77.2 / 25.6M (reported), at about half the FLOPs.
Registered in mmpretrain's MODELS; from mmdet / mmseg configs use ``type='mmpretrain.DDFResNet'``.
"""
from mmpretrain.models.backbones.resnet import Bottleneck, ResLayer, ResNet
from mmpretrain.registry import MODELS

from ..ops.ddf import DDF_COMBINES
from ..utils import check_choice, check_int
from .ddf_conv import DDFConv, _check_se_ratio

MODELS.register_module(module=DDFConv)


@MODELS.register_module()
class DDFBottleneck(Bottleneck):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1) whose 3x3 conv is a :class:`DDFConv`.

    The DDF takes the 3x3 conv's place exactly: same channels (mid -> mid), stride (the
    'pytorch' style strides the 3x3) and dilation. Extra args are :class:`DDFConv`'s;
    ``conv_cfg`` still applies to the 1x1 convs.
    """

    def __init__(self, in_channels, out_channels, kernel_combine='mul', se_ratio=0.2, head=1,
                 nonlinearity='relu', **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        self.conv2 = DDFConv(self.mid_channels, 3, stride=self.conv2_stride,
                             dilation=self.dilation, head=head, se_ratio=se_ratio,
                             nonlinearity=nonlinearity, kernel_combine=kernel_combine)


@MODELS.register_module()
class DDFResNet(ResNet):
    """ResNet-50/101 with DDF bottlenecks (``kernel_combine`` 'mul' = ddf_mul, 'add' = ddf_add).

    Args:
        depth: 50 or 101.
        kernel_combine, se_ratio, head, nonlinearity: of every bottleneck's :class:`DDFConv`.
        **kwargs: mmpretrain ``ResNet`` arguments (out_indices, frozen_stages, norm_eval,
            style, deep_stem, avg_down, norm_cfg, drop_path_rate, init_cfg, ...).
    """

    arch_settings = {
        50: (DDFBottleneck, (3, 4, 6, 3)),
        101: (DDFBottleneck, (3, 4, 23, 3)),
    }

    def __init__(self, depth, kernel_combine='mul', se_ratio=0.2, head=1, nonlinearity='relu',
                 **kwargs):
        if depth not in self.arch_settings:
            raise ValueError(f'depth must be one of {sorted(self.arch_settings)} for DDFResNet, '
                             f'got {depth!r}')
        # validated here so a bad value names itself before ResNet builds 16+ blocks
        self.kernel_combine = check_choice('kernel_combine', kernel_combine, DDF_COMBINES)
        # the narrowest bottleneck (stage 1) has base_channels mid channels
        _check_se_ratio(se_ratio, kwargs.get('base_channels', 64))
        self.se_ratio = se_ratio
        self.head = check_int('head', head, 1)
        self.nonlinearity = nonlinearity
        super().__init__(depth, **kwargs)

    def make_res_layer(self, **kwargs):
        return ResLayer(kernel_combine=self.kernel_combine, se_ratio=self.se_ratio,
                        head=self.head, nonlinearity=self.nonlinearity, **kwargs)
