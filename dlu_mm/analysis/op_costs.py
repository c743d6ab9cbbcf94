"""Cost model of dlu_mm's operators and of the stock ops the upsamplers use.

One function per op maps argument *shapes* (tensors replaced by their shape tuples) and the
op's int/str arguments to a ``Counter`` of FLOPs by category. The same functions serve the
dispatch-level counter (:mod:`dlu_mm.analysis.flop_counter`) and the mmengine jit handles
(:mod:`dlu_mm.analysis.mmengine_handles`), so both count an op identically.

Convention (the design spec's): FLOPs = 2 x multiply-accumulates, bias adds counted as one
more MAC per output (a conv costs ``2 * (fan_in + 1) * out_channels`` per output pixel), one
bilinear sample of one value = 4 MACs = 8 FLOPs. Element-wise ops, normalisations, softmax,
activations, pixel shuffle and nearest resizing count 0.

Categories: 'conv', 'matmul', 'reassembly' (CARAFE / DLU reassembly of k x k windows),
'sampling' (every bilinear sample: DLU's kernel sampling, LDA-AQU's key/value sampling,
DySample's subpixel_sample, grid_sample, bilinear resizing), 'attention' (LDA-AQU's q.k and
A.v), 'dynamic_filter' (DDF).
"""
import math
from collections import Counter

__all__ = ['OP_COSTS', 'op_cost', 'reassemble_cost', 'guided_reassemble_cost', 'ddf_cost',
           'local_deformable_attention_cost', 'subpixel_sample_cost', 'BILINEAR_SAMPLE_FLOPS',
           'DDF_TAP_FLOPS']

#: one bilinear sample of one value: 4 corner weights x value, accumulated (4 MACs)
BILINEAR_SAMPLE_FLOPS = 8
#: DDF: per tap and output value X * S * Ch (two multiplies) accumulated (one add)
DDF_TAP_FLOPS = 3


def _numel(shape):
    return math.prod(shape)


def reassemble_cost(x, kernels, k, groups=1, scale_factor=2):
    """CARAFE reassembly: k*k MACs per output value."""
    n, c, h, w = x
    return Counter(reassembly=2 * k * k * n * c * h * scale_factor * w * scale_factor)


def guided_reassemble_cost(x, kernel_space, offsets, k, groups=1, scale_factor=2):
    """DLU: the reassembly plus one bilinear sample per kernel tap, group and output pixel."""
    n, _, h, w = x
    out_pixels = n * h * scale_factor * w * scale_factor
    cost = reassemble_cost(x, None, k, groups, scale_factor)
    cost['sampling'] = BILINEAR_SAMPLE_FLOPS * groups * k * k * out_pixels
    return cost


def ddf_cost(x, channel_filter, spatial_filter, k, dilation=1, stride=1, combine='mul'):
    """DDF: ``DDF_TAP_FLOPS`` per tap and output value (the same for 'mul' and 'add')."""
    n, c, h, w = x
    return Counter(dynamic_filter=DDF_TAP_FLOPS * k * k * n * c * (h // stride) * (w // stride))


def local_deformable_attention_cost(q, key, value, offsets, rpb=None, num_heads=1, groups=2):
    """LDA-AQU: per output pixel and point, D + C bilinear samples, D MACs (q.k), C MACs (A.v).

    Adding rpb to the sampled keys and the softmax are element-wise (not counted).
    """
    n, d, out_h, out_w = q
    c = value[1]
    points = offsets[1] // (2 * groups)
    point_pixels = n * out_h * out_w * points
    return Counter(attention=2 * (d + c) * point_pixels,
                   sampling=BILINEAR_SAMPLE_FLOPS * (d + c) * point_pixels)


def subpixel_sample_cost(x, positions, groups=1, scale_factor=2):
    """DySample's sampling: one bilinear sample per output value (as its grid_sample form)."""
    n, c, h, w = x
    return Counter(sampling=BILINEAR_SAMPLE_FLOPS * n * c * h * scale_factor * w * scale_factor)


#: op name (as in ``torch.ops.dlu_mm.<name>`` and dlu_mm.ops.dispatch) -> cost function
OP_COSTS = {
    'reassemble': reassemble_cost,
    'guided_reassemble': guided_reassemble_cost,
    'ddf': ddf_cost,
    'local_deformable_attention': local_deformable_attention_cost,
    'subpixel_sample': subpixel_sample_cost,
}


def op_cost(op_name, args):
    """FLOPs of dlu_mm op ``op_name`` called with ``args`` (tensors given as shape tuples)."""
    if op_name not in OP_COSTS:
        raise KeyError(f'no cost model for dlu_mm op {op_name!r}; known: {sorted(OP_COSTS)}')
    return OP_COSTS[op_name](*args)


# ---------------------------------------------------------------------------------------------
# Stock ops (shapes in, Counter out)
# ---------------------------------------------------------------------------------------------
def conv_cost(x, weight, out, has_bias, transposed):
    """Convolution (any dims): 2 * MACs, + 2 per output value when there is a bias."""
    if transposed:
        # every input value meets out_channels/groups * prod(kernel) weights
        macs = _numel(x) * weight[1] * _numel(weight[2:])
    else:
        macs = _numel(out) * _numel(weight[1:])
    return Counter(conv=2 * macs + (2 * _numel(out) if has_bias else 0))


def matmul_cost(a, b, has_bias=False):
    """(..., M, K) @ (..., K, N): 2 * MACs (+ 2 per output with a bias, as for convs)."""
    batch = max(_numel(a[:-2]), _numel(b[:-2]))
    m, k, n = a[-2], a[-1], b[-1]
    out = batch * m * n
    return Counter(matmul=2 * out * k + (2 * out if has_bias else 0))


def resample_cost(out, mode):
    """Resizing / grid sampling: 8 FLOPs per output value for bilinear, 32 bicubic, 0 nearest."""
    per_value = {'bilinear': BILINEAR_SAMPLE_FLOPS, 'bicubic': 4 * BILINEAR_SAMPLE_FLOPS}
    return Counter(sampling=per_value.get(mode, 0) * _numel(out))
