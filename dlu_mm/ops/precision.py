"""The one low-precision rule of dlu_mm's ops: fp16 / bf16 are computed in fp32.

The compiled kernels accumulate fp16 / bf16 in fp32; the references, the ONNX lowerings and the
upsamplers' own arithmetic follow this module so that every form agrees. fp32 and fp64 are
computed in their own dtype.
"""
import torch

__all__ = ['LOW_PRECISION', 'compute_dtype', 'upcast']

#: dtypes that are computed in fp32 and returned in their own dtype
LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype):
    """The dtype ``dtype`` is computed in: fp32 for fp16 / bf16 (and fp32), fp64 for fp64.

    (Written as a comparison: torch 2.1's torch.compile cannot trace torch.promote_types.)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(*tensors):
    """``tensors`` in their compute dtype (a tuple; None stays None, fp32 / fp64 unchanged)."""
    return tuple(None if t is None else t.to(compute_dtype(t.dtype)) for t in tensors)
