"""Functional ops of dlu_mm (imports with torch alone).

Each op module holds the op's argument checks, its pure-PyTorch reference and its ONNX lowering;
the public op validates its arguments, then :mod:`dlu_mm.ops.dispatch` runs the compiled kernel
when built for the input's device, the reference otherwise, and the lowering while exporting.
"""
from .compat import in_dispatch_mode, is_compiling, is_tracing
from .ddf import ddf, ddf_reference
from .dispatch import (get_backend, is_onnx_exporting, native_available, onnx_lowerings_enabled,
                       set_backend, use_backend, use_onnx_lowerings, why_native_unavailable)
from .local_deformable_attention import (local_deformable_attention,
                                         local_deformable_attention_reference)
from .reassemble import (guided_reassemble, guided_reassemble_reference, reassemble,
                         reassemble_reference)
from .subpixel_sample import subpixel_sample, subpixel_sample_reference

__all__ = [
    'reassemble', 'reassemble_reference', 'guided_reassemble', 'guided_reassemble_reference',
    'ddf', 'ddf_reference', 'local_deformable_attention', 'local_deformable_attention_reference',
    'subpixel_sample', 'subpixel_sample_reference', 'get_backend', 'set_backend', 'use_backend',
    'native_available', 'why_native_unavailable', 'is_onnx_exporting', 'use_onnx_lowerings',
    'onnx_lowerings_enabled', 'is_compiling', 'is_tracing', 'in_dispatch_mode'
]
