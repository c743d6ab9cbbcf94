"""Python side of the compiled ops in ``dlu_mm._C`` (sources in ``ops/``).

Loading ``dlu_mm._C`` registers ``torch.ops.dlu_mm.<op>`` and ``<op>_backward`` with CPU (and,
when built with CUDA, CUDA) kernels. This module adds what the C++ side does not:
- autograd (``torch.library.register_autograd``): the backward calls ``<op>_backward``, which
  recomputes what it needs instead of saving intermediates;
- fake kernels (``torch.library.register_fake``) so ``torch.compile`` traces through the ops
  without graph breaks and ``torch.library.opcheck`` passes.
It exposes ``available(op, device_type)`` and one function per op with the public positional
signature; validation with Python errors happens in the public functions (dlu_mm.ops), the C++
TORCH_CHECKs are the last line of defence. Imported lazily by :mod:`dlu_mm.ops.dispatch`.
"""
import torch

try:
    from dlu_mm import _C  # noqa: F401  (registers torch.ops.dlu_mm)
    LOAD_ERROR = None
except ImportError as error:  # not built: dispatch falls back to the references
    _C = None
    LOAD_ERROR = error

OPS = ('reassemble', 'guided_reassemble', 'ddf', 'local_deformable_attention')
_DISPATCH_KEYS = {'cpu': 'CPU', 'cuda': 'CUDA'}


def _has_kernel(op_name, dispatch_key):
    return (_C is not None and hasattr(torch.ops.dlu_mm, op_name)
            and torch._C._dispatch_has_kernel_for_dispatch_key(f'dlu_mm::{op_name}', dispatch_key))


# Computed once: a plain dict lookup is traceable by torch.compile (the dispatcher query is not).
_AVAILABLE = {(op, device): _has_kernel(op, key) for op in OPS
              for device, key in _DISPATCH_KEYS.items()}


def available(op_name, device_type='cpu'):
    """Whether ``op_name`` has a compiled kernel for ``device_type`` ('cpu', 'cuda', ...)."""
    return _AVAILABLE.get((op_name, device_type), False)


def _registered(op_name):
    return _C is not None and hasattr(torch.ops.dlu_mm, op_name)


# ----------------------------------------------------------------------------------------------
# Public-signature entry points
# ----------------------------------------------------------------------------------------------
def reassemble(x, kernels, k, groups=1, scale_factor=2):
    return torch.ops.dlu_mm.reassemble(x, kernels, k, groups, scale_factor)


def guided_reassemble(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    return torch.ops.dlu_mm.guided_reassemble(x, kernel_space, offsets, k, groups, scale_factor)


def ddf(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    return torch.ops.dlu_mm.ddf(x, channel_filter, spatial_filter, k, dilation, stride, combine)


def local_deformable_attention(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    return torch.ops.dlu_mm.local_deformable_attention(q, key, value, offsets, rpb, num_heads,
                                                       groups)


# ----------------------------------------------------------------------------------------------
# Fake kernels and autograd
# ----------------------------------------------------------------------------------------------
def _out_like(x, channels, height, width):
    return x.new_empty((x.shape[0], channels, height, width))


def _register_reassemble():
    @torch.library.register_fake('dlu_mm::reassemble')
    def _(x, kernels, k, groups, scale_factor):
        return _out_like(x, x.shape[1], kernels.shape[2], kernels.shape[3])

    @torch.library.register_fake('dlu_mm::reassemble_backward')
    def _(grad_out, x, kernels, k, groups, scale_factor):
        return torch.empty_like(x), torch.empty_like(kernels)

    def setup_context(ctx, inputs, output):
        x, kernels, *args = inputs
        ctx.save_for_backward(x, kernels)
        ctx.args = args

    def backward(ctx, grad_out):
        x, kernels = ctx.saved_tensors
        grad_x, grad_kernels = torch.ops.dlu_mm.reassemble_backward(grad_out, x, kernels,
                                                                    *ctx.args)
        return grad_x, grad_kernels, None, None, None

    torch.library.register_autograd('dlu_mm::reassemble', backward, setup_context=setup_context)


def _register_guided_reassemble():
    @torch.library.register_fake('dlu_mm::guided_reassemble')
    def _(x, kernel_space, offsets, k, groups, scale_factor):
        return _out_like(x, x.shape[1], offsets.shape[2], offsets.shape[3])

    @torch.library.register_fake('dlu_mm::guided_reassemble_backward')
    def _(grad_out, x, kernel_space, offsets, k, groups, scale_factor):
        return torch.empty_like(x), torch.empty_like(kernel_space), torch.empty_like(offsets)

    def setup_context(ctx, inputs, output):
        x, kernel_space, offsets, *args = inputs
        ctx.save_for_backward(x, kernel_space, offsets)
        ctx.args = args

    def backward(ctx, grad_out):
        x, kernel_space, offsets = ctx.saved_tensors
        grads = torch.ops.dlu_mm.guided_reassemble_backward(grad_out, x, kernel_space, offsets,
                                                            *ctx.args)
        return (*grads, None, None, None)

    torch.library.register_autograd('dlu_mm::guided_reassemble', backward,
                                    setup_context=setup_context)


def _register_ddf():
    @torch.library.register_fake('dlu_mm::ddf')
    def _(x, channel_filter, spatial_filter, k, dilation, stride, combine):
        return _out_like(x, x.shape[1], spatial_filter.shape[2], spatial_filter.shape[3])

    @torch.library.register_fake('dlu_mm::ddf_backward')
    def _(grad_out, x, channel_filter, spatial_filter, k, dilation, stride, combine):
        return (torch.empty_like(x), torch.empty_like(channel_filter),
                torch.empty_like(spatial_filter))

    def setup_context(ctx, inputs, output):
        x, channel_filter, spatial_filter, *args = inputs
        ctx.save_for_backward(x, channel_filter, spatial_filter)
        ctx.args = args

    def backward(ctx, grad_out):
        x, channel_filter, spatial_filter = ctx.saved_tensors
        grads = torch.ops.dlu_mm.ddf_backward(grad_out, x, channel_filter, spatial_filter,
                                              *ctx.args)
        return (*grads, None, None, None, None)

    torch.library.register_autograd('dlu_mm::ddf', backward, setup_context=setup_context)


def _register_local_deformable_attention():
    @torch.library.register_fake('dlu_mm::local_deformable_attention')
    def _(q, key, value, offsets, rpb, num_heads, groups):
        return _out_like(q, value.shape[1], q.shape[2], q.shape[3])

    @torch.library.register_fake('dlu_mm::local_deformable_attention_backward')
    def _(grad_out, q, key, value, offsets, rpb, num_heads, groups):
        grad_rpb = torch.empty_like(rpb) if rpb is not None else q.new_empty((0,))
        return (torch.empty_like(q), torch.empty_like(key), torch.empty_like(value),
                torch.empty_like(offsets), grad_rpb)

    def setup_context(ctx, inputs, output):
        q, key, value, offsets, rpb, num_heads, groups = inputs
        ctx.save_for_backward(q, key, value, offsets, rpb)
        ctx.args = (num_heads, groups)

    def backward(ctx, grad_out):
        q, key, value, offsets, rpb = ctx.saved_tensors
        grad_q, grad_key, grad_value, grad_offsets, grad_rpb = (
            torch.ops.dlu_mm.local_deformable_attention_backward(grad_out, q, key, value,
                                                                 offsets, rpb, *ctx.args))
        return (grad_q, grad_key, grad_value, grad_offsets,
                grad_rpb if rpb is not None else None, None, None)

    torch.library.register_autograd('dlu_mm::local_deformable_attention', backward,
                                    setup_context=setup_context)


_REGISTER = {
    'reassemble': _register_reassemble,
    'guided_reassemble': _register_guided_reassemble,
    'ddf': _register_ddf,
    'local_deformable_attention': _register_local_deformable_attention,
}
for _op in OPS:
    if _registered(_op):
        _REGISTER[_op]()
