"""Deprecated alias of :mod:`dlu_mm.ops.local_deformable_attention`, the op's one name."""
import warnings

from .local_deformable_attention import *  # noqa: F401,F403
from .local_deformable_attention import __all__  # noqa: F401

warnings.warn('dlu_mm.ops.local_attention is deprecated: import dlu_mm.ops.'
              'local_deformable_attention', DeprecationWarning, stacklevel=2)
