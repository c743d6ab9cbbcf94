"""mmdet glue: the ``UpsampleFPN`` neck and the ``UpsampleFCNMaskHead`` mask head.

Importing this package imports mmdet and registers both in ``mmdet.registry.MODELS``; it also
imports :mod:`dlu_mm.upsamplers`, which registers every upsampler in the root mmengine registry.
Configs load it with ``custom_imports = dict(imports=['dlu_mm.det'], allow_failed_imports=False)``.
"""
from .. import upsamplers  # noqa: F401  (registers the upsamplers)
from .mask_head import UpsampleFCNMaskHead
from .upsample_fpn import UpsampleFPN

__all__ = ['UpsampleFPN', 'UpsampleFCNMaskHead']
