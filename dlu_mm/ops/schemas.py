"""The schema of every compiled op, in one place (torch.ops.dlu_mm.<op> and <op>_backward).

The C++ side registers the same strings (``ops/include/schemas.h``, for ``dlu_mm::<op>`` and the
'generic' backend's ``dlu_mm::generic_<op>``); ``tests/test_ops_schemas.py`` compares the
compiled ops' schemas with this table. The FLOP-counting units of :mod:`dlu_mm.analysis` declare
their ops from it too, and the fake (meta) kernels compute their output shapes from ``OUTPUTS``.
Imports with torch alone.
"""
import torch

__all__ = ['OPS', 'SCHEMAS', 'BACKWARD_SCHEMAS', 'GENERIC_PREFIX', 'OUTPUTS', 'num_tensor_inputs',
           'fake_forward', 'fake_backward']

OPS = ('reassemble', 'guided_reassemble', 'ddf', 'local_deformable_attention',
       'subpixel_sample')
GENERIC_PREFIX = 'generic_'  # torch.ops.dlu_mm.generic_<op>: CPU only, same schema as <op>

#: op -> its forward schema, without the name
SCHEMAS = {
    'reassemble': '(Tensor x, Tensor kernels, int k, int groups, int scale_factor) -> Tensor',
    'guided_reassemble': '(Tensor x, Tensor kernel_space, Tensor offsets, int k, int groups, '
                         'int scale_factor) -> Tensor',
    'ddf': '(Tensor x, Tensor channel_filter, Tensor spatial_filter, int k, int dilation, '
           'int stride, str combine) -> Tensor',
    'local_deformable_attention': '(Tensor q, Tensor key, Tensor value, Tensor offsets, '
                                  'Tensor? rpb, int num_heads, int groups) -> Tensor',
    'subpixel_sample': '(Tensor x, Tensor positions, int groups, int scale_factor) -> Tensor',
}


def _backward_schema(schema):
    """``(inputs) -> Tensor`` -> ``(Tensor grad_out, inputs) -> (one Tensor per tensor input)``;
    an absent optional input (LDA's rpb) gets an empty gradient."""
    arguments = schema.split(') -> ')[0][1:]
    grads = ', '.join(['Tensor'] * arguments.count('Tensor'))
    return f'(Tensor grad_out, {arguments}) -> ({grads})'


#: op -> the schema of its ``<op>_backward``, without the name
BACKWARD_SCHEMAS = {op: _backward_schema(schema) for op, schema in SCHEMAS.items()}

#: op -> (input giving the output's channels, input giving its H x W, index of the int argument
#: that multiplies H x W or None)
OUTPUTS = {
    'reassemble': (0, 1, None),                  # x, kernels
    'guided_reassemble': (0, 2, None),           # x, kernel_space, offsets
    'ddf': (0, 2, None),                         # x, channel_filter, spatial_filter
    'local_deformable_attention': (2, 0, None),  # q, key, value, offsets, rpb
    'subpixel_sample': (0, 0, 3),                # x, positions; (s*H, s*W), s = scale_factor
}


def _base(op):
    return op[len(GENERIC_PREFIX):] if op.startswith(GENERIC_PREFIX) else op


def num_tensor_inputs(op):
    """How many leading inputs of ``op`` (or ``generic_<op>``) are tensors (optional ones too)."""
    return SCHEMAS[_base(op)].split(') -> ')[0].count('Tensor')


def fake_forward(op):
    """The fake kernel of ``op``: its output (N, C', H', W') allocated like the first input."""
    channels_from, size_from, scale_from = OUTPUTS[_base(op)]

    def fake(*inputs):
        scale = 1 if scale_from is None else inputs[scale_from]
        return inputs[0].new_empty((inputs[0].shape[0], inputs[channels_from].shape[1],
                                    *(size * scale for size in inputs[size_from].shape[2:])))
    return fake


def fake_backward(op):
    """The fake kernel of ``<op>_backward``: one gradient per tensor input, like the input."""
    n_tensors = num_tensor_inputs(op)

    def fake(grad_out, *inputs):
        # an absent optional input (LDA's rpb) gets an empty gradient, as the kernels return
        # contiguous, as the kernels return them (empty_like would keep a channels-last layout
        # that inductor then asserts on)
        return tuple(t.new_empty(t.shape) if t is not None else grad_out.new_empty((0,))
                     for t in inputs[:n_tensors])
    return fake
