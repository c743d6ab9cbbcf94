"""Functional ops of dlu_mm (imports with torch alone).

Each op validates its arguments, then runs the compiled kernel when built for the input's device
or the pure-PyTorch reference otherwise (see :mod:`dlu_mm.ops.dispatch`).
"""
from .ddf import ddf, ddf_reference
from .dispatch import get_backend, native_available, set_backend, use_backend
from .local_attention import local_deformable_attention, local_deformable_attention_reference
from .reassemble import (guided_reassemble, guided_reassemble_reference, reassemble,
                         reassemble_reference)
from .subpixel_sample import subpixel_sample, subpixel_sample_reference

__all__ = [
    'reassemble', 'reassemble_reference', 'guided_reassemble', 'guided_reassemble_reference',
    'ddf', 'ddf_reference', 'local_deformable_attention', 'local_deformable_attention_reference',
    'subpixel_sample', 'subpixel_sample_reference', 'get_backend', 'set_backend', 'use_backend',
    'native_available'
]
