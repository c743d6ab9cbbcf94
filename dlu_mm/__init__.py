"""dlu_mm: learnable feature upsamplers for OpenMMLab (mmdet, mmseg, mmpretrain).

Importing ``dlu_mm`` is light: it needs torch only and imports neither mmdet nor mmseg
(``dlu_mm.det`` / ``dlu_mm.seg`` do). When mmengine is installed it also registers the safe
globals that mmengine checkpoints need under torch >= 2.6 (see :mod:`dlu_mm.checkpoint`).
"""
from .version import __version__

from .checkpoint import register_mmengine_safe_globals  # noqa: E402

register_mmengine_safe_globals()

__all__ = ['__version__', 'register_mmengine_safe_globals']
