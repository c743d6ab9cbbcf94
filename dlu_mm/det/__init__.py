"""mmdet glue: necks, the mask head and pixel decoders whose upsampling steps take dlu_mm upsamplers.

Importing this package imports mmdet and registers every class below in ``mmdet.registry.MODELS``;
it also imports :mod:`dlu_mm.upsamplers`, which registers every upsampler in the root mmengine
registry. Configs load it with ``custom_imports = dict(imports=['dlu_mm.det'],
allow_failed_imports=False)``; mmseg configs name the pixel decoders with the ``mmdet.`` prefix.
"""
from .. import upsamplers  # noqa: F401  (registers the upsamplers)
from .mask_head import UpsampleFCNMaskHead
from .pafpn import UpsampleCSPNeXtPAFPN, UpsamplePAFPN, UpsampleYOLOXPAFPN
from .pixel_decoders import (UpsampleMSDeformAttnPixelDecoder, UpsamplePixelDecoder,
                             UpsampleTransformerEncoderPixelDecoder)
from .upsample_fpn import UpsampleFPN
from .yolo_neck import UpsampleYOLOV3Neck

__all__ = ['UpsampleFPN', 'UpsampleFCNMaskHead', 'UpsampleYOLOXPAFPN', 'UpsampleCSPNeXtPAFPN',
           'UpsamplePAFPN', 'UpsampleYOLOV3Neck', 'UpsamplePixelDecoder',
           'UpsampleMSDeformAttnPixelDecoder', 'UpsampleTransformerEncoderPixelDecoder']
