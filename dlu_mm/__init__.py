"""dlu_mm: learnable feature upsamplers for OpenMMLab (mmdet, mmseg, mmpretrain).

Importing ``dlu_mm`` is light: it needs torch only and imports neither mmdet nor mmseg
(``dlu_mm.det`` / ``dlu_mm.seg`` do).
``dlu_mm.swap_upsampler`` is loaded on first use (:mod:`dlu_mm.swap`, mmengine only). When mmengine is installed it also registers the safe
globals that mmengine checkpoints need under torch >= 2.6 (see :mod:`dlu_mm.checkpoint`).
"""
from .version import __version__

from .checkpoint import register_mmengine_safe_globals  # noqa: E402

register_mmengine_safe_globals()

__all__ = ['__version__', 'register_mmengine_safe_globals', 'swap_upsampler']


def __getattr__(name):
    # lazy: the swap module is needed by tools only, and import dlu_mm stays torch-light
    if name == 'swap_upsampler':
        from .swap import swap_upsampler
        return swap_upsampler
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
