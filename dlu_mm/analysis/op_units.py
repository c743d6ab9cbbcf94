"""Run dlu_mm's operators as single, opaque units so that counters see one node per call.

With the compiled extension a call shows up as ``dlu_mm::<op>`` (in a jit trace and at the
dispatcher). With the pure-PyTorch reference it would show up as its internals (einsum, gather,
grid_sample, ...), which no counter can map back to the op's cost. Inside :func:`ops_as_units`
every dlu_mm op call is routed through an equivalent opaque custom op
``torch.ops.dlu_mm_analysis.<op>`` (same schema as ``dlu_mm::<op>``) whose implementation runs
whatever backend dlu_mm's dispatch picks (compiled or reference). Counters therefore see exactly
one ``dlu_mm_analysis::<op>`` node per call, whichever backend computes it, and never its
internals; the values computed are unchanged. The units also have fake (meta) kernels, so
models on the ``meta`` device can be counted without computing anything.

How the routing works: every public op in :mod:`dlu_mm.ops` validates its arguments and then
calls ``dispatch(op_name, device_type, reference, args)``. The context manager installs a
dispatch hook (:func:`dlu_mm.ops.dispatch.set_dispatch_hook`) that calls the unit op; leaving
the context removes it. The units have no autograd
formula: use them for forward counting only. :func:`record_op_calls` uses the same hook to
record the arguments of every op call (for the visualisation tool).
"""
import contextlib
import threading

import torch

from ..ops import dispatch as dispatch_module
from ..ops.compat import register_fake_kernel
from ..ops.ddf import ddf_reference
from ..ops.local_deformable_attention import local_deformable_attention_reference
from ..ops.reassemble import guided_reassemble_reference, reassemble_reference
from ..ops.schemas import OPS, SCHEMAS, fake_forward
from ..ops.subpixel_sample import subpixel_sample_reference

__all__ = ['NAMESPACE', 'UNIT_OPS', 'ops_as_units', 'record_op_calls']

NAMESPACE = 'dlu_mm_analysis'
_original_dispatch = dispatch_module.run
_REFERENCES = {
    'reassemble': reassemble_reference,
    'guided_reassemble': guided_reassemble_reference,
    'ddf': ddf_reference,
    'local_deformable_attention': local_deformable_attention_reference,
    'subpixel_sample': subpixel_sample_reference,
}


def _compute(op, args):
    """What the public op would have run: compiled kernel or reference, per dlu_mm's backend."""
    return _original_dispatch(op, args[0].device.type, _REFERENCES[op], args)


# torch.library.Library + define + impl: the one way to declare a Python op that every supported
# torch (2.1 to 2.14) has; the Library object must stay alive for the ops to stay registered.
_LIBRARY = torch.library.Library(NAMESPACE, 'DEF')


def _define_unit(op):
    _LIBRARY.define(op + SCHEMAS[op])  # the compiled dlu_mm::<op>'s schema
    _LIBRARY.impl(op, lambda *args: _compute(op, args), 'CompositeExplicitAutograd')
    # same output as the compiled op's, so the same fake kernel
    register_fake_kernel(f'{NAMESPACE}::{op}', fake_forward(op), _LIBRARY)
    return getattr(torch.ops.dlu_mm_analysis, op)


#: op name -> its opaque unit (callable with the public op's positional arguments)
UNIT_OPS = {op: _define_unit(op) for op in OPS}


_lock = threading.RLock()
_unit_depth = 0
_recorders = []  # lists that record_op_calls() appends (op_name, args) to
_previous_hook = []  # the hook that was installed before ours, while ours is installed


def _hooked_dispatch(op, device_type, reference, args):
    for calls in _recorders:
        calls.append((op, args))
    unit = UNIT_OPS.get(op) if _unit_depth else None
    if unit is None:  # not counting, or an op newer than this module: run as before
        return _original_dispatch(op, device_type, reference, args)
    return unit(*args)


def _install():
    if not _previous_hook:
        _previous_hook.append(dispatch_module.set_dispatch_hook(_hooked_dispatch))


def _uninstall():
    if _unit_depth == 0 and not _recorders and _previous_hook:
        dispatch_module.set_dispatch_hook(_previous_hook.pop())


@contextlib.contextmanager
def ops_as_units():
    """Within the context every dlu_mm op call runs as one ``dlu_mm_analysis::<op>`` node.

    Re-entrant; results are identical to running without it (forward only: the units have no
    autograd formula).
    """
    global _unit_depth
    with _lock:
        _unit_depth += 1
        _install()
    try:
        yield
    finally:
        with _lock:
            _unit_depth -= 1
            _uninstall()


@contextlib.contextmanager
def record_op_calls():
    """Record every dlu_mm op call made in the context: yields a list of (op_name, args).

    ``args`` are the validated positional arguments the op received (e.g. CARAFE's predicted
    kernels, DLU's kernel space and guidance offsets, LDA-AQU's sampling offsets), which is what
    the visualisation tools draw. Computation is unchanged.
    """
    calls = []
    with _lock:
        _recorders.append(calls)
        _install()
    try:
        yield calls
    finally:
        with _lock:
            _recorders.remove(calls)
            _uninstall()
