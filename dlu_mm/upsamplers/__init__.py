"""Learnable feature upsamplers (one module per operator) and their builder.

Needs torch only. Where mmengine is installed, importing this package also registers every
upsampler in the root mmengine ``MODELS`` registry (no mmcv needed).
"""
from .base import BaseUpsampler
from .carafe import CARAFE
from .ddf_up import DDFUp
from .dlu import DLU
from .dysample import DySample
from .fade import FADE
from .lda_aqu import LDAAQU
from .sapa import SAPA
from .builder import (UPSAMPLERS, BilinearUpsample, DeconvUpsample, NearestUpsample,  # noqa: I001
                      PixelShuffleUpsample, build_upsampler, is_guided, register_upsampler)

__all__ = [
    'BaseUpsampler', 'CARAFE', 'DLU', 'DDFUp', 'LDAAQU', 'DySample', 'FADE', 'SAPA',
    'NearestUpsample', 'BilinearUpsample', 'DeconvUpsample', 'PixelShuffleUpsample',
    'UPSAMPLERS', 'build_upsampler', 'is_guided', 'register_upsampler'
]
