"""What the running torch offers, in one place (dlu_mm supports torch 2.1 to 2.14).

Each name here is the newest API where the running torch has it and an equivalent otherwise;
callers never probe torch themselves. ``TORCH_VERSION`` is ``(major, minor)``.
"""
import contextlib

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

TORCH_VERSION = tuple(int(part) for part in torch.__version__.split('+')[0].split('.')[:2])

#: torch.library.register_autograd / register_fake / custom_op / opcheck (torch >= 2.4)
HAS_LIBRARY_REGISTER = all(hasattr(torch.library, name) for name in
                           ('register_autograd', 'register_fake', 'custom_op'))


def is_compiling():
    """True while torch.compile (dynamo) traces: ``torch.compiler.is_compiling`` (torch >= 2.3),
    ``torch._dynamo.is_compiling`` before."""
    compiler = getattr(torch, 'compiler', None)
    probe = getattr(compiler, 'is_compiling', None)
    if probe is None:
        probe = torch._dynamo.is_compiling
    return probe()


def is_tracing():
    """True inside a jit trace / script (the TorchScript ONNX exporter) or torch.compile: where
    modules take their plain stock-op form (no custom autograd.Function, no checkpointing)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or is_compiling()


def in_dispatch_mode():
    """True inside a TorchDispatchMode (e.g. a FLOP counter), never while torch.compile traces
    (the mode stack is no tensor; dynamo cannot trace the query)."""
    if is_compiling():
        return False
    return _get_current_dispatch_mode() is not None


def autocast_available(device_type):
    """torch.amp.is_autocast_available (torch >= 2.4), else whether torch.autocast accepts it."""
    probe = getattr(torch.amp, 'is_autocast_available', None)
    if probe is not None:
        return probe(device_type)
    try:  # torch < 2.4 validates the device type when the context is created
        torch.autocast(device_type, enabled=False)
    except RuntimeError:
        return False
    return True


def autocast_disabled(device_type):
    """A context with autocast off for ``device_type`` (a no-op where it has no autocast)."""
    if autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def register_fake_kernel(qualname, fake, library):
    """Register ``fake`` as the fake (meta) kernel of the op ``qualname`` ('ns::name').

    torch >= 2.4: torch.library.register_fake; 2.2 - 2.3: torch.library.impl_abstract; 2.1: a
    Python kernel for the Meta dispatch key on ``library`` (a ``torch.library.Library`` of the
    op's namespace, kind 'IMPL' or 'DEF', kept alive by the caller).
    """
    if hasattr(torch.library, 'register_fake'):
        torch.library.register_fake(qualname, fake)
    elif hasattr(torch.library, 'impl_abstract'):
        torch.library.impl_abstract(qualname, fake)
    else:
        library.impl(qualname.split('::')[1], fake, 'Meta')


def _cpu_half_softmax():
    try:  # torch 2.1 has no float16 softmax kernel on the CPU
        torch.zeros(1, dtype=torch.float16).softmax(0)
    except RuntimeError:
        return False
    return True


_CPU_HALF_SOFTMAX = _cpu_half_softmax()


def softmax(tensor, dim):
    """``tensor.softmax(dim)`` in ``tensor``'s dtype, also for float16 on the CPU of torch 2.1
    (computed in float32 there and rounded back, which is what the kernels of newer torches do)."""
    if tensor.dtype == torch.float16 and tensor.device.type == 'cpu' and not _CPU_HALF_SOFTMAX:
        return tensor.softmax(dim, dtype=torch.float32).to(tensor.dtype)
    return tensor.softmax(dim)
