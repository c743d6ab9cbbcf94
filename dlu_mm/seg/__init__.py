"""mmseg glue: ``UpsampleUPerHead`` registered in ``mmseg.registry.MODELS``.

Importing this package (``custom_imports=dict(imports=['dlu_mm.seg'])`` in a config) also
imports :mod:`dlu_mm.upsamplers`, so every upsampler type is registered before a model is built.
"""
from .. import upsamplers  # noqa: F401  (registers the upsampler types)
from .uper_head import UpsampleUPerHead

__all__ = ['UpsampleUPerHead']
