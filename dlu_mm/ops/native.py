"""Python side of the compiled ops (sources in ``ops/``).

``pip install --no-build-isolation -e .`` builds them into ``dlu_mm._C_torch<major>_<minor>``,
named after the torch it was compiled against: its C++ ABI fits that torch only, so another torch
gets a clear "rebuild" message instead of an undefined-symbol error, and environments with
different torches can share one checkout. Loading it registers ``torch.ops.dlu_mm.<op>`` and
``<op>_backward`` with CPU (and, when built with CUDA, CUDA) kernels. This module adds what the
C++ side does not, with what the running torch offers:
- autograd: the backward calls ``<op>_backward``, which recomputes what it needs instead of
  saving intermediates. torch >= 2.4: ``torch.library.register_autograd``; older torches: a
  ``torch.autograd.Function`` around the op;
- fake kernels (register_fake, impl_abstract or a Meta kernel: see ``compat``; output shapes
  from :mod:`dlu_mm.ops.schemas`) so ``torch.compile`` and meta-device models trace through
  the ops.
It exposes ``available(op, device_type)``, ``why_unavailable(op, device_type)``, one function
per op with the public positional signature, and :func:`run_generic` (the 'generic' backend:
``generic_<op>``, the CUDA kernels' templates driven on the CPU, see ops/csrc/generic/);
validation with Python errors happens in the public functions (dlu_mm.ops), the C++
TORCH_CHECKs are the last line of defence. Imported lazily by
:mod:`dlu_mm.ops.dispatch`.
"""
import glob
import importlib
import os

import torch

from .compat import HAS_LIBRARY_REGISTER, TORCH_VERSION, register_fake_kernel
from .schemas import GENERIC_PREFIX, OPS, fake_backward, fake_forward, num_tensor_inputs

EXTENSION = 'dlu_mm._C_torch{}_{}'.format(*TORCH_VERSION)
_DISPATCH_KEYS = {'cpu': 'CPU', 'cuda': 'CUDA'}


def _load_extension():
    """Import the extension built for this torch; returns (module, None) or (None, reason)."""
    try:
        return importlib.import_module(EXTENSION), None
    except ImportError as error:
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        built = sorted({os.path.basename(path).split('.')[0]
                        for path in glob.glob(os.path.join(package_dir, '_C_torch*'))})
        ours = EXTENSION.rsplit('.', 1)[1]
        if built and ours not in built:
            return None, (f'dlu_mm\'s ops were compiled for another torch ({", ".join(built)}), '
                          f'this is torch {torch.__version__}: rebuild them in this environment '
                          'with `pip install --no-build-isolation -e .`')
        return None, (f'{EXTENSION} does not load ({error}); build it with '
                      '`pip install --no-build-isolation -e .`')


_C, LOAD_ERROR = _load_extension()
_LIBRARY = torch.library.Library('dlu_mm', 'IMPL') if _C is not None else None
_RULES = {}      # op -> (setup_context, backward) of its autograd
_FAILED = {}     # op -> why its autograd / fake kernels could not be registered


def _autograd_rules(op, n_tensors):
    """(setup_context, backward) in torch.library.register_autograd's form."""
    backward_op = getattr(torch.ops.dlu_mm, f'{op}_backward')

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.args = tuple(inputs[n_tensors:])

    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        grads = backward_op(grad_out, *saved, *ctx.args)
        grads = tuple(grad if tensor is not None else None for grad, tensor in zip(grads, saved))
        return (*grads, *(None,) * len(ctx.args))

    return setup_context, backward


class _CompiledOp(torch.autograd.Function):
    """torch < 2.4: autograd for the compiled ops, ``_CompiledOp.apply(op_name, *inputs)``.

    One module-level class called with the op's name: the form torch 2.1's torch.compile traces.
    """

    @staticmethod
    def forward(ctx, op, *inputs):
        output = getattr(torch.ops.dlu_mm, op)(*inputs)
        ctx.op = op
        _RULES[op][0](ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_out):
        return (None, *_RULES[ctx.op][1](ctx, grad_out))


def _register(op):
    n_tensors = num_tensor_inputs(op)
    register_fake_kernel(f'dlu_mm::{op}', fake_forward(op), _LIBRARY)
    register_fake_kernel(f'dlu_mm::{op}_backward', fake_backward(op), _LIBRARY)
    setup_context, backward = _autograd_rules(op, n_tensors)
    if HAS_LIBRARY_REGISTER:
        torch.library.register_autograd(f'dlu_mm::{op}', backward, setup_context=setup_context)
    _RULES[op] = setup_context, backward  # last: an op is usable once all of it registered


def _has_kernel(op_name, dispatch_key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(f'dlu_mm::{op_name}', dispatch_key)


if _C is not None:
    for _op in (*OPS, *(GENERIC_PREFIX + op for op in OPS)):
        if not hasattr(torch.ops.dlu_mm, _op):
            _FAILED[_op] = f'{EXTENSION} defines no {_op!r} (a stale build? rebuild it)'
            continue
        try:
            _register(_op)
        except Exception as error:  # reported by dispatch's fallback warning, never silent
            _FAILED[_op] = (f'registering its autograd / fake kernels failed under torch '
                            f'{torch.__version__}: {type(error).__name__}: {error}')

# Computed once: a plain dict lookup is traceable by torch.compile (the dispatcher query is not).
_AVAILABLE = {(op, device): op in _RULES and _has_kernel(op, key) for op in OPS
              for device, key in _DISPATCH_KEYS.items()}


_AVAILABLE.update({(GENERIC_PREFIX + op, 'cpu'): GENERIC_PREFIX + op in _RULES
                   and _has_kernel(GENERIC_PREFIX + op, 'CPU') for op in OPS})


def available(op_name, device_type='cpu'):
    """Whether ``op_name`` has a compiled kernel for ``device_type`` ('cpu', 'cuda', ...)."""
    return _AVAILABLE.get((op_name, device_type), False)


def why_unavailable(op_name, device_type='cpu'):
    """Why ``op_name`` has no usable compiled kernel for ``device_type`` (None if it has one)."""
    if available(op_name, device_type):
        return None
    if LOAD_ERROR is not None:
        return LOAD_ERROR
    if op_name in _FAILED:
        return _FAILED[op_name]
    return (f'{EXTENSION} has no {device_type!r} kernel for it (the CUDA kernels are built only '
            f'where nvcc matches torch\'s CUDA {torch.version.cuda}: see `pip install -v` output)')


# ----------------------------------------------------------------------------------------------
# Public-signature entry points
# ----------------------------------------------------------------------------------------------
def _call(op, *inputs):
    # torch < 2.4 inside a jit trace (FLOP analysis): the op itself, so that the trace shows a
    # dlu_mm::<op> node rather than the autograd.Function's opaque prim::PythonOp; such a traced
    # graph is forward-only on those torches
    if HAS_LIBRARY_REGISTER or torch.jit.is_tracing():
        return getattr(torch.ops.dlu_mm, op)(*inputs)
    return _CompiledOp.apply(op, *inputs)


def reassemble(x, kernels, k, groups=1, scale_factor=2):
    return _call('reassemble', x, kernels, k, groups, scale_factor)


def guided_reassemble(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    return _call('guided_reassemble', x, kernel_space, offsets, k, groups, scale_factor)


def ddf(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    return _call('ddf', x, channel_filter, spatial_filter, k, dilation, stride, combine)


def local_deformable_attention(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    return _call('local_deformable_attention', q, key, value, offsets, rpb, num_heads, groups)


def subpixel_sample(x, positions, groups=1, scale_factor=2):
    return _call('subpixel_sample', x, positions, groups, scale_factor)


def run_generic(op, device_type, args):
    """``op`` through the 'generic' backend: the CUDA path's templates, run on the CPU.

    A verification backend (slow: one functor call per CUDA thread index, no row paths); CPU
    tensors only. Raises RuntimeError when it is not built or the tensors are elsewhere.
    """
    name = GENERIC_PREFIX + op
    if device_type != 'cpu':
        raise RuntimeError(f"dlu_mm backend 'generic' runs the CUDA kernels' templates on the CPU "
                           f'and takes CPU tensors only, got {device_type!r} tensors for {op!r}')
    if not available(name, 'cpu'):
        why = LOAD_ERROR or _FAILED.get(name) or f'{EXTENSION} defines no {name!r} (rebuild it)'
        raise RuntimeError(f"dlu_mm backend 'generic' is not usable for {op!r}: {why}")
    return _call(name, *args)
