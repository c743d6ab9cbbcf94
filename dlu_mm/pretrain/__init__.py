"""mmpretrain glue: DDF as a convolution replacement (DDFConv, DDF bottleneck, DDF-ResNet).

Importing this package registers ``DDFResNet``, ``DDFBottleneck`` and ``DDFConv`` in
``mmpretrain.registry.MODELS`` (configs: ``custom_imports=dict(imports=['dlu_mm.pretrain'])``;
from mmdet / mmseg: ``type='mmpretrain.DDFResNet'``). It imports mmpretrain, never mmdet/mmseg.
``DDFConv`` itself needs torch and mmengine only, so on an environment without mmpretrain the package still
imports and offers ``DDFConv`` (the backbones then do not exist).
"""
from importlib.util import find_spec

from .ddf_conv import DDFChannelBranch, DDFConv, DDFSpatialBranch

__all__ = ['DDFConv', 'DDFSpatialBranch', 'DDFChannelBranch']

if find_spec('mmpretrain') is not None:  # a broken mmpretrain still raises here, loudly
    from .ddf_resnet import DDFBottleneck, DDFResNet  # noqa: F401
    __all__ += ['DDFBottleneck', 'DDFResNet']
