"""Index of the ONNX lowerings (kept for ``dlu_mm.ops.export`` users; nothing imports it inside
``dlu_mm.ops``).

Each op's lowering lives beside its reference in its own module and is handed to
:func:`dlu_mm.ops.dispatch.dispatch`; :func:`dlu_mm.ops.use_onnx_lowerings` switches them off for
comparisons. What each lowering writes: ``docs/deployment.md``.
"""
from .ddf import ddf_reference
from .dispatch import is_onnx_exporting
from .local_deformable_attention import local_deformable_attention_onnx
from .reassemble import (guided_reassemble_onnx, local_window_similarity_onnx, reassemble_onnx,
                         sample_kernel_space_onnx)

__all__ = ['is_onnx_exporting', 'lowering', 'reassemble_onnx', 'guided_reassemble_onnx',
           'sample_kernel_space_onnx', 'ddf_onnx', 'local_deformable_attention_onnx',
           'local_window_similarity_onnx', 'LOWERINGS']

#: ``ddf`` exports through its reference (already a loop of strided slices)
ddf_onnx = ddf_reference

#: op -> its export form (``subpixel_sample`` exports through its reference)
LOWERINGS = {
    'reassemble': reassemble_onnx,
    'guided_reassemble': guided_reassemble_onnx,
    'ddf': ddf_onnx,
    'local_deformable_attention': local_deformable_attention_onnx,
    'local_window_similarity': local_window_similarity_onnx,
}


def lowering(op, reference):
    """The export form of ``op``; an op without one exports through ``reference``."""
    return LOWERINGS.get(op, reference)
