"""Exact FLOP counting in the design spec's convention (2 x MACs, bias adds counted).

Design: a ``TorchDispatchMode`` sees every op that reaches the dispatcher with its real argument
shapes, after composite ops (conv2d, linear, einsum, interpolate) have been lowered to the few
kernels that do the arithmetic (``aten.convolution``, ``aten.addmm`` / ``mm`` / ``bmm``,
``aten.upsample_*``, ``aten.grid_sampler_2d``). dlu_mm's own ops are counted as ONE unit each:
inside :func:`~dlu_mm.analysis.op_units.ops_as_units` every call reaches the dispatcher as
``dlu_mm_analysis::<op>`` (compiled or reference backend alike), and compiled ops called
directly show up as ``dlu_mm::<op>``; both are priced by :mod:`dlu_mm.analysis.op_costs`, and
the ops a unit runs internally are never seen (the mode is not active inside a dispatched op).
Because it counts dispatched kernels rather than jit-trace nodes, there is no tracing, data-
dependent control flow is fine, and models on the ``meta`` device are counted without computing
anything.

Usage::

    count = count_flops(module, x)            # FlopCount
    count.total, count.by_category['sampling'], count.by_op['conv']
"""
import dataclasses
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .op_costs import OP_COSTS, conv_cost, matmul_cost, op_cost, resample_cost
from .op_units import NAMESPACE, ops_as_units

__all__ = ['FlopCount', 'FlopCounterMode', 'count_flops', 'DLU_MM_NAMESPACES']

#: dispatcher namespaces whose ops are priced by the dlu_mm cost model
DLU_MM_NAMESPACES = ('dlu_mm', NAMESPACE)
_GRID_SAMPLE_MODES = {0: 'bilinear', 1: 'nearest', 2: 'bicubic'}


def _shape(value):
    return tuple(value.shape) if isinstance(value, torch.Tensor) else value


def _convolution(args, out):
    x, weight, bias, transposed = args[0], args[1], args[2], args[6]
    return conv_cost(_shape(x), _shape(weight), _shape(out), bias is not None, transposed)


def _addmm(args, out):
    return matmul_cost(_shape(args[1]), _shape(args[2]), has_bias=True)


def _matmul(args, out):
    return matmul_cost(_shape(args[0]), _shape(args[1]))


def _baddbmm(args, out):
    return matmul_cost(_shape(args[1]), _shape(args[2]))


def _resize(mode):
    return lambda args, out: resample_cost(_shape(out), mode)


def _grid_sampler(args, out):
    return resample_cost(_shape(out), _GRID_SAMPLE_MODES.get(args[2], 'bilinear'))


def _aten_handlers():
    aten = torch.ops.aten
    handlers = {
        aten.convolution: _convolution,
        aten.addmm: _addmm,
        aten.mm: _matmul,
        aten.bmm: _matmul,
        aten.baddbmm: _baddbmm,
        aten.upsample_bilinear2d: _resize('bilinear'),
        aten.upsample_bicubic2d: _resize('bicubic'),
        aten.grid_sampler_2d: _grid_sampler,
    }
    if hasattr(aten, 'cudnn_grid_sampler'):  # bilinear, zero padding, on cuDNN
        handlers[aten.cudnn_grid_sampler] = _resize('bilinear')
    return handlers


@dataclasses.dataclass
class FlopCount:
    """FLOPs of one forward: total, per category (see :mod:`~dlu_mm.analysis.op_costs`) and per
    op (``conv``, ``addmm``, ``reassemble``, ...)."""
    by_category: Counter = dataclasses.field(default_factory=Counter)
    by_op: Counter = dataclasses.field(default_factory=Counter)
    by_module: dict = dataclasses.field(default_factory=dict)

    @property
    def total(self):
        return sum(self.by_category.values())

    def without(self, *categories):
        """Total minus the given categories (e.g. ``without('sampling')``)."""
        return self.total - sum(self.by_category[c] for c in categories)


class FlopCounterMode(TorchDispatchMode):
    """Adds the FLOPs of every dispatched op to :attr:`count` (see the module docstring).

    Args:
        modules: optional {name: nn.Module}; the FLOPs spent inside each (nested calls included)
            are also added to ``count.by_module[name]``.
    """

    def __init__(self, modules=None):
        super().__init__()
        self.count = FlopCount()
        self._handlers = _aten_handlers()
        self._modules = dict(modules or {})
        self._active = []  # names of tracked modules whose forward is running
        self._hooks = []

    def __enter__(self):
        for name, module in self._modules.items():
            self.count.by_module.setdefault(name, 0)
            self._hooks.append(module.register_forward_pre_hook(self._entering(name)))
            self._hooks.append(module.register_forward_hook(self._leaving))
        return super().__enter__()

    def _entering(self, name):
        def hook(module, args):
            self._active.append(name)  # returns None: the inputs are left alone
        return hook

    def _leaving(self, module, args, output):
        self._active.pop()  # returns None: a forward hook's return value replaces the output

    def __exit__(self, *exc):
        while self._hooks:
            self._hooks.pop().remove()
        self._active.clear()
        return super().__exit__(*exc)

    def _price(self, func, args, out):
        if func.namespace in DLU_MM_NAMESPACES:
            name = func.overloadpacket.__name__  # 'reassemble' of dlu_mm::reassemble
            if name not in OP_COSTS:  # e.g. dlu_mm::reassemble_backward: not a forward op
                return name, None
            return name, op_cost(name, [_shape(a) for a in args])
        handler = self._handlers.get(func.overloadpacket)
        if handler is None:
            return None, None
        return func.overloadpacket.__name__, handler(args, out)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if kwargs:  # the handled ops are always called positionally; fold kwargs in order
            schema_args = [a.name for a in func._schema.arguments]
            args = tuple(args) + tuple(kwargs.get(n) for n in schema_args[len(args):])
        name, cost = self._price(func, args, out)
        if cost:
            self.count.by_category.update(cost)
            flops = sum(cost.values())
            self.count.by_op[name] += flops
            for module_name in set(self._active):
                self.count.by_module[module_name] += flops
        return out


def count_flops(module, *inputs, track_modules=None, **kwargs):
    """FLOPs of ``module(*inputs, **kwargs)`` (no grad, dlu_mm ops as units) -> FlopCount.

    ``track_modules``: optional {name: submodule} whose own FLOPs go to ``by_module``.
    """
    with torch.no_grad(), ops_as_units(), FlopCounterMode(track_modules) as counter:
        module(*inputs, **kwargs)
    return counter.count
