"""Choose between the compiled kernels (``dlu_mm._C``) and the pure-PyTorch references.

``DLU_MM_OPS_BACKEND`` (env) or :func:`set_backend` selects:
  'auto'      compiled kernel when it is built for the tensor's device, else the reference with a
              one-time warning (default);
  'native'    compiled kernel or RuntimeError;
  'reference' always the pure-PyTorch reference (test oracle);
  'generic'   the CUDA kernels' templates driven on the CPU (``native.run_generic``): a slow
              verification backend that executes the CUDA path's arithmetic without a GPU.
Whatever the backend, during ``torch.onnx.export`` every op runs the ONNX lowering its module
hands to :func:`dispatch` (standard ONNX operators only), or its reference where it has none;
:func:`use_onnx_lowerings` (False) exports the references instead, for comparisons.
The native side lives in ``dlu_mm.ops.native``: ``available(op, device_type) -> bool`` and one
autograd-capable function per op with the same signature as the public one.

:func:`set_dispatch_hook` lets tools observe or reroute every op call (the FLOP counter of
:mod:`dlu_mm.analysis` runs each call as one opaque unit); a hook computes through :func:`run`.
"""
import contextlib
import os
import warnings

import torch

BACKENDS = ('auto', 'native', 'reference', 'generic')
_backend = os.environ.get('DLU_MM_OPS_BACKEND', 'auto')
if _backend not in BACKENDS:
    raise ValueError(f'DLU_MM_OPS_BACKEND must be one of {list(BACKENDS)}, got {_backend!r}')
_warned = set()
_hook = None
_onnx_lowerings = True


def is_onnx_exporting():
    """True while ``torch.onnx.export`` traces a model (either exporter)."""
    return torch.onnx.is_in_onnx_export()


def onnx_lowerings_enabled():
    """Whether ops export through their ONNX lowerings (see :func:`use_onnx_lowerings`)."""
    return _onnx_lowerings


@contextlib.contextmanager
def use_onnx_lowerings(enabled=True):
    """Within the context, ``torch.onnx.export`` writes each op's lowering (``enabled=True``,
    the default everywhere) or its training reference (``False``: a baseline for comparisons)."""
    global _onnx_lowerings
    if not isinstance(enabled, bool):
        raise TypeError(f'enabled must be a bool, got {enabled!r}')
    previous, _onnx_lowerings = _onnx_lowerings, enabled
    try:
        yield
    finally:
        _onnx_lowerings = previous


def get_backend():
    return _backend


def set_backend(backend):
    """Set the global backend; returns the previous one."""
    global _backend
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {list(BACKENDS)}, got {backend!r}')
    previous, _backend = _backend, backend
    return previous


@contextlib.contextmanager
def use_backend(backend):
    previous = set_backend(backend)
    try:
        yield
    finally:
        set_backend(previous)


def _native_module():
    from . import native  # imports with torch alone; reports a missing build itself
    return native


def native_available(op, device_type='cpu'):
    """Whether ``op`` has a compiled kernel for ``device_type`` ('cpu', 'cuda')."""
    return _native_module().available(op, device_type)


def why_native_unavailable(op, device_type='cpu'):
    """Why ``op`` has no usable compiled kernel for ``device_type`` (None when it has one)."""
    return _native_module().why_unavailable(op, device_type)


def set_dispatch_hook(hook):
    """Route every op call through ``hook(op, device_type, reference, args)`` (None removes it).

    Returns the previous hook. The hook computes the op itself, normally by calling :func:`run`.
    """
    global _hook
    previous, _hook = _hook, hook
    return previous


def dispatch(op, device_type, reference, args, lowering=None):
    """Entry point of every public op: while exporting to ONNX its ``lowering`` (or ``reference``
    where it has none, or under ``use_onnx_lowerings(False)``), else the installed hook if any,
    else :func:`run`."""
    if is_onnx_exporting():
        export_form = lowering if lowering is not None and _onnx_lowerings else reference
        return export_form(*args)
    if _hook is not None:
        return _hook(op, device_type, reference, args)
    return run(op, device_type, reference, args)


def run(op, device_type, reference, args):
    """Run ``op`` natively when allowed and built for ``device_type``, else ``reference``."""
    if _backend == 'generic':
        return _native_module().run_generic(op, device_type, args)
    if _backend != 'reference':
        if native_available(op, device_type):
            return getattr(_native_module(), op)(*args)
        why = _native_module().why_unavailable(op, device_type)
        if _backend == 'native':
            raise RuntimeError(f'dlu_mm native op {op!r} is not usable for device '
                               f'{device_type!r}: {why}; or use set_backend("reference")')
        if (op, device_type) not in _warned:
            _warned.add((op, device_type))
            warnings.warn(f'dlu_mm: no compiled {op!r} kernel for {device_type!r} ({why}); using '
                          'the pure-PyTorch reference (slower, more memory)', stacklevel=3)
    return reference(*args)
