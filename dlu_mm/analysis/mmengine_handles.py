"""FLOP handles for dlu_mm's ops in mmengine's ``FlopAnalyzer`` (whole mmdet / mmseg models).

mmengine traces the model with ``torch.jit`` and prices every graph node with a handle keyed by
the node kind. dlu_mm's ops appear as ``dlu_mm::<op>`` nodes when the compiled extension runs
them and, inside :func:`~dlu_mm.analysis.op_units.ops_as_units`, as ``dlu_mm_analysis::<op>``
nodes whichever backend runs them; without either, the pure-PyTorch reference would be traced
as einsum / gather / grid_sample internals that mmengine prices wrongly or not at all. The
handles here price both node kinds with the shared cost model (:mod:`.op_costs`).

Convention: mmengine (like fvcore) reports one FLOP per multiply-accumulate and ignores conv
biases, so these handles return half the spec's FLOPs (our ops have no bias term): numbers from
:func:`model_complexity` are comparable with mmdet's / mmseg's ``get_flops`` tools, and about
half of :func:`~dlu_mm.analysis.count_flops`' (which counts 2 x MACs + bias adds).
"""
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape

from .op_costs import OP_COSTS, op_cost
from .op_units import NAMESPACE, ops_as_units

__all__ = ['dlu_mm_flop_handles', 'add_flop_handles', 'register_default_flop_handles',
           'model_complexity']


def _jit_argument(value):
    """A traced node input as the cost model wants it: tensors -> shape tuple, else constant."""
    if value.type().kind() == 'TensorType':
        shape = get_shape(value)
        if shape is None:
            raise ValueError(f'dlu_mm FLOP handle: incomplete tensor shape for {value}')
        return tuple(shape)
    return value.toIValue()


def _handle(op_name):
    def handle(inputs, outputs):
        cost = op_cost(op_name, [_jit_argument(v) for v in inputs])
        return sum(cost.values()) // 2  # MACs (mmengine's "flops")

    handle.__name__ = f'{op_name}_flop_jit'
    return handle


def dlu_mm_flop_handles():
    """{node kind: handle} for ``dlu_mm::<op>`` and ``dlu_mm_analysis::<op>``."""
    handles = {}
    for op_name in OP_COSTS:
        handle = _handle(op_name)
        handles[f'dlu_mm::{op_name}'] = handle
        handles[f'{NAMESPACE}::{op_name}'] = handle
    return handles


def add_flop_handles(analyzer):
    """Teach one ``FlopAnalyzer`` instance dlu_mm's ops; returns it."""
    return analyzer.set_op_handle(**dlu_mm_flop_handles())


def register_default_flop_handles():
    """Add dlu_mm's handles to mmengine's default table (used by every new ``FlopAnalyzer``,
    hence by ``mmengine.analysis.get_model_complexity_info``). Idempotent.

    This writes into mmengine's module-level ``_DEFAULT_SUPPORTED_FLOP_OPS`` dict (mmengine has
    no public registration hook); prefer :func:`add_flop_handles` when you own the analyzer.
    Run the analysis inside :func:`ops_as_units` so the reference backend is priced too.
    """
    from mmengine.analysis import complexity_analysis
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.update(dlu_mm_flop_handles())


def model_complexity(model, inputs, warn_unsupported=False):
    """Params and mmengine-convention FLOPs of ``model(*inputs)``, dlu_mm ops priced.

    Returns dict(params=int, flops=int, analyzer=FlopAnalyzer) with the analysis already run
    (``analyzer.by_module()``, ``analyzer.unsupported_ops()`` are cached).
    """
    analyzer = add_flop_handles(FlopAnalyzer(model, inputs))
    analyzer.unsupported_ops_warnings(warn_unsupported)
    analyzer.uncalled_modules_warnings(False)
    with ops_as_units():
        flops = analyzer.total()  # traces now; the trace graph is cached
    return dict(params=parameter_count(model)[''], flops=flops, analyzer=analyzer)
