"""Complexity analysis of dlu_mm's upsamplers: FLOP counting that knows dlu_mm's ops.

- :mod:`.op_costs`: the cost model (FLOPs = 2 x MACs, bias adds counted) of every dlu_mm op.
- :mod:`.op_units`: :func:`ops_as_units` makes each dlu_mm op call one opaque node, whichever
  backend (compiled kernel or PyTorch reference) computes it.
- :mod:`.flop_counter`: :func:`count_flops`, an exact dispatch-level counter (works on ``meta``).
- :mod:`.mmengine_handles`: jit handles for mmengine's ``FlopAnalyzer`` (whole mmdet / mmseg
  models), in mmengine's convention (1 MAC = 1 FLOP).
- :mod:`.formulas`: the spec's closed-form params / FLOPs per upsampler.
"""
from .flop_counter import FlopCount, FlopCounterMode, count_flops
from .formulas import SPEC_FORMULAS, spec_flops, spec_params
from .op_costs import OP_COSTS, op_cost
from .op_units import UNIT_OPS, ops_as_units, record_op_calls

__all__ = ['FlopCount', 'FlopCounterMode', 'count_flops', 'OP_COSTS', 'op_cost', 'UNIT_OPS',
           'ops_as_units', 'record_op_calls', 'SPEC_FORMULAS', 'spec_flops', 'spec_params']
