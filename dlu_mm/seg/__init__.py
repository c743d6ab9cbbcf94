"""mmseg glue: decode heads and the FPN neck whose upsampling steps take dlu_mm upsamplers.

Importing this package (``custom_imports=dict(imports=['dlu_mm.seg'])`` in a config) registers
every class below in ``mmseg.registry.MODELS`` and imports :mod:`dlu_mm.upsamplers`, so every
upsampler type is registered before a model is built.
"""
from .. import upsamplers  # noqa: F401  (registers the upsampler types)
from .fpn_head import UpsampleFPNHead
from .fpn_neck import UpsampleFPN
from .segformer_head import UpsampleSegformerHead
from .sep_aspp_head import UpsampleDepthwiseSeparableASPPHead
from .uper_head import UpsampleUPerHead

__all__ = ['UpsampleUPerHead', 'UpsampleSegformerHead', 'UpsampleFPNHead',
           'UpsampleDepthwiseSeparableASPPHead', 'UpsampleFPN']
